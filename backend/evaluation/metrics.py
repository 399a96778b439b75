"""Per-model metrics computed from the per-item evidence that the workers store.

This module is plain Python and numpy, so it never imports Django and can run
anywhere the stored evidence can be read.

Per-item evidence is one dict per evaluation item. Captioning items use these keys:

- ``caption``: the generated caption text.
- ``similarity``: cosine of the MiniLM embeddings of the caption and of the
  best-matching reference caption, or None.
- ``entities``: grounded phrases, in the forms that `match_grounding` accepts.
- ``reference_objects``: ``{"phrase", "bbox"}`` dicts.
- ``phrase_similarity``: one row per predicted entity, one column per reference object.
- ``latency_s``: seconds spent on the item.

Text-to-image items use these keys:

- ``adherence``: cosine between the judge caption of the image and the prompt, or None.
- ``blank``: whether the worker flagged the image as blank.
- ``latency_s``: seconds spent on the item.
- ``clip_score``: only when the worker computed it.

Any item may also carry ``category`` and ``challenge`` (PartiPrompts fields) for
`breakdown`. Boxes are ``[x0, y0, x1, y1]`` in fractions of the image size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CAPTIONING = "captioning"
TEXT_TO_IMAGE = "text-to-image"
RUNTIME = "runtime"
TASKS = (CAPTIONING, TEXT_TO_IMAGE)

HIGHER_IS_BETTER = "higher_is_better"
LOWER_IS_BETTER = "lower_is_better"
INFORMATIONAL = "informational"

# numpy.percentile's default method: linear interpolation between the two closest ranks.
PERCENTILE_METHOD = "linear"

UNSPECIFIED_GROUP = "unspecified"


@dataclass(frozen=True)
class Metric:
    """Registry entry of a metric: its task, formula, range, direction and primary flag."""

    name: str
    task: str
    formula: str
    value_range: tuple[float, float]
    direction: str
    unit: str = ""
    primary: bool = False


_METRIC_LIST = (
    Metric(
        name="caption_similarity",
        task=CAPTIONING,
        formula="mean over items of the cosine between the MiniLM embeddings of the caption "
        "and of its best-matching reference caption",
        value_range=(-1.0, 1.0),
        direction=HIGHER_IS_BETTER,
        primary=True,
    ),
    Metric(
        name="grounding_recall",
        task=CAPTIONING,
        formula="reference objects matched by a predicted box (phrase similarity >= 0.5 and "
        "IoU >= 0.5, greedy by IoU) divided by all reference objects, pooled over items",
        value_range=(0.0, 1.0),
        direction=HIGHER_IS_BETTER,
    ),
    Metric(
        name="grounding_mean_iou",
        task=CAPTIONING,
        formula="mean IoU of the matched (predicted box, reference object) pairs, pooled over items",
        value_range=(0.0, 1.0),
        direction=HIGHER_IS_BETTER,
    ),
    Metric(
        name="caption_length",
        task=CAPTIONING,
        formula="mean number of whitespace-separated words per caption",
        value_range=(0.0, math.inf),
        direction=INFORMATIONAL,
        unit="words",
    ),
    Metric(
        name="empty_caption_rate",
        task=CAPTIONING,
        formula="captions that are empty or whitespace only, divided by all captions",
        value_range=(0.0, 1.0),
        direction=LOWER_IS_BETTER,
    ),
    Metric(
        name="adherence",
        task=TEXT_TO_IMAGE,
        formula="mean over items of the round-trip cosine between the MiniLM embeddings of "
        "the judge caption of the generated image and of the prompt",
        value_range=(-1.0, 1.0),
        direction=HIGHER_IS_BETTER,
        primary=True,
    ),
    Metric(
        name="blank_image_rate",
        task=TEXT_TO_IMAGE,
        formula="images flagged blank by the worker divided by all images",
        value_range=(0.0, 1.0),
        direction=LOWER_IS_BETTER,
    ),
    Metric(
        name="clip_score",
        task=TEXT_TO_IMAGE,
        formula="mean over items of the CLIP score stored by the worker, items without one skipped",
        value_range=(0.0, 100.0),
        direction=HIGHER_IS_BETTER,
    ),
    Metric(
        name="items_per_second",
        task=RUNTIME,
        formula="items processed divided by wall-clock seconds",
        value_range=(0.0, math.inf),
        direction=HIGHER_IS_BETTER,
        unit="items/s",
    ),
    Metric(
        name="latency_p50",
        task=RUNTIME,
        formula="50th percentile of per-item latency (numpy linear interpolation)",
        value_range=(0.0, math.inf),
        direction=LOWER_IS_BETTER,
        unit="s",
    ),
    Metric(
        name="latency_p95",
        task=RUNTIME,
        formula="95th percentile of per-item latency (numpy linear interpolation)",
        value_range=(0.0, math.inf),
        direction=LOWER_IS_BETTER,
        unit="s",
    ),
)

METRICS: dict[str, Metric] = {metric.name: metric for metric in _METRIC_LIST}
PRIMARY_METRIC: dict[str, str] = {metric.task: metric.name for metric in _METRIC_LIST if metric.primary}


def metrics_for_task(task: str) -> list[Metric]:
    """Return the metrics reported for ``task``, runtime metrics included."""
    _check_task(task)
    return [metric for metric in _METRIC_LIST if metric.task in (task, RUNTIME)]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}: expected one of {', '.join(TASKS)}.")


# Boxes and grounding


def _check_box(box: Sequence[float], name: str) -> tuple[float, float, float, float]:
    if len(box) != 4:
        raise ValueError(f"Invalid {name} {box!r}: expected [x0, y0, x1, y1].")
    x0, y0, x1, y1 = (float(value) for value in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"Invalid {name} {box!r}: x1 must be >= x0 and y1 >= y0.")
    return x0, y0, x1, y1


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Return the intersection over union of two ``[x0, y0, x1, y1]`` boxes.

    Two zero-area boxes have no union, and their IoU is 0.0.
    """
    ax0, ay0, ax1, ay1 = _check_box(a, "box a")
    bx0, by0, bx1, by1 = _check_box(b, "box b")

    width = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    height = max(0.0, min(ay1, by1) - max(ay0, by0))
    intersection = width * height
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - intersection
    if union <= 0.0:
        return 0.0
    return intersection / union


