"""Judge-reply parsers. Pure functions of the raw text, versioned, so stored replies can be re-scored for free.

Every parser returns ``None`` for the score/verdict when it cannot read one; callers count that as a failure
instead of dropping the row.
"""

from __future__ import annotations

import re

# Bump when any parser below changes behaviour: every score row records it, and `python -m eval rescore`
# re-parses the stored raw judge text with the current version.
PARSER_VERSION = "3"

# ----------------------------------------------------------------------------------------------------------
# Absolute 1-5 grading (Multifaceted Bench / Prometheus format: "Feedback: ... [RESULT] 4")
# ----------------------------------------------------------------------------------------------------------

# A single integer 1-5, optionally bracketed, optionally followed by "/5" or "out of 5"; anything that
# continues the number ("2.5", "10", "4/10") disqualifies it.
_SCORE_BODY = r"[\(\[]?\s*([1-5])\s*[\)\]]?\s*(?:/\s*5\b|out\s+of\s+5\b)?(?![\d.]*\d)"
_AFTER_RESULT = re.compile(
    r"\s*[:\]]?\s*(?:\*\*)?\s*(?:score\s+of|score\s*:?|result\s*:?)?\s*" + _SCORE_BODY, re.IGNORECASE
)
# Fallback forms seen in judge replies and in the reference parser's cases, e.g. "(Score 5)", "[Score 4]",
# "score: 3", "score of 1", "Result: 4", "[SCORE] 4". The last one in the text wins: a verdict comes at the end.
_FALLBACK = re.compile(
    r"(?:\[\s*score\s*\]|\[\s*result\s*\]|score\s+of|score\s*:|result\s*:|[\(\[]\s*score)\s*" + _SCORE_BODY,
    re.IGNORECASE,
)
# Where a sentence ends: . ! ? (with closing quotes or brackets) before whitespace, or a line break.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*")
_RESULT_TAG = re.compile(r"\[\s*result\s*\]|\[\s*result\s*:", re.IGNORECASE)
_FEEDBACK_PREFIX = re.compile(r"^\s*(?:###\s*)?feedback\s*:\s*", re.IGNORECASE)


def parse_absolute(text: str | None) -> tuple[str | None, int | None]:
    """Read ``(feedback, score)`` from an absolute-grading reply; score is an int in 1..5 or None.

    The score after the last ``[RESULT]`` tag is read first, so feedback that mentions "a score of 4" before
    ``[RESULT] 3`` gives 3 (the reference implementation's first-match regex returns 4). Without a readable
    ``[RESULT]`` the last of the other common forms ("(Score 4)", "Score: 4", ...) is used only when it stands
    in the reply's last sentence: a "(Score 5)" quoted from the rubric or the reference answer earlier in the
    reply is not the judge's verdict, so such a reply has no score (and is asked again). Out-of-range or
    fractional numbers give None.
    """
    if not text or not text.strip():
        return None, None
    tags = list(_RESULT_TAG.finditer(text))
    for tag in reversed(tags):
        match = _AFTER_RESULT.match(text, tag.end())
        if match:
            return _clean_feedback(text[: tag.start()]), int(match.group(1))
    # An unreadable [RESULT] is not rescued by a number quoted earlier in the feedback: only the text after
    # the last tag is searched then.
    start = tags[-1].end() if tags else 0
    fallbacks = list(_FALLBACK.finditer(text, start))
    if not tags and fallbacks and fallbacks[-1].start() < _last_sentence_start(text):
        fallbacks = []  # a quoted number, not a verdict
    end = tags[-1].start() if tags else (fallbacks[-1].start() if fallbacks else len(text))
    return _clean_feedback(text[:end]), (int(fallbacks[-1].group(1)) if fallbacks else None)


def _last_sentence_start(text: str) -> int:
    body = text.rstrip()
    ends = [m.end() for m in _SENTENCE_END.finditer(body)]
    return ends[-1] if ends else 0


