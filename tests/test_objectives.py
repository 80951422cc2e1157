"""Parity of the training objectives with TRL's formulas, written out again in NumPy below.

The NumPy functions follow TRL's code (DPOTrainer.dpo_loss, ORPOTrainer.odds_ratio_loss, CPOTrainer's
SimPO loss and get_batch_logps). The parity tests run each objective's own loss (the function the train
step calls: masks, pair stacking, sums, formula, metrics) on a model whose log-probs come from known
logits, in float64, so agreement to 1e-6 tests the path training runs, not rounding. The formula-level
tests below them cover edge cases (saturated log-probs, huge margins, bad settings).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax.objectives import REGISTRY
from janus_jax.objectives import formulas as obj

TOL = {"rtol": 1e-6, "atol": 1e-6}


@pytest.fixture
def x64():
    """float64 inside one test only; the flag must not leak into other tests."""
    with jax.enable_x64(True):
        yield
    assert jnp.asarray(1.0).dtype == jnp.float32


# ------------------------------------------------------------------------------------------------
# NumPy references (TRL)
# ------------------------------------------------------------------------------------------------


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def trl_get_batch_logps(logits, labels, average_log_prob):
    """TRL get_batch_logps: shift, mask label -100, gather from log_softmax."""
    labels = labels[:, 1:].copy()
    logits = logits[:, :-1, :]
    mask = labels != -100
    labels[~mask] = 0
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    per_token = np.take_along_axis(log_softmax, labels[..., None], axis=-1)[..., 0]
    summed = (per_token * mask).sum(-1)
    return summed / mask.sum(-1) if average_log_prob else summed


def trl_dpo_loss(pc, pr, rc, rr, beta, loss_type, label_smoothing):
    """TRL dpo_loss; `sigmoid` with smoothing is the v0.19-v0.24 cDPO form (v1 is its eps=0 case)."""
    logits = (pc - pr) - (rc - rr)
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -np_log_sigmoid(beta * logits) * (1 - eps) - np_log_sigmoid(-beta * logits) * eps
    elif loss_type == "robust":
        losses = (-np_log_sigmoid(beta * logits) * (1 - eps) + np_log_sigmoid(-beta * logits) * eps) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = np.maximum(0.0, 1 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise AssertionError(loss_type)
    return losses, beta * (pc - rc), beta * (pr - rr)


def trl_log1mexp(x):
    t = -0.6931471805599453
    return np.where(x < t, np.log1p(-np.exp(np.minimum(x, t))), np.log(-np.expm1(x)))


def trl_orpo(chosen_logps, rejected_logps, nll_loss, beta):
    """TRL ORPOTrainer.odds_ratio_loss + get_batch_loss_metrics: full loss and metrics."""
    log_odds = (chosen_logps - rejected_logps) - (trl_log1mexp(chosen_logps) - trl_log1mexp(rejected_logps))
    ratio = np_log_sigmoid(log_odds)
    losses = beta * ratio
    chosen_rewards, rejected_rewards = beta * chosen_logps, beta * rejected_logps
    loss = nll_loss - losses.mean()
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": chosen_logps.mean(),
        "logps/rejected": rejected_logps.mean(),
        "nll_loss": nll_loss,
        "log_odds_ratio": ratio.mean(),
        "log_odds_chosen": log_odds.mean(),
    }
    return loss, metrics


def assert_finite_tree(tree):
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf))), leaf


# ------------------------------------------------------------------------------------------------
# DPO
# ------------------------------------------------------------------------------------------------

DPO_CASES = [
    ("sigmoid", 0.0),
    ("sigmoid", 0.1),
    ("robust", 0.0),
    ("robust", 0.2),
    ("hinge", 0.0),
    ("ipo", 0.0),
]


def _dpo_inputs(rng, batch=16):
    """Summed completion log-probs, with edge rows: equal log-probs, a huge margin either way."""
    pc, pr, rc, rr = (-rng.uniform(5.0, 400.0, size=batch) for _ in range(4))
    pr[0], rc[0], rr[0] = pc[0], pc[0], pc[0]  # all equal: delta = 0
    pc[1], pr[1], rc[1], rr[1] = -1.0, -5000.0, -3000.0, -3000.0  # delta = +4999
    pc[2], pr[2], rc[2], rr[2] = -5000.0, -1.0, -3000.0, -3000.0  # delta = -4999
    return pc, pr, rc, rr


@pytest.mark.parametrize(("loss_type", "label_smoothing"), DPO_CASES)
def test_dpo_loss_matches_trl(x64, loss_type, label_smoothing):
    rng = np.random.default_rng(3)
    inputs = _dpo_inputs(rng)
    if loss_type == "ipo":  # IPO takes per-token means: the caller divides by token counts.
        counts = rng.integers(1, 300, size=(4, inputs[0].size))
        inputs = tuple(
            np.asarray(obj.mean_logps(jnp.asarray(summed), jnp.asarray(count)))
            for summed, count in zip(inputs, counts, strict=True)
        )
        np.testing.assert_allclose(inputs[0], _dpo_inputs(np.random.default_rng(3))[0] / counts[0], **TOL)
    for beta in (0.1, 0.5):
        expected = trl_dpo_loss(*inputs, beta, loss_type, label_smoothing)
        got = obj.dpo_loss(*map(jnp.asarray, inputs), beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
        for g, e in zip(got, expected, strict=True):
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, e, **TOL)
    if loss_type in ("sigmoid", "robust"):
        assert got[0][0] == pytest.approx(math.log(2.0), abs=1e-12)  # delta = 0 gives log 2 either way


@pytest.mark.parametrize(("loss_type", "label_smoothing"), DPO_CASES)
def test_dpo_gradients_are_finite_at_edge_cases(loss_type, label_smoothing):
    inputs = tuple(jnp.asarray(a, jnp.float32) for a in _dpo_inputs(np.random.default_rng(4)))

    def total(policy_chosen, policy_rejected):
        losses, chosen_rewards, _ = obj.dpo_loss(
            policy_chosen,
            policy_rejected,
            inputs[2],
            inputs[3],
            beta=0.1,
            loss_type=loss_type,
            label_smoothing=label_smoothing,
        )
        return losses.sum() + chosen_rewards.sum()  # rewards carry no gradient

    value, grads = jax.value_and_grad(total, argnums=(0, 1))(inputs[0], inputs[1])
    assert_finite_tree((value, grads))
    if loss_type == "sigmoid" and label_smoothing == 0.0:
        # d(-log sigmoid(b*d))/d(pc) = -b*sigmoid(-b*d); at d = 0 that is -b/2.
        assert float(grads[0][0]) == pytest.approx(-0.05, abs=1e-7)
        assert float(grads[1][0]) == pytest.approx(0.05, abs=1e-7)


def test_dpo_rejects_bad_settings_with_named_fields():
    a = jnp.zeros(3)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        obj.dpo_loss(a, a, a, a, beta=0.1, loss_type="kto_pair")
    with pytest.raises(ValueError, match="beta must be > 0"):
        obj.dpo_loss(a, a, a, a, beta=0.0, loss_type="sigmoid")
    with pytest.raises(ValueError, match="not defined for loss_type='ipo'"):
        obj.dpo_loss(a, a, a, a, beta=0.1, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="'robust' must be in"):
        obj.dpo_loss(a, a, a, a, beta=0.1, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        obj.dpo_loss(a, a, a, jnp.zeros(4), beta=0.1, loss_type="sigmoid")


# ------------------------------------------------------------------------------------------------
# ORPO
# ------------------------------------------------------------------------------------------------


def _orpo_inputs(rng, batch=24):
    """Mean completion log-probs spanning p near 0, p near 1, the -ln 2 branch point and ties."""
    chosen = -rng.uniform(0.01, 4.0, size=batch)
    rejected = -rng.uniform(0.01, 4.0, size=batch)
    edge = [
        (-60.0, -700.0),  # p ~ 0 for both
        (-1e-6, -3.0),  # chosen p ~ 1
        (-2.0, -1e-6),  # rejected p ~ 1
        (-1e-6, -2e-6),  # both p ~ 1
        (-math.log(2.0), -0.5),  # exactly on the branch point
        (-1.3, -1.3),  # equal
    ]
    for i, (c, r) in enumerate(edge):
        chosen[i], rejected[i] = c, r
    return chosen, rejected


def test_orpo_formula_matches_trl_at_edge_log_probs(x64):
    rng = np.random.default_rng(5)
    chosen, rejected = _orpo_inputs(rng)
    nll = 1.7345
    for lam in (0.1, 0.25):
        expected_loss, expected_metrics = trl_orpo(chosen, rejected, nll, lam)
        losses, log_odds = obj.orpo_loss(jnp.asarray(chosen), jnp.asarray(rejected), jnp.asarray(nll), lam=lam)
        assert losses.shape == chosen.shape
        np.testing.assert_allclose(losses.mean(), expected_loss, **TOL)
        np.testing.assert_allclose(log_odds.mean(), expected_metrics["log_odds_chosen"], **TOL)

    # Per-pair NLL: each pair's loss is its own NLL + lam * L_OR.
    per_pair_nll = rng.uniform(0.5, 3.0, size=chosen.shape)
    losses, _ = obj.orpo_loss(jnp.asarray(chosen), jnp.asarray(rejected), jnp.asarray(per_pair_nll), lam=0.1)
    log_odds = (chosen - rejected) - (trl_log1mexp(chosen) - trl_log1mexp(rejected))
    np.testing.assert_allclose(losses, per_pair_nll - 0.1 * np_log_sigmoid(log_odds), **TOL)


def test_orpo_log1mexp_is_accurate_on_both_branches(x64):
    x = -np.array([1e-6, 1e-3, 0.5, math.log(2.0), 0.7, 5.0, 40.0, 700.0])
    # Reference: log(-expm1(x)) is exact near 0; below -0.4 sum the series -sum_k e^{kx}/k instead.
    exact = [
        math.log(-math.expm1(v)) if v > -0.4 else -math.fsum(math.exp(k * v) / k for k in range(1, 400)) for v in x
    ]
    np.testing.assert_allclose(obj.log1mexp(jnp.asarray(x)), exact, rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_orpo_gradients_are_finite_at_edge_cases_including_saturated_log_probs(dtype):
    chosen, rejected = (jnp.asarray(a, dtype) for a in _orpo_inputs(np.random.default_rng(6)))
    # A saturated model: a mean log-prob that rounds to exactly 0 (TRL's log(0) case).
    chosen = chosen.at[-1].set(0.0)
    rejected = rejected.at[-2].set(0.0)

    def total(c, r, nll):
        losses, _ = obj.orpo_loss(c, r, nll, lam=0.1)
        return losses.mean()

    value, grads = jax.value_and_grad(total, argnums=(0, 1, 2))(chosen, rejected, jnp.asarray(2.0, dtype))
    assert_finite_tree((value, grads))
    assert float(grads[2]) == pytest.approx(1.0)  # the NLL enters with weight 1
    # Pushing chosen up / rejected down must lower the loss for every pair with p not saturated.
    assert np.all(np.asarray(grads[0][:-1], np.float32) <= 0)
    assert np.all(np.asarray(grads[1][:-2], np.float32) >= 0)


def test_orpo_rejects_bad_inputs():
    a = jnp.full(3, -1.0)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        obj.orpo_loss(a, a, jnp.asarray(1.0), lam=-0.1)
    with pytest.raises(ValueError, match="chosen_nll must be a scalar or shape"):
        obj.orpo_loss(a, a, jnp.ones(2), lam=0.1)
    with pytest.raises(ValueError, match="rejected_mean_logps"):
        obj.orpo_loss(a, jnp.full(4, -1.0), jnp.asarray(1.0), lam=0.1)


# ------------------------------------------------------------------------------------------------
# Bradley-Terry and metrics
# ------------------------------------------------------------------------------------------------


def test_bradley_terry_loss_matches_numpy_with_finite_gradients(x64):
    rng = np.random.default_rng(7)
    chosen, rejected = rng.normal(scale=3.0, size=10), rng.normal(scale=3.0, size=10)
    chosen[:3], rejected[:3] = [0.5, 800.0, -800.0], [0.5, -800.0, 800.0]  # tie, sure win, sure loss
    got = obj.bradley_terry_loss(jnp.asarray(chosen), jnp.asarray(rejected))
    np.testing.assert_allclose(got, -np_log_sigmoid(chosen - rejected), **TOL)
    assert float(got[0]) == pytest.approx(math.log(2.0), abs=1e-12)
    grads = jax.grad(lambda c, r: obj.bradley_terry_loss(c, r).sum(), argnums=(0, 1))(
        jnp.asarray(chosen), jnp.asarray(rejected)
    )
    assert_finite_tree(grads)
    np.testing.assert_allclose(grads[0], -np.exp(np_log_sigmoid(rejected - chosen)), **TOL)


# ------------------------------------------------------------------------------------------------
# The objectives' own loss functions (what the train step runs) against TRL on known logits
# ------------------------------------------------------------------------------------------------


def trl_simpo(chosen_mean, rejected_mean, beta, gamma, label_smoothing):
    """TRL CPOTrainer.cpo_loss with loss_type="simpo" (cpo_alpha=0): length-normalised log-probs."""
    logits = (chosen_mean - rejected_mean) - gamma / beta
    losses = -np_log_sigmoid(beta * logits) * (1 - label_smoothing) - np_log_sigmoid(-beta * logits) * label_smoothing
    return losses, beta * chosen_mean, beta * rejected_mean


class LogitsModel:
    """A stand-in policy whose next-token logits are given: `target_logps` as Mistral's contract states it."""

    def __init__(self, logits):
        self.logits = jnp.asarray(logits)

    def target_logps(self, input_ids, targets, positions, segment_ids, scored):
        logp = jax.nn.log_softmax(self.logits, axis=-1)
        picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        return jnp.where(scored, picked, 0.0)


