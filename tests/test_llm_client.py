"""janus_jax.llm against a scripted OpenAI-compatible server on 127.0.0.1 (real HTTP, real openai client)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from logprob_openai_server import LogprobOpenAIServer, Tokens
from scripted_openai_server import Call, Fault, Reply, ScriptedOpenAIServer

from janus_jax.llm import ChatRequest, LLMClient, ResponseCache, run_batch, run_many
from janus_jax.llm.pricing import price_for
from janus_jax.llm.ratelimit import RateLimiter

REPO = Path(__file__).resolve().parent.parent
USER = [{"role": "user", "content": "hello"}]


def ask(client: LLMClient, messages=USER, **options):
    async def go():
        try:
            return await client.chat(messages, **options)
        finally:
            await client.aclose()

    return asyncio.run(go())


def fast_client(server: ScriptedOpenAIServer, tmp_path: Path, **kwargs) -> LLMClient:
    options = {"cache_path": tmp_path / "cache.jsonl", "timeout_s": 0.5, "max_retries": 3, "backoff_base_s": 0.02}
    return LLMClient("scripted", server.base_url, **{**options, **kwargs})


@pytest.mark.parametrize(
    "fault",
    [
        Fault.rate_limit(0.2),
        Fault.server_error(502),
        Fault.hang(1.0),
        Fault.truncated_json(),
        Fault.invalid_json(),
        Fault.disconnect(),
    ],
    ids=["429", "502", "timeout", "truncated", "invalid_json", "disconnect"],
)
def test_transient_faults_are_retried(tmp_path, fault):
    with ScriptedOpenAIServer(lambda call: fault if call.attempt == 0 else "fine") as server:
        client = fast_client(server, tmp_path)
        start = time.monotonic()
        result = ask(client)
        elapsed = time.monotonic() - start
    assert result.ok and result.text == "fine" and not result.cached
    assert client.stats.retries == 1 and client.stats.calls == 1 and client.stats.failed == 0
    if fault.kind == "status" and fault.status == 429:
        assert elapsed >= 0.2  # Retry-After honoured


def test_failures_come_back_as_results_with_reasons(tmp_path):
    def rules(call: Call):
        if "bad request" in call.user:
            return Fault.status_code(400, message="messages must not be empty")
        return Fault.server_error(503)

    with ScriptedOpenAIServer(rules) as server:
        client = fast_client(server, tmp_path, max_retries=2)
        results = run_many(
            client,
            [
                ChatRequest([{"role": "user", "content": "bad request"}]),
                ChatRequest([{"role": "user", "content": "overloaded"}]),
            ],
            progress=False,
        )
        assert server.call_count == 1 + 3  # no retry for a 400; 1 + 2 retries for a 503
    assert results[0].error == "http_400: HTTP 400: messages must not be empty"
    assert results[1].error == "server_error: HTTP 503: The server had an error (after 3 tries)"
    assert client.stats.failures == {"http_400": 1, "server_error": 1}
    assert [f["reason"] for f in client.stats.failure_log] == [r.error for r in results]
    assert len(ResponseCache(tmp_path / "cache.jsonl")) == 0  # failures are not cached: a rerun tries again


def test_validate_reasks_within_bound_and_the_cache_replays_it(tmp_path):
    replies = {0: "not json", 1: "", 2: '{"score": 4}'}

    def rules(call: Call):
        return replies.get(call.attempt, '{"score": 5}')

    with ScriptedOpenAIServer(rules) as server:
        result = ask(fast_client(server, tmp_path), validate=lambda text: json.loads(text)["score"])
        assert result.ok and result.value == 4 and result.attempts == 3 and server.call_count == 3
        again = fast_client(server, tmp_path)  # a new process: everything from the on-disk cache
        replay = ask(again, validate=lambda text: json.loads(text)["score"])
        assert server.call_count == 3
    assert replay.value == 4 and replay.cached and again.stats.cache_hits == 3 and again.stats.calls == 0


def test_unparseable_replies_end_as_failures(tmp_path):
    with ScriptedOpenAIServer(lambda call: Reply("cut off", finish_reason="length")) as server:
        truncated = ask(fast_client(server, tmp_path), accept_truncated=False, max_reasks=1)
        assert server.call_count == 2
        invalid = ask(fast_client(server, tmp_path), validate=json.loads, max_reasks=0)
    assert truncated.error == "truncated: the reply hit max_tokens (after 2 attempts)"
    assert invalid.error.startswith("invalid_reply: Expecting value")


def test_cache_key_covers_sampling_parameters_and_survives_a_torn_line(tmp_path):
    with ScriptedOpenAIServer(lambda call: f"t={call.body['temperature']}") as server:
        client = fast_client(server, tmp_path)
        assert ask(client, temperature=0.5).text == "t=0.5"
        assert ask(client, temperature=1).text == "t=1.0"
        assert ask(client, temperature=1.0).cached  # 1 and 1.0 are one key
        client.close()
        with open(tmp_path / "cache.jsonl", "ab") as f:
            f.write(b'{"key": "abc')  # a write cut short by a kill
        reopened = fast_client(server, tmp_path)
        assert reopened.cache.skipped_lines == 1 and len(reopened.cache) == 2
        assert ask(reopened, temperature=0.7).text == "t=0.7"
        reopened.close()
    assert len(ResponseCache(tmp_path / "cache.jsonl")) == 3


def test_api_key_never_reaches_results_stats_or_cache(tmp_path, monkeypatch):
    secret = "sk-test-DO-NOT-LEAK-0123456789"
    monkeypatch.setenv("JANUS_TEST_KEY", secret)
    with ScriptedOpenAIServer(
        lambda call: Fault.status_code(
            401, message=f"Incorrect API key provided: {secret}" if call.attempt == 0 else "x"
        )
    ) as server:
        client = fast_client(server, tmp_path, api_key_env="JANUS_TEST_KEY")
        result = ask(client)
        assert server.auth_headers[-1] == f"Bearer {secret}"  # it is sent, and only there
    assert secret not in result.error and "***" in result.error
    assert secret not in repr(client) and secret not in json.dumps(client.stats.as_dict())
    assert secret not in json.dumps(client.stats.failure_log)
    assert secret not in (tmp_path / "cache.jsonl").read_text()


def test_missing_key_for_openai_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("JANUS_TEST_MISSING", raising=False)
    with pytest.raises(ValueError, match="set the environment variable JANUS_TEST_MISSING"):
        LLMClient("gpt-4o", api_key_env="JANUS_TEST_MISSING")


def test_tokens_and_cost_are_accounted(tmp_path):
    reply = Reply("priced", prompt_tokens=1000, completion_tokens=500)
    with ScriptedOpenAIServer(lambda call: reply) as server:
        client = LLMClient("gpt-4-0125-preview", server.base_url, cache_path=tmp_path / "c.jsonl")
        results = run_many(
            client, [ChatRequest([{"role": "user", "content": str(i)}]) for i in range(4)], progress=False
        )
        again = run_many(client, [ChatRequest([{"role": "user", "content": "0"}])], progress=False)
    assert all(r.cost_usd == pytest.approx((1000 * 10 + 500 * 30) / 1e6) for r in results)
    assert again[0].cached and again[0].cost_usd == 0
    stats = client.stats
    assert (stats.calls, stats.cache_hits, stats.prompt_tokens, stats.completion_tokens) == (4, 1, 4000, 2000)
    assert stats.cost_usd == pytest.approx(4 * 0.025) and not stats.unpriced
    assert price_for("gpt-4o-mini-2024-07-18") == price_for("gpt-4o-mini") != price_for("gpt-4o")
    assert price_for("my-local-model") is None


def test_vendor_extras_reach_the_server_and_the_key(tmp_path):
    with ScriptedOpenAIServer(lambda call: f"rp={call.body.get('repetition_penalty')}") as server:
        client = fast_client(server, tmp_path)
        assert ask(client, extra_body={"repetition_penalty": 1.03}).text == "rp=1.03"
        assert ask(client, extra_body={"repetition_penalty": 1.1}).text == "rp=1.1"


def test_concurrency_is_bounded(tmp_path):
    in_flight, peak = [0], [0]

    def rules(call: Call):
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        in_flight[0] -= 1
        return "ok"

    with ScriptedOpenAIServer(rules) as server:
        client = fast_client(server, tmp_path, max_concurrency=3)
        results = run_many(
            client, [ChatRequest([{"role": "user", "content": str(i)}]) for i in range(12)], progress=False
        )
    assert all(r.ok for r in results) and peak[0] == 3


def test_rate_limiter_spreads_requests():
    async def go():
        limiter = RateLimiter(requests_per_minute=600)  # 10/s, bursts of 100
        start = time.monotonic()
        for _ in range(105):
            await limiter.acquire(1)
        return time.monotonic() - start

    assert 0.4 <= asyncio.run(go()) < 2.0  # the 5 requests past the burst wait ~0.5 s


def test_batch_api_merges_results_into_the_cache(tmp_path):
    def rules(call: Call):
        return "not json" if "flaky" in call.user and call.attempt == 0 else '{"ok": true}'

    with ScriptedOpenAIServer(rules, batch_polls_until_done=2) as server:
        client = fast_client(server, tmp_path)
        requests = [
            ChatRequest([{"role": "user", "content": text}], {"validate": json.loads}) for text in ("a", "b", "flaky")
        ]

        async def go():
            client.defer_to_batch = True
            rounds = 0
            while True:
                results = await client.chat_many(requests, progress=False)
                if not any(r.deferred for r in results):
                    return results, rounds
                rounds += 1
                await run_batch(client, tmp_path / "batches", poll_interval_s=0.01)

        results, rounds = asyncio.run(go())
        assert server.requests["POST /v1/chat/completions"] == 0
        assert server.requests["POST /v1/batches"] == 2  # the re-ask of "flaky" needs a second round
    assert rounds == 2 and all(r.ok for r in results) and results[2].attempts == 2
    states = sorted((tmp_path / "batches").glob("batch-*.json"))
    assert len(states) == 2 and all(json.loads(p.read_text())["merged"] for p in states)


JUDGE = [{"m": -0.105, "M": -2.303, "x": -6.0}, {"\n": -0.01}]  # the judge's first token: m (90%) or M (10%)


def test_logprobs_come_back_over_http_and_are_cached_like_the_text(tmp_path):
    with LogprobOpenAIServer(lambda call: Tokens(JUDGE)) as server:
        result = ask(fast_client(server, tmp_path), logprobs=True, top_logprobs=2, max_tokens=1)
        assert server.calls[-1].body["logprobs"] is True and server.calls[-1].body["top_logprobs"] == 2
        assert result.ok and result.text == "m\n"
        assert result.top_logprobs() == {"m": -0.105, "M": -2.303}  # the 2 most likely, as asked
        assert result.top_logprobs(position=1) == {"\n": -0.01} and result.top_logprobs(position=2) == {}
        assert [t["token"] for t in result.logprobs[0]] == ["m", "\n"] and result.logprobs[0][0]["logprob"] == -0.105

        again = fast_client(server, tmp_path)  # a new process: the log-probabilities come from the cache
        replay = ask(again, logprobs=True, top_logprobs=2, max_tokens=1)
        assert server.call_count == 1 and replay.cached and replay.logprobs == result.logprobs

        wider = ask(fast_client(server, tmp_path), logprobs=True, top_logprobs=3, max_tokens=1)
        plain = ask(fast_client(server, tmp_path), max_tokens=1)
        assert server.call_count == 3  # top_logprobs and logprobs are part of the key
    assert set(wider.top_logprobs()) == {"m", "M", "x"}
    assert plain.text == "m\n" and plain.logprobs is None and "logprobs" not in server.calls[-1].body
    with pytest.raises(ValueError, match="no log-probabilities"):
        plain.top_logprobs()


def test_a_server_without_logprobs_is_a_clear_failure_not_retried(tmp_path):
    with ScriptedOpenAIServer(lambda call: "m") as server:  # answers, but ignores logprobs
        result = ask(fast_client(server, tmp_path), logprobs=True, top_logprobs=5)
        with pytest.raises(ValueError, match="top_logprobs needs logprobs=True"):
            ask(fast_client(server, tmp_path), top_logprobs=5)
        assert server.call_count == 1
    assert result.error == "malformed_response: log-probabilities were requested but choice 0 has none"
    assert len(ResponseCache(tmp_path / "cache.jsonl")) == 0


def test_batch_api_keeps_logprobs(tmp_path):
    with LogprobOpenAIServer(lambda call: Tokens(JUDGE), batch_polls_until_done=1) as server:
        client = fast_client(server, tmp_path)
        request = ChatRequest(USER, {"logprobs": True, "top_logprobs": 2})

        async def go():
            client.defer_to_batch = True
            first = await client.chat_many([request], progress=False)
            await run_batch(client, tmp_path / "batches", poll_interval_s=0.01)
            return first, await client.chat_many([request], progress=False)

        first, (second,) = asyncio.run(go())
        assert server.requests["POST /v1/chat/completions"] == 0
    assert first[0].deferred and not client.batch_queue.pending
    assert second.cached and second.top_logprobs() == {"m": -0.105, "M": -2.303}


def test_throughput_bench_reports_calls_per_second():
    """A short run of bench/llm_client.py checks what the bench reports, not how fast this machine is:
    the 90%-of-ideal target is measured by `make bench`, where the ratio is printed beside its reference."""
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "llm_client.py"),
            "--calls",
            "256",
            "--concurrency",
            "64",
            "--latency-s",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ideal_calls_per_s"] == 320.0
    assert result["calls_per_s"] > 0 and result["efficiency"] == pytest.approx(
        result["calls_per_s"] / result["ideal_calls_per_s"], abs=0.01
    ), result
    assert result["client_stats"]["calls"] == 256 + 64 and result["client_stats"]["failed"] == 0
