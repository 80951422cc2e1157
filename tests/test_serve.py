"""janus-serve over real HTTP on 127.0.0.1, driven by the official openai client and raw httpx."""

import http.client
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import openai
import pytest
from flax import nnx

from janus_jax.model import Mistral, MistralConfig
from janus_jax.prompts import render_prompt_ids
from janus_jax.sample import Sampler, SamplingParams
from janus_jax.serve.build import build_server
from janus_jax.serve.chat import MessageError, render_chat_ids
from janus_jax.serve.loading import LoadedModel
from janus_jax.serve.protocol import alternative_strings
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
        loaded, port=0, api_key=KEY, max_tokens=240, max_n=8, max_batch=16, max_body_bytes=64 * 1024, chunk_tokens=4
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


@pytest.mark.slow  # 30-50 s on 2 cores (make test-all); the 256-connection and joining tests share batches too
def test_32_concurrent_requests_complete_in_shared_batches(client, server):
    chunks_before = server.engine.stats.chunks
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda i: chat(client, content=f"Question {i}?", seed=i, max_tokens=16), range(32)))
    assert len(replies) == 32 and all(r.choices[0].finish_reason in ("stop", "length") for r in replies)
    assert server.engine.stats.chunks - chunks_before < 32 * 4  # rows decoded together, not one by one
    assert server.engine.stats.largest_batch > 1


def request(server, method, path, content, key=KEY, timeout_s=60):
    """One raw HTTP request; returns (status, parsed JSON body)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
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
        "max_tokens_over_bound": {**good, "max_tokens": 241},
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


def _raw_chat(server, i, key):
    """One chat request on its own connection; (status, body). The last of 256 waits for the others' prefills
    and decode steps, and for the compilation of each new batch shape on first use: a generous timeout, since
    what is tested is that none is refused or dropped, not how long it waits."""
    messages = [{"role": "user", "content": f"Count to {i}."}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 4, "temperature": 0}
    return request(server, "POST", "/v1/chat/completions", json.dumps(body), key=key, timeout_s=600)


def test_256_simultaneous_connections_are_all_served_and_auth_still_holds(server):
    barrier = threading.Barrier(256)

    def one(i):
        barrier.wait()  # all 256 connect at once
        return _raw_chat(server, i, key=KEY if i % 16 else "wrong-key")

    with ThreadPoolExecutor(256) as pool:
        results = list(pool.map(one, range(256)))
    for i, (status, body) in enumerate(results):
        if i % 16:
            assert status == 200, body
            assert body["choices"][0]["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"]
        else:
            assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_a_request_joins_the_running_batch_instead_of_waiting_for_it(client, server):
    """Continuous batching: a short request sent while a long one decodes is answered first."""
    long_stream = chat(client, content="Tell a long story.", max_tokens=200, temperature=0, stream=True)
    first = next(iter(long_stream))  # the long request is decoding now
    assert first.choices[0].delta.role == "assistant"
    admitted_before = server.engine.stats.admitted_while_busy
    short = chat(client, content="Say hi.", max_tokens=4, temperature=0)
    rest = list(long_stream)  # the long reply goes on after the short one was answered
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 4
    assert server.engine.stats.admitted_while_busy > admitted_before
    assert rest[-1].choices[0].finish_reason == "length"
    assert len([c for c in rest if c.choices and c.choices[0].delta.content]) > 1


def test_seeded_sampling_joins_a_busy_batch_and_still_equals_the_sampler(client, model, tokenizer):
    """Each row draws token i with its own seed and i, whenever it joined: the Sampler's tokens."""
    extra = {"repetition_penalty": 1.1}
    long_stream = chat(client, content="Go on and on.", max_tokens=120, temperature=0, stream=True)
    next(iter(long_stream))
    reply = chat(
        client, content="A seeded reply.", max_tokens=10, temperature=0.8, top_p=0.95, seed=4, extra_body=extra
    )
    list(long_stream)
    ids = render_prompt_ids(tokenizer, "You are a terse poet.", "A seeded reply.")
    params = SamplingParams(max_new_tokens=10, temperature=0.8, top_p=0.95, seed=4, repetition_penalty=1.1)
    expected = Sampler(model, tokenizer, eos_id=tokenizer.eos_id).generate([ids], params)[0]
    assert reply.choices[0].message.content == expected.text


