"""The paper's chain, end to end, on the recipes' own code paths with the model shrunk by config overrides.

SFT from the hub id `mistral-community/Mistral-7B-v0.2` (configs/sft.py:janus_7b) -> DPO from that
checkpoint with both reference modes -> ORPO from the hub id -> RM from the SFT checkpoint -> janus-export
-> transformers loads the export and its greedy tokens equal janus-jax's -> `eval run multifaceted
--checkpoint` (janus-serve started by eval, auth on) against a scripted judge on 127.0.0.1, on the hub's
Multifaceted-Bench. And data_gen -> its Parquet bench -> eval reading it. Hub ids resolve offline through
the local hub (janus_jax.local_hub). Every program is started as a user starts it (`python -m ...`);
independent stages run at the same time, since compiling is single-threaded.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from data_gen_rules import synth_rules  # noqa: E402
from scripted_openai_server import Call, ScriptedOpenAIServer  # noqa: E402
from xla_flags import xla_flags  # noqa: E402

from janus_jax.jsonio import read_records  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE = "mistral-community/Mistral-7B-v0.2"
SERVE_KEY = "chain-serve-key"

# What shrinks the 7B recipes to the local hub's tiny model: architecture, sequence, batch, steps. The
# recipes' init_from (the hub id), data sources (hub ids), objectives and loss settings stay as they are.
SHRINK = [
    "--config.model.preset=tiny",
    "--config.model.dtype=float32",
    "--config.model.remat=none",
    "--config.train.global_batch_size=4",
    "--config.train.grad_accum_steps=1",
    "--config.train.max_steps=2",
    "--config.train.log_every=1",
]
PAIR_SEQ = "--config.data.seq_len=128"


class Stage:
    """One program of the chain, running in the background (in its own process group, so that what it
    starts, such as eval's janus-serve, is stopped with it) with its output in a log file."""

    running: list[Stage] = []

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path):
        self.name, self.log = name, logs / f"{name}.log"
        self.began = time.monotonic()
        with self.log.open("w") as out:
            self.process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        Stage.running.append(self)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def wait(self, timeout_s: float = 600) -> float:
        """Wait for the program; fail with the end of its output unless it exited 0. Returns its seconds."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            code = "timeout"
        seconds = time.monotonic() - self.began
        print(f"chain: {self.name} exited {code} after {seconds:.0f} s", flush=True)
        if code != 0:
            pytest.fail(f"{self.name} exited {code}:\n{self.log.read_text()[-4000:]}")
        return seconds


@pytest.fixture
def stages():
    """Stops every stage a failing test leaves running."""
    yield
    while Stage.running:
        Stage.running.pop().stop()


def judge_and_writer_rules(call: Call):
    """The judge grades every rubric (a score that varies with the request), the model behind the
    data_gen leg's eval answers briefly, and data_gen's stages get valid replies."""
    if call.model == "judge":
        score = 1 + sum(call.user.encode()) % 5
        return f"Feedback: the response follows the preference in part. [RESULT] {score}"
    if call.model == "policy":
        return "A short answer."
    return synth_rules(call)


def metrics(workdir: Path) -> list[dict]:
    return read_records(workdir / "metrics.jsonl")


def train_losses(workdir: Path) -> list[float]:
    return [row["loss"] for row in metrics(workdir) if "loss" in row]


def assert_finite_scores(run: Path) -> dict:
    scores = json.loads((run / "scores.json").read_text())
    assert math.isfinite(scores["overall"]["value"]), scores
    assert 1 <= scores["overall"]["value"] <= 5
    assert (run / "report.md").is_file()
    return scores


def greedy_tokens_match(export: Path, checkpoint: Path) -> None:
    """transformers loads the export; its greedy tokens equal janus-jax's on the checkpoint itself."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from janus_jax.load import load_model
    from janus_jax.prompts import render_prompt_ids
    from janus_jax.sample import Sampler, SamplingParams
    from janus_jax.tokenizer import load_tokenizer

    tok = load_tokenizer()
    hf_tok = AutoTokenizer.from_pretrained(export)  # the export carries a tokenizer transformers reads
    prompts = [render_prompt_ids(tok, "You are a patient tutor.", "Explain recursion."),
               render_prompt_ids(tok, "", "Name three primary colours.")]
    assert hf_tok.decode(prompts[0][1:]) == tok.decode(prompts[0][1:])
    sampler = Sampler(load_model(checkpoint), tok, eos_id=tok.eos_id)
    ours = sampler.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0, repetition_penalty=1.0))
    hf = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    for prompt, completion in zip(prompts, ours):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, pad_token_id=tok.eos_id)
        ref = ref[0, len(prompt):].tolist()
        assert ref == completion.token_ids + ([tok.eos_id] if completion.finish_reason == "stop" else [])


