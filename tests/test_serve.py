"""janus-serve over real HTTP on 127.0.0.1, driven by the official openai client and raw httpx."""

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from flax import nnx

from janus_jax.model import Mistral, MistralConfig
from janus_jax.prompts import render_prompt_ids
from janus_jax.sample import Sampler, SamplingParams
from janus_jax.serve.chat import MessageError, render_chat_ids
from janus_jax.serve.cli import build_server
from janus_jax.serve.loading import LoadedModel
from janus_jax.tokenizer import load_tokenizer

KEY = "test-key-123"
MODEL = "janus-tiny"
CONTEXT = 256


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model():
    return Mistral(MistralConfig.tiny(max_position_embeddings=CONTEXT), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def server(model, tokenizer):
    loaded = LoadedModel(model=model, tokenizer=tokenizer, name=MODEL)
    srv = build_server(
        loaded, port=0, api_key=KEY, max_tokens=64, max_n=8, max_batch=32, max_body_bytes=64 * 1024, chunk_tokens=4
    )
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.engine.close()
    srv.server_close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def chat(client, content="Write a haiku about the sea.", **kw):
    kw.setdefault("max_tokens", 16)
    messages = [{"role": "system", "content": "You are a terse poet."}, {"role": "user", "content": content}]
    return client.chat.completions.create(model=MODEL, messages=messages, **kw)


def test_chat_template_matches_the_janus_prompt(tokenizer):
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello?"}]
    assert render_chat_ids(tokenizer, messages) == render_prompt_ids(tokenizer, "Be kind.", "Hello?")
    turns = messages + [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Again"}]
    ids = render_chat_ids(tokenizer, turns)
    assert ids[: len(render_prompt_ids(tokenizer, "Be kind.", "Hello?"))] == render_prompt_ids(
        tokenizer, "Be kind.", "Hello?"
    )
    assert tokenizer.eos_id in ids and tokenizer.decode(ids).endswith("[INST] Again [/INST]")
    with pytest.raises(MessageError, match=r"messages\[1\].role='tool'"):
        render_chat_ids(tokenizer, [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])


def test_chat_completion_is_the_samplers_greedy_reply(client, model, tokenizer):
    reply = chat(client, temperature=0, max_tokens=12)
    choice = reply.choices[0]
    ids = render_prompt_ids(tokenizer, "You are a terse poet.", "Write a haiku about the sea.")
    expected = Sampler(model, tokenizer, eos_id=tokenizer.eos_id).generate(
        [ids], SamplingParams(temperature=0, max_new_tokens=12)
    )[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason == "length"
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == 12
    assert reply.model == MODEL and reply.id.startswith("chatcmpl-")


def test_streamed_chunks_add_up_to_the_full_reply(client):
    full = chat(client, seed=5, max_tokens=16, logprobs=True)
    stream = chat(client, seed=5, max_tokens=16, stream=True, stream_options={"include_usage": True}, logprobs=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert text == full.choices[0].message.content
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    streamed_lps = [
        t.logprob for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content
    ]
    assert streamed_lps == pytest.approx([t.logprob for t in full.choices[0].logprobs.content])
    assert "".join(t.token for t in full.choices[0].logprobs.content) == full.choices[0].message.content


def test_n_choices_differ_and_seeds_reproduce(client):
    a = chat(client, n=3, seed=11, temperature=1.0, top_p=0.95, max_tokens=12)
    b = chat(client, n=3, seed=11, temperature=1.0, top_p=0.95, max_tokens=12)
    assert [c.index for c in a.choices] == [0, 1, 2]
    texts = [c.message.content for c in a.choices]
    assert len(set(texts)) == 3
    assert texts == [c.message.content for c in b.choices]


def test_stop_strings_cut_the_reply(client):
    full = chat(client, temperature=0, max_tokens=16).choices[0].message.content
    cut_at = len(full) // 2
    stop = full[cut_at : cut_at + 3]
    assert stop.strip()
    expected = full[: full.index(stop)]
    reply = chat(client, temperature=0, max_tokens=16, stop=[stop]).choices[0]
    assert reply.message.content == expected and reply.finish_reason == "stop"
    streamed = chat(client, temperature=0, max_tokens=16, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_completions_and_models_endpoints(client, server):
    out = client.completions.create(model=MODEL, prompt=["Once upon", "The sea"], max_tokens=8, temperature=0, n=2)
    assert len(out.choices) == 4 and all(c.text for c in out.choices)
    assert out.choices[0].text == out.choices[1].text  # greedy: both choices of a prompt agree
    assert [m.id for m in client.models.list().data] == [MODEL]
    status, health = request(server, "GET", "/health", None)
    assert status == 200 and health["status"] == "ok" and health["rows"] > 0


def test_32_concurrent_requests_complete_in_shared_batches(client, server):
    waves_before = server.engine.stats.waves
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda i: chat(client, content=f"Question {i}?", seed=i, max_tokens=16), range(32)))
    assert len(replies) == 32 and all(r.choices[0].finish_reason in ("stop", "length") for r in replies)
    assert server.engine.stats.waves - waves_before < 32  # requests were batched together
    assert server.engine.stats.largest_wave > 1


def request(server, method, path, content, key=KEY):
    """One raw HTTP request; returns (status, parsed JSON body)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=content, headers=headers)
    response = conn.getresponse()
    status, body = response.status, json.loads(response.read())
    conn.close()
    return status, body


@pytest.mark.parametrize(
    "case, status, needle",
    [
        ("malformed_json", 400, "could not parse the JSON body"),
        ("unknown_model", 404, "does not exist"),
        ("max_tokens_over_bound", 400, "max_tokens"),
        ("missing_api_key", 401, "API key"),
        ("empty_messages", 400, "non-empty list"),
        ("bad_role", 400, "role='tool'"),
        ("negative_temperature", 400, "temperature"),
        ("prompt_longer_than_context", 400, "context"),
        ("body_too_large", 413, "exceeds the limit"),
        ("unknown_route", 404, "no route"),
        ("n_over_bound", 400, "'n'"),
    ],
)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(client, server, case, status, needle):
    good = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    bodies = {
        "unknown_model": {**good, "model": "gpt-5"},
        "max_tokens_over_bound": {**good, "max_tokens": 65},
        "empty_messages": {**good, "messages": []},
        "bad_role": {**good, "messages": [{"role": "tool", "content": "x"}]},
        "negative_temperature": {**good, "temperature": -0.1},
        "prompt_longer_than_context": {**good, "messages": [{"role": "user", "content": "word " * 300}]},
        "n_over_bound": {**good, "n": 9},
    }
    path = "/v1/chat/completions"
    key = KEY
    if case == "malformed_json":
        content = b'{"model": "janus-tiny", "messages": [}'
    elif case == "missing_api_key":
        content, key = json.dumps(good), None
    elif case == "body_too_large":
        content = json.dumps({**good, "messages": [{"role": "user", "content": "x" * 70_000}]})
    elif case == "unknown_route":
        content, path = json.dumps(good), "/v1/embeddings"
    else:
        content = json.dumps(bodies[case])
    got, body = request(server, "POST", path, content, key=key)
    assert got == status, body
    error = body["error"]
    assert needle in error["message"] and error["type"]
    # The next request is served normally.
    assert chat(client, max_tokens=4).choices[0].finish_reason in ("stop", "length")


def test_openai_client_sees_typed_errors(client, server):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        chat(client, max_tokens=10_000)
    anonymous = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        chat(anonymous, max_tokens=2)
