import numpy as np
import pytest
import torch
from PIL import Image

from gpu_workers.captioner import Captioner, parse_grounded_text
from gpu_workers.images import to_rgb

# Hand-computed with a 32 x 32 grid: patch index i is row i // 32, column i % 32, and a box
# whose corner cells differ in row and column spans the cells' centers, (cell + 0.5) / 32.
SNOWMAN = (
    "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863>"
    "</object> warming himself by<phrase> a fire</phrase><object><patch_index_0005><patch_index_0911>"
    "</object>."
)


def test_parse_one_box_per_entity():
    text, entities = parse_grounded_text(SNOWMAN)

    assert text == "An image of a snowman warming himself by a fire."
    assert [entity["phrase"] for entity in entities] == ["a snowman", "a fire"]
    # 44 = row 1, column 12; 863 = row 26, column 31.
    assert entities[0]["boxes"] == [[12.5 / 32, 1.5 / 32, 31.5 / 32, 26.5 / 32]]
    # 5 = row 0, column 5; 911 = row 28, column 15.
    assert entities[1]["boxes"] == [[5.5 / 32, 0.5 / 32, 15.5 / 32, 28.5 / 32]]


def test_parse_spans_index_text():
    text, entities = parse_grounded_text(SNOWMAN)

    for entity in entities:
        start, end = entity["span"]
        assert text[start:end] == entity["phrase"]


def test_parse_two_boxes_one_phrase():
    raw = ("<grounding><phrase> Two dogs</phrase><object><patch_index_0000><patch_index_0033>"
           "</delimiter_of_multi_objects/><patch_index_0990><patch_index_1023></object> on grass")

    text, entities = parse_grounded_text(raw)

    assert text == "Two dogs on grass"
    assert len(entities) == 1
    assert entities[0]["phrase"] == "Two dogs"
    assert entities[0]["span"] == [0, 8]
    # 0 = (0, 0), 33 = (1, 1); 990 = (30, 30), 1023 = (31, 31).
    assert entities[0]["boxes"] == [
        [0.5 / 32, 0.5 / 32, 1.5 / 32, 1.5 / 32],
        [30.5 / 32, 30.5 / 32, 31.5 / 32, 31.5 / 32],
    ]


def test_parse_same_row_uses_edges():
    raw = "<phrase> a shelf</phrase><object><patch_index_0064><patch_index_0095></object>"

    _, entities = parse_grounded_text(raw)

    # 64 = row 2, column 0; 95 = row 2, column 31: one full row of cells.
    assert entities[0]["boxes"] == [[0.0, 2 / 32, 1.0, 3 / 32]]


def test_parse_no_entities():
    text, entities = parse_grounded_text("<grounding> A plain caption without boxes.")

    assert text == "A plain caption without boxes."
    assert entities == []


def test_parse_object_without_phrase():
    _, entities = parse_grounded_text("A cat<object><patch_index_0000><patch_index_1023></object>")

    assert entities == [{"phrase": "", "span": [5, 5], "boxes": [[1 / 64, 1 / 64, 63 / 64, 63 / 64]]}]


def test_parse_drops_image_prefix():
    raw = "<image>. the, to and of</image><grounding> A red<phrase> car</phrase><object><patch_index_0000><patch_index_0000></object>"

    text, entities = parse_grounded_text(raw)

    assert text == "A red car"
    assert entities[0]["boxes"] == [[0.0, 0.0, 1 / 32, 1 / 32]]


def test_parse_other_grid_size():
    _, entities = parse_grounded_text("<phrase> it</phrase><object><patch_index_0000><patch_index_0015></object>",
                                      num_patches_per_side=4)

    # On a 4 x 4 grid, 15 is row 3, column 3.
    assert entities[0]["boxes"] == [[0.125, 0.125, 0.875, 0.875]]


