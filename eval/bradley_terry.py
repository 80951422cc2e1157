"""Bradley-Terry scores as Arena-Hard-Auto v0.1 computes them, in numpy.

arena-hard v0.1 fits an unregularised logistic regression on duplicated battles (a tie = one win for each
side), scales coefficients to Elo (400 per factor of 10, baseline anchored at 1000) and reports the win
probability against the baseline in percent. Here the same likelihood is maximised by Newton's method with
the baseline's coefficient fixed at 0, which is the identifiable form of the same model.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from eval.stats import DEFAULT_LEVEL, DEFAULT_ROUNDS, DEFAULT_SEED, Estimate, cluster_indices, resample_weights

LN10 = float(np.log(10.0))
# arena-hard v0.1 repeats a "significantly better" (>>) verdict this many times.
STRONG_WEIGHT = 3
# A model that wins (or loses) every battle has an infinite MLE; its coefficient is capped here (+-20 Elo
# factors of ten), which reads as a score of 100.0 (or 0.0).
_MAX_COEF = 20.0

# (winner from model_a's perspective, weight) for each verdict of a game where A is shown first.
_VERDICT = {
    "A>>B": (1.0, STRONG_WEIGHT), "A>B": (1.0, 1), "A=B": (0.5, 1), "B>A": (0.0, 1), "B>>A": (0.0, STRONG_WEIGHT),
}


@dataclass(frozen=True)
class Battles:
    """Battles between indexed models: ``outcome`` 1 = a wins, 0 = b wins, 0.5 = tie; ``weight`` = copies."""

    models: list[str]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    weight: np.ndarray
    question: list[Hashable]


def battles_from_games(
    games: Sequence[tuple[Hashable, str, str, str | None, str | None]], baseline: str
) -> Battles:
    """Build battles from ``(question_id, model, baseline, verdict_game1, verdict_game2)`` rows.

    Game 1 shows the baseline as A, game 2 shows the model as A (arena-hard v0.1's order). An unparsed
    verdict (None) contributes no battle, as in arena-hard; callers count those failures.
    """
    models = [baseline]
    index = {baseline: 0}
    a, b, outcome, weight, question = [], [], [], [], []
    for qid, model, base, game1, game2 in games:
        if base != baseline:
            raise ValueError(f"question {qid!r}: battle against {base!r}, expected baseline {baseline!r}")
        m = index.setdefault(model, len(models))
        if m == len(models):
            models.append(model)
        for verdict, model_is_a in ((game1, False), (game2, True)):
            if verdict is None:
                continue
            if verdict not in _VERDICT:
                raise ValueError(f"question {qid!r}: unknown verdict {verdict!r}")
            a_wins, w = _VERDICT[verdict]
            # Battles are stored with the baseline as model_a, like arena-hard's battle table.
            a.append(0)
            b.append(m)
            outcome.append(1.0 - a_wins if model_is_a else a_wins)
            weight.append(w)
            question.append(qid)
    return Battles(
        models, np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(outcome, np.float64),
        np.asarray(weight, np.float64), question,
    )


def fit_coefficients(battles: Battles, row_weights: np.ndarray | None = None) -> np.ndarray:
    """Maximum-likelihood coefficients (log10 strength), baseline (model 0) fixed at 0."""
    k = len(battles.models)
    w = battles.weight * (1.0 if row_weights is None else row_weights)
    beta = np.zeros(k)
    free = np.arange(1, k)
    for _ in range(100):
        d = LN10 * (beta[battles.a] - beta[battles.b])
        p = 1.0 / (1.0 + np.exp(-d))
        resid = w * (battles.outcome - p) * LN10
        grad = np.zeros(k)
        np.add.at(grad, battles.a, resid)
        np.add.at(grad, battles.b, -resid)
        curv = w * p * (1.0 - p) * LN10**2
        hess = np.zeros((k, k))
        np.add.at(hess, (battles.a, battles.a), curv)
        np.add.at(hess, (battles.b, battles.b), curv)
        np.add.at(hess, (battles.a, battles.b), -curv)
        np.add.at(hess, (battles.b, battles.a), -curv)
        h = hess[np.ix_(free, free)] + 1e-12 * np.eye(k - 1)
        step = np.linalg.solve(h, grad[free])
        beta[free] = np.clip(beta[free] + step, -_MAX_COEF, _MAX_COEF)
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def score_vs_baseline(beta: np.ndarray) -> np.ndarray:
    """Win probability against the baseline, in percent."""
    return 100.0 / (1.0 + 10.0 ** (-(beta - beta[0])))


def arena_scores(
    battles: Battles,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
    resample: str = "question",
) -> dict[str, Estimate]:
    """Score of every model against the baseline with a percentile bootstrap interval.

    ``resample="question"`` redraws whole questions (both games and the repeated ``>>`` copies together);
    ``"battle"`` redraws rows of the weighted battle table one copy at a time, as arena-hard v0.1 does.
    """
    point = score_vs_baseline(fit_coefficients(battles))
    if resample == "question":
        dense, n_clusters = cluster_indices(battles.question)
        draws = resample_weights(n_clusters, rounds, seed)
        boot = np.stack([fit_coefficients(battles, draws[r][dense]) for r in range(rounds)])
    elif resample == "battle":
        expanded = expand_battles(battles)
        draws = resample_weights(len(expanded.a), rounds, seed)
        boot = np.stack([fit_coefficients(expanded, draws[r].astype(float)) for r in range(rounds)])
    else:
        raise ValueError(f"resample must be 'question' or 'battle', got {resample!r}")
    # Quantiles of the ratings, then converted to scores, as arena-hard v0.1 reports its interval.
    alpha = (1.0 - level) / 2.0
    low, high = (score_vs_baseline(q) for q in np.quantile(boot, [alpha, 1.0 - alpha], axis=0))
    counts = np.bincount(battles.b, weights=np.ones(len(battles.b)), minlength=len(battles.models))
    return {
        name: Estimate(float(point[i]), float(low[i]), float(high[i]), int(counts[i]))
        for i, name in enumerate(battles.models)
    }


def expand_battles(battles: Battles) -> Battles:
    """One row per battle copy (weight 1), the table arena-hard resamples row by row."""
    reps = battles.weight.astype(np.int64)
    return Battles(
        battles.models,
        np.repeat(battles.a, reps),
        np.repeat(battles.b, reps),
        np.repeat(battles.outcome, reps),
        np.ones(int(reps.sum())),
        [q for q, r in zip(battles.question, reps, strict=True) for _ in range(r)],
    )
