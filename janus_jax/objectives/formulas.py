"""Preference-optimisation losses (DPO, ORPO, SimPO, Bradley-Terry) as pure functions of per-sequence numbers.

Why this shape: the objectives (janus_jax/objectives/*.py) own the forward passes; these functions only see
per-sequence log-probs (or rewards), so each formula reads line by line against TRL.
TRL is the parity reference: formulas, clipping and metric names follow it, and every deviation is
named in the docstring that makes it.

Array conventions: every per-sequence input has shape ``[B]`` (one entry per preference pair) and
the chosen/rejected arrays of one call share that shape. Computations run in float32 at least
(float64 stays float64), whatever the model's compute dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "DPO_LOSS_TYPES",
    "bradley_terry_loss",
    "dpo_loss",
    "log1mexp",
    "masked_sums",
    "mean_logps",
    "orpo_loss",
    "simpo_loss",
]

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")

# log1mexp switches formula at -ln 2 (Maechler 2012), as TRL's ORPO does.
_NEG_LN2 = -math.log(2.0)
# Largest mean log-prob fed to log(1 - p). TRL lets a mean log-prob of exactly 0 through (float32
# rounding of a saturated model), giving log(0) = -inf, a NaN loss and NaN gradients. Capping at
# -1e-7 (Tunix clips at the same value) changes the loss only when the mean token probability is
# above 1 - 1e-7, and bounds the gradient of log(1 - p) by 1e7.
_MAX_MEAN_LOGP = -1e-7


def _float(x: jax.Array) -> jax.Array:
    """Cast to at least float32 (bf16 logits are upcast, float64 is kept)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _same_shape(names_and_arrays: dict[str, jax.Array]) -> None:
    shapes = {name: jnp.shape(a) for name, a in names_and_arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"per-sequence inputs must share one shape, got {shapes}")


# ----------------------------------------------------------------------------------------------------
# Log-probabilities of sequences
# ----------------------------------------------------------------------------------------------------


