"""Template filters for Versus pages."""

import json

from django import template

register = template.Library()


@register.filter
def seconds(value):
    """Format a number of seconds as ``1h 02m``, ``3m 05s`` or ``4.2 s``; ``—`` when unknown."""
    if value is None or value == "":
        return "—"
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@register.filter
def pretty_json(value):
    """Indent a JSON-serializable value for a ``<pre>`` block."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def score(value, digits=2):
    """Format a float with ``digits`` decimals; ``—`` when unknown."""
    if value is None or value == "":
        return "—"
    return f"{float(value):.{int(digits)}f}"


@register.filter
def params(value):
    """Format a parameter count as ``1.7B`` or ``350M``."""
    if not value:
        return "—"
    value = float(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return str(int(value))


@register.filter
def thousands(value):
    """Format an integer with comma thousands separators: ``120,000``."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value
