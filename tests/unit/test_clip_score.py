"""CLIPScore on a stand-in CLIP checkpoint: the formula, the range and input checks."""

import pytest
import torch
from PIL import Image

from gpu_workers.clip_score import ClipScorer, clip_scores
from gpu_workers.standins import build_standin


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    return build_standin("clip", tmp_path_factory.mktemp("clip") / "clip", seed=0)


@pytest.fixture
def images(tmp_path):
    paths = []
    for name, color in (("red", (220, 20, 20)), ("blue", (20, 20, 220)), ("gray", (128, 128, 128))):
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (64, 64), color).save(path)
        paths.append(path)
    return paths


def test_score_is_scaled_clipped_cosine(clip_checkpoint, images):
    prompts = ["a red square", "a blue square", "a gray square"]
    scorer = ClipScorer.from_pretrained(clip_checkpoint, "cpu")
    loaded = [Image.open(path).convert("RGB") for path in images]

    scores = scorer.score(loaded, prompts)

    inputs = scorer.processor(text=prompts, images=loaded, return_tensors="pt", padding=True)
    with torch.inference_mode():
        image_features = scorer.model.get_image_features(pixel_values=inputs["pixel_values"])
        text_features = scorer.model.get_text_features(input_ids=inputs["input_ids"],
                                                       attention_mask=inputs["attention_mask"])
    image_features = getattr(image_features, "pooler_output", image_features)
    text_features = getattr(text_features, "pooler_output", text_features)
    cosine = torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1)
    expected = [100.0 * max(value, 0.0) for value in cosine.tolist()]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert all(0.0 <= score <= 100.0 for score in scores)


def test_scores_from_paths_are_repeatable(clip_checkpoint, images):
    prompts = ["a red square", "a blue square", "a gray square"]

    first = clip_scores(clip_checkpoint, images, prompts, device="cpu")
    second = clip_scores(clip_checkpoint, images, prompts, device="cpu")

    assert len(first) == 3
    assert first == second


def test_image_prompt_count_mismatch_rejected(clip_checkpoint, images):
    scorer = ClipScorer.from_pretrained(clip_checkpoint, "cpu")

    with pytest.raises(ValueError, match="got 1 images for 2 prompts"):
        scorer.score([Image.open(images[0])], ["one", "two"])
