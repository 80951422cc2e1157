"""The L1 logistic fit behind AlpacaEval's length-controlled win rate reaches its optimum (a zero smallest
subgradient, which for this convex objective proves it) also on the nearly collinear features of a few items,
where coordinate descent crawled for tens of seconds; and a run of fewer items than CV folds is well defined.
Agreement with AlpacaEval's published numbers is tests/test_eval_stats.py's."""

import warnings

import numpy as np
import pytest

from eval.alpaca_lc import CS, _min_norm_subgradient, _objective, _sigmoid, fit_l1_logistic, length_controlled_winrate


def optimality(w: np.ndarray, x: np.ndarray, p: np.ndarray, sw: np.ndarray, c: float) -> float:
    """The smallest subgradient's 1-norm at w, relative to its value at w = 0."""
    def subgradient(v):
        return _min_norm_subgradient(v, c * x.T @ (sw * (_sigmoid(x @ v) - p)))
    return subgradient(w) / max(subgradient(np.zeros_like(w)), 1e-300)


def test_the_fit_is_optimal_on_nearly_collinear_features():
    # Two items whose baseline answers are far longer: tanh(std_delta_len) is ~1 for both, like the constant.
    delta = np.array([115.0, 85.0])
    x = np.stack([np.tanh(delta / np.array([95.0, 115.0, 85.0]).std(ddof=1)), np.ones(2)], axis=1)
    p, sw = np.array([0.6, 0.8]), np.ones(2)
    for c in CS:
        w = fit_l1_logistic(x, p, sw, c)
        assert optimality(w, x, p, sw, c) < 1e-6, c
    # The optimum puts everything on the constant; coordinate descent stopped at a higher objective with w_0 > 0.
    w = fit_l1_logistic(x, p, sw, CS[-1])
    assert w[0] == 0.0 and _objective(w, x, p, sw, CS[-1]) < _objective(np.array([0.162, 0.685]), x, p, sw, CS[-1])


@pytest.mark.parametrize("seed", range(6))
def test_the_fit_is_optimal_on_random_problems(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(3, 80)), int(rng.integers(2, 4))
    x = np.column_stack([np.tanh(rng.normal(0.0, 3.0, size=(n, k - 1))), np.ones(n)])
    p = rng.uniform(0.0, 1.0, n) if seed % 2 else rng.choice([0.0, 0.5, 1.0], n)
    sw = rng.uniform(0.1, 1.0, n)
    for c in CS[::3]:
        assert optimality(fit_l1_logistic(x, p, sw, c), x, p, sw, c) < 1e-6, c


def test_fewer_items_than_folds_give_a_defined_lc_win_rate():
    """3 weighted judgments (a --limit 3 smoke run): one CV fold per item, no empty fold scoring NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" of an empty test fold
        got = length_controlled_winrate([1.3, 1.6, 1.8], [100, 120, 90], [5, 5, 5])
    assert got["lc_C"] in CS and 0.0 <= got["length_controlled_winrate"] <= 100.0
    assert got["win_rate"] == pytest.approx(100 * (0.3 + 0.6 + 0.8) / 3)
