import math

import numpy as np
import pytest

from backend.evaluation.ratings import (
    PROVISIONAL_MIN_MATCHES,
    Match,
    bootstrap_intervals,
    bradley_terry,
    is_provisional,
    match_graph,
    match_counts,
    pairwise_outcomes,
    win_matrix,
)


def _matches(model_a, model_b, outcomes):
    return [Match(i, model_a, model_b, outcome, 0.0, 0.0) for i, outcome in enumerate(outcomes)]


def test_outcomes_shared_items_only():
    per_item = {
        "sd35": {"p1": 0.50, "p2": 0.30, "p3": 0.70, "p4": None},
        "flux": {"p1": 0.505, "p2": 0.40, "p4": 0.2, "p5": 0.9},
    }

    matches = pairwise_outcomes(per_item)

    assert [(m.item_id, m.model_a, m.model_b, m.outcome) for m in matches] == [
        ("p1", "flux", "sd35", "tie"),
        ("p2", "flux", "sd35", "a"),
    ]
    assert matches[1].score_a == pytest.approx(0.40)
    assert matches[1].score_b == pytest.approx(0.30)


def test_outcomes_tolerance_boundary():
    per_item = {"a": {1: 0.50, 2: 0.70}, "b": {1: 0.52, 2: 0.69}}

    matches = pairwise_outcomes(per_item, tolerance=0.015)

    assert [m.outcome for m in matches] == ["b", "tie"]


def test_outcomes_three_models_all_pairs():
    per_item = {"c": {1: 0.1}, "a": {1: 0.3}, "b": {1: 0.2}}

    matches = pairwise_outcomes(per_item)

    assert [(m.model_a, m.model_b, m.outcome) for m in matches] == [
        ("a", "b", "a"),
        ("a", "c", "a"),
        ("b", "c", "a"),
    ]


def test_match_rejects_bad_outcome():
    with pytest.raises(ValueError, match="Invalid match outcome 'draw'"):
        Match(1, "a", "b", "draw", 0.1, 0.1)


def test_win_matrix_ties_half():
    matches = _matches("a", "b", ["a", "a", "b", "tie"])

    matrix = win_matrix(matches, ["a", "b"])

    np.testing.assert_allclose(matrix, [[0.0, 2.5], [1.5, 0.0]])


def test_bt_two_models_unregularized():
    # Without regularization the fit reproduces the win ratio: w_a / w_b = 3.
    ratings = bradley_terry(_matches("a", "b", ["a", "a", "a", "b"]), ["a", "b"], alpha=0)

    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (ratings["a"] + ratings["b"]) / 2 == pytest.approx(1000.0)


def test_bt_two_models_regularized():
    # The LSR chain rates become 3/2 + alpha and 1/2 + alpha, so w_a / w_b = 1.6 / 0.6.
    ratings = bradley_terry(_matches("a", "b", ["a", "a", "a", "b"]), ["a", "b"], alpha=0.1)

    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(8 / 3), abs=1e-6)


def test_bt_tie_counts_half():
    # One win and one tie is 1.5 wins to 0.5, the same ratio as 3 to 1.
    ratings = bradley_terry(_matches("a", "b", ["a", "tie"]), ["a", "b"], alpha=0)

    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)


def test_bt_all_ties_equal():
    ratings = bradley_terry(_matches("a", "b", ["tie", "tie", "tie"]), ["a", "b"])

    assert ratings["a"] == pytest.approx(1000.0)
    assert ratings["b"] == pytest.approx(1000.0)


def test_bt_known_ordering():
    matches = (
        _matches("top", "mid", ["a", "a", "a", "b"])
        + _matches("mid", "low", ["a", "a", "a", "tie"])
        + _matches("top", "low", ["a", "a", "a", "a", "b"])
    )

    ratings = bradley_terry(matches, ["low", "mid", "top"])

    assert ratings["top"] > ratings["mid"] > ratings["low"]
    assert sum(ratings.values()) / 3 == pytest.approx(1000.0)