def test_processor_keeps_whole_wide_image(captioner):
    # Left quarter red, the rest blue: if the processor cropped the center, red would vanish.
    pixels = np.zeros((64, 256, 3), dtype=np.uint8)
    pixels[:, :64] = (255, 0, 0)
    pixels[:, 64:] = (0, 0, 255)
    inputs = captioner.processor(images=[Image.fromarray(pixels)], return_tensors="pt")
    values = inputs["pixel_values"][0]  # (3, 32, 32), normalized

    assert values.shape == (3, 32, 32)
    assert values[0, :, :7].mean() > values[2, :, :7].mean()  # columns 0-6 of 32 are red
    assert values[2, :, 9:].mean() > values[0, :, 9:].mean()  # columns 9-31 are blue


def test_caption_result_shape(captioner, sample_images):
    results = captioner.caption(sample_images, max_new_tokens=8)

    assert len(results) == 3
    for result in results:
        assert set(result) == {"text", "entities", "raw"}
        assert isinstance(result["text"], str)
        assert result["raw"]
        for entity in result["entities"]:
            assert all(0.0 <= value <= 1.0 for box in entity["boxes"] for value in box)


def test_batch_matches_single(captioner, sample_images):
    batched = captioner.caption(sample_images, max_new_tokens=16)
    single = [captioner.caption([image], max_new_tokens=16)[0] for image in sample_images]

    assert batched == single
    # The images must caption differently, or a mix-up inside the batch would go unnoticed.
    assert len({result["raw"] for result in batched}) > 1


def test_caption_accepts_any_mode(captioner, sample_images):
    rgb = captioner.caption([to_rgb(image) for image in sample_images], max_new_tokens=8)

    assert [image.mode for image in sample_images] == ["RGB", "L", "RGBA"]
    assert captioner.caption(sample_images, max_new_tokens=8) == rgb


def test_caption_empty_batch(captioner):
    assert captioner.caption([]) == []


def test_caption_zero_tokens_rejected(captioner, sample_images):
    with pytest.raises(ValueError, match="got 0"):
        captioner.caption(sample_images, max_new_tokens=0)


def test_caption_token_limit(captioner, sample_images):
    tokenizer = captioner.processor.tokenizer
    result = captioner.caption(sample_images[:1], max_new_tokens=3)[0]

    assert len(tokenizer(result["raw"], add_special_tokens=False).input_ids) <= 3


def test_mixed_prompts_match_single(captioner, sample_images):
    images = sample_images * 2
    prompts = ["<grounding>", "<grounding>An image of", "<grounding> A photo of a cat"] * 2

    batched = captioner.caption(images, max_new_tokens=12, prompts=prompts, batch_size=4)
    single = [captioner.caption([image], max_new_tokens=12, prompts=prompt)[0]
              for image, prompt in zip(images, prompts)]

    assert batched == single
    # The prompts must change the output, or a prompt mix-up would go unnoticed.
    assert batched[0]["raw"] != batched[1]["raw"]


def test_greedy_loop_matches_generate(captioner, sample_images, monkeypatch):
    assert captioner.uses_greedy_loop
    loop = captioner.caption(sample_images, max_new_tokens=20, min_new_tokens=10)

    monkeypatch.setattr(captioner, "uses_greedy_loop", False)
    generated = captioner.caption(sample_images, max_new_tokens=20, min_new_tokens=10)

    assert loop == generated


def test_generation_config_selects_generate(kosmos_checkpoint):
    other = Captioner.from_pretrained(kosmos_checkpoint, device="cpu")
    other.model.generation_config.no_repeat_ngram_size = 3

    rebuilt = Captioner(other.model, other.processor, other.device, other.dtype)

    assert rebuilt.uses_greedy_loop is False


def test_prompt_count_mismatch(captioner, sample_images):
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        captioner.caption(sample_images, prompts=["<grounding>", "<grounding>"])


def test_preprocess_matches_processor(captioner, sample_images):
    rgb = [to_rgb(image) for image in sample_images]
    expected = captioner.processor(text=["<grounding>"] * 3, images=rgb, return_tensors="pt")["pixel_values"]

    assert torch.equal(captioner.preprocess(sample_images), expected)


def test_sdpa_attention_selected(captioner):
    assert captioner.attn_implementation == "sdpa"
