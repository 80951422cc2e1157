"""Pairwise judging of a model against a baseline on the Multifaceted Bench items, in both orders.

Two protocols (``--protocol``):

- ``four-label`` (default, the paper's): the judge sees the item's system message and the user prompt and
  says, for the two responses, which of four things holds: only A follows the system message's preferences
  and answers well (``[[A]]``), only B does / B is clearly better (``[[B]]``), both do (``[[BOTH GOOD]]``),
  neither does (``[[BOTH BAD]]``). Game 1 shows the model as A, game 2 the baseline as A. **Orders that
  disagree**: each order is half a vote, so an item whose two games say "model wins" and "both good"
  counts 0.5 win + 0.5 both good; the four shares always sum to 100%, and no disagreement is turned into a
  tie. tie+win = wins + both good, as the paper defines it (its 75.2 / 72.4 / 66.4).
- ``pair-v2`` (FastChat's A / B / tie prompt): the two verdicts agree -> that outcome; they disagree -> a
  tie (FastChat's rule), so tie+win counts disagreements as ties.

Both report position consistency (share of items whose two games agree) and bootstrap intervals over
prompts.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from eval.benches.common import Benchmark, Item, JudgeParser, Loaded, Option, RunSettings, judge_failures
from eval.benches.multifaceted import BENCH_FILE, load_multifaceted
from eval.engine import JudgeJob
from eval.parsing import parse_four_label, parse_pairwise
from eval.prompts import PAIRWISE_JUDGE_SAMPLING, digest, fastchat_template_hash, pairwise_messages
from eval.source_map import map_sources, normalize
from eval.stats import bootstrap_mean
from janus_jax.jsonio import read_records

KEY_FIELDS = ("id", "game")
BASELINE = Option("baseline", None, "the baseline's answers (e.g. its run's responses.jsonl); required",
                  metavar="FILE")
PROTOCOL = Option("protocol", "four-label", "four-label (the paper's labels) or pair-v2 (FastChat A/B/tie)",
                  choices=("four-label", "pair-v2"))
FOUR_LABELS = ("win", "both good", "both bad", "loss")  # from the evaluated model's side

FOUR_LABEL_SYSTEM = (
    "Please act as an impartial judge and evaluate two AI assistants' responses to the same request. The request "
    "has a system message that states the user's preferences, followed by the user's message. For each response, "
    "decide whether it follows the preferences in the system message and answers the user's message well "
    "(helpful, accurate, relevant). Begin with a short explanation for each response. Avoid any position bias: "
    "the order in which the responses are shown must not influence your decision, and neither must their "
    "length or the assistants' names. Then output your final verdict by strictly following this format: "
    '"[[A]]" if only assistant A follows the preferences and answers well, or A does so clearly better; '
    '"[[B]]" if only assistant B does, or B does so clearly better; "[[BOTH GOOD]]" if both do, about '
    'equally well; "[[BOTH BAD]]" if neither does.'
)
FOUR_LABEL_TEMPLATE = (
    "[System Message]\n{system}\n\n[User Message]\n{prompt}\n\n"
    "[The Start of Assistant A's Response]\n{answer_a}\n[The End of Assistant A's Response]\n\n"
    "[The Start of Assistant B's Response]\n{answer_b}\n[The End of Assistant B's Response]"
)


def four_label_messages(system: str, prompt: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    user = FOUR_LABEL_TEMPLATE.format(system=system, prompt=prompt, answer_a=answer_a, answer_b=answer_b)
    return [{"role": "system", "content": FOUR_LABEL_SYSTEM}, {"role": "user", "content": user}]


def template_hash(settings: RunSettings) -> str:
    if settings.get(PROTOCOL) == "pair-v2":
        return fastchat_template_hash(["pair-v2"])
    return digest([FOUR_LABEL_SYSTEM, FOUR_LABEL_TEMPLATE])


def TEMPLATE_HASH() -> str:  # noqa: N802 - pair-v2's hash, as before the four-label protocol existed
    return fastchat_template_hash(["pair-v2"])


def baseline_name(path: str) -> str:
    """A run's responses.jsonl is named after its run directory; any other file after itself."""
    return Path(path).parent.name if Path(path).name == "responses.jsonl" else Path(path).stem