class RewardsModel:
    """A stand-in reward model returning given rewards for the stacked [chosen; rejected] rows."""

    def __init__(self, rewards):
        self.rewards = jnp.asarray(rewards)

    def __call__(self, input_ids, positions, segment_ids, lengths):
        assert input_ids.shape[0] == self.rewards.shape[0]
        return self.rewards


def _pair_batch(rng, pairs=4, length=10, vocab=13, equal_lengths=False):
    """A pair batch in the pipeline's next-token form, plus TRL-style labels (-100 off the response)."""
    rows = 2 * pairs
    ids = rng.integers(0, vocab, size=(rows, length + 1))
    prompt = rng.integers(1, 4, size=rows)
    real = np.full(rows, length + 1) if equal_lengths else rng.integers(6, length + 2, size=rows)
    pos = np.arange(length)[None]
    segment = (pos < (real - 1)[:, None]).astype(np.int32)
    response = (pos >= (prompt - 1)[:, None]) & (segment > 0)
    batch = {}
    for side, sl in (("chosen", slice(0, pairs)), ("rejected", slice(pairs, rows))):
        batch[f"{side}_input_ids"] = ids[sl, :-1]
        batch[f"{side}_targets"] = ids[sl, 1:]
        batch[f"{side}_positions"] = np.broadcast_to(pos, (pairs, length))
        batch[f"{side}_segment_ids"] = segment[sl]
        batch[f"{side}_loss_weights"] = response[sl].astype(np.float64)
        batch[f"{side}_lengths"] = real[sl] - 1
    batch["pair_weights"] = np.ones(pairs)
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    labels = np.concatenate([ids[:, :1], np.where(response, ids[:, 1:], -100)], axis=1)
    full_labels = np.concatenate([ids[:, :1], np.where(segment > 0, ids[:, 1:], -100)], axis=1)
    return batch, labels, full_labels


