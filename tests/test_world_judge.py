"""The rule-based judge: agrees with the independent checker, speaks the OpenAI protocol, refuses bad requests."""

import asyncio
import json
import random
import urllib.error
import urllib.request

import pytest

from data_gen.world import WorldConfig, build_world
from data_gen.world.checker import satisfies
from data_gen.world.generate import rubric
from data_gen.world.records import Record
from eval.parsing import parse_absolute
from eval.prompts import absolute_messages
from eval.rule_judge import Unreadable, judge_reply, serving
from janus_jax.llm import LLMClient


def _perturbations(reply: str, rng: random.Random) -> list[str]:
    """Replies a half-trained model might give: truncated, re-formatted, with lines dropped or numbers off."""
    lines = reply.split("\n")
    return [reply, reply[: len(reply) // 2], reply.replace("\n", " "), "\n".join(lines[:-1]),
            reply.replace("2.", "3."), reply.replace("- ", "* "), reply + "\nCaution: be careful.",
            " ".join(reply.split()[:12]), reply.replace("(", "").replace(")", ""), "", "-}"]


def test_judge_scores_agree_with_the_independent_checker():
    world = build_world(WorldConfig(train_instructions=30, heldout_instructions=4))
    rows = world["sft.jsonl"]
    rng = random.Random(0)
    agree = total = 0
    scores = set()
    for row in rows:
        record = Record(**row["record"])
        other = rng.choice(rows)["output"]
        for reply in [*_perturbations(row["output"], rng), other]:
            for v in row["value_ids"]:
                _, score = parse_absolute(judge_reply(absolute_messages(row["prompt"], reply, row["output"],
                                                                        rubric(v))))
                scores.add(score)
                total += 1
                agree += (score == 5) == satisfies(v, reply, record)
    assert agree == total
    assert scores == {1, 2, 3, 4, 5}  # graded, not pass/fail


async def _chat_once(client, messages):
    try:
        return await client.chat(messages, temperature=1.0, top_p=0.9, max_tokens=1024)
    finally:
        await client.aclose()


def test_judge_over_http_with_the_project_client_and_refusals():
    row = build_world(WorldConfig(train_instructions=2, heldout_instructions=1))["bench.jsonl"][0]
    messages = absolute_messages(row["prompt"], row["reference_answer"], row["reference_answer"],
                                 rubric(row["value_ids"][0]))
    with serving() as judge:
        client = LLMClient("rule-judge", judge.base_url, api_key_env="NO_SUCH_KEY_VAR")
        result = asyncio.run(_chat_once(client, messages))
        assert parse_absolute(result.texts[0])[1] == 5
        assert result.texts[0].startswith("Feedback: ") and "[RESULT] 5" in result.texts[0]
        request = urllib.request.Request(f"{judge.base_url}/chat/completions", method="POST",
                                         data=json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 400
        assert "not the Multifaceted Bench absolute-grading prompt" in json.loads(err.value.read())["error"]["message"]
        assert (judge.answered, judge.failures) == (1, 1)


def test_unreadable_requests_name_the_problem():
    good = absolute_messages("name: X\nrisk: none", "reply", "ref", rubric("safety=plain"))
    assert judge_reply(good).endswith("[RESULT] 5")
    no_id = absolute_messages("name: X", "reply", "ref", {"criteria": "Is it good?", "score_descriptions": {}})
    with pytest.raises(Unreadable, match="name no value id"):
        judge_reply(no_id)
    with pytest.raises(Unreadable, match="no 'risk:' line"):
        judge_reply(absolute_messages("name: X", "reply", "ref", rubric("safety=caution")))
    with pytest.raises(Unreadable, match="non-empty list"):
        judge_reply("not messages")
