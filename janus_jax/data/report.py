"""What happened to every input row: kept, truncated, dropped (and why), so the trainer can log it."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Issue kinds. Rows with these are dropped, except `over_length_truncated`, which is kept shortened.
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
EMPTY_FIELD = "empty_field"
NO_ASSISTANT_MESSAGE = "no_assistant_message"
CHOSEN_EQUALS_REJECTED = "chosen_equals_rejected"
OVER_LENGTH_TRUNCATED = "over_length_truncated"
OVER_LENGTH_DROPPED = "over_length_dropped"

MAX_LOGGED_ISSUES = 20


@dataclass(frozen=True)
class Issue:
    split: str  # "train" or "eval": which input the row came from
    row: int  # 0-based row index in that input (for JSONL: the data line, blank lines not counted)
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.split} row {self.row}: {self.kind}: {self.detail}"


@dataclass
class DataReport:
    """Counts for the trainer's log; `issues` lists every reported row with its index."""

    source: str = ""
    format: str = ""
    over_length: str = ""
    rows_read: dict[str, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    not_selected: int = 0  # rows left out by `system_messages_per_instruction` (by design, not malformed)
    examples: dict[str, int] = field(default_factory=dict)  # kept examples (pairs for preference data)
    tokens: dict[str, int] = field(default_factory=dict)  # real (non-pad) input tokens per split
    instructions: dict[str, int] = field(default_factory=dict)

    # (split, row) -> where the row is in its file ("sft.jsonl line 7"), for files read line by line
    locations: dict[tuple[str, int], str] = field(default_factory=dict)

    def add(self, split: str, row: int, kind: str, detail: str) -> None:
        self.issues.append(Issue(split, row, kind, detail))

    def describe(self, issue: Issue) -> str:
        """The issue with the row's place in its file, so that a user can open the file at that line."""
        where = self.locations.get((issue.split, issue.row))
        return f"{where} ({issue})" if where else str(issue)

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(i.kind for i in self.issues).items()))

    @property
    def dropped(self) -> int:
        return sum(1 for i in self.issues if i.kind != OVER_LENGTH_TRUNCATED)

    def as_dict(self) -> dict:
        """JSON-ready summary (no per-row list) for metric logs."""
        return {
            "source": self.source,
            "format": self.format,
            "over_length": self.over_length,
            "rows_read": dict(self.rows_read),
            "examples": dict(self.examples),
            "instructions": dict(self.instructions),
            "tokens": dict(self.tokens),
            "not_selected": self.not_selected,
            "dropped": self.dropped,
            "issues": self.counts,
        }

    def summary(self) -> str:
        d = self.as_dict()
        parts = [
            f"data {d['source']} ({d['format']}): rows read {d['rows_read']}",
            f"examples {d['examples']} from instructions {d['instructions']}, tokens {d['tokens']}",
            f"over-length policy: {self.over_length}",
        ]
        if self.not_selected:
            parts.append(f"{self.not_selected} rows not selected (system_messages_per_instruction)")
        if self.issues:
            parts.append(f"{self.dropped} rows dropped; issues {d['issues']}")
        return "; ".join(parts)

    def log(self, logger: logging.Logger = log) -> None:
        logger.info("%s", self.summary())
        for issue in self.issues[:MAX_LOGGED_ISSUES]:
            logger.warning("%s", self.describe(issue))
        if len(self.issues) > MAX_LOGGED_ISSUES:
            logger.warning("... and %d more row issues (DataReport.issues lists all)",
                           len(self.issues) - MAX_LOGGED_ISSUES)
