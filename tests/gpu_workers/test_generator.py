import numpy as np
import pytest

from gpu_workers.generator import Generator
from gpu_workers.images import is_blank

PROMPTS = ["a red car parked in the rain", "a bowl of fruit on a table", "a lighthouse at dusk"]
SETTINGS = {"num_inference_steps": 3, "guidance_scale": 4.0, "height": 64, "width": 64}


def _pixels(image):
    return np.asarray(image, dtype=np.float32)


def test_image_size_and_mode(generator):
    images = generator.generate(PROMPTS[:1], [0], num_inference_steps=2, guidance_scale=4.0, height=32, width=64)

    assert images[0].size == (64, 32)
    assert images[0].mode == "RGB"


def test_seed_independent_of_batch(generator):
    alone = generator.generate(PROMPTS[1:2], [7], **SETTINGS)[0]
    batch = generator.generate(PROMPTS, [3, 7, 11], **SETTINGS)

    difference = np.abs(_pixels(batch[1]) - _pixels(alone))
    assert difference.max() <= 2.0


def test_same_seed_repeats(generator):
    first = generator.generate(PROMPTS[:1], [5], **SETTINGS)[0]
    second = generator.generate(PROMPTS[:1], [5], **SETTINGS)[0]

    assert np.array_equal(_pixels(first), _pixels(second))


def test_different_seeds_differ(generator):
    images = generator.generate(PROMPTS[:1] * 2, [1, 2], **SETTINGS)

    assert np.abs(_pixels(images[0]) - _pixels(images[1])).mean() > 5.0


def test_standin_seeds_differ(generator, sd3_other_checkpoint):
    other = Generator.from_pretrained(sd3_other_checkpoint, device="cpu")

    first = generator.generate(PROMPTS[:1], [0], **SETTINGS)[0]
    second = other.generate(PROMPTS[:1], [0], **SETTINGS)[0]

    assert np.abs(_pixels(first) - _pixels(second)).mean() > 5.0


def test_output_not_blank(generator):
    image = generator.generate(PROMPTS[:1], [0], **SETTINGS)[0]

    assert not is_blank(image)


def test_step_callback_counts(generator):
    calls = []

    generator.generate(PROMPTS[:1], [0], num_inference_steps=3, guidance_scale=4.0, height=64, width=64,
                       step_callback=lambda step, total: calls.append((step, total)))

    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_without_t5(generator):
    assert generator.pipeline.text_encoder_3 is None
    assert generator.pipeline.tokenizer_3 is None


def test_size_rules(generator):
    assert generator.size_multiple == 16
    assert generator.default_size == 128


def test_bad_height_named(generator):
    with pytest.raises(ValueError, match="height 40 is not a positive multiple of 16"):
        generator.generate(PROMPTS[:1], [0], num_inference_steps=1, guidance_scale=1.0, height=40, width=64)


def test_empty_prompt_named(generator):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generator.generate(["a cat", "   "], [0, 1], **SETTINGS)


def test_seed_count_mismatch(generator):
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generator.generate(PROMPTS[:2], [0], **SETTINGS)


def test_truncation_flags(generator):
    long_prompt = " ".join(["a tiny red boat on a calm blue lake"] * 20)

    assert generator.truncated(["a cat", long_prompt]) == [False, True]


def test_vae_tiles_large_images(generator, monkeypatch):
    monkeypatch.setattr("gpu_workers.generator.VAE_TILING_PIXELS", 48 * 48)

    generator.generate(PROMPTS[:1], [0], num_inference_steps=1, guidance_scale=0.0, height=64, width=64)
    large = (generator.pipeline.vae.use_tiling, generator.pipeline.vae.use_slicing)
    generator.generate(PROMPTS[:1], [0], num_inference_steps=1, guidance_scale=0.0, height=32, width=32)
    small = (generator.pipeline.vae.use_tiling, generator.pipeline.vae.use_slicing)

    assert large == (True, True)
    assert small == (False, False)


def test_item_estimate_grows_with_size(generator):
    small = generator.estimate_item_bytes(64, 64, guidance_scale=0.0)

    assert generator.estimate_item_bytes(128, 128, guidance_scale=0.0) > small


def test_item_estimate_doubles_with_guidance(generator, monkeypatch):
    # With tiling the VAE term drops out and the transformer's activations remain.
    monkeypatch.setattr("gpu_workers.generator.VAE_TILING_PIXELS", 16 * 16)

    without = generator.estimate_item_bytes(64, 64, guidance_scale=0.0)

    assert generator.estimate_item_bytes(64, 64, guidance_scale=4.0) == 2 * without
