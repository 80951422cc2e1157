"""AlpacaEval 2.0 win rate and length-controlled (LC) win rate, computed offline.

The LC win rate fits, per model against the baseline, the GLM of AlpacaEval's ``glm_winrate``:
``logit P(model beats baseline) = theta*tanh(std_delta_len) [+ psi*instruction_difficulty] + phi``, an
L1-penalised logistic regression (liblinear objective, no intercept) whose penalty strength is chosen by
5-fold group cross-validation over C in logspace(-4, 4, 10), soft labels handled by duplicating each row with
labels 1 and 0. LC is the mean predicted win probability at equal length.

Variants: ``minimal`` (length term + constant; needs nothing but the annotations), ``noreg`` (adds the
per-instruction difficulty, read from a local ``instruction_difficulty.csv``) and ``v1`` (noreg plus the
"gamed" baseline rows of a local ``df_gamed.csv`` at weight 0.2/2, AlpacaEval's leaderboard default).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VARIANTS = ("minimal", "noreg", "v1")
CS = np.logspace(-4, 4, 10)  # sklearn LogisticRegressionCV's default grid
N_SPLITS = 5
MAX_NEWTON_STEPS = 100
NEWTON_TOL = 1e-10  # of the starting subgradient norm: far below liblinear's 1e-4, and Newton gets there in a few steps
GAMED_LAMBDA = 0.2
_EPS = 1e-15


# ----------------------------------------------------------------------------------------------------------
# Plain win rate
# ----------------------------------------------------------------------------------------------------------


def win_rate_metrics(preferences: Sequence[float]) -> dict[str, float]:
    """AlpacaEval's head-to-head metrics; preference 1 = baseline better, 2 = model better, 0 or 1.5 = draw."""
    pref = np.asarray(preferences, dtype=np.float64)
    pref = np.where(pref == 0.0, 1.5, pref)
    valid = np.isfinite(pref) & (pref >= 1.0) & (pref <= 2.0)
    p = pref[valid] - 1.0
    discrete = np.where(p == 0.5, 0.5, np.round(p))  # rounds soft preferences, keeps draws
    n = p.size
    return {
        "win_rate": 100.0 * p.mean() if n else float("nan"),
        "standard_error": 100.0 * p.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan"),
        "n_wins": int((p > 0.5).sum()),
        "n_wins_base": int((p < 0.5).sum()),
        "n_draws": int((p == 0.5).sum()),
        "n_total": int(n),
        "n_invalid": int((~valid).sum()),
        "discrete_win_rate": 100.0 * discrete.mean() if n else float("nan"),
    }


# ----------------------------------------------------------------------------------------------------------
# L1 logistic regression with soft labels (liblinear's objective) and group cross-validation
# ----------------------------------------------------------------------------------------------------------


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _objective(w: np.ndarray, x: np.ndarray, p: np.ndarray, sw: np.ndarray, c: float) -> float:
    z = x @ w
    return float(np.abs(w).sum() + c * np.sum(sw * (p * _softplus(-z) + (1.0 - p) * _softplus(z))))


def _min_norm_subgradient(w: np.ndarray, grad: np.ndarray) -> float:
    """1-norm of the smallest subgradient of ||w||_1 + loss at ``w`` (0 at the minimum): liblinear's measure."""
    at_zero = np.maximum(np.abs(grad) - 1.0, 0.0)
    return float(np.where(w != 0.0, np.abs(grad + np.sign(w)), at_zero).sum())


def _l1_newton_step(w: np.ndarray, grad: np.ndarray, hess: np.ndarray) -> np.ndarray:
    """argmin_d grad.d + d'Hd/2 + ||w + d||_1, exactly.

    In u = w + d the problem is b.u + u'Hu/2 + ||u||_1 with b = grad - Hw. Given the signs s of its nonzero
    coordinates A, the minimiser solves H_AA u_A = -(b_A + s_A); every sign-consistent solution is a feasible
    point and the minimiser's own pattern yields the minimiser, so the best of them over all 3^n patterns is it.
    The GLM has at most 3 features (27 patterns). Coordinate descent, which this replaces, needs thousands of
    sweeps when the features are nearly collinear (tanh of a few large length differences is ~1 for every row,
    like the constant column).
    """
    n = len(w)
    b = grad - hess @ w
    best_u, best_value = np.zeros(n), 0.0
    for signs in itertools.product((-1.0, 0.0, 1.0), repeat=n):
        s = np.array(signs)
        active = s != 0.0
        if not active.any():
            continue
        try:
            u_active = np.linalg.solve(hess[np.ix_(active, active)], -(b[active] + s[active]))
        except np.linalg.LinAlgError:
            continue
        if not np.all(np.sign(u_active) == s[active]):
            continue
        u = np.zeros(n)
        u[active] = u_active
        value = b @ u + 0.5 * u @ hess @ u + np.abs(u).sum()
        if value < best_value:
            best_u, best_value = u, value
    return best_u - w