# About 5 CPU-minutes in all (2.5-3 minutes on 2 quiet cores); the limit leaves room for a loaded machine.
@pytest.mark.timeout(1800)
def test_the_papers_chain_from_the_hub_id_to_a_judged_report(tmp_path, local_hub, stages):
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    runs.mkdir()
    logs.mkdir()
    # One CPU device per program: the chain tests the recipes' paths, test_train_* test the meshes.
    env = {**os.environ, **local_hub, "PYTHONPATH": str(REPO), "XLA_FLAGS": xla_flags(1)}
    env.pop("JANUS_SERVE_API_KEY", None)
    env.pop("JAX_THREEFRY_PARTITIONABLE", None)  # the programs draw as users' runs do (conftest.py says why)
    times: dict[str, float] = {}

    def train(name: str, config: str, *extra: str) -> Stage:
        return Stage(name, ["-m", "janus_jax.cli.train", f"--config={config}", f"--workdir={runs / name}",
                            *SHRINK, *extra], env, logs)

    with ScriptedOpenAIServer(judge_and_writer_rules) as server:
        # Wave 1: from the hub id (SFT, ORPO); data_gen's leg needs no model.
        sft = train("sft", "configs/sft.py:janus_7b", "--config.data.seq_len=64")
        orpo = train("orpo", "configs/orpo.py:janus_orpo_7b", PAIR_SEQ)
        datagen = Stage("data_gen", ["-m", "data_gen", "run", "--instructions", "data_gen/examples/instructions.jsonl",
                                     "--out", str(runs / "mfc"), "--model", "writer", "--base-url", server.base_url,
                                     "--stages", "all", "--limit", "2"], env, logs)
        times["data_gen"] = datagen.wait()
        bench = runs / "mfc" / "final" / "bench" / "train.parquet"
        eval_parquet = Stage("eval_parquet", [
            "-m", "eval", "run", "multifaceted", "--model", "policy", "--base-url", server.base_url,
            "--judge", "judge", "--judge-base-url", server.base_url, "--bench-file", str(bench),
            "--out", str(runs / "eval_parquet"), "--runs", "1", "--rounds", "50", "--quiet"], env, logs)
        times["sft"] = sft.wait()
        times["eval_parquet"] = eval_parquet.wait()

        # Wave 2: from the SFT checkpoint: DPO in both reference modes, and the reward model.
        dpo = ["configs/dpo.py:janus_dpo_7b", f"--config.model.init_from={runs / 'sft'}", PAIR_SEQ,
               "--config.dpo.reference_dtype=float32"]
        dpo_model = train("dpo_model", *dpo)
        pre = ["--config.dpo.reference=precomputed"]
        precompute = Stage("precompute_ref", ["-m", "janus_jax.cli.precompute_ref", f"--config={dpo[0]}",
                                              f"--workdir={runs / 'dpo_precomputed'}", *SHRINK, *dpo[1:], *pre],
                           env, logs)
        times["precompute_ref"] = precompute.wait()
        dpo_pre = train("dpo_precomputed", *dpo, *pre)
        times["orpo"] = orpo.wait()
        rm = train("rm", "configs/rm.py:janus_rm_7b", f"--config.model.init_from={runs / 'sft'}", PAIR_SEQ)
        times["dpo_model"] = dpo_model.wait()

        # Wave 3: export the DPO policy; eval serves it with janus-serve (auth on) on the hub's bench.
        export = Stage("export", ["-m", "janus_jax.cli.export", f"--checkpoint={runs / 'dpo_model'}",
                                  f"--out={runs / 'dpo_hf'}", "--dtype=float32"], env, logs)
        eval_env = {**env, "JANUS_SERVE_API_KEY": SERVE_KEY}
        eval_ckpt = Stage("eval_checkpoint", [
            "-m", "eval", "run", "multifaceted", "--checkpoint", str(runs / "dpo_model"), "--judge", "judge",
            "--max-new-tokens", "24",
            "--judge-base-url", server.base_url, "--out", str(runs / "eval_checkpoint"), "--limit", "2",
            "--runs", "1", "--rounds", "50", "--quiet"], eval_env, logs)
        times["dpo_precomputed"] = dpo_pre.wait()
        times["rm"] = rm.wait()
        times["export"] = export.wait()
        began = time.monotonic()
        greedy_tokens_match(runs / "dpo_hf", runs / "dpo_model")
        times["greedy_parity"] = time.monotonic() - began
        times["eval_checkpoint"] = eval_ckpt.wait()
        judged = server.calls_where(lambda c: c.model == "judge")
    print("chain stage seconds:", json.dumps({k: round(v, 1) for k, v in times.items()}))

    # Every training stage ran its steps from the intended start, with finite losses.
    for name in ("sft", "orpo", "dpo_model", "dpo_precomputed", "rm"):
        losses = train_losses(runs / name)
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses), (name, losses)
        manifest = json.loads((runs / name / "manifest.json").read_text())
        assert manifest["status"] == "completed", (name, manifest["status"])
    assert json.loads((runs / "sft" / "manifest.json").read_text())["config"]["model"]["init_from"] == BASE
    assert json.loads((runs / "orpo" / "manifest.json").read_text())["config"]["model"]["init_from"] == BASE
    # Both reference modes: the same first-step loss (the policy equals the reference at step 0: log 2).
    first = [metrics(runs / n)[0] for n in ("dpo_model", "dpo_precomputed")]
    assert first[0]["loss"] == pytest.approx(first[1]["loss"], abs=1e-5)
    assert first[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert (runs / "dpo_precomputed" / "reference_logps.npz").is_file()

    # eval with the checkpoint: janus-serve answered with the key, the judge graded, a report with scores.
    scores = assert_finite_scores(runs / "eval_checkpoint")
    assert scores["counts"]["judge_calls_scored"] > 0
    # (read as JSON Lines: a random model's answers hold characters str.splitlines() would split at)
    responses = read_records(runs / "eval_checkpoint" / "responses.jsonl")
    assert len(responses) == 2 and all(len(r["answers"]) == 1 for r in responses)
    assert judged
    # data_gen's Parquet bench, read by eval.
    assert bench.is_file()
    assert_finite_scores(runs / "eval_parquet")
