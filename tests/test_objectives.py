"""Parity of janus_jax.objectives with TRL's formulas, written out again in NumPy below.

The NumPy functions follow TRL's code (DPOTrainer.dpo_loss, ORPOTrainer.odds_ratio_loss and
get_batch_logps); the JAX side runs in float64 so agreement to 1e-6 tests the formulas, not rounding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax import objectives as obj

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
# sequence_logps
# ------------------------------------------------------------------------------------------------


def test_sequence_logps_matches_numpy_and_ignores_zero_weight_positions(x64):
    rng = np.random.default_rng(0)
    batch, length, vocab = 3, 9, 13
    logits = rng.normal(scale=3.0, size=(batch, length, vocab))
    targets = rng.integers(0, vocab, size=(batch, length))
    weights = (rng.random((batch, length)) > 0.4).astype(np.float64)
    weights[0] = 0.0  # a padding row: no tokens at all

    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    per_token = np.take_along_axis(log_softmax, targets[..., None], axis=-1)[..., 0]
    expected = np.where(weights > 0, per_token, 0.0).sum(-1)

    summed, counts = obj.sequence_logps(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    np.testing.assert_allclose(summed, expected, **TOL)
    np.testing.assert_array_equal(counts, (weights > 0).sum(-1))
    assert counts.dtype == jnp.int32

    # Garbage ids where weight is 0 (TRL's -100, out-of-vocab) change nothing and produce no NaN.
    garbage = np.where(weights > 0, targets, np.where(rng.random(targets.shape) > 0.5, -100, vocab + 7))
    summed_garbage, _ = jax.jit(obj.sequence_logps)(logits, garbage, weights)
    np.testing.assert_allclose(summed_garbage, expected, **TOL)

    means = obj.mean_logps(summed, counts)
    np.testing.assert_allclose(means[1:], expected[1:] / (weights[1:] > 0).sum(-1), **TOL)
    assert float(means[0]) == 0.0


def test_sequence_logps_reproduces_trl_get_batch_logps_after_the_callers_shift(x64):
    rng = np.random.default_rng(1)
    batch, length, vocab = 4, 10, 17
    logits = rng.normal(size=(batch, length, vocab))
    input_ids = rng.integers(0, vocab, size=(batch, length))
    prompt_lens = np.array([2, 3, 5, 1])
    real_lens = np.array([10, 8, 9, 4])
    positions = np.arange(length)[None]
    labels = np.where((positions >= prompt_lens[:, None]) & (positions < real_lens[:, None]), input_ids, -100)

    for average in (False, True):
        expected = trl_get_batch_logps(logits, labels, average_log_prob=average)
        summed, counts = obj.sequence_logps(
            jnp.asarray(logits[:, :-1]), jnp.asarray(input_ids[:, 1:]), jnp.asarray(labels[:, 1:] != -100)
        )
        got = obj.mean_logps(summed, counts) if average else summed
        np.testing.assert_allclose(got, expected, **TOL)


def test_sequence_logps_upcasts_bf16_logits_and_checks_shapes():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 8)), dtype=jnp.bfloat16)
    targets = jnp.zeros((2, 4), jnp.int32)
    summed, _ = obj.sequence_logps(logits, targets, jnp.ones((2, 4)))
    assert summed.dtype == jnp.float32
    expected = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[..., 0].sum(-1)
    np.testing.assert_allclose(summed, expected, rtol=1e-6)

    with pytest.raises(ValueError, match="targets shape"):
        obj.sequence_logps(logits, jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="weights shape"):
        obj.sequence_logps(logits, targets, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="logits must be"):
        obj.sequence_logps(logits[0], targets[0], jnp.ones((4,)))


def test_out_of_vocab_target_at_a_weighted_position_shows_up_as_nan():
    logits = jnp.zeros((1, 2, 5))
    summed, _ = obj.sequence_logps(logits, jnp.array([[1, 9]]), jnp.ones((1, 2)))
    assert np.isnan(float(summed[0]))


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


def test_orpo_loss_and_metrics_match_trl(x64):
    rng = np.random.default_rng(5)
    chosen, rejected = _orpo_inputs(rng)
    nll = 1.7345
    for lam in (0.1, 0.25):
        expected_loss, expected_metrics = trl_orpo(chosen, rejected, nll, lam)
        losses, metrics = obj.orpo_loss(jnp.asarray(chosen), jnp.asarray(rejected), jnp.asarray(nll), lam=lam)
        assert losses.shape == chosen.shape
        np.testing.assert_allclose(losses.mean(), expected_loss, **TOL)
        for name, value in expected_metrics.items():
            np.testing.assert_allclose(metrics[name], value, **TOL, err_msg=name)
        np.testing.assert_allclose(metrics["or_loss"], -expected_metrics["log_odds_ratio"], **TOL)

    # Per-pair NLL: each pair's loss is its own NLL + lam * L_OR.
    per_pair_nll = rng.uniform(0.5, 3.0, size=chosen.shape)
    losses, metrics = obj.orpo_loss(jnp.asarray(chosen), jnp.asarray(rejected), jnp.asarray(per_pair_nll), lam=0.1)
    log_odds = (chosen - rejected) - (trl_log1mexp(chosen) - trl_log1mexp(rejected))
    np.testing.assert_allclose(losses, per_pair_nll - 0.1 * np_log_sigmoid(log_odds), **TOL)
    np.testing.assert_allclose(metrics["nll_loss"], per_pair_nll.mean(), **TOL)


def test_orpo_log1mexp_is_accurate_on_both_branches(x64):
    x = -np.array([1e-6, 1e-3, 0.5, math.log(2.0), 0.7, 5.0, 40.0, 700.0])
    # Reference: log(-expm1(x)) is exact near 0; below -0.4 sum the series -sum_k e^{kx}/k instead.
    exact = [
        math.log(-math.expm1(v)) if v > -0.4 else -math.fsum(math.exp(k * v) / k for k in range(1, 400)) for v in x
    ]
    np.testing.assert_allclose(obj._log1mexp(jnp.asarray(x)), exact, rtol=1e-12)


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


def test_preference_metrics_use_trl_names_and_strict_accuracy():
    chosen = jnp.array([1.0, 2.0, 0.5, -1.0])
    rejected = jnp.array([0.0, 2.0, 1.0, -3.0])  # win, tie, loss, win
    metrics = obj.preference_metrics(chosen, rejected, jnp.array([-10.0, -20.0, -30.0, -40.0]), -jnp.ones(4))
    assert set(metrics) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    }
    assert float(metrics["rewards/accuracies"]) == 0.5  # the tie counts as wrong
    assert float(metrics["rewards/margins"]) == pytest.approx(0.625)
    assert float(metrics["rewards/chosen"]) == pytest.approx(0.625)
    assert float(metrics["rewards/rejected"]) == pytest.approx(0.0)
    assert float(metrics["logps/chosen"]) == pytest.approx(-25.0)
    assert float(metrics["logps/rejected"]) == pytest.approx(-1.0)


def test_dpo_pipeline_from_logits_matches_trl_end_to_end(x64):
    """sequence_logps -> dpo_loss on one concatenated [chosen; rejected] batch, as the trainer runs it."""
    rng = np.random.default_rng(8)
    pairs, length, vocab = 3, 8, 11
    ids = rng.integers(0, vocab, size=(2 * pairs, length))
    prompt_lens = np.array([2, 3, 1, 2, 3, 1])
    real_lens = np.array([8, 6, 7, 5, 8, 4])
    pos = np.arange(length)[None]
    labels = np.where((pos >= prompt_lens[:, None]) & (pos < real_lens[:, None]), ids, -100)
    policy_logits, ref_logits = rng.normal(size=(2, 2 * pairs, length, vocab))

    for loss_type, average in (("sigmoid", False), ("ipo", True)):
        trl_policy = trl_get_batch_logps(policy_logits, labels, average)
        trl_ref = trl_get_batch_logps(ref_logits, labels, average)
        expected = trl_dpo_loss(
            trl_policy[:pairs], trl_policy[pairs:], trl_ref[:pairs], trl_ref[pairs:], 0.1, loss_type, 0.0
        )

        def logps(logits, average=average):
            summed, counts = obj.sequence_logps(
                jnp.asarray(logits[:, :-1]), jnp.asarray(ids[:, 1:]), jnp.asarray(labels[:, 1:] != -100)
            )
            return obj.mean_logps(summed, counts) if average else summed

        policy, ref = logps(policy_logits), logps(ref_logits)
        got = obj.dpo_loss(policy[:pairs], policy[pairs:], ref[:pairs], ref[pairs:], beta=0.1, loss_type=loss_type)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, **TOL)
