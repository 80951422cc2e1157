"""Preference optimisation through the one trainer, on CPU with the bundled pairs.

DPO learns the pairs and gives the same losses on 1 device and on the 8-device mesh, and with either
reference mode; precomputed reference files are refused for another model, another dataset or broken
rows; bad pairs are reported by row; ORPO lowers both its terms; the reward model ranks its pairs.

Speed: the models use a 2048-piece SentencePiece vocabulary trained on the samples in a fixture (the
Mistral vocabulary would make the LM head 15x larger); everything else is the tiny presets' code path.
"""

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from configs import dpo, orpo, rm, sft, simpo
from janus_jax.objectives import REGISTRY
from janus_jax.train import data_setup
from janus_jax.train.metrics import read_metrics
from janus_jax.train.precompute import precompute
from janus_jax.train.run import model_config
from janus_jax.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
VOCAB = 2048
PARITY_STEPS = 4


def write_sample_tokenizer(path: Path) -> Path:
    """A small BPE SentencePiece model of the bundled samples' text (BOS 1, EOS 2 as in Mistral's)."""
    import sentencepiece as spm

    texts = ["[INST] [/INST]"]
    for name in ("sft", "dpo", "rm"):
        for line in (SAMPLES / f"{name}.jsonl").read_text().splitlines():
            for value in json.loads(line).values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list):
                    texts += [m["content"] for m in value if isinstance(m, dict) and "content" in m]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=VOCAB, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, user_defined_symbols=["[INST]", "[/INST]"], minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


def tiny(module, tokenizer: Path, **overrides):
    """`module.get_config("tiny")` on the small vocabulary, logging every step, plus dotted overrides."""
    c = module.get_config("tiny")
    c.data.tokenizer = str(tokenizer)
    c.model.vocab_size = VOCAB
    c.data.eval_fraction = 0.0
    c.train.log_every = 1
    c.train.checkpoint_every = 1000
    c.train.async_checkpoint = False
    c.mesh.shape = (1, 1, 1)  # fast on the 8 fake CPU devices; sharded runs are compared in their own test
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def series(workdir: Path, key: str) -> np.ndarray:
    return np.array([r[key] for r in read_metrics(workdir) if key in r])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return write_sample_tokenizer(tmp_path_factory.mktemp("tok") / "samples.model")


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, tokenizer):
    """A tiny SFT model with checkpoints at steps 10 and 20 (the DPO / RM starting point)."""
    workdir = tmp_path_factory.mktemp("sft") / "sft"
    cfg = tiny(sft, tokenizer, **{"data.seq_len": 128, "train.max_steps": 20, "train.checkpoint_every": 10,
                                  "train.log_every": 10, "optimizer.warmup_steps": 5, "optimizer.lr": 5e-3})
    train(cfg, workdir)
    return workdir


def dpo_config(tokenizer, sft_dir, **overrides):
    """Constant learning rate after warmup, so a short run's steps equal the first steps of a long one."""
    common = {
        "model.init_from": str(sft_dir),
        "optimizer.schedule": "constant",
        "optimizer.warmup_steps": 2,
        "optimizer.lr": 1e-3,
        "dpo.reference_dtype": "float32",
        "train.max_steps": PARITY_STEPS,
    }
    return tiny(dpo, tokenizer, **{**common, **overrides})


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, tokenizer, sft_dir):
    """DPO (frozen float32 reference in the step) on the bundled pairs, evaluated on those same pairs."""
    workdir = tmp_path_factory.mktemp("dpo") / "model_ref"
    cfg = dpo_config(tokenizer, sft_dir, **{"train.max_steps": 40, "data.eval_source": str(SAMPLES / "dpo.jsonl")})
    train(cfg, workdir)
    return workdir


def test_dpo_raises_reward_accuracy_and_margin_on_the_training_pairs(dpo_run):
    final = [r for r in read_metrics(dpo_run) if "eval/rewards/accuracies" in r][-1]
    assert final["eval/rewards/accuracies"] > 0.9, final
    assert final["eval/rewards/margins"] > 0, final
    margins = series(dpo_run, "rewards/margins")
    assert margins[-10:].mean() > margins[:5].mean() + 0.5, margins
    np.testing.assert_allclose(series(dpo_run, "loss")[0], np.log(2), rtol=1e-5)  # policy == reference at step 1
    row = read_metrics(dpo_run)[0]
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                 "logps/chosen", "logps/rejected"):
        assert np.isfinite(row[name]), name