def test_bt_undefeated_stays_finite():
    ratings = bradley_terry(_matches("a", "b", ["a"] * 50), ["a", "b", "idle"])

    assert all(math.isfinite(value) for value in ratings.values())
    assert ratings["a"] > ratings["idle"] > ratings["b"]


def test_bt_unregularized_undefeated_fails():
    with pytest.raises(ValueError, match="Use alpha > 0"):
        bradley_terry(_matches("a", "b", ["a", "a"]), ["a", "b"], alpha=0)


def test_bt_single_model():
    assert bradley_terry([], ["only"]) == {"only": 1000.0}


def test_bt_rejects_unknown_model():
    with pytest.raises(ValueError, match="'b', which is not in models"):
        bradley_terry(_matches("a", "b", ["a"]), ["a"])


def _table():
    return (
        _matches("x", "y", ["a"] * 12 + ["b"] * 8 + ["tie"] * 4)
        + _matches("y", "z", ["a"] * 10 + ["b"] * 10)
        + _matches("x", "z", ["a"] * 15 + ["b"] * 5)
    )


def test_bootstrap_same_seed_reproducible():
    first = bootstrap_intervals(_table(), ["x", "y", "z"], n_resamples=50, seed=7)
    second = bootstrap_intervals(_table(), ["x", "y", "z"], n_resamples=50, seed=7)

    assert first == second


def test_bootstrap_other_seed_differs():
    first = bootstrap_intervals(_table(), ["x", "y", "z"], n_resamples=50, seed=7)
    second = bootstrap_intervals(_table(), ["x", "y", "z"], n_resamples=50, seed=8)

    assert first != second


def test_bootstrap_intervals_bracket_fit():
    ratings = bradley_terry(_table(), ["x", "y", "z"])

    intervals = bootstrap_intervals(_table(), ["x", "y", "z"], n_resamples=100, seed=0)

    for slug, (low, high) in intervals.items():
        assert low < ratings[slug] < high


def test_bootstrap_no_matches_collapses():
    intervals = bootstrap_intervals([], ["x", "y"], n_resamples=5)

    assert intervals == {"x": (1000.0, 1000.0), "y": (1000.0, 1000.0)}


def test_bootstrap_rejects_bad_level():
    with pytest.raises(ValueError, match="Invalid level 95"):
        bootstrap_intervals(_table(), ["x", "y", "z"], level=95)


def test_match_graph_edges():
    matches = _matches("b", "a", ["a", "b", "b", "tie"]) + _matches("b", "c", ["a"])

    graph = match_graph(matches)

    assert graph["nodes"] == ["a", "b", "c"]
    assert graph["edges"] == [
        {"a": "a", "b": "b", "count": 4, "wins_a": 2, "wins_b": 1, "ties": 1},
        {"a": "b", "b": "c", "count": 1, "wins_a": 1, "wins_b": 0, "ties": 0},
    ]


def test_match_graph_isolated_model():
    graph = match_graph(_matches("a", "b", ["a"]), models=["a", "b", "idle"])

    assert graph["nodes"] == ["a", "b", "idle"]
    assert len(graph["edges"]) == 1


def test_match_counts_per_model():
    matches = _matches("a", "b", ["a", "b"]) + _matches("a", "c", ["tie"])

    counts = match_counts(matches, ["a", "b", "c", "d"])

    assert counts == {
        "a": {"matches": 3, "opponents": 2},
        "b": {"matches": 2, "opponents": 1},
        "c": {"matches": 1, "opponents": 1},
        "d": {"matches": 0, "opponents": 0},
    }


def test_is_provisional_threshold():
    assert is_provisional(PROVISIONAL_MIN_MATCHES - 1)
    assert not is_provisional(PROVISIONAL_MIN_MATCHES)