def _logits_for(labels, rng, vocab=13):
    """Logits [rows, T + 1, V] for TRL (which shifts them) and the same positions for janus [rows, T, V]."""
    full = rng.normal(scale=2.0, size=(labels.shape[0], labels.shape[1], vocab))
    return full, full[:, :-1]


def _run(name, model, batch, ref_model=None, **section):
    """The objective's loss as the train step calls it: metrics divided by the loss weight once."""
    from ml_collections import ConfigDict

    objective = REGISTRY[name]
    cfg = ConfigDict({"objective": name, **({objective.config_section: section} if objective.config_section else {})})
    out = objective.bound_loss(cfg)(model, batch, ref_model)
    weight = float(out.weight)
    return float(out.loss_sum) / weight, {k: float(v) / weight for k, v in out.metric_sums.items()}


def test_sft_objective_is_the_mean_nll_of_response_tokens(x64):
    rng = np.random.default_rng(11)
    batch, labels, _ = _pair_batch(rng)
    sft = {k.removeprefix("chosen_"): v for k, v in batch.items() if k.startswith("chosen_")}
    trl_logits, logits = _logits_for(labels[:4], rng)
    loss, metrics = _run("sft", LogitsModel(logits), sft)
    summed = trl_get_batch_logps(trl_logits, labels[:4], average_log_prob=False)
    tokens = (labels[:4, 1:] != -100).sum()
    np.testing.assert_allclose(loss, -summed.sum() / tokens, **TOL)
    assert metrics["loss"] == pytest.approx(loss)