@pytest.mark.slow  # 30-70 s on 2 cores (make test-all); SFT keeps its one-vs-eight-device test in make test
def test_dpo_one_device_equals_eight_device_mesh(tmp_path, tokenizer, sft_dir, dpo_run):
    eight = tmp_path / "eight"
    train(dpo_config(tokenizer, sft_dir, **{"mesh.shape": (2, 2, 2)}), eight)
    losses = series(eight, "loss")
    assert len(losses) == PARITY_STEPS and losses[-1] < losses[0]
    np.testing.assert_allclose(losses, series(dpo_run, "loss")[:PARITY_STEPS], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def precomputed(tmp_path_factory, tokenizer, sft_dir):
    """Reference log-probs of the bundled pairs under the SFT model, and the config that reads them."""
    path = tmp_path_factory.mktemp("ref") / "dpo.ref_logps.npz"
    cfg = dpo_config(tokenizer, sft_dir, **{"dpo.reference": "precomputed", "dpo.reference_logps": str(path)})
    assert precompute(cfg, out=path) == path
    return cfg, path


def test_precomputed_reference_gives_the_same_losses_as_the_frozen_model(tmp_path, precomputed, dpo_run):
    cfg, path = precomputed
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        assert len(z["train_chosen"]) == len(z["train_rejected"]) == 180
    assert set(meta) >= {"model_hash", "train_data_hash"}
    train(cfg, tmp_path / "precomputed")
    for key in ("loss", "rewards/margins"):
        np.testing.assert_allclose(
            series(tmp_path / "precomputed", key), series(dpo_run, key)[:PARITY_STEPS], rtol=1e-5, atol=1e-5
        )


def test_reference_file_of_another_model_is_refused(tmp_path, precomputed, sft_dir):
    cfg = precomputed[0].copy_and_resolve_references()
    cfg.model.init_from = str(sft_dir / "checkpoints" / "10")
    with pytest.raises(ValueError, match=r"model_hash .* another model or dataset"):
        train(cfg, tmp_path / "other_model")


def test_reference_file_of_another_dataset_is_refused(tmp_path, precomputed):
    cfg = precomputed[0].copy_and_resolve_references()
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join((SAMPLES / "dpo.jsonl").read_text().splitlines(keepends=True)[:100]))
    cfg.data.source = str(subset)
    with pytest.raises(ValueError, match=r"train_data_hash .* another model or dataset"):
        train(cfg, tmp_path / "other_data")


def test_reference_file_with_broken_rows_is_refused_by_row(tmp_path, precomputed):
    cfg, path = precomputed[0].copy_and_resolve_references(), precomputed[1]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_chosen"][[3, 7]] = np.nan
    broken = tmp_path / "broken.npz"
    np.savez(broken, **arrays)
    cfg.dpo.reference_logps = str(broken)
    with pytest.raises(ValueError, match=r"2 of 180 pairs have no finite reference log-prob \(data rows 3, 7\)"):
        train(cfg, tmp_path / "broken")

    arrays["train_chosen"] = arrays["train_chosen"][:-1]
    short = tmp_path / "short.npz"
    np.savez(short, **arrays)
    cfg.dpo.reference_logps = str(short)
    with pytest.raises(ValueError, match=r"holds 179 chosen / 180 rejected .* 180 pairs"):
        train(cfg, tmp_path / "short")


def _message_pair(system, prompt, chosen, rejected):
    def side(text):
        return [{"content": prompt, "role": "user"}, {"content": text, "role": "assistant"}]

    return {"main_source": "t", "original_source": "t", "system": system, "prompt": prompt,
            "chosen": side(chosen), "rejected": side(rejected)}


