"""Structured verdicts and plain-English text for a comparison of two models.

Rules:
- The pair is too close to call when both intervals are given and overlap, or when
  the composites differ by less than TOO_CLOSE_POINTS. Then no leader is named.
- Two sub-scores within SUBSCORE_TIE of each other are a tie.
- Confidence is "low" when the pair is too close to call or either score comes from
  stand-in checkpoints. It is "medium" when a leader exists but an interval is missing
  or the models ran on different tasks, and "high" otherwise.

This module never imports Django.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SUBSCORE_TIE = 0.005
# Half a point on the 0-100 scale, the same margin as SUBSCORE_TIE on the 0-1 scale.
TOO_CLOSE_POINTS = 0.5
# Float rounding tolerance, so that a difference of exactly SUBSCORE_TIE counts as a tie.
_EPSILON = 1e-9

SUBSCORE_LABELS = {
    "quality": "quality",
    "speed": "speed",
    "adoption": "adoption",
    "ecosystem": "ecosystem",
    "match_graph": "head-to-head record",
}
REQUIRED_KEYS = ("slug", "composite", "subscores")


def join_words(words: Sequence[str]) -> str:
    """Join words as English prose: "a", "a and b", "a, b and c"."""
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return f"{', '.join(words[:-1])} and {words[-1]}"


def format_score(composite: float, decimals: int = 0) -> str:
    """Format a 0-100 composite as "58/100" (or "58.3/100"), rounding halves up."""
    scale = 10**decimals
    rounded = math.floor(composite * scale + 0.5) / scale
    return f"{rounded:.{decimals}f}/100"


def _format_pair(first: float, second: float) -> tuple[str, str]:
    """Format two composites with one decimal when whole numbers would look equal."""
    decimals = 1 if format_score(first) == format_score(second) else 0
    return format_score(first, decimals), format_score(second, decimals)


def intervals_overlap(a: Sequence[float] | None, b: Sequence[float] | None) -> bool | None:
    """Return whether two closed intervals overlap, or None when either is missing."""
    if a is None or b is None:
        return None
    low_a, high_a = sorted(a)
    low_b, high_b = sorted(b)
    return low_a <= high_b and low_b <= high_a


def subscore_leaders(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, str]:
    """Return, per sub-score that both sides have, the leading slug or "tie"."""
    leaders = {}
    for name in sorted(set(a["subscores"]) & set(b["subscores"])):
        value_a, value_b = a["subscores"][name], b["subscores"][name]
        if value_a is None or value_b is None:
            continue
        if abs(value_a - value_b) <= SUBSCORE_TIE + _EPSILON:
            leaders[name] = "tie"
        else:
            leaders[name] = a["slug"] if value_a > value_b else b["slug"]
    return leaders


def build_verdict(a: Mapping[str, Any], b: Mapping[str, Any], same_task: bool) -> dict[str, Any]:
    """Compare two scored models and return the structured verdict with its text.

    Each side needs ``slug``, ``composite`` (0-100) and ``subscores`` (name to value in
    [0, 1] or None). Optional keys:

    - ``name``: display name, the slug when missing or empty.
    - ``interval``: (low, high) of the composite or of the rating. Both sides must use
      the same kind.
    - ``standin``: whether the scores come from stand-in checkpoints.
    - ``evidence``: job ids behind the scores.
    - ``task``: named in the cross-task sentence.
    """
    _check_side(a, "a")
    _check_side(b, "b")
    if a["slug"] == b["slug"]:
        raise ValueError(f"Cannot compare {a['slug']!r} with itself: pass two different models.")

    overlap = intervals_overlap(a.get("interval"), b.get("interval"))
    close_scores = abs(a["composite"] - b["composite"]) < TOO_CLOSE_POINTS
    too_close = bool(overlap) or close_scores
    leader = None
    if not too_close:
        leader = a["slug"] if a["composite"] > b["composite"] else b["slug"]

    leaders = subscore_leaders(a, b)
    verdict = {
        "leader": leader,
        "scores": {a["slug"]: a["composite"], b["slug"]: b["composite"]},
        "subscore_leaders": leaders,
        "too_close": too_close,
        "cross_task": not same_task,
        "confidence": _confidence(a, b, too_close, same_task, overlap),
        "evidence": _merge_evidence(a, b),
    }
    verdict["text"] = _verdict_text(a, b, leader, leaders, overlap, same_task)
    return verdict


def _check_side(side: Mapping[str, Any], label: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in side]
    if missing:
        raise ValueError(f"Side {label} is missing {', '.join(missing)}: expected keys {REQUIRED_KEYS}.")
    if side["composite"] is None:
        raise ValueError(f"Side {label} ({side['slug']!r}) has no composite: score the model before comparing it.")


def _confidence(
    a: Mapping[str, Any], b: Mapping[str, Any], too_close: bool, same_task: bool, overlap: bool | None
) -> str:
    if too_close or a.get("standin") or b.get("standin"):
        return "low"
    if overlap is None or not same_task:
        return "medium"
    return "high"


def _merge_evidence(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Any]:
    merged: list[Any] = []
    for job_id in [*(a.get("evidence") or []), *(b.get("evidence") or [])]:
        if job_id not in merged:
            merged.append(job_id)
    return merged


def _display_name(side: Mapping[str, Any]) -> str:
    return side.get("name") or side["slug"]


def _labels_led_by(slug: str, leaders: Mapping[str, str]) -> list[str]:
    return sorted(SUBSCORE_LABELS.get(name, name) for name, leader in leaders.items() if leader == slug)


def _verdict_text(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    leader: str | None,
    leaders: Mapping[str, str],
    overlap: bool | None,
    same_task: bool,
) -> str:
    if leader is None:
        first, second = a, b
    else:
        first, second = (a, b) if leader == a["slug"] else (b, a)
    first_score, second_score = _format_pair(first["composite"], second["composite"])

    if leader is None:
        reason = ("their 95% rating intervals from head-to-head matches overlap, so the matches "
                  "cannot separate them yet" if overlap else "their scores differ by less than half a point")
        sentences = [
            f"{_display_name(first)} at {first_score} and {_display_name(second)} at {second_score} "
            f"are too close to call because {reason}."
        ]
    else:
        sentences = [
            f"{_display_name(first)} scores higher at {first_score} vs {_display_name(second)} at {second_score}."
        ]

    sentences.append(_subscore_sentence(first, second, leaders, leader is not None))
    if not same_task:
        sentences.append(_cross_task_sentence(a, b))
    standin_names = [_display_name(side) for side in (a, b) if side.get("standin")]
    if standin_names:
        sentences.append(_standin_sentence(standin_names))
    return " ".join(sentence for sentence in sentences if sentence)


def _subscore_sentence(
    first: Mapping[str, Any], second: Mapping[str, Any], leaders: Mapping[str, str], has_leader: bool
) -> str:
    """Describe who leads which sub-scores, the trailing model first when there is a leader."""
    first_leads = join_words(_labels_led_by(first["slug"], leaders))
    second_leads = join_words(_labels_led_by(second["slug"], leaders))
    first_name, second_name = _display_name(first), _display_name(second)

    if not leaders:
        return ""
    if not first_leads and not second_leads:
        return "The two are level on every sub-score."
    if has_leader:
        if first_leads and second_leads:
            return f"{second_name} leads on {second_leads}, while {first_name} is stronger on {first_leads}."
        if first_leads:
            return f"{first_name} is stronger on {first_leads}."
        return f"{second_name} leads on {second_leads}."

    if first_leads and second_leads:
        return f"{first_name} leads on {first_leads}, while {second_name} leads on {second_leads}."
    if first_leads:
        return f"{first_name} leads on {first_leads}."
    return f"{second_name} leads on {second_leads}."


def _cross_task_sentence(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    if a.get("task") and b.get("task"):
        tasks = f" ({a['task']} for {_display_name(a)}, {b['task']} for {_display_name(b)})"
    else:
        tasks = ""
    return f"Their quality scores come from different tasks{tasks}, so they are not directly comparable."


def _standin_sentence(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"The score for {names[0]} comes from stand-in checkpoints, not the released weights."
    return f"The scores for {join_words(list(names))} come from stand-in checkpoints, not the released weights."
