import math

import pytest

from backend.evaluation.scoring import (
    WEIGHTS,
    adoption_score,
    composite,
    connectedness,
    ecosystem_score,
    effective_weights,
    license_openness,
    match_graph_score,
    quality_score,
    rank_models,
    score_model,
    speed_score,
)


def test_weights_sum_to_one():
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_quality_clips_negative():
    assert quality_score(-0.2) == 0.0
    assert quality_score(0.62) == pytest.approx(0.62)
    assert quality_score(None) is None


def test_speed_log_scale():
    assert speed_score(10.0, 10.0) == pytest.approx(1.0)
    assert speed_score(1.0, 10.0) == pytest.approx(2 / 3)
    assert speed_score(0.1, 10.0) == pytest.approx(1 / 3)
    assert speed_score(0.01, 10.0) == 0.0
    assert speed_score(100.0, 10.0) == 1.0
    assert speed_score(0.0, 10.0) == 0.0
    assert speed_score(None, 10.0) is None


def test_speed_rejects_zero_reference():
    with pytest.raises(ValueError, match="reference_items_per_second 0"):
        speed_score(1.0, 0)


def test_adoption_hand_computed():
    # 0.7 * log10(1000) / 7 + 0.3 * log10(100) / 4 = 0.3 + 0.15.
    assert adoption_score(999, 99) == pytest.approx(0.45)


def test_adoption_caps_at_one():
    assert adoption_score(50_000_000, 1_000_000) == pytest.approx(1.0)


def test_adoption_one_count_missing():
    assert adoption_score(None, 99) == pytest.approx(0.5)
    assert adoption_score(None, None) is None
    assert adoption_score(0, 0) == 0.0


def test_license_openness():
    assert license_openness("MIT", True) == 1.0
    assert license_openness("other", True) == 0.5
    assert license_openness(None, True) == 0.5
    assert license_openness("apache-2.0", False) == 0.0


def test_ecosystem_hand_computed():
    # 0.4 * 1 + 0.3 * 2/5 + 0.15 * 0 + 0.15 * 1.
    score = ecosystem_score("mit", True, ["transformers", "diffusers"], False, True)

    assert score == pytest.approx(0.67)


def test_ecosystem_restricted_license():
    # 0.4 * 0.5 + 0.3 * 1 (capped) + 0.15 + 0.15.
    integrations = ["a", "b", "c", "d", "e", "f"]

    assert ecosystem_score("stabilityai-ai-community", True, integrations, True, True) == pytest.approx(0.8)


def test_ecosystem_all_missing():
    assert ecosystem_score(None, None, None, None, None) is None


def test_connectedness_hand_computed():
    assert connectedness(2, 3, 10) == pytest.approx(2 / 3 * 0.5)
    assert connectedness(3, 3, 40) == pytest.approx(1.0)
    assert connectedness(0, 0, 0) == 0.0


def test_match_graph_hand_computed():
    # Normalized rating (1100 - 900) / (1300 - 900) = 0.5, times connectedness 1/3.
    score = match_graph_score(1100, [900, 1000, 1100, 1300], 2, 3, 10)

    assert score == pytest.approx(1 / 6)


def test_match_graph_equal_ratings():
    assert match_graph_score(1000, [1000, 1000], 1, 1, 40) == pytest.approx(0.5)


def test_match_graph_without_matches():
    assert match_graph_score(1000, [1000, 1200], 0, 1, 0) is None
    assert match_graph_score(None, [], 0, 0, 0) is None


SUBSCORES = {"quality": 0.6, "adoption": 0.5, "ecosystem": 0.7, "match_graph": 0.4, "speed": 1.0}


def test_composite_all_present():
    # 0.35*0.6 + 0.2*0.5 + 0.2*0.7 + 0.15*0.4 + 0.1*1.0 = 0.61.
    assert composite(SUBSCORES) == pytest.approx(61.0)