@pytest.mark.parametrize("fmt", ["dpo", "rm"])
def test_bad_pairs_are_reported_by_row_and_counted(tmp_path, tokenizer, caplog, fmt):
    good = [("Be brief.", f"Name fruit number {i}.", f"Apple {i}.", f"Let me tell you about fruit {i} at length.")
            for i in range(4)]
    bad = [
        ("Be brief.", "Name a colour.", "Red.", "Red."),  # chosen == rejected
        ("Be brief.", "Name a tree.", "", "Oak."),  # empty response
        ("Be brief.", "word " * 300, "Yes.", "No."),  # the prompt alone is longer than the sequence
    ]
    rows = good[:2] + bad + good[2:]
    if fmt == "dpo":
        records = [_message_pair(*r) for r in rows]
    else:
        records = [{"input": f"{s}\n{p}", "chosen": c, "rejected": r} for s, p, c, r in rows]
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    module = dpo if fmt == "dpo" else rm
    cfg = tiny(module, tokenizer, **{"data.source": str(path), "data.seq_len": 64, "data.over_length": "drop"})

    with caplog.at_level(logging.WARNING, logger="janus_jax"):
        data = data_setup.build(cfg, model_config(cfg), REGISTRY[cfg.objective])
    report = data.report
    assert report["issues"] == {"chosen_equals_rejected": 1, "empty_field": 1, "over_length_dropped": 1}
    assert report["dropped"] == 3 and report["examples"]["train"] == 4 and report["rows_read"]["train"] == 7
    logged = caplog.text
    assert f"{fmt}.jsonl line 3 (train row 2: chosen_equals_rejected" in logged
    assert f"{fmt}.jsonl line 4 (train row 3: empty_field" in logged
    assert f"{fmt}.jsonl line 5 (train row 4: over_length_dropped" in logged


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_orpo_lowers_the_nll_and_the_odds_ratio_loss(tmp_path, tokenizer):
    workdir = tmp_path / "orpo"
    train(tiny(orpo, tokenizer, **{"train.max_steps": 40}), workdir)
    nll, odds_ratio_loss = series(workdir, "nll_loss"), -series(workdir, "log_odds_ratio")
    assert nll[-10:].mean() < nll[:10].mean() - 1.0, nll
    assert odds_ratio_loss[-10:].mean() < odds_ratio_loss[:10].mean() - 0.1, odds_ratio_loss
    np.testing.assert_allclose(odds_ratio_loss[0], np.log(2), atol=0.05)  # a fresh model barely separates sides


@pytest.mark.slow  # 30-70 s on 2 cores (make test-all); SimPO's loss is checked against TRL in make test
def test_simpo_recipe_learns_the_pairs_without_a_reference(tmp_path, tokenizer, sft_dir):
    """configs/simpo.py:tiny from the SFT checkpoint, evaluated on its own pairs every 10 steps: the loss
    falls and the margin grows (averaged over all pairs, so batch noise does not decide); no reference."""
    workdir = tmp_path / "simpo"
    overrides = {"model.init_from": str(sft_dir), "train.max_steps": 30, "train.eval_every": 10,
                 "data.eval_source": str(SAMPLES / "dpo.jsonl")}
    train(tiny(simpo, tokenizer, **overrides), workdir)
    losses, margins = series(workdir, "eval/loss"), series(workdir, "eval/rewards/margins")
    assert len(losses) == 3
    assert losses[-1] < losses[0] - 0.05, losses
    assert margins[-1] > margins[0] + 0.2, margins
    assert not (workdir / "reference_logps.npz").exists()


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_reward_model_from_the_sft_checkpoint_ranks_its_training_pairs(tmp_path, tokenizer, sft_dir):
    """The recipe's tiny twin as is (4 epochs): SFT backbone plus a fresh scalar head, evaluated on its own pairs."""
    workdir = tmp_path / "rm"
    cfg = tiny(rm, tokenizer, **{"model.init_from": str(sft_dir), "data.eval_source": str(SAMPLES / "rm.jsonl")})
    train(cfg, workdir)
    final = [r for r in read_metrics(workdir) if "eval/rewards/accuracies" in r][-1]
    assert final["eval/rewards/accuracies"] > 0.9, final


def test_best_of_n_refuses_a_checkpoint_without_a_reward_head(sft_dir):
    from janus_jax.best_of_n import load_reward_model

    with pytest.raises(ValueError, match=r"not a reward model \(no 'score' head\)"):
        load_reward_model(sft_dir)
