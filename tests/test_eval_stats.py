"""Statistics against reference computations: Bradley-Terry (arena-hard v0.1 with sklearn), AlpacaEval's
length-controlled win rate (the alpaca_eval package), and the bootstrap."""

import json
from pathlib import Path

import numpy as np
import pytest

from eval.alpaca_lc import LcAssets, is_extreme_change, length_controlled_winrate, win_rate_metrics
from eval.benches.pairwise import combine, model_outcome
from eval.bradley_terry import arena_scores, battles_from_games, expand_battles, fit_coefficients
from eval.stats import bootstrap_mean, resample_weights

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_bradley_terry_matches_arena_hard_reference():
    games = [tuple(g) for g in json.loads((FIXTURES / "bradley_terry" / "games.json").read_text())]
    expected = json.loads((FIXTURES / "bradley_terry" / "expected.json").read_text())
    battles = battles_from_games(games, "gpt-4-0314")
    scores = arena_scores(battles, rounds=expected["rounds"], seed=expected["seed"])
    for model, ref in expected["scores"].items():
        assert scores[model].value == pytest.approx(ref["score"], abs=0.01)
        assert scores[model].low == pytest.approx(ref["low"], abs=0.01)
        assert scores[model].high == pytest.approx(ref["high"], abs=0.01)


def test_bradley_terry_two_models_closed_form():
    # One model vs the baseline: P(model wins) = (2 wins + ties) / (2 battles) after arena's tie duplication.
    games = [(f"q{i}", "m", "base", "B>A", "A=B") for i in range(3)] + [("q9", "m", "base", "A>B", "B>A")]
    battles = battles_from_games(games, "base")
    beta = fit_coefficients(battles)
    wins, ties, n = 3, 3, 8  # model wins game 1 of q0-q2; ties in their game 2; q9 is lost twice
    p = (2 * wins + ties) / (2 * n)
    assert 100 / (1 + 10 ** (-beta[1])) == pytest.approx(100 * p, abs=1e-6)
    # ">>" counts three times; battle-mode bootstrap draws from the expanded table.
    strong = battles_from_games([("q", "m", "base", "B>>A", "A>B")], "base")
    assert strong.weight.tolist() == [3, 1] and len(expand_battles(strong).a) == 4
    assert arena_scores(battles, rounds=50, resample="battle")["m"].n == 8


def test_length_controlled_matches_alpaca_eval_package():
    """Mistral-7B-Instruct-v0.2 vs gpt4_1106_preview (AlpacaEval's own annotations), all three GLMs."""
    rows = [
        json.loads(line) for line in (FIXTURES / "alpaca_lc" / "annotations_compact.jsonl").read_text().splitlines()
    ]
    expected = json.loads((FIXTURES / "alpaca_lc" / "expected.json").read_text())
    assets = LcAssets.from_dir(FIXTURES / "alpaca_lc" / "assets")
    for variant in ("minimal", "noreg", "v1"):
        got = length_controlled_winrate(
            [r["preference"] for r in rows],
            [r["len_output_1"] for r in rows],
            [r["len_output_2"] for r in rows],
            [r["index"] for r in rows],
            variant=variant,
            assets=assets,
        )
        want = expected[variant]
        assert got["length_controlled_winrate"] == pytest.approx(want["length_controlled_winrate"], abs=0.1)
        assert got["lc_standard_error"] == pytest.approx(want["lc_standard_error"], abs=0.05)
        assert got["win_rate"] == pytest.approx(want["win_rate"], abs=1e-9)
        assert got["standard_error"] == pytest.approx(want["standard_error"], abs=1e-9)
        assert got["discrete_win_rate"] == pytest.approx(want["discrete_win_rate"], abs=1e-9)


def test_lc_variants_need_their_files():
    with pytest.raises(ValueError, match="instruction_difficulty"):
        length_controlled_winrate([1, 2, 1], [10, 20, 30], [15, 5, 30], [0, 1, 2], variant="noreg")
    with pytest.raises(ValueError, match="unknown LC variant"):
        length_controlled_winrate([1, 2], [1, 2], [1, 2], variant="v2")


def test_win_rate_draws_and_extreme_change():
    m = win_rate_metrics([1, 2, 0, 1.5, 1.75])
    assert m["n_draws"] == 2 and m["n_wins"] == 2 and m["n_wins_base"] == 1
    assert m["win_rate"] == pytest.approx(100 * np.mean([0, 1, 0.5, 0.5, 0.75]))
    assert is_extreme_change(20.0, 5.0) and not is_extreme_change(20.0, 25.0)


def test_bootstrap_resamples_whole_clusters():
    # Two clusters of identical rows: every resample mean is one of 1.0, 2.0 or their mix.
    est = bootstrap_mean([1, 1, 1, 3, 3, 3], ["a", "a", "a", "b", "b", "b"], rounds=500, seed=1)
    assert est.value == 2.0 and est.n == 6
    assert est.low == pytest.approx(1.0) and est.high == pytest.approx(3.0)
    again = bootstrap_mean([1, 1, 1, 3, 3, 3], ["a", "a", "a", "b", "b", "b"], rounds=500, seed=1)
    assert again == est  # seeded
    w = resample_weights(4, 10, seed=3)
    assert w.shape == (10, 4) and (w.sum(axis=1) == 4).all()
    assert np.isnan(bootstrap_mean([]).value)


def test_pairwise_outcomes():
    assert model_outcome("A", "A") == "win" and model_outcome("B", "A") == "loss" and model_outcome("tie", "B") == "tie"
    assert combine("win", "win") == "win" and combine("win", "loss") == "tie" and combine("tie", "win") == "tie"