def masked_sums(per_token: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(sum of per_token where mask [B], count of mask [B] int32)``; masked-out values may be NaN."""
    summed = jnp.sum(jnp.where(mask, per_token, 0.0), axis=-1)
    return summed, jnp.sum(mask, axis=-1, dtype=jnp.int32)


def mean_logps(summed_logps: jax.Array, token_counts: jax.Array) -> jax.Array:
    """Per-token mean log-prob (TRL's ``average_log_prob=True``), 0 for rows without tokens.

    Rows with no tokens are padding rows of a fixed-shape batch; giving them 0 instead of NaN keeps
    NaN out of the gradient when the trainer weights them out. Empty completions in real data must
    be rejected by the data pipeline, not here.
    """
    summed_logps = _float(summed_logps)
    counts = token_counts.astype(summed_logps.dtype)
    return jnp.where(counts > 0, summed_logps / jnp.maximum(counts, 1), 0.0)


# ----------------------------------------------------------------------------------------------------
# DPO
# ----------------------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    ref_chosen_logps: jax.Array,
    ref_rejected_logps: jax.Array,
    *,
    beta: float,
    loss_type: str,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-pair DPO loss and the implicit rewards, as TRL's ``DPOTrainer.dpo_loss``.

    With Δ = (π_c − ref_c) − (π_r − ref_r) and ε = ``label_smoothing``:

    - ``sigmoid``: −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ). With ε = 0 this is TRL v1.x (HEAD), which dropped
      smoothing from ``sigmoid``; ε > 0 is the conservative-DPO form of TRL v0.19–v0.24. ε ∈ [0, 0.5].
    - ``robust``: [−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)] / (1 − 2ε), ε ∈ [0, 0.5) (TRL v0.19 to HEAD).
    - ``hinge``: max(0, 1 − βΔ) (TRL v0.19 to HEAD); no smoothing.
    - ``ipo``: (Δ − 1/(2β))² (TRL v0.19 to HEAD, β is the paper's τ); no smoothing.

    Inputs are summed completion log-probs (:func:`masked_sums` over the completion mask) for ``sigmoid``, ``robust``
    and ``hinge``. IPO is length-normalised in TRL: for ``ipo`` the caller passes all four inputs as
    per-token means (:func:`mean_logps` of the same sums and counts), as TRL v0.19–v0.24 do by
    dividing every log-prob by its completion's token count before the loss. The rewards are then
    β times mean-log-prob ratios, which is also what those versions log.

    Returns ``(losses [B], chosen_rewards [B], rejected_rewards [B])`` with rewards β·(π − ref) under
    ``stop_gradient`` (TRL detaches them). Reduce ``losses`` with a mean over pairs.
    ``beta`` and ``label_smoothing`` are hyper-parameters (Python floats), checked when called.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    beta, eps = float(beta), float(label_smoothing)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if loss_type in ("ipo", "hinge") and eps != 0.0:
        raise ValueError(f"label_smoothing is not defined for loss_type={loss_type!r}; got {eps}, expected 0")
    if loss_type == "sigmoid" and not 0.0 <= eps <= 0.5:
        raise ValueError(f"label_smoothing for 'sigmoid' must be in [0, 0.5], got {eps}")
    if loss_type == "robust" and not 0.0 <= eps < 0.5:
        raise ValueError(f"label_smoothing for 'robust' must be in [0, 0.5), got {eps}")
    _same_shape(
        {
            "policy_chosen_logps": policy_chosen_logps,
            "policy_rejected_logps": policy_rejected_logps,
            "ref_chosen_logps": ref_chosen_logps,
            "ref_rejected_logps": ref_rejected_logps,
        }
    )
    chosen_logratios = _float(policy_chosen_logps) - _float(ref_chosen_logps)
    rejected_logratios = _float(policy_rejected_logps) - _float(ref_rejected_logps)
    delta = chosen_logratios - rejected_logratios

    if loss_type == "sigmoid":
        losses = -(1 - eps) * jax.nn.log_sigmoid(beta * delta) - eps * jax.nn.log_sigmoid(-beta * delta)
    elif loss_type == "robust":
        losses = (-(1 - eps) * jax.nn.log_sigmoid(beta * delta) + eps * jax.nn.log_sigmoid(-beta * delta)) / (
            1 - 2 * eps
        )
    elif loss_type == "hinge":
        losses = jax.nn.relu(1 - beta * delta)
    else:  # ipo
        losses = (delta - 1 / (2 * beta)) ** 2

    chosen_rewards = jax.lax.stop_gradient(beta * chosen_logratios)
    rejected_rewards = jax.lax.stop_gradient(beta * rejected_logratios)
    return losses, chosen_rewards, rejected_rewards


# ----------------------------------------------------------------------------------------------------
# ORPO
# ----------------------------------------------------------------------------------------------------


def log1mexp(x: jax.Array) -> jax.Array:
    """log(1 − eˣ) for x ≤ 0 without cancellation, with finite gradients on both branches.

    As TRL's ORPO: log(−expm1(x)) near 0, log1p(−eˣ) below −ln 2, and the unselected log1p branch
    fed a clipped input so ``jnp.where`` never differentiates through log1p(−1). Inputs above
    ``_MAX_MEAN_LOGP`` are capped there (see that constant).
    """
    x = jnp.minimum(x, _MAX_MEAN_LOGP)
    far = jnp.log1p(-jnp.exp(jnp.minimum(x, _NEG_LN2)))
    near = jnp.log(-jnp.expm1(x))
    return jnp.where(x < _NEG_LN2, far, near)


def orpo_loss(
    chosen_mean_logps: jax.Array,
    rejected_mean_logps: jax.Array,
    chosen_nll: jax.Array,
    *,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Per-pair ORPO loss NLL + λ·L_OR and the log-odds z it is made of (TRL ``trl.experimental.orpo``, HEAD).

    With ℓ the per-token mean completion log-prob (TRL's ``get_batch_logps(average_log_prob=True)``,
    here :func:`mean_logps` over the completion mask):
    z = (ℓ_c − ℓ_r) − (log(1 − e^ℓ_c) − log(1 − e^ℓ_r)) and L_OR = −log σ(z). The only deviation from
    TRL: inside log(1 − e^ℓ) a mean log-prob above −1e-7 is taken as −1e-7, so a saturated model
    (ℓ rounding to 0, where TRL's log(0) gives a NaN loss) keeps a finite loss and gradient.

    ``chosen_nll`` is the SFT term, a scalar or ``[B]``, added to every pair's loss. Which tokens it
    covers is the caller's switch: TRL and the released Janus+ORPO take the token-mean cross-entropy
    over the whole chosen sequence, prompt included (TRL PR #2527); completion-only is the
    alternative. For TRL parity pass the scalar −Σ summed_logps / Σ token_counts of the chosen half,
    with weights on every real token; then ``losses.mean()`` equals TRL's
    ``nll_loss − mean(β·log σ(z))``, β being TRL's name for λ (Janus: ``orpo_alpha`` 0.1).

    Returns ``(losses [B], log_odds [B])``; the objective (janus_jax/objectives/orpo.py) turns z into
    TRL's metrics ``log_odds_ratio`` (mean log σ(z)) and ``log_odds_chosen`` (mean z).
    """
    lam = float(lam)
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    _same_shape({"chosen_mean_logps": chosen_mean_logps, "rejected_mean_logps": rejected_mean_logps})
    chosen = _float(chosen_mean_logps)
    rejected = _float(rejected_mean_logps)
    nll = _float(chosen_nll)
    if nll.ndim != 0 and nll.shape != chosen.shape:
        raise ValueError(f"chosen_nll must be a scalar or shape {chosen.shape}, got {nll.shape}")

    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    losses = nll - lam * jax.nn.log_sigmoid(log_odds)
    return losses, log_odds


# ----------------------------------------------------------------------------------------------------
# SimPO
# ----------------------------------------------------------------------------------------------------


def simpo_loss(
    chosen_mean_logps: jax.Array,
    rejected_mean_logps: jax.Array,
    *,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-pair SimPO loss (Meng et al. 2024) and its rewards, as TRL's ``CPOTrainer`` with ``loss_type="simpo"``.

    With ℓ the per-token mean completion log-prob (length-normalised, no reference model) and
    u = β·(ℓ_c − ℓ_r) − γ: loss = −(1−ε)·log σ(u) − ε·log σ(−u), γ being the target reward margin
    (TRL's ``simpo_gamma``). Rewards are β·ℓ under ``stop_gradient``. TRL's optional ``cpo_alpha``
    NLL term (CPO-SimPO) is not part of SimPO and is left out: this is TRL with ``cpo_alpha=0``.
    """
    beta, gamma, eps = float(beta), float(gamma), float(label_smoothing)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= eps <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {eps}")
    _same_shape({"chosen_mean_logps": chosen_mean_logps, "rejected_mean_logps": rejected_mean_logps})
    chosen, rejected = _float(chosen_mean_logps), _float(rejected_mean_logps)
    margin = beta * (chosen - rejected) - gamma
    losses = -(1 - eps) * jax.nn.log_sigmoid(margin) - eps * jax.nn.log_sigmoid(-margin)
    return losses, jax.lax.stop_gradient(beta * chosen), jax.lax.stop_gradient(beta * rejected)


# ----------------------------------------------------------------------------------------------------
# Reward model
# ----------------------------------------------------------------------------------------------------


def bradley_terry_loss(chosen_rewards: jax.Array, rejected_rewards: jax.Array) -> jax.Array:
    """Per-pair Bradley-Terry loss −log σ(r_c − r_r) for a scalar reward head (OpenRLHF ``train_rm``)."""
    _same_shape({"chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards})
    return -jax.nn.log_sigmoid(_float(chosen_rewards) - _float(rejected_rewards))
