"""README.md's runnable code blocks, run as a user would paste them, on tiny settings.

A fenced block is runnable when the line before it is `<!-- runnable -->` (its own fresh directory) or
`<!-- runnable: NAME -->` (blocks of the same NAME share one directory and run in README order, as a user
following the guide would: the tiny DPO starts from the tiny SFT run). Each NAME is one test, so chunks
are independent of each other. Blocks run in a scratch directory holding links to the repository's
`configs/`, `data/`, `data_gen/`, `eval/` and `tests/`, with the local hub (janus_jax.local_hub) as the
Hugging Face cache, offline.

The only changes made to a block before it runs are the substitutions in SUBSTITUTIONS (console scripts
as `python -m`, this interpreter for `python`) and TINY (fewer steps), both below.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from xla_flags import xla_flags

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINKED = ("configs", "data", "data_gen", "eval", "tests")

# Console scripts run as modules of this checkout (an installed script may belong to another one).
SUBSTITUTIONS = {
    r"(?m)(^|\s)janus-train\b": r"\1python -m janus_jax.cli.train",
    r"(?m)(^|\s)janus-precompute-ref\b": r"\1python -m janus_jax.cli.precompute_ref",
    r"(?m)(^|\s)janus-export\b": r"\1python -m janus_jax.cli.export",
    r"(?m)(^|\s)janus-generate\b": r"\1python -m janus_jax.cli.generate",
    r"(?m)(^|\s)janus-best-of-n\b": r"\1python -m janus_jax.cli.best_of_n",
    r"(?m)(^|\s)janus-serve\b": r"\1python -m janus_jax.cli.serve",
    r"(?m)(^|\s)(\.venv/bin/)?python\b": r"\1PYTHON",
}
# Training programs run a few steps instead of whole epochs.
TINY = "--config.train.max_steps=2"
TRAINING = ("janus_jax.cli.train", "janus_jax.cli.precompute_ref")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    group: str | None
    code: str


def runnable_blocks(text: str) -> list[Block]:
    """Every fenced block whose preceding line is a `<!-- runnable[: NAME] -->` marker."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        marker = re.fullmatch(r"\s*<!-- runnable(?::\s*([\w-]+))? -->\s*", line)
        if not marker:
            continue
        fence = re.fullmatch(r"(\s*)```(\w+)\s*", lines[i + 1]) if i + 1 < len(lines) else None
        if not fence:
            raise ValueError(f"README.md line {i + 1}: a runnable marker must be followed by a ```LANG fence")
        indent, body = len(fence.group(1)), []
        for j in range(i + 2, len(lines)):
            if lines[j].strip() == "```":
                break
            body.append(lines[j][indent:])
        else:
            raise ValueError(f"README.md line {i + 2}: the runnable block never closes")
        blocks.append(Block(i + 2, fence.group(2), marker.group(1), "\n".join(body) + "\n"))
    return blocks


def prepared(block: Block) -> str:
    """The block's code after SUBSTITUTIONS and TINY."""
    code = block.code
    if block.language == "python":
        return code
    code = re.sub(r"\s*\\\n\s*", " ", code)  # one command per line, so TINY lands on the whole command
    for pattern, replacement in SUBSTITUTIONS.items():
        code = re.sub(pattern, replacement, code)
    code = code.replace("PYTHON", sys.executable)
    return "\n".join(f"{line} {TINY}" if any(m in line for m in TRAINING) else line
                     for line in code.splitlines()) + "\n"


def run_block(block: Block, workdir: Path, env: dict[str, str]) -> None:
    if block.language == "python":
        command = [sys.executable, "-c", prepared(block)]
    elif block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", prepared(block)]
    else:
        raise ValueError(f"README.md line {block.line}: no runner for ```{block.language}")
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (
        f"README.md block at line {block.line} exited {done.returncode}\n--- code as run:\n{prepared(block)}"
        f"--- output:\n{(done.stdout + done.stderr)[-4000:]}")


BLOCKS = runnable_blocks(README.read_text())
CHUNKS: dict[str, list[Block]] = {}
for _block in BLOCKS:
    CHUNKS.setdefault(_block.group or f"line{_block.line}", []).append(_block)


def test_the_readme_marks_runnable_blocks():
    """The chunks below exist: a README edit that drops every marker would otherwise pass silently."""
    assert {b.language for b in BLOCKS} == {"bash", "python"}
    assert "tiny" in CHUNKS and len(CHUNKS) >= 5


def test_markers_are_parsed_as_written():
    text = "x\n<!-- runnable: g -->\n  ```bash\n  janus-train --config=c.py:tiny --workdir=w \\\n      --a=1\n  ```\n"
    [block] = runnable_blocks(text)
    assert (block.line, block.language, block.group) == (3, "bash", "g")
    assert block.code == "janus-train --config=c.py:tiny --workdir=w \\\n    --a=1\n"
    assert prepared(block) == f"{sys.executable} -m janus_jax.cli.train --config=c.py:tiny --workdir=w --a=1 {TINY}\n"
    with pytest.raises(ValueError, match="line 2: a runnable marker"):
        runnable_blocks("x\n<!-- runnable -->\ntext\n")


@pytest.mark.timeout(1800)  # a minute or two each on 2 quiet cores; room for a loaded machine
@pytest.mark.parametrize(
    "chunk",
    # the tiny training chunk takes minutes of CPU: make test-all runs it (tests/test_chain.py covers the path)
    [pytest.param(c, marks=pytest.mark.slow) if c == "tiny" else c for c in sorted(CHUNKS)],
    ids=lambda c: f"{c}@L{CHUNKS[c][0].line}",
)
def test_readme_chunk_runs(chunk, tmp_path, local_hub):
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, **local_hub, "PYTHONPATH": str(REPO),
           "XLA_FLAGS": xla_flags(1)}
    for block in CHUNKS[chunk]:
        run_block(block, tmp_path, env)
