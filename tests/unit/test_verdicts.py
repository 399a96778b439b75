import pytest

from backend.evaluation.verdicts import build_verdict, format_score, intervals_overlap, join_words


def _sd35(**overrides):
    side = {
        "slug": "stable-diffusion-3.5-large",
        "name": "Stable Diffusion 3.5 Large",
        "composite": 58.2,
        "subscores": {"quality": 0.70, "adoption": 0.80, "ecosystem": 0.30, "speed": 0.50, "match_graph": 0.604},
        "interval": (55.0, 61.0),
        "standin": False,
        "evidence": [11, 12],
        "task": "text-to-image",
    }
    return {**side, **overrides}


def _kosmos(**overrides):
    side = {
        "slug": "kosmos-2-patch14-224",
        "name": "kosmos-2-patch14-224",
        "composite": 42.4,
        "subscores": {"quality": 0.40, "adoption": 0.50, "ecosystem": 0.60, "speed": 0.50, "match_graph": 0.600},
        "interval": (39.0, 45.0),
        "standin": False,
        "evidence": [12, 13],
        "task": "captioning",
    }
    return {**side, **overrides}


def test_join_words():
    assert join_words([]) == ""
    assert join_words(["a"]) == "a"
    assert join_words(["a", "b"]) == "a and b"
    assert join_words(["a", "b", "c"]) == "a, b and c"


def test_format_score_rounds_half_up():
    assert format_score(42.5) == "43/100"
    assert format_score(42.49) == "42/100"
    assert format_score(42.25, decimals=1) == "42.3/100"


def test_verdict_same_whole_number_shows_decimal():
    verdict = build_verdict(_sd35(composite=42.4, interval=None), _kosmos(composite=41.8, interval=None), True)

    assert verdict["leader"] == "stable-diffusion-3.5-large"
    assert verdict["text"].startswith(
        "Stable Diffusion 3.5 Large scores higher at 42.4/100 vs kosmos-2-patch14-224 at 41.8/100."
    )


def test_intervals_overlap():
    assert intervals_overlap((1, 3), (2, 4)) is True
    assert intervals_overlap((1, 2), (2, 4)) is True
    assert intervals_overlap((1, 2), (2.1, 4)) is False
    assert intervals_overlap(None, (1, 2)) is None


def test_verdict_clear_text_exact():
    verdict = build_verdict(_kosmos(), _sd35(), same_task=True)

    assert verdict["text"] == (
        "Stable Diffusion 3.5 Large scores higher at 58/100 vs kosmos-2-patch14-224 at 42/100. "
        "kosmos-2-patch14-224 leads on ecosystem, while Stable Diffusion 3.5 Large is stronger "
        "on adoption and quality."
    )


def test_verdict_clear_structure():
    verdict = build_verdict(_sd35(), _kosmos(), same_task=True)

    assert verdict["leader"] == "stable-diffusion-3.5-large"
    assert verdict["too_close"] is False
    assert verdict["cross_task"] is False
    assert verdict["confidence"] == "high"
    assert verdict["scores"] == {"stable-diffusion-3.5-large": 58.2, "kosmos-2-patch14-224": 42.4}
    assert verdict["evidence"] == [11, 12, 13]
    assert verdict["subscore_leaders"] == {
        "adoption": "stable-diffusion-3.5-large",
        "ecosystem": "kosmos-2-patch14-224",
        "match_graph": "tie",
        "quality": "stable-diffusion-3.5-large",
        "speed": "tie",
    }


def test_verdict_subscore_tie_boundary():
    a = _sd35(subscores={"quality": 0.505})
    b = _kosmos(subscores={"quality": 0.500})

    assert build_verdict(a, b, same_task=True)["subscore_leaders"] == {"quality": "tie"}

    a = _sd35(subscores={"quality": 0.5051})
    assert build_verdict(a, b, same_task=True)["subscore_leaders"] == {"quality": a["slug"]}


