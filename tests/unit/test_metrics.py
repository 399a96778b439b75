import pytest

from backend.evaluation import metrics
from backend.evaluation.metrics import (
    aggregate,
    box_iou,
    breakdown,
    caption_length,
    items_per_second,
    latency_percentile,
    match_grounding,
    mean_ignoring_none,
    share,
)


def test_box_iou_identical():
    assert box_iou([0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6]) == pytest.approx(1.0)


def test_box_iou_disjoint():
    assert box_iou([0, 0, 0.4, 0.4], [0.5, 0.5, 1, 1]) == 0.0


def test_box_iou_touching_edges():
    assert box_iou([0, 0, 0.5, 1], [0.5, 0, 1, 1]) == 0.0


def test_box_iou_half_shifted():
    # Intersection 0.5, union 1 + 1 - 0.5 = 1.5.
    assert box_iou([0, 0, 1, 1], [0.5, 0, 1.5, 1]) == pytest.approx(1 / 3)


def test_box_iou_half_contained():
    assert box_iou([0, 0, 1, 1], [0, 0, 0.5, 1]) == pytest.approx(0.5)


def test_box_iou_zero_area():
    assert box_iou([0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]) == 0.0


def test_box_iou_rejects_inverted_box():
    with pytest.raises(ValueError, match="x1 must be >= x0"):
        box_iou([0.5, 0, 0.1, 1], [0, 0, 1, 1])


def test_box_iou_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"expected \[x0, y0, x1, y1\]"):
        box_iou([0, 0, 1], [0, 0, 1, 1])


DOGS = [
    {"phrase": "a dog", "bbox": [0.0, 0.0, 0.5, 0.5]},
    {"phrase": "another dog", "bbox": [0.5, 0.5, 1.0, 0.9]},
]


def test_grounding_two_boxes_one_phrase():
    entities = [{"phrase": "two dogs", "span": [0, 8], "boxes": [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]}]

    result = match_grounding(entities, DOGS, [[0.9, 0.8]])

    # Box 1 matches dog 1 exactly. Box 2 covers dog 2 with IoU 0.2 / 0.25 = 0.8.
    assert result["recall"] == pytest.approx(1.0)
    assert result["mean_iou"] == pytest.approx(0.9)
    assert result["matched"] == 2
    assert result["references"] == 2
    assert result["predicted_boxes"] == 2
    assert [(pair["box"], pair["reference"]) for pair in result["pairs"]] == [(0, 0), (1, 1)]


def test_grounding_kosmos_tuple_entities():
    entities = [("two dogs", (0, 8), [(0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)])]

    result = match_grounding(entities, DOGS, [[0.9, 0.8]])

    assert result["matched"] == 2


def test_grounding_reference_matched_once():
    # Both boxes overlap the single reference. The higher IoU wins, and the other box stays unused.
    entities = [{"phrase": "cat", "boxes": [[0, 0, 1, 0.8], [0, 0, 1, 1]]}]
    refs = [{"phrase": "cat", "bbox": [0, 0, 1, 1]}]

    result = match_grounding(entities, refs, [[1.0]])

    assert result["matched"] == 1
    assert result["pairs"][0]["box"] == 1
    assert result["mean_iou"] == pytest.approx(1.0)
    assert result["recall"] == pytest.approx(1.0)


def test_grounding_box_used_once():
    # One box overlaps two references, but it can only match the better one.
    entities = [{"phrase": "people", "boxes": [[0, 0, 1, 1]]}]
    refs = [{"phrase": "man", "bbox": [0, 0, 1, 0.9]}, {"phrase": "woman", "bbox": [0, 0, 1, 0.6]}]

    result = match_grounding(entities, refs, [[0.7, 0.7]])

    assert result["matched"] == 1
    assert result["pairs"][0]["reference"] == 0
    assert result["recall"] == pytest.approx(0.5)
    assert result["mean_iou"] == pytest.approx(0.9)


def test_grounding_phrase_below_threshold():
    entities = [{"phrase": "car", "boxes": [[0.0, 0.0, 0.5, 0.5]]}]

    result = match_grounding(entities, DOGS, [[0.49, 0.1]])

    assert result["matched"] == 0
    assert result["recall"] == 0.0
    assert result["mean_iou"] is None


def test_grounding_iou_below_threshold():
    entities = [{"phrase": "dog", "boxes": [[0.0, 0.0, 0.5, 0.2]]}]

    result = match_grounding(entities, DOGS, [[0.9, 0.9]])

    # IoU with dog 1 is 0.1 / 0.25 = 0.4.
    assert result["matched"] == 0


def test_grounding_empty_predictions():
    result = match_grounding([], DOGS, None)

    assert result["recall"] == 0.0
    assert result["mean_iou"] is None
    assert result["matched"] == 0
    assert result["references"] == 2
    assert result["predicted_boxes"] == 0


def test_grounding_no_references():
    entities = [{"phrase": "dog", "boxes": [[0, 0, 1, 1]]}]

    result = match_grounding(entities, [], [])

    assert result["recall"] is None
    assert result["predicted_boxes"] == 1


def test_grounding_rejects_wrong_matrix_shape():
    entities = [{"phrase": "dog", "boxes": [[0, 0, 1, 1]]}]

    with pytest.raises(ValueError, match=r"expected \(1, 2\)"):
        match_grounding(entities, DOGS, [[0.9]])


def test_grounding_rejects_missing_matrix():
    entities = [{"phrase": "dog", "boxes": [[0, 0, 1, 1]]}]

    with pytest.raises(ValueError, match="Missing phrase_similarity"):
        match_grounding(entities, DOGS, None)


