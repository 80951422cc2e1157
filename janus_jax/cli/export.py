"""`janus-export --checkpoint=WORKDIR --out=HF_DIR`: a training checkpoint as an HF Mistral directory."""

from __future__ import annotations

import argparse
import sys

from janus_jax.train.export import export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="janus-export", description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("--checkpoint", required=True, help="workdir, its checkpoints/ dir, or one step dir")
    parser.add_argument("--out", required=True, help="HF directory to write")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tokenizer", default=None, help="tokenizer .model file or HF tokenizer dir to copy")
    args = parser.parse_args(argv)
    try:
        path = export(args.checkpoint, args.out, step=args.step, dtype=args.dtype, tokenizer=args.tokenizer)
    except (FileNotFoundError, ValueError) as e:
        print(f"janus-export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