def _entity_boxes(entity: Any) -> list[Sequence[float]]:
    """Return the boxes of a grounded entity stored as a dict or as a Kosmos-2 tuple."""
    if isinstance(entity, Mapping):
        return list(entity.get("boxes") or [])
    # Kosmos-2 post-processing yields (phrase, (start, end), [boxes]) tuples, and
    # JSON storage turns them into lists.
    if isinstance(entity, Sequence) and len(entity) == 3:
        return list(entity[2] or [])
    raise ValueError(
        f"Invalid entity {entity!r}: expected {{'phrase', 'span', 'boxes'}} or (phrase, span, boxes)."
    )


def match_grounding(
    pred_entities: Sequence[Any],
    ref_objects: Sequence[Mapping[str, Any]],
    phrase_similarity: Sequence[Sequence[float]] | None,
    phrase_threshold: float = 0.5,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Match predicted boxes to reference objects and return recall, mean IoU and counts.

    A predicted box can match a reference object when the similarity of its entity's
    phrase to the object's phrase is >= ``phrase_threshold`` and the IoU of the boxes
    is >= ``iou_threshold``. Candidate pairs are taken greedily by descending IoU
    (ties by entity, box and object index). Each reference object and each predicted
    box is used at most once, and an entity may match several objects through
    several boxes.

    ``phrase_similarity[i][j]`` is the similarity of entity ``i`` to object ``j``.
    ``mean_iou`` averages the matched pairs only, so it is None when nothing matched.
    ``recall`` is None when there are no reference objects.
    """
    boxes_per_entity = [_entity_boxes(entity) for entity in pred_entities]
    similarity = _check_similarity(phrase_similarity, len(pred_entities), len(ref_objects))

    candidates = []
    for i, boxes in enumerate(boxes_per_entity):
        for k, box in enumerate(boxes):
            for j, ref in enumerate(ref_objects):
                if similarity[i, j] < phrase_threshold:
                    continue
                iou = box_iou(box, ref["bbox"])
                if iou >= iou_threshold:
                    candidates.append((-iou, i, k, j))
    candidates.sort()

    pairs = []
    used_boxes: set[tuple[int, int]] = set()
    used_refs: set[int] = set()
    for negative_iou, i, k, j in candidates:
        if (i, k) in used_boxes or j in used_refs:
            continue
        used_boxes.add((i, k))
        used_refs.add(j)
        pairs.append({"entity": i, "box": k, "reference": j, "iou": -negative_iou})

    ious = [pair["iou"] for pair in pairs]
    return {
        "recall": len(pairs) / len(ref_objects) if ref_objects else None,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "matched": len(pairs),
        "references": len(ref_objects),
        "predicted_boxes": sum(len(boxes) for boxes in boxes_per_entity),
        "pairs": pairs,
    }


def _check_similarity(matrix: Sequence[Sequence[float]] | None, rows: int, columns: int) -> np.ndarray:
    if rows == 0 or columns == 0:
        return np.zeros((rows, columns))
    if matrix is None:
        raise ValueError(
            f"Missing phrase_similarity for {rows} entities and {columns} reference objects: "
            "store the entity-by-object similarity matrix with the item."
        )
    array = np.asarray(matrix, dtype=float)
    if array.shape != (rows, columns):
        raise ValueError(
            f"Invalid phrase_similarity shape {array.shape}: expected ({rows}, {columns}), "
            "one row per predicted entity and one column per reference object."
        )
    return array


# Captions, images and plain statistics


def caption_length(caption: str | None) -> int:
    """Return the number of whitespace-separated words in ``caption``."""
    return len((caption or "").split())


def is_empty_caption(caption: str | None) -> bool:
    """Return whether ``caption`` is missing, empty or whitespace only."""
    return not (caption or "").strip()


def share(flags: Iterable[bool | None]) -> float | None:
    """Return the fraction of true flags, skipping None, or None when nothing is left."""
    values = [bool(flag) for flag in flags if flag is not None]
    if not values:
        return None
    return sum(values) / len(values)


def mean_ignoring_none(values: Iterable[float | None]) -> float | None:
    """Return the mean of the values that are not None, or None when all are None."""
    present = [float(value) for value in values if value is not None]
    if not present:
        return None
    return float(np.mean(present))


# Runtime


def items_per_second(total_items: int, total_wall_seconds: float) -> float:
    """Return throughput in items per second over the whole run."""
    if total_items < 0:
        raise ValueError(f"Invalid total_items {total_items}: expected a count >= 0.")
    if total_items == 0:
        return 0.0
    if total_wall_seconds <= 0:
        raise ValueError(
            f"Invalid total_wall_seconds {total_wall_seconds} for {total_items} items: expected > 0."
        )
    return total_items / total_wall_seconds


def latency_percentile(latencies: Iterable[float | None], q: float) -> float | None:
    """Return the ``q``-th percentile (0-100) of the latencies, skipping None.

    The percentile uses numpy's default linear interpolation between the closest
    ranks, so the 50th percentile of [1, 2, 3, 4] is 2.5. None when no latency is known.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"Invalid percentile {q}: expected a value from 0 to 100.")
    present = [float(value) for value in latencies if value is not None]
    if not present:
        return None
    return float(np.percentile(present, q, method=PERCENTILE_METHOD))


