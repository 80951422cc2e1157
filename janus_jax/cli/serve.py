"""`janus-serve`: an OpenAI-compatible HTTP server for a janus-jax or HF Mistral model.

janus-serve --model=SOURCE [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch 32] [--no-log-requests]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from janus_jax.serve import DEFAULT_MAX_BATCH, DEFAULT_MAX_N
from janus_jax.serve.build import build_server
from janus_jax.serve.loading import add_model_args, load_from_args
from janus_jax.serve.server import MAX_BODY_BYTES

log = logging.getLogger("janus_jax.serve")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
    parser.add_argument("--max-n", type=int, default=DEFAULT_MAX_N, help="most choices (n) per request")
    parser.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH,
        help="decode slots: most rows decoded together (continuous batching)",
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
    del loaded  # the sampler holds its own per-layer copy of the layer weights: free the stacked ones
    try:
        server.serve_forever()  # returns on SIGINT / SIGTERM once open responses are finished
    except KeyboardInterrupt:
        pass
    finally:
        log.info("shutting down")
        server.engine.close()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
