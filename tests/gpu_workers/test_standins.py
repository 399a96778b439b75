import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, CLIPModel, CLIPProcessor, Kosmos2Processor

from gpu_workers import standins
from gpu_workers.standins import MARKER_FILE, build_standin, is_standin, read_marker


def _file_digests(folder):
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MARKER_FILE
    }


def test_marker_contents(kosmos_checkpoint):
    marker = read_marker(kosmos_checkpoint)

    assert is_standin(kosmos_checkpoint)
    assert marker["kind"] == "kosmos-2"
    assert marker["seed"] == 0
    assert "random weights" in marker["note"]
    assert marker["created"]


def test_plain_folder_not_standin(tmp_path):
    (tmp_path / "config.json").write_text("{}")

    assert not is_standin(tmp_path)
    assert not is_standin(tmp_path / "missing")


def test_rebuild_keeps_complete_folder(tmp_path):
    path = build_standin("clip", tmp_path / "clip", seed=0)
    (path / "sentinel").write_text("kept")
    marker_before = read_marker(path)

    again = build_standin("clip", path, seed=0)

    assert again == path
    assert (path / "sentinel").read_text() == "kept"
    assert read_marker(path) == marker_before


def test_force_replaces_folder(tmp_path):
    path = build_standin("clip", tmp_path / "clip", seed=0)
    (path / "sentinel").write_text("old")

    build_standin("clip", path, seed=0, force=True)

    assert not (path / "sentinel").exists()
    assert is_standin(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]


def test_other_seed_rejected(tmp_path):
    path = build_standin("clip", tmp_path / "clip", seed=0)

    with pytest.raises(ValueError, match="seed 0"):
        build_standin("clip", path, seed=1)


def test_foreign_folder_rejected(tmp_path):
    folder = tmp_path / "real-checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    with pytest.raises(ValueError, match="not a stand-in"):
        build_standin("clip", folder)
    assert (folder / "config.json").read_text() == "{}"


def test_unknown_kind_rejected(tmp_path):
    with pytest.raises(ValueError, match="'llama'"):
        build_standin("llama", tmp_path / "x")


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken_builder(folder):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed halfway")

    monkeypatch.setitem(standins._BUILDERS, "clip", broken_builder)

    with pytest.raises(RuntimeError, match="killed halfway"):
        build_standin("clip", tmp_path / "clip")
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_files(tmp_path):
    first = build_standin("clip", tmp_path / "a", seed=5)
    second = build_standin("clip", tmp_path / "b", seed=5)

    assert _file_digests(first) == _file_digests(second)


def test_build_keeps_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)

    build_standin("clip", tmp_path / "clip", seed=9)

    assert torch.equal(torch.rand(3), expected)


def test_sd3_seeds_differ(sd3_checkpoint, sd3_other_checkpoint):
    weights = "transformer/diffusion_pytorch_model.safetensors"
    first = load_file(sd3_checkpoint / weights)
    second = load_file(sd3_other_checkpoint / weights)

    assert first.keys() == second.keys()
    assert any(not torch.equal(first[name], second[name]) for name in first)
    assert (sd3_checkpoint / "tokenizer/tokenizer.json").read_bytes() == (
        sd3_other_checkpoint / "tokenizer/tokenizer.json"
    ).read_bytes()


def test_sd3_layout_without_t5(sd3_checkpoint):
    index = json.loads((sd3_checkpoint / "model_index.json").read_text())

    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["text_encoder_3"] == [None, None]
    assert index["tokenizer_3"] == [None, None]
    for component in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (sd3_checkpoint / component).is_dir(), component


def test_kosmos_processor_tokens(kosmos_checkpoint):
    processor = AutoProcessor.from_pretrained(kosmos_checkpoint)
    vocab = processor.tokenizer.get_vocab()

    assert isinstance(processor, Kosmos2Processor)
    for token in ("<grounding>", "<phrase>", "</phrase>", "<object>", "</object>",
                  "</delimiter_of_multi_objects/>", "<patch_index_0000>", "<patch_index_1023>"):
        assert token in vocab, token
    assert processor.tokenizer.bos_token_id == 0
    assert processor.tokenizer.pad_token_id == 1
    assert processor.tokenizer.eos_token_id == 2


def test_clip_scores_image_text(clip_checkpoint, sample_images):
    model = CLIPModel.from_pretrained(clip_checkpoint)
    processor = CLIPProcessor.from_pretrained(clip_checkpoint)
    inputs = processor(text=["a cat", "a horse"], images=[image.convert("RGB") for image in sample_images],
                       return_tensors="pt", padding=True)

    with torch.inference_mode():
        logits = model(**inputs).logits_per_image

    assert logits.shape == (3, 2)
    assert torch.isfinite(logits).all()