# Aggregation


def aggregate(
    task: str,
    per_item: Sequence[Mapping[str, Any]],
    wall_seconds: float | None = None,
) -> dict[str, Any]:
    """Summarize one model's per-item evidence into its metric values.

    Throughput uses ``wall_seconds`` when given and otherwise the sum of per-item
    latencies, which assumes the items ran one after another. Every metric that has no
    data is None. ``primary`` repeats the value of the task's primary metric.
    """
    _check_task(task)
    latencies = [item.get("latency_s") for item in per_item]

    summary: dict[str, Any] = {"task": task, "items": len(per_item)}
    if task == CAPTIONING:
        summary.update(_aggregate_captioning(per_item))
    else:
        summary.update(_aggregate_text_to_image(per_item))

    summary.update(_aggregate_runtime(len(per_item), latencies, wall_seconds))
    summary["primary_metric"] = PRIMARY_METRIC[task]
    summary["primary"] = summary[PRIMARY_METRIC[task]]
    return summary


def _aggregate_captioning(per_item: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    matched = 0
    references = 0
    ious: list[float] = []
    for item in per_item:
        ref_objects = item.get("reference_objects") or []
        if not ref_objects:
            continue
        grounding = match_grounding(
            item.get("entities") or [], ref_objects, item.get("phrase_similarity")
        )
        matched += grounding["matched"]
        references += grounding["references"]
        ious.extend(pair["iou"] for pair in grounding["pairs"])

    captions = [item.get("caption") for item in per_item]
    return {
        "caption_similarity": mean_ignoring_none(item.get("similarity") for item in per_item),
        "grounding_recall": matched / references if references else None,
        "grounding_mean_iou": float(np.mean(ious)) if ious else None,
        "grounding_matched": matched,
        "grounding_references": references,
        "caption_length": mean_ignoring_none(caption_length(caption) for caption in captions),
        "empty_caption_rate": share(is_empty_caption(caption) for caption in captions),
    }


def _aggregate_text_to_image(per_item: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "adherence": mean_ignoring_none(item.get("adherence") for item in per_item),
        "blank_image_rate": share(item.get("blank") for item in per_item),
        "clip_score": mean_ignoring_none(item.get("clip_score") for item in per_item),
    }


def _aggregate_runtime(
    total_items: int, latencies: Sequence[float | None], wall_seconds: float | None
) -> dict[str, Any]:
    if wall_seconds is None:
        known = [value for value in latencies if value is not None]
        wall_seconds = sum(known) if known else None

    throughput = None
    if total_items and wall_seconds:
        throughput = items_per_second(total_items, wall_seconds)
    return {
        "items_per_second": throughput,
        "latency_p50": latency_percentile(latencies, 50),
        "latency_p95": latency_percentile(latencies, 95),
    }


def breakdown(
    per_item: Sequence[Mapping[str, Any]],
    key: str,
    task: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Aggregate the items separately for each value of ``key`` (e.g. "category").

    Items without the key go to the group "unspecified". When ``task`` is None it is
    inferred from the evidence: ``adherence`` or ``blank`` means text-to-image, and
    ``similarity`` or ``caption`` means captioning. Groups are returned in sorted order.
    """
    if task is None:
        task = _infer_task(per_item)

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for item in per_item:
        value = item.get(key)
        group = UNSPECIFIED_GROUP if value is None or value == "" else str(value)
        groups.setdefault(group, []).append(item)
    return {group: aggregate(task, groups[group]) for group in sorted(groups)}


def _infer_task(per_item: Sequence[Mapping[str, Any]]) -> str:
    keys = set().union(*(item.keys() for item in per_item)) if per_item else set()
    is_image = bool(keys & {"adherence", "blank"})
    is_caption = bool(keys & {"similarity", "caption"})
    if is_image == is_caption:
        raise ValueError(
            f"Cannot infer the task from evidence keys {sorted(keys)}: pass task="
            f"{CAPTIONING!r} or task={TEXT_TO_IMAGE!r}."
        )
    return TEXT_TO_IMAGE if is_image else CAPTIONING
