"""Attention maps of grounded phrases.

The random-weight stand-in never writes phrase tags on its own, so these tests replace the
decoding step with a scripted caption. The attention pass that follows runs the real model.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_workers import runner
from gpu_workers.attention_maps import colorize, overlay
from gpu_workers.captioner import Captioner

SCRIPTED = ("<phrase> a cat</phrase><object><patch_index_0000><patch_index_0500></object> next to"
            "<phrase> a dog</phrase><object><patch_index_0600><patch_index_1023></object>"
            "<object><patch_index_0010><patch_index_0020></object>")


@pytest.fixture
def scripted_decoding(monkeypatch, captioner):
    tokenizer = captioner.processor.tokenizer
    token_ids = tokenizer(SCRIPTED, add_special_tokens=False).input_ids

    def generate(self, pixel_values, *args):
        return torch.tensor([token_ids] * pixel_values.shape[0])

    monkeypatch.setattr(Captioner, "_generate", generate)


@pytest.fixture
def items(image_paths):
    return [{"item_id": f"img{index}", "image_path": str(path)} for index, path in enumerate(image_paths)]


def test_heatmaps_per_phrase(captioner, sample_images, scripted_decoding):
    result = captioner.caption(sample_images[:1], max_new_tokens=40, attention_maps=True)[0]

    phrases = [entity["phrase"] for entity in result["entities"]]
    assert phrases == ["a cat", "a dog", ""]
    cat, dog, unnamed = (entity["attention"] for entity in result["entities"])
    assert cat.shape == dog.shape == (4, 4)  # 32-pixel images in 8-pixel patches
    assert cat.min() == 0.0
    assert cat.max() == 1.0
    assert not np.array_equal(cat, dog)
    assert unnamed is None


def test_attention_restored_to_sdpa(captioner, sample_images, scripted_decoding):
    captioner.caption(sample_images[:1], max_new_tokens=40, attention_maps=True)

    assert captioner.attn_implementation == "sdpa"


def test_runner_writes_pngs(kosmos_checkpoint, items, image_paths, similarity, scripted_decoding, tmp_path):
    result = runner.run_captioning_batch(str(kosmos_checkpoint), items,
                                         {"max_new_tokens": 40, "device": "cpu", "attention_maps": True},
                                         output_dir=str(tmp_path))

    for output, path in zip(result["outputs"], image_paths):
        entities = output["entities"]
        assert [entity["attention_map_path"] is not None for entity in entities] == [True, True, False]
        assert all("attention" not in entity for entity in entities)
        with Image.open(path) as source:
            size = source.size
        for entity in entities[:2]:
            with Image.open(entity["attention_map_path"]) as saved:
                assert saved.format == "PNG"
                assert saved.size == size
    assert len(list(tmp_path.glob("*-attention-*.png"))) == 6


def test_runner_without_maps_adds_no_paths(kosmos_checkpoint, items, similarity, scripted_decoding, tmp_path):
    result = runner.run_captioning_batch(str(kosmos_checkpoint), items[:1], {"max_new_tokens": 40, "device": "cpu"},
                                         output_dir=str(tmp_path))

    assert all("attention_map_path" not in entity for entity in result["outputs"][0]["entities"])
    assert list(tmp_path.iterdir()) == []


def test_maps_need_output_dir(kosmos_checkpoint, items):
    with pytest.raises(ValueError, match="'attention_maps' needs an output_dir"):
        runner.run_captioning_batch(str(kosmos_checkpoint), items, {"device": "cpu", "attention_maps": True})


def test_overlay_follows_heatmap():
    gray = Image.new("RGB", (40, 20), (128, 128, 128))
    heatmap = np.array([[0.0, 1.0]])  # left half cold, right half hot

    pixels = np.asarray(overlay(gray, heatmap), dtype=np.int16)

    assert pixels.shape == (20, 40, 3)
    assert pixels[10, 2, 2] > pixels[10, 2, 0]  # blue on the left
    assert pixels[10, 37, 0] > pixels[10, 37, 2]  # red on the right


def test_colorize_ends():
    colors = colorize(np.array([[0.0, 1.0]]))

    assert colors.dtype == np.uint8
    assert colors[0, 0].tolist() == [20, 30, 140]
    assert colors[0, 1].tolist() == [220, 20, 20]