def fit_l1_logistic(x: np.ndarray, p: np.ndarray, sw: np.ndarray, c: float) -> np.ndarray:
    """argmin_w ||w||_1 + C * sum_i sw_i * CE(p_i, sigmoid(x_i w)), by proximal Newton steps.

    CE with soft target p_i equals liblinear's loss on the two duplicated rows (label 1 weighted p_i, label 0
    weighted 1-p_i), which is how AlpacaEval feeds soft preferences to sklearn. Each step solves its L1
    quadratic model exactly (``_l1_newton_step``) and backtracks on the true objective; the fit stops when the
    smallest subgradient is ``NEWTON_TOL`` of its start (liblinear stops at 1e-4, sklearn's default tol), when a
    step no longer lowers the objective, or after ``MAX_NEWTON_STEPS`` (sklearn's default max_iter).
    """
    n_feat = x.shape[1]
    w = np.zeros(n_feat)
    f = _objective(w, x, p, sw, c)
    start = None
    for _ in range(MAX_NEWTON_STEPS):
        q = _sigmoid(x @ w)
        grad = c * x.T @ (sw * (q - p))
        optimality = _min_norm_subgradient(w, grad)
        start = optimality if start is None else start
        if optimality <= NEWTON_TOL * start:
            break
        hess = c * (x.T * (sw * q * (1.0 - q))) @ x + 1e-12 * np.eye(n_feat)
        d = _l1_newton_step(w, grad, hess)
        # Backtracking line search on the true objective.
        step = 1.0
        decrease = grad @ d + np.abs(w + d).sum() - np.abs(w).sum()
        while step > 1e-10:
            w_new = w + step * d
            f_new = _objective(w_new, x, p, sw, c)
            if f_new <= f + 1e-4 * step * decrease:
                break
            step *= 0.5
        else:
            break
        w, f_prev, f = w_new, f, f_new
        if np.max(np.abs(step * d)) < 1e-11 or abs(f_prev - f) <= 1e-15 * max(1.0, abs(f)):
            break
    return w


def _group_kfold_folds(n_groups: int, n_splits: int) -> np.ndarray:
    """Fold of each group as sklearn's GroupKFold assigns equal-size groups: last group first, round robin."""
    order = np.arange(n_groups)[::-1]
    folds = np.empty(n_groups, dtype=np.int64)
    folds[order] = np.arange(n_groups) % n_splits
    return folds


