"""What a benchmark is: the ``Benchmark`` record each module in ``eval/benches/`` exports as ``BENCHMARK``,
the items it loads, its own command-line options, and the run settings every part reads."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.prompts import JANUS_REPETITION_PENALTY, JANUS_SAMPLING
from eval.stats import DEFAULT_LEVEL, DEFAULT_ROUNDS, DEFAULT_SEED

if TYPE_CHECKING:
    from eval.engine import JudgeJob
    from eval.store import RowStore


@dataclass
class Item:
    """One thing to answer. ``turns`` has one user message except for MT-Bench (two)."""

    id: str
    turns: list[str]
    system: str = ""
    category: str = ""
    reference: list[str] = field(default_factory=list)  # reference answer per turn, when the bench has one
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return self.turns[0]


@dataclass
class Loaded:
    """Items plus what could not be used: bench rows as ``(row id, reason)``, other input problems by kind."""

    items: list[Item]
    bad_rows: list[tuple[str, str]] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    """A benchmark's own command-line option ``--NAME``; the bench reads its value as ``settings.get(option)``."""

    name: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


@dataclass
class RunSettings:
    """Settings that shape judge jobs and statistics; stored in run.json so rescore reproduces them."""

    seed: int = DEFAULT_SEED
    rounds: int = DEFAULT_ROUNDS
    level: float = DEFAULT_LEVEL
    open_model: bool = False  # the evaluated model is served by vLLM / janus-serve (repetition penalty)
    max_new_tokens: int | None = None  # caps the evaluated model's replies (smoke runs); None = the protocol's
    options: dict[str, Any] = field(default_factory=dict)  # the benchmark's own options, by Option.dest

    def get(self, option: Option) -> Any:
        return self.options.get(option.dest, option.default)

    def janus_sampling(self) -> dict[str, Any]:
        options = dict(JANUS_SAMPLING)
        if self.max_new_tokens:
            options["max_tokens"] = min(options["max_tokens"], self.max_new_tokens)
        if self.open_model:
            options["extra_body"] = {"repetition_penalty": JANUS_REPETITION_PENALTY}
        return options

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSettings:
        """Read run.json's settings; older run directories kept the options as top-level fields."""
        known = {f.name for f in fields(cls)}
        settings = cls(**{k: v for k, v in data.items() if k in known})
        legacy = {k: v for k, v in data.items() if k not in known and k != "baseline"}  # answers, not a setting
        settings.options = {**legacy, **settings.options}
        return settings


Aggregate = Callable[..., dict[str, Any]]
TableColumns = Callable[[list[dict]], list[tuple[str, Callable[[dict], dict | None]]]]


@dataclass(frozen=True)
class JudgeParser:
    """Reads a verdict from a judge reply (None: no verdict, the reply is asked again); ``details`` adds
    fields to the stored judgment row (e.g. the feedback text before the score). ``from_logprobs`` reads
    the verdict from the first reply token's top log-probabilities (``{token: logprob}``) instead, when the
    judge returned them (AlpacaEval's weighted annotation); the row then records ``annotation: weighted``."""

    read: Callable[[str], Any]
    details: Callable[[str], dict[str, Any]] | None = None
    from_logprobs: Callable[[dict[str, float]], Any] | None = None

    def verdict(self, row: dict[str, Any]) -> tuple[Any, str | None]:
        """(value, annotation) of a stored judgment row with its ``raw`` reply and maybe ``top_logprobs``."""
        if self.from_logprobs is not None and row.get("top_logprobs"):
            value = self.from_logprobs(row["top_logprobs"])
            if value is not None:
                return value, "weighted"
        value = self.read(row["raw"]) if row.get("raw") else None
        return value, ("discrete" if self.from_logprobs is not None else None)


@dataclass(frozen=True)
class Benchmark:
    """Everything the runner, CLI, report and engine need to know about one benchmark.

    load(settings, limit)                  -> Loaded: the items (data) and input problems
    item_snapshots(items)                  -> what aggregation needs per item (items.jsonl; rescore reads it)
    generation_options(item, settings)     -> sampling of the evaluated model for this item
    judge_jobs(items, answers, settings)   -> the judge calls (prompts, sampling, parser name, row key)
    parsers                                -> parser name -> JudgeParser, for the names judge_jobs uses
    template_hash(settings)                -> digest of the judge prompts (recorded on every judgment row)
    aggregate(snapshots, judgments, settings, responses=...) -> scores.json: ``metric``, ``overall``
                                              (value/low/high/n), optional ``rates``/``by_*``/``counts``/``problems``
    """

    name: str
    title: str
    load: Callable[[RunSettings, int | None], Loaded]
    key_fields: tuple[str, ...]
    item_snapshots: Callable[[list[Item]], list[dict[str, Any]]]
    generation_options: Callable[[Item, RunSettings], dict[str, Any]]
    judge_jobs: Callable[[list[Item], dict[str, list], RunSettings], list[JudgeJob]]
    parsers: Mapping[str, JudgeParser]
    template_hash: Callable[[RunSettings], str]
    aggregate: Aggregate
    options: tuple[Option, ...] = ()
    needs_judge: Callable[[RunSettings], bool] = lambda settings: True
    digits: int = 2  # decimals in the report
    table_columns: TableColumns | None = None  # main-table columns; default: one column, the overall score
    report_lines: Callable[[dict], list[str]] | None = None  # extra lines in the run's report section
    plot: Callable[[list[dict], Path], list[str]] | None = None  # this bench's figures -> file names
    in_summary_plot: bool = False  # show the overall score in the shared "Helpfulness benchmarks" figure
    score_without_llm: Callable[[list[Item], dict[str, list], RunSettings, RowStore], None] | None = None


def judge_failures(judgments: list[dict]) -> dict[str, list[str]]:
    """Ids of judge rows that failed, by kind (parse / api)."""
    out: dict[str, list[str]] = defaultdict(list)
    for row in judgments:
        if row.get("value") is None:
            out[f"judge_{row.get('error_kind') or 'parse'}_failure"].append(str(row["id"]))
    return {k: sorted(set(v), key=_id_order) for k, v in out.items()}


def failure_reasons(rows: list[dict], top: int = 5) -> list[tuple[str, int]]:
    """The most common ``error`` texts of stored rows (judgments or responses), with their counts."""
    counts = Counter(_short_reason(row["error"]) for row in rows if row.get("error"))
    return counts.most_common(top)


def _short_reason(error: str) -> str:
    return " ".join(str(error).split())[:160]


def _id_order(value: str) -> tuple:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def answers_of(responses: dict[str, dict]) -> dict[str, list]:
    """Successful answers by item id."""
    return {i: r["answers"] for i, r in responses.items() if r.get("error") is None and r.get("answers")}


def limited(loaded: Loaded, limit: int | None) -> Loaded:
    if limit is not None:
        loaded.items = loaded.items[:limit]
    return loaded
