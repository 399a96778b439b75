"""Server-side SVG: sparklines, the score history chart, grounding boxes and caption marks."""

import re
from datetime import datetime, timezone

from frontend.plots import boxes_overlay, highlighted_caption, history_chart, sparkline


def points_of(svg):
    return [tuple(float(v) for v in pair.split(",")) for pair in re.search(r'points="([^"]+)"', svg).group(1).split()]


def test_sparkline_rank_one_on_top():
    svg = sparkline([3, 2, 1], width=100, height=20, lower_is_better=True)

    ys = [y for _, y in points_of(svg)]
    assert ys == [17.0, 10.0, 3.0]  # rank 3 at the bottom edge, rank 1 at the top (3 px padding)


def test_sparkline_gap_splits_line():
    svg = sparkline([1, None, 2, 3], width=100, height=20)

    assert svg.count("<polyline") == 1  # the lone first point has no segment of its own
    assert len(points_of(svg)) == 2


def test_sparkline_empty():
    assert sparkline([None, None]) == ""


def test_sparkline_escapes_label():
    svg = sparkline([1, 2], label="<b>rank</b>")

    assert "<b>" not in svg
    assert "&lt;b&gt;rank&lt;/b&gt;" in svg


def test_history_chart_points():
    when = datetime(2025, 1, 2, tzinfo=timezone.utc)
    svg = history_chart([(when, 0.0, 2), (when, 100.0, 1)], width=240, height=140)

    # Plot area: x from 40 to 228, y from 12 (value 100) to 112 (value 0).
    assert points_of(svg) == [(40.0, 112.0), (228.0, 12.0)]
    assert svg.count('<circle class="dot"') == 2
    assert "2025-01-02 00:00 UTC: 100.0, rank 1" in svg


def test_boxes_overlay_pixels():
    svg = boxes_overlay([{"phrase": "a cat", "boxes": [[0.1, 0.2, 0.5, 0.6]]}], 200, 100)

    assert 'viewBox="0 0 200 100"' in svg
    assert '<rect x="20" y="20" width="80" height="40"' in svg
    assert ">a cat</text>" in svg


def test_boxes_overlay_bbox_and_escaping():
    svg = boxes_overlay([{"phrase": "<script>", "bbox": [0, 0, 1, 1]}, {"phrase": "bad", "boxes": [[1, 2]]}], 10, 10)

    assert svg.count('fill="none"') == 1  # the malformed box is skipped
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg


def test_highlighted_caption_marks_spans():
    html = highlighted_caption("a dog & a ball", [{"phrase": "a dog", "span": [0, 5]},
                                                  {"phrase": "a ball", "span": [8, 14]}])

    assert re.findall(r"<mark[^>]*>(.*?)</mark>", html) == ["a dog", "a ball"]
    assert "&amp;" in html


def test_highlighted_caption_ignores_bad_spans():
    html = highlighted_caption("short", [{"span": [2, 99]}, {"span": "x"}])

    assert html == "short"