def read_baseline(path: str, items: list[Item]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Baseline answers by id; rows for other prompts (unknown id, or a ``prompt`` that differs) are reported."""
    by_id = {it.id: it for it in items}
    baseline, unknown, mismatched = {}, [], []
    for row_no, row in enumerate(read_records(path)):
        if "id" not in row:
            raise ValueError(f"{path}: row {row_no} has no 'id' field")
        rid = str(row["id"])
        answers = row.get("answers") or [row.get("response", row.get("output"))]
        if rid not in by_id:
            unknown.append(rid)
            continue
        if row.get("prompt") and normalize(row["prompt"]) != normalize(by_id[rid].prompt):
            mismatched.append(rid)
            continue
        if answers and isinstance(answers[0], str) and answers[0].strip():
            baseline[rid] = answers[0]
    problems = {}
    if unknown:
        problems["baseline_unknown_ids"] = unknown
    if mismatched:
        problems["baseline_other_prompt"] = mismatched
    missing = [it.id for it in items if it.id not in baseline and it.id not in mismatched]
    if missing:
        problems["baseline_missing"] = missing
    return baseline, problems


def load(settings: RunSettings, limit: int | None) -> Loaded:
    """Multifaceted Bench items, each with the baseline's answer in ``meta['baseline']``."""
    path = settings.get(BASELINE)
    if path is None:
        raise ValueError("pairwise needs --baseline FILE (the baseline's answers, e.g. its responses.jsonl)")
    loaded = load_multifaceted(settings.get(BENCH_FILE), limit)
    baseline, problems = read_baseline(path, loaded.items)
    for it in loaded.items:
        if it.id in baseline:
            it.meta["baseline"] = baseline[it.id]
    loaded.problems.update(problems)
    return loaded


def item_snapshots(items: list[Item]) -> list[dict[str, Any]]:
    mapping = map_sources([(it.id, it.prompt, it.category) for it in items])
    return [{"id": it.id, "cluster": normalize(it.prompt), "subset": mapping.subset_of[it.id]} for it in items]


def generation_options(item: Item, settings: RunSettings) -> dict[str, Any]:
    return settings.janus_sampling()


def judge_jobs(items: list[Item], answers: dict[str, list], settings: RunSettings) -> list[JudgeJob]:
    four = settings.get(PROTOCOL) == "four-label"
    jobs = []
    for it in items:
        if it.id not in answers or "baseline" not in it.meta:
            continue
        model, base = answers[it.id][0], it.meta["baseline"]
        for game, (a, b) in enumerate(((model, base), (base, model)), start=1):
            messages = (four_label_messages(it.system, it.prompt, a, b) if four
                        else pairwise_messages(it.system, it.prompt, a, b))
            jobs.append(JudgeJob({"id": it.id, "game": game}, messages, dict(PAIRWISE_JUDGE_SAMPLING),
                                 "four_label" if four else "pairwise", {"model_is": "A" if game == 1 else "B"}))
    return jobs


def model_outcome(verdict: str, model_is: str) -> str:
    """One game's outcome for the evaluated model: 'win' / 'loss', or the verdict itself when it names no
    position ('tie' for pair-v2, 'both good' / 'both bad' for the four labels)."""
    if verdict not in ("A", "B"):
        return verdict
    return "win" if verdict == model_is else "loss"


def combine(outcome_1: str, outcome_2: str) -> str:
    """pair-v2: both games agree -> that outcome; otherwise a tie."""
    return outcome_1 if outcome_1 == outcome_2 else "tie"


def four_label_shares(outcome_1: str, outcome_2: str) -> dict[str, float]:
    """Four-label: each game is half a vote; the item's share of each label (sums to 1)."""
    shares = dict.fromkeys(FOUR_LABELS, 0.0)
    shares[outcome_1] += 0.5
    shares[outcome_2] += 0.5
    return shares


def protocol_of(judgments: list[dict], settings: RunSettings) -> str:
    """The protocol the stored judgments were made with (their parser), else the settings' (run directories
    from before the four-label protocol were pair-v2 and record no protocol)."""
    parsers = {row.get("parser") for row in judgments}
    if parsers == {"pairwise"}:
        return "pair-v2"
    if parsers == {"four_label"}:
        return "four-label"
    return settings.get(PROTOCOL)


def aggregate(snapshots: list[dict], judgments: list[dict], settings: RunSettings,
              responses: dict | None = None) -> dict[str, Any]:
    meta = {s["id"]: s for s in snapshots}
    protocol = protocol_of(judgments, settings)
    games: dict[str, dict[int, str]] = defaultdict(dict)
    for row in judgments:
        if row.get("value") is not None and row["id"] in meta:
            games[row["id"]][int(row["game"])] = model_outcome(row["value"], row["model_is"])
    ids = [i for i in meta if len(games.get(i, {})) == 2]
    clusters = [meta[i]["cluster"] for i in ids]

    def rate(value_of) -> dict:
        return bootstrap_mean([value_of(i) for i in ids], clusters, settings.rounds, settings.seed,
                              settings.level, scale=100.0).to_dict()

    problems = judge_failures(judgments)
    problems["incomplete_pair"] = [i for i in meta if i not in ids and i in games]
    consistency = rate(lambda i: float(games[i][1] == games[i][2]))
    base = baseline_name(settings.get(BASELINE)) if settings.get(BASELINE) else \
        settings.options.get("baseline_name", "baseline")  # run directories from before --baseline was an option
    if protocol == "pair-v2":
        outcome = {i: combine(games[i][1], games[i][2]) for i in ids}
        rates = {kind: rate(lambda i, kind=kind: float(outcome[i] == kind)) for kind in ("win", "tie", "loss")}
        rates["tie+win"] = rate(lambda i: float(outcome[i] in ("win", "tie")))
        counts = {"wins": sum(o == "win" for o in outcome.values()), "ties": sum(o == "tie" for o in outcome.values()),
                  "losses": sum(o == "loss" for o in outcome.values())}
    else:
        shares = {i: four_label_shares(games[i][1], games[i][2]) for i in ids}
        rates = {kind: rate(lambda i, kind=kind: shares[i][kind]) for kind in FOUR_LABELS}
        rates["tie+win"] = rate(lambda i: shares[i]["win"] + shares[i]["both good"])
        counts = {f"games_{kind.replace(' ', '_')}": sum(list(g.values()).count(kind) for g in games.values())
                  for kind in FOUR_LABELS}
    rates["position_consistency"] = consistency
    return {
        "metric": "tie+win rate (%)",
        "protocol": protocol,
        "baseline": base,
        "overall": rates["tie+win"],
        "rates": rates,
        "counts": {"items": len(snapshots), "judged_items": len(ids), **counts},
        "problems": {k: v for k, v in problems.items() if v},
    }


def report_lines(scores: dict) -> list[str]:
    if scores.get("protocol") == "pair-v2":
        return ["Protocol: FastChat pair-v2 (A / B / tie); games that disagree count as a tie."]
    return ["Protocol: the paper's four labels (model wins / both good / both bad / baseline wins), both orders, "
            "each order half a vote; tie+win = wins + both good."]


def plot(runs: list[dict], out_dir: Path) -> list[str]:
    from eval.plots import share_plot

    written = []
    for protocol, kinds in (("pair-v2", ("win", "tie", "loss")), ("four-label", FOUR_LABELS)):
        selected = [s for s in runs if s.get("rates") and s.get("protocol", "pair-v2") == protocol]
        if not selected:
            continue
        name = "win_tie_loss.png" if protocol == "pair-v2" else "pairwise_four_labels.png"
        rows = [(f"{s['model']} vs {s.get('baseline', 'baseline')}", {k: s["rates"][k]["value"] for k in kinds})
                for s in selected]
        note = "disagreement counts as a tie" if protocol == "pair-v2" else "each order half a vote"
        share_plot(rows, kinds, "Pairwise outcome", f"% of items (judged in both orders; {note})", out_dir / name)
        written.append(name)
    return written


BENCHMARK = Benchmark(
    name="pairwise",
    title="Pairwise",
    load=load,
    key_fields=KEY_FIELDS,
    item_snapshots=item_snapshots,
    generation_options=generation_options,
    judge_jobs=judge_jobs,
    parsers={"pairwise": JudgeParser(parse_pairwise), "four_label": JudgeParser(parse_four_label)},
    template_hash=template_hash,
    aggregate=aggregate,
    options=(BENCH_FILE, BASELINE, PROTOCOL),
    digits=1,
    table_columns=lambda runs: [("Pairwise tie+win (%)", lambda s: s.get("overall"))],
    report_lines=report_lines,
    plot=plot,
)
