"""Judge prompts of each benchmark, built exactly as their reference implementations build them.

Every judge row records ``template_hash`` (a digest of the templates used), so scores from different
prompt versions are never mixed silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

from eval import DATA_DIR
from janus_jax.jsonio import read_jsonl

Message = dict[str, str]

# Sampling of the evaluated model (Janus inference defaults) and of the Multifaceted Bench judge.
JANUS_SAMPLING = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 1024}
JANUS_REPETITION_PENALTY = 1.03  # sent only to open-model servers (vLLM, janus-serve), which accept it
MULTIFACETED_JUDGE_SAMPLING = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 1024}
MT_BENCH_JUDGE_SAMPLING = {"temperature": 0.0, "max_tokens": 2048}
PAIRWISE_JUDGE_SAMPLING = {"temperature": 0.0, "max_tokens": 2048}
ARENA_JUDGE_SAMPLING = {"temperature": 0.0, "max_tokens": 4096}
ARENA_GENERATION = {"temperature": 0.0, "max_tokens": 4096}
ALPACA_JUDGE_SAMPLING = {"temperature": 1.0, "max_tokens": 1}
RTP_GENERATION = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 20, "n": 25}


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Multifaceted Bench (Janus utils/prompts.py)
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def janus_prompts() -> dict:
    return json.loads((DATA_DIR / "janus" / "prompts.json").read_text())


def absolute_messages(prompt: str, response: str, reference_answer: str, rubric: dict) -> list[Message]:
    """The paper's absolute-grading call: the user prompt alone is the instruction, the rubric as indented JSON."""
    grading = janus_prompts()["absolute_grading"]
    user = grading["user_template"].format(
        instruction=prompt, response=response, reference_answer=reference_answer,
        score_rubric=json.dumps(rubric, indent=4),
    ).strip()
    return [{"role": "system", "content": grading["system"]}, {"role": "user", "content": user}]


def absolute_template_hash() -> str:
    grading = janus_prompts()["absolute_grading"]
    return digest([grading["system"], grading["user_template"]])


# ----------------------------------------------------------------------------------------------------------
# FastChat judge prompts: MT-Bench single grading and pair-v2 pairwise
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def fastchat_prompts() -> dict[str, dict]:
    return {row["name"]: row for row in read_jsonl(DATA_DIR / "mt_bench" / "judge_prompts.jsonl")}


def mt_bench_judge_name(category: str, turn: int, needs_reference: bool) -> str:
    base = "single-math-v1" if needs_reference else "single-v1"
    return base + ("-multi-turn" if turn == 2 else "")


def mt_bench_messages(
    questions: list[str], answers: list[str], references: list[str], turn: int, needs_reference: bool
) -> tuple[str, list[Message]]:
    """FastChat single-answer grading of turn 1 or turn 2 (the multi-turn prompt shows the dialogue)."""
    name = mt_bench_judge_name("", turn, needs_reference)
    template = fastchat_prompts()[name]
    fields: dict[str, str] = {}
    if turn == 1:
        fields.update(question=questions[0], answer=answers[0])
        if needs_reference:
            fields["ref_answer_1"] = references[0]
    else:
        fields.update(question_1=questions[0], question_2=questions[1], answer_1=answers[0], answer_2=answers[1])
        if needs_reference:
            fields.update(ref_answer_1=references[0], ref_answer_2=references[1])
    user = template["prompt_template"].format(**fields)
    return name, [{"role": "system", "content": template["system_prompt"]}, {"role": "user", "content": user}]


def pairwise_messages(system: str, prompt: str, answer_a: str, answer_b: str) -> list[Message]:
    """FastChat pair-v2 judging; the question shown to the judge carries the item's system message."""
    template = fastchat_prompts()["pair-v2"]
    question = f"{system}\n{prompt}".strip()
    user = template["prompt_template"].format(question=question, answer_a=answer_a, answer_b=answer_b)
    return [{"role": "system", "content": template["system_prompt"]}, {"role": "user", "content": user}]


def fastchat_template_hash(names: list[str]) -> str:
    prompts = fastchat_prompts()
    return digest([[prompts[n]["system_prompt"], prompts[n]["prompt_template"]] for n in names])


# ----------------------------------------------------------------------------------------------------------
# Arena-Hard-Auto v0.1
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def arena_config() -> dict[str, str]:
    """System prompt and template from arena-hard's judge_config.yaml (read without a YAML dependency)."""
    text = (DATA_DIR / "arena_hard_v0.1" / "judge_config.yaml").read_text()
    system = re.search(r'^system_prompt: (".*")\s*$', text, re.MULTILINE).group(1)
    template = re.search(r"^prompt_template: \[(\".*\")\]\s*$", text, re.MULTILINE).group(1)
    judge = re.search(r"^judge_model: (\S+)", text, re.MULTILINE).group(1)
    baseline = re.search(r"^baseline_model: (\S+)", text, re.MULTILINE).group(1)
    return {"system": json.loads(system), "template": json.loads(template), "judge": judge, "baseline": baseline}


def arena_messages(question: str, answer_a: str, answer_b: str) -> list[Message]:
    cfg = arena_config()
    user = cfg["template"].format(question_1=question, answer_1=answer_a, answer_2=answer_b)
    return [{"role": "system", "content": cfg["system"]}, {"role": "user", "content": user}]


def arena_template_hash() -> str:
    cfg = arena_config()
    return digest([cfg["system"], cfg["template"]])


# ----------------------------------------------------------------------------------------------------------
# AlpacaEval 2.0 (weighted_alpaca_eval_gpt4_turbo's prompt, written in ChatML in the original file)
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def alpaca_template() -> tuple[str, str]:
    text = (DATA_DIR / "alpaca_eval" / "alpaca_eval_clf.txt").read_text()
    parts = re.findall(r"<\|im_start\|>(system|user)\n(.*?)\n?<\|im_end\|>", text, re.DOTALL)
    roles = dict(parts)
    return roles["system"], roles["user"]


def alpaca_messages(instruction: str, output_1: str, output_2: str) -> list[Message]:
    system, user = alpaca_template()
    # The template has literal braces (JSON-like); substitute only the three fields.
    filled = user.replace("{instruction}", instruction).replace("{output_1}", output_1)
    filled = filled.replace("{output_2}", output_2)
    return [{"role": "system", "content": system}, {"role": "user", "content": filled}]


def alpaca_template_hash() -> str:
    return digest(list(alpaca_template()))
