"""Inline SVG plots rendered on the server: sparklines, a score history chart, grounding boxes.

Every function returns markup marked safe for templates; every text that reaches the markup
passes through ``escape``. Coordinates are rounded to two decimals to keep pages small.
"""

from django.utils.html import escape
from django.utils.safestring import mark_safe

# Box and phrase highlight colours, cycled per entity; the same index styles the caption mark.
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#0f9fb4", "#c7a000", "#f032e6")


def _num(value):
    return f"{value:.2f}".rstrip("0").rstrip(".")


def sparkline(values, width=120, height=28, lower_is_better=False, label=""):
    """Draw a small line of ``values`` (None leaves a gap), the last point marked.

    With ``lower_is_better`` (ranks) smaller values are drawn higher. Returns an empty
    string when fewer than one value is known.
    """
    known = [value for value in values if value is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    pad = 3.0
    span_x = width - 2 * pad
    span_y = height - 2 * pad
    step = span_x / (len(values) - 1) if len(values) > 1 else 0.0

    def point(index, value):
        x = pad + index * step if len(values) > 1 else width / 2
        share = 0.5 if high == low else (value - low) / (high - low)
        if lower_is_better:
            share = 1.0 - share
        return x, pad + (1.0 - share) * span_y

    segments, current = [], []
    for index, value in enumerate(values):
        if value is None:
            if current:
                segments.append(current)
            current = []
            continue
        current.append(point(index, value))
    if current:
        segments.append(current)

    lines = "".join(
        '<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="%s"/>'
        % " ".join(f"{_num(x)},{_num(y)}" for x, y in segment)
        for segment in segments if len(segment) > 1
    )
    last_x, last_y = segments[-1][-1]
    title = escape(label) if label else ""
    return mark_safe(
        f'<svg class="sparkline" role="img" aria-label="{title}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{title}</title>{lines}'
        f'<circle cx="{_num(last_x)}" cy="{_num(last_y)}" r="2.5" fill="currentColor"/></svg>'
    )


def history_chart(points, width=640, height=240, y_max=100.0, label="Composite score"):
    """Draw a line chart of ``points``: ``(datetime, value, rank)`` tuples, oldest first.

    The y axis runs from 0 to ``y_max`` with gridlines every quarter. The x axis is the
    snapshot order, evenly spaced with the first and last dates labelled, because recomputes
    happen in bursts and a time axis would pile them up. Each point has a tooltip with its
    date, value and rank.
    """
    if not points:
        return ""
    left, right, top, bottom = 40.0, 12.0, 12.0, 28.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(index):
        return left + (index * plot_w / (len(points) - 1) if len(points) > 1 else plot_w / 2)

    def y_of(value):
        return top + plot_h * (1.0 - max(0.0, min(value, y_max)) / y_max)

    parts = [f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
             f'preserveAspectRatio="xMidYMid meet"><title>{escape(label)}</title>']
    for tick in range(5):
        value = y_max * tick / 4
        y = _num(y_of(value))
        parts.append(f'<line class="grid" x1="{_num(left)}" x2="{_num(width - right)}" y1="{y}" y2="{y}"/>'
                     f'<text class="tick" x="{_num(left - 6)}" y="{y}" text-anchor="end" '
                     f'dominant-baseline="middle">{_num(value)}</text>')
    coords = [(x_of(index), y_of(value)) for index, (_, value, _) in enumerate(points)]
    if len(coords) > 1:
        parts.append('<polyline class="line" fill="none" points="%s"/>'
                     % " ".join(f"{_num(x)},{_num(y)}" for x, y in coords))
    for (x, y), (when, value, rank) in zip(coords, points):
        tip = f"{when:%Y-%m-%d %H:%M} UTC: {value:.1f}" + (f", rank {rank}" if rank else "")
        parts.append(f'<circle class="dot" cx="{_num(x)}" cy="{_num(y)}" r="3.5"><title>{escape(tip)}</title></circle>')
    baseline = _num(height - 8)
    parts.append(f'<text class="tick" x="{_num(left)}" y="{baseline}" text-anchor="start">'
                 f'{points[0][0]:%Y-%m-%d}</text>')
    if len(points) > 1:
        parts.append(f'<text class="tick" x="{_num(width - right)}" y="{baseline}" text-anchor="end">'
                     f'{points[-1][0]:%Y-%m-%d}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def entity_boxes(entity):
    """Return the ``[x0, y0, x1, y1]`` fraction boxes of an entity (``boxes`` list or one ``bbox``)."""
    if isinstance(entity, dict):
        if entity.get("boxes"):
            return [box for box in entity["boxes"] if _is_box(box)]
        if _is_box(entity.get("bbox")):
            return [entity["bbox"]]
    return []


def _is_box(box):
    return isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)


def boxes_overlay(entities, width, height):
    """Draw each entity's boxes with its phrase as a label, sized for a ``width`` x ``height`` photo.

    The SVG uses the photo's pixel size as its viewBox and sits on top of the ``<img>``
    (see ``.photo`` in versus.css), so boxes given as fractions land on the right pixels
    at any display size and labels keep their proportions.
    """
    width, height = max(int(width or 1), 1), max(int(height or 1), 1)
    font = max(10.0, min(width, height) / 22)
    stroke = max(2.0, min(width, height) / 160)
    parts = [f'<svg class="overlay" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
             f'aria-hidden="true">']
    for index, entity in enumerate(entities or []):
        colour = PALETTE[index % len(PALETTE)]
        phrase = (entity.get("phrase") or "").strip() if isinstance(entity, dict) else ""
        for x0, y0, x1, y1 in entity_boxes(entity):
            x, y = max(0.0, min(x0, x1)) * width, max(0.0, min(y0, y1)) * height
            w, h = abs(x1 - x0) * width, abs(y1 - y0) * height
            parts.append(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" '
                         f'fill="none" stroke="{colour}" stroke-width="{_num(stroke)}"/>')
            if phrase:
                label_w = font * 0.58 * len(phrase) + font * 0.6
                label_y = y if y + font * 1.4 <= height else max(0.0, height - font * 1.4)
                label_x = min(x, max(0.0, width - label_w))
                parts.append(
                    f'<rect x="{_num(label_x)}" y="{_num(label_y)}" width="{_num(label_w)}" '
                    f'height="{_num(font * 1.4)}" fill="{colour}" fill-opacity="0.85"/>'
                    f'<text x="{_num(label_x + font * 0.3)}" y="{_num(label_y + font * 1.05)}" '
                    f'font-size="{_num(font)}" fill="#fff">{escape(phrase)}</text>'
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def highlighted_caption(text, entities):
    """Return the caption with each grounded phrase wrapped in a mark coloured like its box."""
    text = text or ""
    spans = []
    for index, entity in enumerate(entities or []):
        span = entity.get("span") if isinstance(entity, dict) else None
        if (isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, int) for v in span)
                and 0 <= span[0] < span[1] <= len(text)):
            spans.append((span[0], span[1], index))
    spans.sort()

    parts, cursor = [], 0
    for start, end, index in spans:
        if start < cursor:
            continue  # overlapping spans: keep the first
        colour = PALETTE[index % len(PALETTE)]
        parts.append(escape(text[cursor:start]))
        parts.append(f'<mark style="--mark: {colour}">{escape(text[start:end])}</mark>')
        cursor = end
    parts.append(escape(text[cursor:]))
    return mark_safe("".join(parts))