@pytest.mark.parametrize(("loss_type", "label_smoothing"), DPO_CASES)
@pytest.mark.parametrize("reference", ["model", "precomputed"])
def test_dpo_objective_matches_trl(x64, loss_type, label_smoothing, reference):
    rng = np.random.default_rng(12)
    batch, labels, _ = _pair_batch(rng)
    trl_policy, policy = _logits_for(labels, rng)
    trl_ref, ref = _logits_for(labels, rng)
    average = loss_type == "ipo"
    p = trl_get_batch_logps(trl_policy, labels, average)
    r = trl_get_batch_logps(trl_ref, labels, average)
    losses, chosen_rewards, rejected_rewards = trl_dpo_loss(p[:4], p[4:], r[:4], r[4:], 0.1, loss_type, label_smoothing)
    ref_model = LogitsModel(ref)
    if reference == "precomputed":  # summed log-probs in the batch, as janus-precompute-ref writes them
        summed = trl_get_batch_logps(trl_ref, labels, average_log_prob=False)
        batch = {**batch, "ref_chosen_logps": jnp.asarray(summed[:4]), "ref_rejected_logps": jnp.asarray(summed[4:])}
        ref_model = None
    section = dict(beta=0.1, loss_type=loss_type, label_smoothing=label_smoothing)
    loss, metrics = _run("dpo", LogitsModel(policy), batch, ref_model, **section)
    np.testing.assert_allclose(loss, losses.mean(), **TOL)
    np.testing.assert_allclose(metrics["rewards/chosen"], chosen_rewards.mean(), **TOL)
    np.testing.assert_allclose(metrics["rewards/margins"], (chosen_rewards - rejected_rewards).mean(), **TOL)
    assert metrics["rewards/accuracies"] == pytest.approx((chosen_rewards > rejected_rewards).mean())
    np.testing.assert_allclose(metrics["logps/chosen"], p[:4].mean(), **TOL)