def _clean_feedback(text: str) -> str:
    return _FEEDBACK_PREFIX.sub("", text).strip()


# ----------------------------------------------------------------------------------------------------------
# MT-Bench single-answer grading: "Rating: [[7]]" on a 1-10 scale
# ----------------------------------------------------------------------------------------------------------

_RATING_DOUBLE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING_SINGLE = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")


def parse_rating(text: str | None) -> float | None:
    """Read a 1-10 MT-Bench rating; ``[[x]]`` first, then ``[x]``; the last match wins; out of range -> None.

    FastChat takes the first ``[[x]]``; judges sometimes quote the format example ("Rating: [[5]]") before
    their verdict, so the last one is the verdict.
    """
    if not text:
        return None
    for pattern in (_RATING_DOUBLE, _RATING_SINGLE):
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 1.0 <= value <= 10.0 else None
    return None


# ----------------------------------------------------------------------------------------------------------
# Pairwise verdicts
# ----------------------------------------------------------------------------------------------------------

_PAIR_LABEL = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_PAIR_MEANING = {"A": "A", "B": "B", "C": "tie"}


def parse_pairwise(text: str | None) -> str | None:
    """Read a FastChat pair-v2 verdict: ``[[A]]`` -> "A", ``[[B]]`` -> "B", ``[[C]]`` -> "tie".

    Several different labels in one reply are ambiguous and give None.
    """
    if not text:
        return None
    labels = {_PAIR_MEANING[label] for label in _PAIR_LABEL.findall(text)}
    return labels.pop() if len(labels) == 1 else None


_FOUR_LABEL = re.compile(r"\[\[\s*(A|B|BOTH\s+GOOD|BOTH\s+BAD)\s*\]\]", re.IGNORECASE)


def parse_four_label(text: str | None) -> str | None:
    """Read the four-label pairwise verdict: ``[[A]]`` -> "A", ``[[B]]`` -> "B", ``[[BOTH GOOD]]`` ->
    "both good", ``[[BOTH BAD]]`` -> "both bad". Several different labels in one reply give None."""
    if not text:
        return None
    labels = {" ".join(label.split()).upper() for label in _FOUR_LABEL.findall(text)}
    if len(labels) != 1:
        return None
    label = labels.pop()
    return label if label in ("A", "B") else label.lower()


_ARENA_LABEL = re.compile(r"\[\[([AB<>=]+)\]\]")
ARENA_VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")


def parse_arena(text: str | None) -> str | None:
    """Read an Arena-Hard verdict label (``A>>B``, ``A>B``, ``A=B``, ``B>A``, ``B>>A``).

    As in arena-hard v0.1, several distinct labels give None; so does a label outside the five.
    """
    if not text:
        return None
    labels = set(_ARENA_LABEL.findall(text))
    if len(labels) != 1:
        return None
    label = labels.pop()
    return label if label in ARENA_VERDICTS else None


_ALPACA_LABEL = re.compile(r"^\s*[\"'`]?\s*(m|M)\b")


def parse_alpaca_choice(text: str | None) -> int | None:
    """Read the AlpacaEval classifier answer: "m" -> 1 (output_1 better), "M" -> 2; anything else -> None."""
    if not text:
        return None
    match = _ALPACA_LABEL.match(text)
    if not match:
        return None
    return 1 if match.group(1) == "m" else 2


def alpaca_preference_from_logprobs(top_logprobs: dict[str, float]) -> float | None:
    """AlpacaEval's weighted preference in [1, 2] from the first token's top log-probabilities.

    P(output_1) = p(m) / (p(m) + p(M)); preference = 2 - P(output_1). Neither token present -> None.
    """
    import math

    p_m = sum(math.exp(lp) for tok, lp in top_logprobs.items() if tok.strip() == "m")
    p_big = sum(math.exp(lp) for tok, lp in top_logprobs.items() if tok.strip() == "M")
    if p_m + p_big == 0:
        return None
    return 2.0 - p_m / (p_m + p_big)
