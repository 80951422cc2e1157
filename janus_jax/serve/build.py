"""A janus-serve server from a loaded model: sampler, continuous-batching engine, HTTP layer (janus_jax/cli/serve.py
is the command line)."""

from __future__ import annotations

from janus_jax.sample import Sampler
from janus_jax.serve import DEFAULT_CHUNK_TOKENS, DEFAULT_MAX_BATCH, DEFAULT_MAX_N
from janus_jax.serve.engine import Engine
from janus_jax.serve.loading import LoadedModel
from janus_jax.serve.protocol import Limits
from janus_jax.serve.server import MAX_BODY_BYTES, JanusServer


def build_server(
    loaded: LoadedModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_tokens: int = 4096,
    max_n: int = DEFAULT_MAX_N,
    max_batch: int = DEFAULT_MAX_BATCH,
    context: int | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    log_requests: bool = True,
    engine: Engine | None = None,
) -> JanusServer:
    """Sampler + continuous-batching engine + HTTP server, bound but not yet serving (call serve_forever).

    `engine` replaces the default Engine (anything with its submit/cancel/close/stats/busy_rows).
    """
    if max_n > max_batch:
        raise ValueError(f"--max-n={max_n} cannot exceed --max-batch={max_batch}")
    context = context or loaded.model.config.max_position_embeddings
    tok = loaded.tokenizer
    sampler = Sampler(loaded.model, tok, eos_id=tok.eos_id, pad_id=tok.pad_id, max_context=context, mesh=loaded.mesh)
    if engine is None:
        engine = Engine(sampler, max_batch_rows=max_batch, chunk_tokens=chunk_tokens)
    limits = Limits(max_tokens=max_tokens, max_n=max_n, context=context)
    return JanusServer(
        (host, port),
        engine,
        tok,
        loaded.name,
        limits=limits,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        log_requests=log_requests,
        template=loaded.template,
    )