def test_caption_length_counts_words():
    assert caption_length("a dog  on\tgrass") == 4
    assert caption_length("") == 0
    assert caption_length(None) == 0


def test_share_skips_none():
    assert share([True, False, None, True]) == pytest.approx(2 / 3)
    assert share([None]) is None


def test_mean_ignoring_none():
    assert mean_ignoring_none([0.2, None, 0.4]) == pytest.approx(0.3)
    assert mean_ignoring_none([None, None]) is None


def test_items_per_second():
    assert items_per_second(10, 4.0) == pytest.approx(2.5)
    assert items_per_second(0, 0.0) == 0.0


def test_items_per_second_rejects_zero_wall():
    with pytest.raises(ValueError, match="total_wall_seconds 0"):
        items_per_second(3, 0)


def test_latency_percentile_linear():
    assert latency_percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    # Rank 0.95 * 9 = 8.55 lies between 9 and 10.
    assert latency_percentile(range(1, 11), 95) == pytest.approx(9.55)
    assert latency_percentile([None, 2.0], 95) == pytest.approx(2.0)
    assert latency_percentile([], 50) is None


def test_latency_percentile_rejects_bad_q():
    with pytest.raises(ValueError, match="percentile 150"):
        latency_percentile([1.0], 150)


def test_registry_primary_metrics():
    assert metrics.PRIMARY_METRIC == {"captioning": "caption_similarity", "text-to-image": "adherence"}
    assert metrics.METRICS["latency_p95"].direction == metrics.LOWER_IS_BETTER
    names = [metric.name for metric in metrics.metrics_for_task("captioning")]
    assert "items_per_second" in names
    assert "adherence" not in names


def test_aggregate_captioning():
    items = [
        {
            "caption": "two dogs on grass",
            "similarity": 0.8,
            "entities": [{"phrase": "two dogs", "boxes": [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]}],
            "reference_objects": DOGS,
            "phrase_similarity": [[0.9, 0.8]],
            "latency_s": 1.0,
        },
        {
            "caption": " ",
            "similarity": None,
            "entities": [],
            "reference_objects": [{"phrase": "cat", "bbox": [0, 0, 1, 1]}],
            "phrase_similarity": None,
            "latency_s": 3.0,
        },
        {"caption": "a cat", "similarity": 0.4, "latency_s": 2.0},
    ]

    summary = aggregate("captioning", items)

    assert summary["items"] == 3
    assert summary["caption_similarity"] == pytest.approx(0.6)
    assert summary["primary"] == pytest.approx(0.6)
    assert summary["primary_metric"] == "caption_similarity"
    assert summary["grounding_recall"] == pytest.approx(2 / 3)
    assert summary["grounding_mean_iou"] == pytest.approx(0.9)
    assert summary["grounding_matched"] == 2
    assert summary["caption_length"] == pytest.approx(2.0)
    assert summary["empty_caption_rate"] == pytest.approx(1 / 3)
    assert summary["items_per_second"] == pytest.approx(0.5)
    assert summary["latency_p50"] == pytest.approx(2.0)
    assert summary["latency_p95"] == pytest.approx(2.9)


def test_aggregate_text_to_image_wall_seconds():
    items = [
        {"adherence": 0.5, "blank": False, "latency_s": 2.0, "clip_score": 30.0},
        {"adherence": 0.1, "blank": True, "latency_s": 2.0},
        {"adherence": 0.3, "blank": False, "latency_s": 2.0, "clip_score": 20.0},
        {"adherence": None, "blank": False, "latency_s": 2.0},
    ]

    summary = aggregate("text-to-image", items, wall_seconds=2.0)

    assert summary["adherence"] == pytest.approx(0.3)
    assert summary["blank_image_rate"] == pytest.approx(0.25)
    assert summary["clip_score"] == pytest.approx(25.0)
    assert summary["items_per_second"] == pytest.approx(2.0)
    assert summary["primary"] == pytest.approx(0.3)


def test_aggregate_empty():
    summary = aggregate("text-to-image", [])

    assert summary["items"] == 0
    assert summary["adherence"] is None
    assert summary["items_per_second"] is None
    assert summary["latency_p50"] is None


def test_aggregate_rejects_unknown_task():
    with pytest.raises(ValueError, match="Unknown task 'audio'"):
        aggregate("audio", [])


def test_breakdown_by_category():
    items = [
        {"adherence": 0.6, "blank": False, "category": "Animals", "latency_s": 1.0},
        {"adherence": 0.2, "blank": True, "category": "Animals", "latency_s": 1.0},
        {"adherence": 0.5, "blank": False, "category": "Vehicles", "latency_s": 1.0},
        {"adherence": 0.9, "blank": False, "latency_s": 1.0},
    ]

    groups = breakdown(items, "category")

    assert list(groups) == ["Animals", "Vehicles", "unspecified"]
    assert groups["Animals"]["items"] == 2
    assert groups["Animals"]["adherence"] == pytest.approx(0.4)
    assert groups["Animals"]["blank_image_rate"] == pytest.approx(0.5)
    assert groups["Vehicles"]["adherence"] == pytest.approx(0.5)
    assert groups["unspecified"]["adherence"] == pytest.approx(0.9)


def test_breakdown_rejects_ambiguous_task():
    with pytest.raises(ValueError, match="Cannot infer the task"):
        breakdown([{"latency_s": 1.0}], "challenge")