def test_logprobs_and_top_logprobs_are_the_models_log_softmax(client, model, tokenizer):
    plain = {"repetition_penalty": 1.0}  # greedy on the raw logits: each token is the argmax below
    reply = chat(
        client, content="Pick a word.", max_tokens=6, temperature=0, logprobs=True, top_logprobs=5, extra_body=plain
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 6
    prompt = render_prompt_ids(tokenizer, "You are a terse poet.", "Pick a word.")
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: jax.nn.log_softmax(nnx.merge(graphdef, state)(x)[0]))
    ids = list(prompt)
    for k, entry in enumerate(content):  # one uncached forward pass per token, padded at the end
        padded = np.zeros((1, 64), np.int32)
        padded[0, : len(ids)] = ids
        logsoftmax = np.asarray(forward(state, padded)[len(ids) - 1])
        top5 = np.argsort(-logsoftmax)[:5]
        assert entry.logprob == pytest.approx(logsoftmax[top5[0]], abs=1e-4)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(logsoftmax[top5].tolist(), abs=1e-4)
        assert [t.token for t in entry.top_logprobs] == alternative_strings(
            tokenizer, ids[len(prompt) :], k, top5.tolist()
        )
        assert entry.top_logprobs[0].token == entry.token
        ids.append(int(top5[0]))
    out = client.completions.create(
        model=MODEL, prompt="Once upon", max_tokens=4, temperature=0, logprobs=3, extra_body=plain
    )
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == 4
    assert all(len(alts) <= 3 and t in alts for t, alts in zip(lp.tokens, lp.top_logprobs, strict=True))


def test_top_logprobs_without_logprobs_is_refused(client):
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        chat(client, max_tokens=2, top_logprobs=3)


def test_clients_that_vanish_leave_no_traceback_and_free_their_slots(server, client, caplog):
    host, port = server.server_address
    caplog.set_level(logging.INFO)
    # Mid-body: headers announce 1000 bytes, 10 arrive, the connection closes.
    with socket.create_connection((host, port)) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"model": '
        )
    # Mid-stream: the first event arrives, then the client leaves a 200-token reply.
    with socket.create_connection((host, port)) as s:
        body = json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "Talk."}], "max_tokens": 200, "stream": True}
        ).encode()
        head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
        s.sendall(head.encode() + body)
        received = b""
        while b"data: " not in received:
            received += s.recv(4096)
    deadline = time.monotonic() + 60
    while server.engine.busy_rows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.engine.busy_rows == 0  # the abandoned reply's slot was freed
    assert chat(client, max_tokens=2).choices[0].finish_reason in ("stop", "length")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    gone = [
        r.getMessage() for r in caplog.records if r.name == "janus_jax.serve.requests" and " 499 " in r.getMessage()
    ]
    assert len(gone) == 2


def test_one_log_line_per_request_without_key_or_prompt(client, caplog):
    caplog.set_level(logging.INFO, logger="janus_jax.serve.requests")
    chat(client, content="A secret prompt text.", max_tokens=3, temperature=0)
    deadline = time.monotonic() + 10  # the line is written once the response has been sent
    while not (lines := [r.getMessage() for r in caplog.records if r.name == "janus_jax.serve.requests"]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("POST /v1/chat/completions 200 chatcmpl-") and "completion_tokens=3" in line
    assert "secret" not in line and KEY not in line


def test_chat_prompts_follow_the_models_template_and_its_end_marker_is_a_stop():
    """A ChatML-trained model is served ChatML prompts (the ids training used) and replies end at <|im_end|>."""
    from janus_jax.serve.protocol import Limits, parse_request

    tok = load_tokenizer()
    body = {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    chatml = parse_request("chat", body, tok, "m", Limits(), "chatml")
    assert chatml.prompts == [render_prompt_ids(tok, "Be brief.", "Hi", "chatml")]
    assert chatml.params.stop == ("<|im_end|>",)
    inst = parse_request("chat", body, tok, "m", Limits())
    assert inst.prompts == [render_prompt_ids(tok, "Be brief.", "Hi")] and inst.params.stop == ()
