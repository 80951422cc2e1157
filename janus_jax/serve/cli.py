"""`janus-serve`: an OpenAI-compatible HTTP server for a janus-jax or HF Mistral model.

janus-serve --hf=DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch 32] [--no-log-requests]
"""

from __future__ import annotations

import argparse
import logging
import os

from janus_jax.sample import Sampler
from janus_jax.serve.engine import Engine
from janus_jax.serve.loading import LoadedModel, add_model_args, load_from_args
from janus_jax.serve.protocol import Limits
from janus_jax.serve.server import MAX_BODY_BYTES, JanusServer

log = logging.getLogger("janus_jax.serve")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_server(
    loaded: LoadedModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_tokens: int = 4096,
    max_n: int = 16,
    max_batch: int = 32,
    context: int | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    chunk_tokens: int = 16,
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
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="janus-serve", description=__doc__.strip().splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("JANUS_SERVE_API_KEY"),
        help="require 'Authorization: Bearer KEY' on every request (default: $JANUS_SERVE_API_KEY)",
    )
    parser.add_argument("--max-tokens", type=int, default=4096, help="largest max_tokens a request may ask for")
    parser.add_argument("--max-n", type=int, default=16, help="most choices (n) per request")
    parser.add_argument(
        "--max-batch", type=int, default=32, help="decode slots: most rows decoded together (continuous batching)"
    )
    parser.add_argument("--context", type=int, help="prompt + reply limit (default: max_position_embeddings)")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    parser.add_argument(
        "--log-requests",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request: status, token counts, latency (never the key or the prompt)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.host not in LOOPBACK and not args.api_key:
        log.warning("listening on %s without --api-key: anyone who can reach this port can use the model", args.host)
    loaded = load_from_args(args)
    server = build_server(
        loaded,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_tokens=args.max_tokens,
        max_n=args.max_n,
        max_batch=args.max_batch,
        context=args.context,
        max_body_bytes=args.max_body_bytes,
        log_requests=args.log_requests,
    )
    log.info("serving %s at %s/v1 (auth %s)", loaded.name, server.url, "on" if args.api_key else "off")
    try:
        server.serve_forever()  # returns on SIGINT / SIGTERM once open responses are finished
    except KeyboardInterrupt:
        pass
    finally:
        log.info("shutting down")
        server.engine.close()
        server.server_close()


if __name__ == "__main__":
    main()
