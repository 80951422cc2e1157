"""Every config file and every preset loads, builds its model config, and matches the paper's table."""

import importlib
from pathlib import Path

import pytest

from janus_jax.train.run import model_config
from launch.sweep import load_sweep

REPO = Path(__file__).resolve().parents[1]
PRESETS = {
    "sft": ["tiny", "janus_7b", "janus_7b_65k", "janus_7b_epoch1"],
    "dpo": ["tiny", "janus_dpo_7b"],
    "orpo": ["tiny", "janus_orpo_7b"],
    "rm": ["tiny", "tiny_helpful", "janus_rm_7b", "janus_rm_7b_helpful"],
    "simpo": ["tiny", "janus_simpo_7b"],
}
EXPERIMENTS = {"repro": ["generic", "sm1", "sm2", "sm3"]}  # SFT on the synthetic world (make repro), tiny model


def test_every_config_file_is_covered():
    files = {p.stem for p in (REPO / "configs").glob("*.py")} - {"__init__", "common"}
    assert files == set(PRESETS) | set(EXPERIMENTS)


@pytest.mark.parametrize("preset", EXPERIMENTS["repro"])
def test_repro_conditions_share_model_steps_and_held_out_split(preset):
    cfg = importlib.import_module("configs.repro").get_config(preset)
    base = importlib.import_module("configs.repro").get_config("sm3")
    assert cfg.objective == "sft" and model_config(cfg) == model_config(base)
    assert (cfg.train.max_steps, cfg.train.seed, cfg.data.eval_source) == (
        base.train.max_steps, base.train.seed, base.data.eval_source)


@pytest.mark.parametrize("name,preset", [(n, p) for n, presets in PRESETS.items() for p in presets])
def test_preset_loads_and_builds_its_model(name, preset):
    cfg = importlib.import_module(f"configs.{name}").get_config(preset)
    assert cfg.objective == name
    mcfg = model_config(cfg)
    assert cfg.train.global_batch_size % cfg.train.grad_accum_steps == 0
    if not preset.startswith("tiny"):
        assert mcfg.num_hidden_layers == 32 and mcfg.rope_theta == 1e6 and mcfg.sliding_window is None
        assert cfg.optimizer.weight_decay == 0.0
    if name != "sft":
        assert not cfg.data.packing


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'janus_70b'.*tiny"):
        importlib.import_module("configs.sft").get_config("janus_70b")


def test_paper_hyperparameters():
    sft = importlib.import_module("configs.sft").get_config("janus_7b")
    assert (sft.data.seq_len, sft.data.packing, sft.train.global_batch_size, sft.train.num_epochs) == (
        8192,
        True,
        32,
        4,
    )
    assert (sft.optimizer.lr, sft.optimizer.warmup_steps, sft.optimizer.schedule) == (5e-6, 10, "cosine")
    dpo = importlib.import_module("configs.dpo").get_config("janus_dpo_7b")
    assert (dpo.optimizer.lr, dpo.dpo.beta, dpo.data.seq_len, dpo.train.num_epochs) == (5e-7, 0.1, 2048, 2)
    orpo = importlib.import_module("configs.orpo").get_config("janus_orpo_7b")
    assert (orpo.optimizer.lr, orpo.orpo.lam, orpo.data.seq_len, orpo.train.num_epochs) == (5e-6, 0.1, 4096, 2)
    rm = importlib.import_module("configs.rm").get_config("janus_rm_7b")
    assert (rm.optimizer.lr, rm.train.global_batch_size, rm.optimizer.b2, rm.optimizer.warmup_ratio) == (
        9e-6,
        128,
        0.95,
        0.03,
    )


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("[!_]*.py")), ids=lambda p: p.stem)
def test_sweep_files_load(path):
    sweep = load_sweep(path)
    assert sweep