def test_composite_renormalizes_missing():
    subscores = {**SUBSCORES, "match_graph": None}

    # (0.21 + 0.1 + 0.14 + 0.1) / 0.85.
    assert composite(subscores) == pytest.approx(100 * 0.55 / 0.85)


def test_composite_absent_key_renormalizes():
    assert composite({"quality": 0.6, "speed": 1.0}) == pytest.approx(100 * (0.21 + 0.1) / 0.45)


def test_composite_custom_weights():
    assert composite({"quality": 0.2, "speed": 0.8}, {"quality": 0.5, "speed": 0.5}) == pytest.approx(50.0)


def test_effective_weights_sum_to_one():
    shares = effective_weights({**SUBSCORES, "speed": None})

    assert sum(shares.values()) == pytest.approx(1.0)
    assert "speed" not in shares
    assert shares["quality"] == pytest.approx(0.35 / 0.9)


def test_composite_rejects_out_of_range():
    with pytest.raises(ValueError, match="quality=1.2"):
        composite({**SUBSCORES, "quality": 1.2})


def test_composite_rejects_unknown_name():
    with pytest.raises(ValueError, match="Unknown sub-scores"):
        composite({"beauty": 0.5})


def test_composite_rejects_all_missing():
    with pytest.raises(ValueError, match="No weighted sub-score"):
        composite({"quality": None})


CATALOG = {
    "downloads": 999,
    "likes": 99,
    "license": "mit",
    "open_weights": True,
    "integrations": ["transformers", "diffusers"],
    "supports_lora": False,
    "supports_quantization": True,
}


def test_score_model_full():
    metrics = {"caption_similarity": 0.6, "items_per_second": 1.0}

    result = score_model(
        "captioning",
        metrics,
        CATALOG,
        rating=1100,
        field_ratings=[900, 1000, 1100, 1300],
        opponents_met=3,
        possible_opponents=3,
        n_matches=40,
    )

    subscores = result["subscores"]
    assert subscores["quality"] == pytest.approx(0.6)
    assert subscores["speed"] == pytest.approx(2 / 3)
    assert subscores["adoption"] == pytest.approx(0.45)
    assert subscores["ecosystem"] == pytest.approx(0.67)
    assert subscores["match_graph"] == pytest.approx(0.5)
    expected = 0.35 * 0.6 + 0.2 * 0.45 + 0.2 * 0.67 + 0.15 * 0.5 + 0.1 * 2 / 3
    assert result["composite"] == pytest.approx(100 * expected)
    assert result["provenance"]["composite"]["renormalized"] is False
    assert result["provenance"]["quality"]["metric"] == "caption_similarity"
    assert result["provenance"]["match_graph"]["provisional"] is False


def test_score_model_without_matches():
    metrics = {"adherence": -0.1, "items_per_second": 1.0}

    result = score_model("text-to-image", metrics, CATALOG)

    provenance = result["provenance"]["composite"]
    assert result["subscores"]["match_graph"] is None
    assert result["subscores"]["quality"] == 0.0
    assert provenance["renormalized"] is True
    assert provenance["missing"] == ["match_graph"]
    assert "renormalized" in provenance["note"]
    assert math.isclose(sum(provenance["effective_weights"].values()), 1.0)
    expected = (0.35 * 0.0 + 0.2 * 0.45 + 0.2 * 0.67 + 0.1 * 1.0) / 0.85
    assert result["composite"] == pytest.approx(100 * expected)


def test_score_model_rejects_unknown_task():
    with pytest.raises(ValueError, match="Unknown task 'video'"):
        score_model("video", {}, CATALOG)


def test_rank_models_ties_by_slug():
    ranking = rank_models({"zeta": 70.0, "alpha": 55.5, "beta": 70.0, "gamma": None, "delta": 10.0})

    assert [row["slug"] for row in ranking] == ["beta", "zeta", "alpha", "delta", "gamma"]
    assert [row["rank"] for row in ranking] == [1, 2, 3, 4, None]
    assert ranking[0]["composite"] == 70.0