def test_verdict_overlapping_intervals_too_close():
    verdict = build_verdict(_sd35(interval=(50.0, 62.0)), _kosmos(interval=(40.0, 51.0)), same_task=True)

    assert verdict["too_close"] is True
    assert verdict["leader"] is None
    assert verdict["confidence"] == "low"
    assert "too close to call because their 95% rating intervals from head-to-head matches overlap" in verdict["text"]
    assert "scores higher" not in verdict["text"]
    assert verdict["text"].startswith("Stable Diffusion 3.5 Large at 58/100 and kosmos-2-patch14-224 at 42/100")


def test_verdict_near_equal_without_intervals():
    verdict = build_verdict(
        _sd35(composite=50.2, interval=None), _kosmos(composite=50.0, interval=None), same_task=True
    )

    assert verdict["too_close"] is True
    assert verdict["leader"] is None
    assert "differ by less than half a point" in verdict["text"]


def test_verdict_missing_interval_medium():
    verdict = build_verdict(_sd35(interval=None), _kosmos(), same_task=True)

    assert verdict["leader"] == "stable-diffusion-3.5-large"
    assert verdict["confidence"] == "medium"


def test_verdict_cross_task_wording():
    verdict = build_verdict(_sd35(), _kosmos(), same_task=False)

    assert verdict["cross_task"] is True
    assert verdict["confidence"] == "medium"
    assert verdict["text"].endswith(
        "Their quality scores come from different tasks (text-to-image for Stable Diffusion 3.5 Large, "
        "captioning for kosmos-2-patch14-224), so they are not directly comparable."
    )


def test_verdict_cross_task_without_task_names():
    verdict = build_verdict(_sd35(task=None), _kosmos(task=None), same_task=False)

    assert "Their quality scores come from different tasks, so they are not directly comparable." in verdict["text"]


def test_verdict_standin_sentence():
    verdict = build_verdict(_sd35(), _kosmos(standin=True), same_task=True)

    assert verdict["confidence"] == "low"
    assert verdict["text"].endswith(
        "The score for kosmos-2-patch14-224 comes from stand-in checkpoints, not the released weights."
    )


def test_verdict_both_standin():
    verdict = build_verdict(_sd35(standin=True), _kosmos(standin=True), same_task=True)

    assert verdict["text"].endswith(
        "The scores for Stable Diffusion 3.5 Large and kosmos-2-patch14-224 come from stand-in "
        "checkpoints, not the released weights."
    )


def test_verdict_leader_leads_everything():
    a = _sd35(subscores={"quality": 0.9, "adoption": 0.9})
    b = _kosmos(subscores={"quality": 0.1, "adoption": 0.1})

    text = build_verdict(a, b, same_task=True)["text"]

    assert text.endswith("Stable Diffusion 3.5 Large is stronger on adoption and quality.")


def test_verdict_level_subscores():
    a = _sd35(subscores={"quality": 0.5})
    b = _kosmos(subscores={"quality": 0.5})

    assert build_verdict(a, b, same_task=True)["text"].endswith("The two are level on every sub-score.")


def test_verdict_name_defaults_to_slug():
    verdict = build_verdict(_sd35(name=""), _kosmos(), same_task=True)

    assert verdict["text"].startswith("stable-diffusion-3.5-large scores higher at 58/100")


def test_verdict_rejects_missing_composite():
    with pytest.raises(ValueError, match="has no composite"):
        build_verdict(_sd35(composite=None), _kosmos(), same_task=True)


def test_verdict_rejects_missing_keys():
    with pytest.raises(ValueError, match="missing subscores"):
        build_verdict({"slug": "x", "composite": 1.0}, _kosmos(), same_task=True)


def test_verdict_rejects_same_model():
    with pytest.raises(ValueError, match="with itself"):
        build_verdict(_sd35(), _sd35(), same_task=True)