def test_orpo_objective_matches_trl_loss_and_metrics(x64):
    # Equal sequence lengths: TRL averages the NLL over the batch's tokens, janus per pair; they agree here.
    rng = np.random.default_rng(13)
    batch, labels, full_labels = _pair_batch(rng, equal_lengths=True)
    trl_logits, logits = _logits_for(labels, rng)
    mean = trl_get_batch_logps(trl_logits, labels, average_log_prob=True)
    full = trl_get_batch_logps(trl_logits[:4], full_labels[:4], average_log_prob=False)
    nll = -full.sum() / (full_labels[:4, 1:] != -100).sum()
    for lam in (0.1, 0.25):
        expected_loss, expected = trl_orpo(mean[:4], mean[4:], nll, lam)
        loss, metrics = _run("orpo", LogitsModel(logits), batch, lam=lam, nll_on_prompt=True)
        np.testing.assert_allclose(loss, expected_loss, **TOL)
        for name, value in expected.items():
            np.testing.assert_allclose(metrics[name], value, **TOL, err_msg=name)


@pytest.mark.parametrize(("beta", "gamma", "label_smoothing"), [(2.0, 1.0, 0.0), (2.5, 0.5, 0.1), (0.1, 0.0, 0.0)])
def test_simpo_objective_matches_trl_cpo_simpo(x64, beta, gamma, label_smoothing):
    rng = np.random.default_rng(14)
    batch, labels, _ = _pair_batch(rng)
    trl_logits, logits = _logits_for(labels, rng)
    mean = trl_get_batch_logps(trl_logits, labels, average_log_prob=True)
    losses, chosen_rewards, rejected_rewards = trl_simpo(mean[:4], mean[4:], beta, gamma, label_smoothing)
    section = dict(beta=beta, gamma=gamma, label_smoothing=label_smoothing)
    loss, metrics = _run("simpo", LogitsModel(logits), batch, **section)
    np.testing.assert_allclose(loss, losses.mean(), **TOL)
    np.testing.assert_allclose(metrics["rewards/chosen"], chosen_rewards.mean(), **TOL)
    np.testing.assert_allclose(metrics["rewards/rejected"], rejected_rewards.mean(), **TOL)
    np.testing.assert_allclose(metrics["logps/rejected"], mean[4:].mean(), **TOL)


