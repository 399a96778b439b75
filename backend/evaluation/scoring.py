"""Sub-scores in [0, 1], the composite score in [0, 100] and the ranking of models.

Sub-scores, each clipped to [0, 1]::

    quality     = clip(primary metric mean, 0, 1)
                  The primary metric is a cosine (caption similarity for captioning,
                  round-trip adherence for text-to-image), so negative means count as 0.
    speed       = clip(1 + log10(items_per_second / reference) / 3, 0, 1)
                  reference = REFERENCE_ITEMS_PER_SECOND[task]. Matching the reference
                  scores 1, and each factor of 10 slower costs 1/3.
    adoption    = 0.7 * min(1, log10(1 + downloads) / 7)
                + 0.3 * min(1, log10(1 + likes) / 4)
                  10 million downloads or 10,000 likes reach the cap. When only one
                  count is known, it carries the whole weight.
    ecosystem   = 0.4 * openness + 0.3 * min(1, integrations / 5)
                + 0.15 * supports_lora + 0.15 * supports_quantization
                  openness is 1 for open weights under a license in PERMISSIVE_LICENSES,
                  0.5 for open weights under any other or an unknown license, and 0
                  for closed weights. A missing flag counts as False.
    match_graph = normalized rating * connectedness
                  normalized rating = (rating - min) / (max - min) over the ratings of
                  the field, or 0.5 when all ratings are equal.
                  connectedness = opponents met / possible opponents
                                * min(1, matches / PROVISIONAL_MIN_MATCHES)

A sub-score without inputs (no metric value, no catalog data, no matches yet) is None.

Composite::

    composite = 100 * sum(WEIGHTS[k] * s[k]) / sum(WEIGHTS[k])

where both sums run over the sub-scores that are present. When one is missing, the
remaining weights are renormalized to sum to 1, and the provenance says so.

This module never imports Django.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .metrics import PRIMARY_METRIC, TASKS
from .ratings import PROVISIONAL_MIN_MATCHES

WEIGHTS: dict[str, float] = {
    "quality": 0.35,
    "adoption": 0.20,
    "ecosystem": 0.20,
    "match_graph": 0.15,
    "speed": 0.10,
}
SUBSCORES = tuple(WEIGHTS)

# NOTE: these reference throughputs are round numbers for a single modern data-centre
# GPU, not measurements. Speed scores compare models within one task only.
REFERENCE_ITEMS_PER_SECOND: dict[str, float] = {"captioning": 10.0, "text-to-image": 1.0}
SPEED_DECADES = 3.0

DOWNLOADS_CAP_LOG10 = 7.0  # 10 million downloads
LIKES_CAP_LOG10 = 4.0  # 10,000 likes
DOWNLOADS_WEIGHT = 0.7
LIKES_WEIGHT = 0.3

# Hugging Face license identifiers that allow commercial use and modification
# without use-based restrictions.
PERMISSIVE_LICENSES = frozenset(
    {"apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "unlicense"}
)
INTEGRATIONS_CAP = 5
ECOSYSTEM_WEIGHTS = {"openness": 0.4, "integrations": 0.3, "lora": 0.15, "quantization": 0.15}


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


def quality_score(primary_mean: float | None) -> float | None:
    """Map the mean of the task's primary cosine metric to [0, 1]."""
    if primary_mean is None:
        return None
    return _clip01(float(primary_mean))


def speed_score(items_per_second: float | None, reference_items_per_second: float) -> float | None:
    """Score throughput on a log scale relative to ``reference_items_per_second``."""
    if reference_items_per_second <= 0:
        raise ValueError(
            f"Invalid reference_items_per_second {reference_items_per_second}: expected > 0."
        )
    if items_per_second is None:
        return None
    if items_per_second <= 0:
        return 0.0
    return _clip01(1.0 + math.log10(items_per_second / reference_items_per_second) / SPEED_DECADES)


def adoption_score(downloads: int | None, likes: int | None) -> float | None:
    """Score catalog downloads and likes on a capped log scale."""
    parts = []
    if downloads is not None:
        parts.append((DOWNLOADS_WEIGHT, _clip01(math.log10(1 + max(0, downloads)) / DOWNLOADS_CAP_LOG10)))
    if likes is not None:
        parts.append((LIKES_WEIGHT, _clip01(math.log10(1 + max(0, likes)) / LIKES_CAP_LOG10)))
    if not parts:
        return None
    return sum(weight * value for weight, value in parts) / sum(weight for weight, _ in parts)


def license_openness(license_id: str | None, open_weights: bool | None) -> float:
    """Return 1 for permissive open weights, 0.5 for other open weights and 0 otherwise."""
    if not open_weights:
        return 0.0
    if (license_id or "").strip().lower() in PERMISSIVE_LICENSES:
        return 1.0
    return 0.5


def ecosystem_score(
    license_id: str | None,
    open_weights: bool | None,
    integrations: Sequence[str] | None,
    supports_lora: bool | None,
    supports_quantization: bool | None,
) -> float | None:
    """Score license openness, integrations, LoRA support and quantization support."""
    inputs = (license_id, open_weights, integrations, supports_lora, supports_quantization)
    if all(value is None for value in inputs):
        return None
    return (
        ECOSYSTEM_WEIGHTS["openness"] * license_openness(license_id, open_weights)
        + ECOSYSTEM_WEIGHTS["integrations"] * min(1.0, len(set(integrations or ())) / INTEGRATIONS_CAP)
        + ECOSYSTEM_WEIGHTS["lora"] * float(bool(supports_lora))
        + ECOSYSTEM_WEIGHTS["quantization"] * float(bool(supports_quantization))
    )