def fit_logistic_cv(
    x: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None, n_splits: int = N_SPLITS
) -> tuple[np.ndarray, float]:
    """Choose C by group K-fold CV on the (weighted) soft log loss, refit on all rows; returns (coef, C).

    Fewer rows than folds (a --limit smoke run) get one fold per row: AlpacaEval's sklearn refuses them, and
    empty folds would score every C as NaN.
    """
    sw = np.ones(len(p)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    n_splits = min(n_splits, len(p))
    folds = _group_kfold_folds(len(p), n_splits)
    scores = np.zeros(len(CS))
    for f in range(n_splits):
        train, test = folds != f, folds == f
        for i, c in enumerate(CS):
            w = fit_l1_logistic(x[train], p[train], sw[train], c)
            q = np.clip(_sigmoid(x[test] @ w), _EPS, 1.0 - _EPS)
            loss = p[test] * np.log(q) + (1.0 - p[test]) * np.log(1.0 - q)
            if sample_weight is not None:
                loss = loss * sw[test]
            scores[i] += np.mean(loss)  # negative log loss, larger is better
    best = int(np.argmax(scores))
    return fit_l1_logistic(x, p, sw, CS[best]), float(CS[best])


# ----------------------------------------------------------------------------------------------------------
# The GLM
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LcAssets:
    """AlpacaEval's precomputed files: from a directory, or the hub copy of ``df_gamed.csv`` (which also holds
    the instruction difficulty) in the local Hugging Face cache."""

    instruction_difficulty: np.ndarray | None = None  # indexed by position in the 805-instruction set
    gamed: dict[str, np.ndarray] | None = None  # df_gamed.csv columns

    @classmethod
    def from_dir(cls, directory: str | Path) -> LcAssets:
        """Read ``instruction_difficulty.csv`` and/or ``df_gamed.csv`` from a directory."""
        directory = Path(directory)
        difficulty = gamed = None
        diff_path = directory / "instruction_difficulty.csv"
        if diff_path.exists():
            with diff_path.open() as fh:
                rows = list(csv.reader(fh))
            values = {int(r[0]): float(r[1]) for r in rows[1:] if r}
            difficulty = np.array([values[i] for i in range(len(values))])
        gamed_path = directory / "df_gamed.csv"
        if gamed_path.exists():
            with gamed_path.open() as fh:
                records = list(csv.DictReader(fh))
            need = {"index", "preference", "std_delta_len", "instruction_difficulty"}
            missing = need - set(records[0]) if records else need
            if missing:
                raise ValueError(f"{gamed_path}: missing columns {sorted(missing)}")
            gamed = {
                "index": np.array([int(r["index"]) for r in records]),
                "preference": np.array([float(r["preference"]) if r["preference"] else np.nan for r in records]),
                "std_delta_len": np.array([float(r["std_delta_len"]) for r in records]),
                "instruction_difficulty": np.array([float(r["instruction_difficulty"]) for r in records]),
            }
            if difficulty is None:
                # AlpacaEval itself reads the difficulty from the gamed table (first row of each instruction).
                first = {}
                for idx, val in zip(gamed["index"], gamed["instruction_difficulty"], strict=True):
                    first.setdefault(int(idx), float(val))
                difficulty = np.array([first[i] for i in range(len(first))])
        return cls(difficulty, gamed)


HUB_REPO = "tatsu-lab/alpaca_eval"  # a dataset repository; AlpacaEval's glm_winrate downloads df_gamed.csv


def locate_assets(source: str | None) -> tuple[LcAssets | None, str | None]:
    """(assets, where they came from) for the LC GLM, or (None, None) when none are at hand.

    ``source`` is a directory; ``"hub"`` downloads AlpacaEval's ``df_gamed.csv`` once through huggingface_hub
    (then cached); None looks in the local Hugging Face cache only (no network), so an earlier download makes
    ``v1`` the default offline too.
    """
    if source and source != "hub":
        return LcAssets.from_dir(source), str(source)
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(HUB_REPO, "df_gamed.csv", repo_type="dataset", local_files_only=source != "hub")
    except Exception as error:  # not cached (offline lookup) or not downloadable
        if source == "hub":
            raise ValueError(f"could not download df_gamed.csv from the hub dataset {HUB_REPO}: {error}") from error
        return None, None
    return LcAssets.from_dir(Path(path).parent), f"hf://datasets/{HUB_REPO}/df_gamed.csv ({path})"


def length_controlled_winrate(
    preferences: Sequence[float],
    len_baseline: Sequence[int],
    len_model: Sequence[int],
    instruction_index: Sequence[int] | None = None,
    variant: str = "minimal",
    assets: LcAssets | None = None,
) -> dict:
    """Win rate, LC win rate (and their standard errors) of a model against the baseline.

    ``preferences`` follow AlpacaEval (1 = baseline, 2 = model, 0/1.5 = draw, floats for weighted judges);
    lengths are in characters; ``instruction_index`` is each row's position in the AlpacaEval set (needed by
    ``noreg`` and ``v1``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown LC variant {variant!r}; choose one of {VARIANTS}")
    metrics = win_rate_metrics(preferences)
    pref = np.asarray(preferences, dtype=np.float64)
    pref = np.where(pref == 0.0, 1.5, pref) - 1.0
    delta = np.asarray(len_baseline, np.float64) - np.asarray(len_model, np.float64)
    std_delta = delta / delta.std(ddof=1)

    use_difficulty = variant in ("noreg", "v1")
    if use_difficulty:
        if assets is None or assets.instruction_difficulty is None:
            raise ValueError(
                f"LC variant {variant!r} needs instruction_difficulty.csv (or df_gamed.csv) from AlpacaEval; "
                "pass its directory with --lc-assets, or use the 'minimal' variant"
            )
        if instruction_index is None:
            raise ValueError(f"LC variant {variant!r} needs each row's AlpacaEval instruction index")
        difficulty = assets.instruction_difficulty[np.asarray(instruction_index)]
    if variant == "v1" and (assets is None or assets.gamed is None):
        raise ValueError("LC variant 'v1' needs df_gamed.csv from AlpacaEval; pass its directory with --lc-assets")

    def design(tanh_len: np.ndarray, diff: np.ndarray | None, not_gamed: np.ndarray) -> np.ndarray:
        cols = [tanh_len] + ([diff] if use_difficulty else []) + [not_gamed]
        return np.stack(cols, axis=1)

    x = design(np.tanh(std_delta), difficulty if use_difficulty else None, np.ones_like(std_delta))
    p = pref
    sw = None
    if variant == "v1":
        g = assets.gamed
        x_g = design(np.tanh(g["std_delta_len"]), g["instruction_difficulty"], np.zeros_like(g["std_delta_len"]))
        p_g = g["preference"]  # stored in [0, 1] already, used as is (as AlpacaEval does)
        # AlpacaEval concatenates the gamed rows first, then the model's rows.
        x, p = np.concatenate([x_g, x]), np.concatenate([p_g, p])
        sw = np.concatenate([np.full(len(p_g), GAMED_LAMBDA / 2.0), np.ones(len(pref))])
    keep = np.isfinite(p)
    coef, c = fit_logistic_cv(x[keep], p[keep], None if sw is None else sw[keep])

    x_test = design(np.zeros_like(std_delta), difficulty if use_difficulty else None, np.ones_like(std_delta))
    predicted = _sigmoid(x_test @ coef)
    names = ["np.tanh(std_delta_len)"] + (["instruction_difficulty"] if use_difficulty else [])
    names.append("not_gamed_baseline.astype(float)")
    lc = 100.0 * predicted.mean()
    metrics.update(
        length_controlled_winrate=float(lc),
        lc_standard_error=float(100.0 * predicted.std(ddof=1) / np.sqrt(len(predicted))),
        lc_variant=variant,
        lc_C=c,
        lc_weights=dict(zip(names, map(float, coef), strict=True)),
        lc_extreme_change=bool(is_extreme_change(metrics["win_rate"], lc)),
    )
    return metrics


def is_extreme_change(win_rate: float, lc: float, abs_diff: float = 10.0, rel_diff: float = 4.0) -> bool:
    """AlpacaEval's sanity flag: LC moved so far from the raw win rate that the GLM probably failed."""
    too_small = lc < min(win_rate - win_rate / rel_diff, win_rate - abs_diff)
    too_large = lc > max(win_rate + (100.0 - win_rate) / rel_diff, win_rate + abs_diff)
    return bool(too_small or too_large)


def annotations_to_arrays(annotations: Sequence[dict], instructions: Sequence[str] | None = None) -> dict:
    """Arrays for :func:`length_controlled_winrate` from AlpacaEval-format annotations.

    ``output_1`` is the baseline and ``output_2`` the model (AlpacaEval's convention). With ``instructions``
    (the benchmark's ordered instruction list) each row gets its instruction index; unknown instructions are
    an error naming the row.
    """
    position = {text: i for i, text in enumerate(instructions)} if instructions is not None else None
    prefs, len_b, len_m, index = [], [], [], []
    for row_no, row in enumerate(annotations):
        for key in ("output_1", "output_2", "preference"):
            if key not in row:
                raise ValueError(f"annotation row {row_no}: missing field {key!r}")
        pref = row["preference"]
        prefs.append(float(pref) if pref is not None else np.nan)
        len_b.append(len(row["output_1"]))
        len_m.append(len(row["output_2"]))
        if position is not None:
            if row.get("instruction") not in position:
                raise ValueError(f"annotation row {row_no}: instruction is not in the AlpacaEval set")
            index.append(position[row["instruction"]])
    out = {"preferences": prefs, "len_baseline": len_b, "len_model": len_m}
    if position is not None:
        out["instruction_index"] = index
    return out
