"""Head-to-head matches between models, Bradley-Terry ratings and their bootstrap intervals.

Every evaluation item that two models both scored is one match. The higher per-item
score wins, and scores within ``tolerance`` of each other are a tie.

Ratings come from the Bradley-Terry model P(i beats j) = w_i / (w_i + w_j), fitted
with choix's iterative Luce spectral ranking on the dense win matrix
(``choix.ilsr_pairwise_dense``). A tie adds half a win to each side of the matrix.
``alpha`` is added to every transition rate of the LSR Markov chain, which is choix's
form of regularization. With ``alpha > 0`` the chain is irreducible, so a model that
never lost, never won or met no one still gets a finite rating. At the fixed point
a model with no matches gets the arithmetic mean strength of the others, which is at
or above 1000 on the scale below, so that rating carries no information.

Ratings are reported on an Elo-like scale::

    rating_i = 1000 + 400 * log10(w_i / g)

where g is the geometric mean strength of the models passed in, so the ratings
average 1000 and a 400-point gap means 10:1 odds of winning a match.

This module never imports Django.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import choix
import numpy as np

logger = logging.getLogger(__name__)

ELO_BASE = 1000.0
ELO_SCALE = 400.0 / math.log(10.0)  # choix returns natural-log strengths.
DEFAULT_ALPHA = 0.1
# A model's rating is provisional until it has played this many matches.
PROVISIONAL_MIN_MATCHES = 20
OUTCOMES = ("a", "b", "tie")


@dataclass(frozen=True)
class Match:
    """One item on which two models were compared, with both per-item scores."""

    item_id: Hashable
    model_a: str
    model_b: str
    outcome: str
    score_a: float
    score_b: float

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Invalid match outcome {self.outcome!r}: expected one of {OUTCOMES}.")
        if self.model_a == self.model_b:
            raise ValueError(f"Invalid match on item {self.item_id!r}: {self.model_a!r} cannot play itself.")


def is_provisional(n_matches: int) -> bool:
    """Return whether a rating built on ``n_matches`` matches is still provisional."""
    return n_matches < PROVISIONAL_MIN_MATCHES


def pairwise_outcomes(
    per_item: Mapping[str, Mapping[Hashable, float | None]],
    tolerance: float = 0.01,
) -> list[Match]:
    """Turn per-item scores into matches between every pair of models.

    ``per_item[slug][item_id]`` is the model's score on that item, higher is better.
    Only items that both models scored (not None) become matches. Pairs are ordered
    by slug so that ``model_a < model_b``, and items are sorted within each pair.
    """
    if tolerance < 0:
        raise ValueError(f"Invalid tolerance {tolerance}: expected a value >= 0.")

    matches = []
    for model_a, model_b in combinations(sorted(per_item), 2):
        scores_a = per_item[model_a]
        scores_b = per_item[model_b]
        shared = [
            item_id
            for item_id in scores_a
            if item_id in scores_b and scores_a[item_id] is not None and scores_b[item_id] is not None
        ]
        for item_id in sorted(shared, key=lambda value: (type(value).__name__, value)):
            score_a = float(scores_a[item_id])
            score_b = float(scores_b[item_id])
            matches.append(
                Match(item_id, model_a, model_b, _outcome(score_a, score_b, tolerance), score_a, score_b)
            )
    return matches


def _outcome(score_a: float, score_b: float, tolerance: float) -> str:
    if abs(score_a - score_b) <= tolerance:
        return "tie"
    return "a" if score_a > score_b else "b"


def win_matrix(matches: Sequence[Match], models: Sequence[str]) -> np.ndarray:
    """Return the matrix whose entry [i, j] counts the wins of models[i] over models[j].

    A tie adds 0.5 to both [i, j] and [j, i].
    """
    index = _model_index(models)
    return _fill_matrix(len(index), *_match_arrays(matches, index))


def _model_index(models: Sequence[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for slug in models:
        index.setdefault(slug, len(index))
    return index


def _match_arrays(matches: Sequence[Match], index: Mapping[str, int]) -> tuple[np.ndarray, ...]:
    """Return per-match arrays: index of a, index of b, credit of a, credit of b.

    The credit is 1 for the winner, 0 for the loser and 0.5 for each side of a tie.
    """
    rows = []
    for match in matches:
        for slug in (match.model_a, match.model_b):
            if slug not in index:
                raise ValueError(
                    f"Match on item {match.item_id!r} involves {slug!r}, which is not in models. "
                    "Pass every model that appears in the matches."
                )
        credit_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[match.outcome]
        rows.append((index[match.model_a], index[match.model_b], credit_a, 1.0 - credit_a))

    columns = list(zip(*rows)) if rows else [(), (), (), ()]
    return (
        np.asarray(columns[0], dtype=int),
        np.asarray(columns[1], dtype=int),
        np.asarray(columns[2], dtype=float),
        np.asarray(columns[3], dtype=float),
    )


def _fill_matrix(
    n_models: int, index_a: np.ndarray, index_b: np.ndarray, credit_a: np.ndarray, credit_b: np.ndarray
) -> np.ndarray:
    matrix = np.zeros((n_models, n_models))
    np.add.at(matrix, (index_a, index_b), credit_a)
    np.add.at(matrix, (index_b, index_a), credit_b)
    return matrix


def bradley_terry(
    matches: Sequence[Match],
    models: Sequence[str],
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, float]:
    """Fit Bradley-Terry strengths to the matches and return Elo-like ratings per model.

    See the module docstring for the scale and the regularization. With ``alpha=0``
    the fit needs every model to have both won and lost within one connected
    comparison graph, and it raises ValueError otherwise.
    """
    index = _model_index(models)
    return _ratings_from_matrix(win_matrix(matches, list(index)), list(index), alpha)


def _ratings_from_matrix(matrix: np.ndarray, slugs: Sequence[str], alpha: float) -> dict[str, float]:
    if alpha < 0:
        raise ValueError(f"Invalid alpha {alpha}: expected a regularization strength >= 0.")
    if len(slugs) < 2:
        return {slug: ELO_BASE for slug in slugs}

    try:
        strengths = choix.ilsr_pairwise_dense(matrix, alpha=alpha, max_iter=1000)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as error:
        raise ValueError(
            f"Bradley-Terry fit failed for {len(slugs)} models with alpha={alpha}: {error}. "
            "Use alpha > 0 when a model is undefeated, winless or not connected to the others."
        ) from error
    if not np.all(np.isfinite(strengths)):
        raise ValueError(
            f"Bradley-Terry fit returned non-finite strengths with alpha={alpha}: use alpha > 0."
        )

    # choix centers the log-strengths, so the ratings average ELO_BASE.
    return {slug: float(ELO_BASE + ELO_SCALE * strength) for slug, strength in zip(slugs, strengths)}


def bootstrap_intervals(
    matches: Sequence[Match],
    models: Sequence[str],
    n_resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, tuple[float, float]]:
    """Return a percentile bootstrap interval of each model's rating.

    Each resample draws ``len(matches)`` matches with replacement using
    ``numpy.random.default_rng(seed)`` and refits the ratings. The interval spans the
    (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled ratings, so the same
    seed always gives the same intervals. Without matches every interval collapses to
    the fitted rating.
    """
    if n_resamples < 1:
        raise ValueError(f"Invalid n_resamples {n_resamples}: expected at least 1.")
    if not 0 < level < 1:
        raise ValueError(f"Invalid level {level}: expected a confidence level between 0 and 1, e.g. 0.95.")

    slugs = list(_model_index(models))
    index = {slug: i for i, slug in enumerate(slugs)}
    arrays = _match_arrays(matches, index)
    n_matches = len(matches)
    rng = np.random.default_rng(seed)

    samples = np.empty((n_resamples, len(slugs)))
    for r in range(n_resamples):
        chosen = rng.integers(0, n_matches, size=n_matches) if n_matches else np.empty(0, dtype=int)
        matrix = _fill_matrix(len(slugs), *(array[chosen] for array in arrays))
        ratings = _ratings_from_matrix(matrix, slugs, alpha)
        samples[r] = [ratings[slug] for slug in slugs]

    low_q, high_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    lows = np.percentile(samples, low_q, axis=0)
    highs = np.percentile(samples, high_q, axis=0)
    logger.debug("Bootstrapped %d models over %d matches with %d resamples", len(slugs), n_matches, n_resamples)
    return {slug: (float(lows[i]), float(highs[i])) for i, slug in enumerate(slugs)}


def match_graph(
    matches: Sequence[Match], models: Sequence[str] | None = None
) -> dict[str, list[Any]]:
    """Return the graph of models and, per pair of models, the match count and results.

    Nodes are the models in the matches plus any in ``models``, so a model that has not
    played yet still appears. Each edge is keyed with ``a < b`` by slug, so a match
    stored the other way round has its wins swapped onto the right side. Nodes and
    edges are sorted.
    """
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for match in matches:
        a, b = sorted((match.model_a, match.model_b))
        edge = edges.setdefault((a, b), {"a": a, "b": b, "count": 0, "wins_a": 0, "wins_b": 0, "ties": 0})
        edge["count"] += 1
        if match.outcome == "tie":
            edge["ties"] += 1
            continue
        winner = match.model_a if match.outcome == "a" else match.model_b
        edge["wins_a" if winner == a else "wins_b"] += 1

    nodes = sorted({slug for pair in edges for slug in pair} | set(models or ()))
    return {"nodes": nodes, "edges": [edges[pair] for pair in sorted(edges)]}


def match_counts(matches: Sequence[Match], models: Sequence[str]) -> dict[str, dict[str, int]]:
    """Return each model's number of matches and of distinct opponents met."""
    matches_played = {slug: 0 for slug in models}
    opponents: dict[str, set[str]] = {slug: set() for slug in models}
    for match in matches:
        for slug, other in ((match.model_a, match.model_b), (match.model_b, match.model_a)):
            if slug in matches_played:
                matches_played[slug] += 1
                opponents[slug].add(other)
    return {slug: {"matches": matches_played[slug], "opponents": len(opponents[slug])} for slug in matches_played}