def normalized_rating(rating: float, field_ratings: Sequence[float]) -> float:
    """Return the rating's position between the lowest and highest rating of the field."""
    values = [float(value) for value in field_ratings] or [float(rating)]
    low, high = min(values), max(values)
    if high == low:
        return 0.5
    return _clip01((float(rating) - low) / (high - low))


def connectedness(opponents_met: int, possible_opponents: int, n_matches: int) -> float:
    """Return the share of opponents met, scaled down while matches are few."""
    if possible_opponents <= 0:
        return 0.0
    opponent_share = _clip01(opponents_met / possible_opponents)
    return opponent_share * min(1.0, n_matches / PROVISIONAL_MIN_MATCHES)


def match_graph_score(
    rating: float | None,
    field_ratings: Sequence[float],
    opponents_met: int,
    possible_opponents: int,
    n_matches: int,
) -> float | None:
    """Score a Bradley-Terry rating, discounted by how well the model is connected."""
    if rating is None or n_matches <= 0 or possible_opponents <= 0:
        return None
    return normalized_rating(rating, field_ratings) * connectedness(opponents_met, possible_opponents, n_matches)


def effective_weights(
    subscores: Mapping[str, float | None], weights: Mapping[str, float] = WEIGHTS
) -> dict[str, float]:
    """Return the weights of the present sub-scores, renormalized to sum to 1."""
    unknown = sorted(set(subscores) - set(weights))
    if unknown:
        raise ValueError(f"Unknown sub-scores {unknown}: expected names from {sorted(weights)}.")

    present = {name: weights[name] for name, value in subscores.items() if value is not None}
    total = sum(present.values())
    if total <= 0:
        raise ValueError(
            f"No weighted sub-score is present in {dict(subscores)}: at least one must be a number."
        )
    return {name: weight / total for name, weight in present.items()}


def composite(subscores: Mapping[str, float | None], weights: Mapping[str, float] = WEIGHTS) -> float:
    """Return the weighted mean of the present sub-scores on a 0-100 scale."""
    for name, value in subscores.items():
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"Invalid sub-score {name}={value}: expected a value from 0 to 1.")
    shares = effective_weights(subscores, weights)
    return 100.0 * sum(share * float(subscores[name]) for name, share in shares.items())


def score_model(
    task: str,
    metrics: Mapping[str, Any],
    catalog: Mapping[str, Any],
    *,
    rating: float | None = None,
    field_ratings: Sequence[float] = (),
    opponents_met: int = 0,
    possible_opponents: int = 0,
    n_matches: int = 0,
    weights: Mapping[str, float] = WEIGHTS,
) -> dict[str, Any]:
    """Compute a model's sub-scores and composite, with the inputs behind each number.

    ``metrics`` is the output of `metrics.aggregate`. ``catalog`` holds the model's
    catalog fields: downloads, likes, license, open_weights, integrations,
    supports_lora and supports_quantization. The rating arguments describe the model's
    place in the match graph. Without matches the match_graph sub-score is None.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}: expected one of {', '.join(TASKS)}.")

    primary_name = PRIMARY_METRIC[task]
    reference = REFERENCE_ITEMS_PER_SECOND[task]
    subscores = {
        "quality": quality_score(metrics.get(primary_name)),
        "speed": speed_score(metrics.get("items_per_second"), reference),
        "adoption": adoption_score(catalog.get("downloads"), catalog.get("likes")),
        "ecosystem": ecosystem_score(
            catalog.get("license"),
            catalog.get("open_weights"),
            catalog.get("integrations"),
            catalog.get("supports_lora"),
            catalog.get("supports_quantization"),
        ),
        "match_graph": match_graph_score(rating, field_ratings, opponents_met, possible_opponents, n_matches),
    }

    provenance = {
        "quality": {"metric": primary_name, "value": metrics.get(primary_name)},
        "speed": {"items_per_second": metrics.get("items_per_second"), "reference_items_per_second": reference},
        "adoption": {"downloads": catalog.get("downloads"), "likes": catalog.get("likes")},
        "ecosystem": {
            key: catalog.get(key)
            for key in ("license", "open_weights", "integrations", "supports_lora", "supports_quantization")
        },
        "match_graph": {
            "rating": rating,
            "field_size": len(field_ratings),
            "opponents_met": opponents_met,
            "possible_opponents": possible_opponents,
            "matches": n_matches,
            "provisional": n_matches < PROVISIONAL_MIN_MATCHES,
        },
        "composite": _composite_provenance(subscores, weights),
    }
    return {"subscores": subscores, "composite": composite(subscores, weights), "provenance": provenance}


def _composite_provenance(subscores: Mapping[str, float | None], weights: Mapping[str, float]) -> dict[str, Any]:
    shares = effective_weights(subscores, weights)
    missing = sorted(name for name, value in subscores.items() if value is None)
    note = "All sub-scores present."
    if missing:
        note = f"Missing {', '.join(missing)}, so the weights of the other sub-scores were renormalized to sum to 1."
    return {
        "weights": dict(weights),
        "effective_weights": shares,
        "missing": missing,
        "renormalized": bool(missing),
        "note": note,
    }


def rank_models(scored: Mapping[str, float | None]) -> list[dict[str, Any]]:
    """Rank models by composite, highest first, breaking ties by slug.

    Ranks are 1, 2, 3... with no shared ranks. Models whose composite is None come
    last with rank None, in slug order.
    """
    rated = sorted((slug for slug, value in scored.items() if value is not None), key=lambda slug: (-scored[slug], slug))
    unrated = sorted(slug for slug, value in scored.items() if value is None)

    ranking = [{"rank": position, "slug": slug, "composite": scored[slug]} for position, slug in enumerate(rated, 1)]
    ranking.extend({"rank": None, "slug": slug, "composite": None} for slug in unrated)
    return ranking