def test_simpo_gradient_pushes_chosen_up_and_rejects_bad_settings():
    c, r = jnp.array([-1.0, -2.0]), jnp.array([-1.5, -0.5])
    grads = jax.grad(lambda c, r: obj.simpo_loss(c, r, beta=2.0, gamma=1.0)[0].sum(), argnums=(0, 1))(c, r)
    assert np.all(np.asarray(grads[0]) < 0) and np.all(np.asarray(grads[1]) > 0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        obj.simpo_loss(c, r, beta=0.0, gamma=1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        obj.simpo_loss(c, r, beta=2.0, gamma=1.0, label_smoothing=0.7)


def test_rm_objective_is_bradley_terry_with_weighted_filler_pairs(x64):
    rng = np.random.default_rng(15)
    batch, _, _ = _pair_batch(rng)
    batch["pair_weights"] = jnp.asarray([1.0, 1.0, 1.0, 0.0])  # the last pair fills the epoch's batch
    rewards = rng.normal(size=8)
    loss, metrics = _run("rm", RewardsModel(rewards), batch)
    rc, rr = rewards[:3], rewards[4:7]
    np.testing.assert_allclose(loss, (-np_log_sigmoid(rc - rr)).mean(), **TOL)
    np.testing.assert_allclose(metrics["rewards/margins"], (rc - rr).mean(), **TOL)


def test_registry_names_each_objective_once_with_its_settings():
    assert set(REGISTRY) == {"sft", "dpo", "orpo", "rm", "simpo"}
    assert [n for n, o in REGISTRY.items() if o.needs_reference] == ["dpo"]
    assert [n for n, o in REGISTRY.items() if not o.pairs] == ["sft"]
    pair = {"chosen_loss_weights": np.array([[0, 1, 1]]), "rejected_loss_weights": np.array([[0, 0, 1]]),
            "chosen_segment_ids": np.ones((1, 3)), "rejected_segment_ids": np.array([[1, 1, 0]])}
    assert REGISTRY["dpo"].head_positions(pair) == 3
    assert REGISTRY["simpo"].head_positions(pair) == 3
    assert REGISTRY["orpo"].head_positions(pair) == 5  # every real token: the NLL covers the prompt too
    assert REGISTRY["rm"].head_positions(pair) == 0
