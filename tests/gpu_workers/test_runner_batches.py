import logging

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_workers import batching, runner
from gpu_workers.captioner import Captioner
from gpu_workers.generator import Generator

REPORT_KEYS = {"wall_time_s", "load_time_s", "cache_hit", "inference_time_s", "peak_memory_bytes", "device",
               "precision", "dtype", "quantization", "batch_size", "oom_retries", "standin"}
CAPTION_KEYS = {"item_id", "text", "entities", "raw", "similarity", "phrase_similarity", "latency_s"}
GENERATION_KEYS = {"item_id", "prompt", "seed", "image_path", "judge_caption", "adherence", "settings",
                   "latency_s", "blank", "truncated"}
GENERATION_OPTIONS = {"num_inference_steps": 2, "guidance_scale": 4.0, "height": 64, "width": 64,
                      "device": "cpu", "max_new_tokens": 8}


@pytest.fixture
def caption_items(image_paths):
    references = [
        ["A close-up of a tabby cat's face with green eyes.", "A striped cat staring at the camera."],
        ["A man with a camera on a tripod in a field."],
        [],
    ]
    objects = [
        [{"phrase": "a tabby cat", "bbox": [0.0, 0.0, 1.0, 1.0]}, {"phrase": "green eyes", "bbox": [0.3, 0.3, 0.8, 0.5]}],
        [{"phrase": "a camera", "bbox": [0.4, 0.1, 0.6, 0.4]}],
        [],
    ]
    return [
        {"item_id": 10 + index, "image_path": str(path), "references": references[index], "objects": objects[index]}
        for index, path in enumerate(image_paths)
    ]


def test_captioning_outputs(kosmos_checkpoint, caption_items, similarity):
    result = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items,
                                         {"max_new_tokens": 8, "device": "cpu", "precision": None})

    outputs = result["outputs"]
    assert [output["item_id"] for output in outputs] == [10, 11, 12]
    for output, item in zip(outputs, caption_items):
        assert set(output) == CAPTION_KEYS
        assert -1.0 <= output["similarity"] <= 1.0
        assert len(output["phrase_similarity"]) == len(output["entities"])
        assert all(len(row) == len(item["objects"]) for row in output["phrase_similarity"])
        assert output["latency_s"] > 0
    assert outputs[2]["similarity"] == 0.0  # no references


def test_captioning_report(kosmos_checkpoint, caption_items, similarity):
    report = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items,
                                         {"max_new_tokens": 4, "device": "cpu"})["report"]

    assert REPORT_KEYS <= set(report)
    assert report["device"] == "cpu"
    assert report["dtype"] == "float32"
    assert report["batch_size"] == 3
    assert report["standin"] is True
    assert report["peak_memory_bytes"] > 0
    assert report["wall_time_s"] >= report["inference_time_s"] > 0


def test_captioning_similarity_scored(kosmos_checkpoint, caption_items, similarity):
    output = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items[:1],
                                         {"max_new_tokens": 8, "device": "cpu"})["outputs"][0]

    expected = similarity.best_reference([output["text"]], [caption_items[0]["references"]])[0]
    assert output["similarity"] == pytest.approx(expected, abs=1e-6)


def test_captioning_chunks_match(kosmos_checkpoint, caption_items, similarity):
    options = {"max_new_tokens": 8, "device": "cpu"}
    whole = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items, options)
    chunked = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items, dict(options, batch_size=2))

    assert chunked["report"]["batch_size"] == 2
    assert [output["raw"] for output in chunked["outputs"]] == [output["raw"] for output in whole["outputs"]]


def test_captioning_reuses_model(kosmos_checkpoint, caption_items, similarity, monkeypatch):
    options = {"max_new_tokens": 2, "device": "cpu"}
    runner.run_captioning_batch(str(kosmos_checkpoint), caption_items[:1], options)

    def reload(*args, **kwargs):
        raise AssertionError("model loaded a second time")

    monkeypatch.setattr(Captioner, "from_pretrained", reload)
    result = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items[:1], options)

    assert len(result["outputs"]) == 1


def test_captioning_logs_one_line(kosmos_checkpoint, caption_items, similarity, caplog):
    with caplog.at_level(logging.INFO, logger="gpu_workers.runner"):
        runner.run_captioning_batch(str(kosmos_checkpoint), caption_items, {"max_new_tokens": 2, "device": "cpu"})

    lines = [record for record in caplog.records if record.name == "gpu_workers.runner" and record.levelno == logging.INFO]
    assert len(lines) == 1
    assert "captioning batch of 3 items" in lines[0].getMessage()


def test_captioning_missing_image(kosmos_checkpoint, caption_items, tmp_path):
    items = [dict(caption_items[0], image_path=str(tmp_path / "gone.png"))]

    with pytest.raises(FileNotFoundError, match="gone.png"):
        runner.run_captioning_batch(str(kosmos_checkpoint), items, {"device": "cpu"})


def test_captioning_duplicate_ids(kosmos_checkpoint, caption_items):
    items = [caption_items[0], dict(caption_items[1], item_id=10)]

    with pytest.raises(ValueError, match="item_id 10 appears twice"):
        runner.run_captioning_batch(str(kosmos_checkpoint), items, {"device": "cpu"})


def test_generation_outputs(sd3_checkpoint, kosmos_checkpoint, similarity, tmp_path):
    items = [
        {"item_id": 1, "prompt": "a red car parked in the rain", "seed": 0},
        {"item_id": 2, "prompt": " ".join(["a tiny red boat on a calm blue lake"] * 20), "seed": 1},
    ]

    result = runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items, GENERATION_OPTIONS,
                                         str(tmp_path))

    outputs = result["outputs"]
    assert [output["item_id"] for output in outputs] == [1, 2]
    for output, item in zip(outputs, items):
        assert set(output) == GENERATION_KEYS
        assert output["image_path"] == str(tmp_path / f"{item['item_id']}.png")
        with Image.open(output["image_path"]) as image:
            assert image.size == (64, 64)
        assert output["seed"] == item["seed"]
        assert output["settings"]["num_inference_steps"] == 2
        assert output["settings"]["seed"] == item["seed"]
        assert -1.0 <= output["adherence"] <= 1.0
        assert output["blank"] is False
    assert [output["truncated"] for output in outputs] == [False, True]


def test_generation_adherence_scored(sd3_checkpoint, kosmos_checkpoint, similarity, tmp_path):
    items = [{"item_id": 3, "prompt": "a bowl of fruit", "seed": 4}]

    output = runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items, GENERATION_OPTIONS,
                                         str(tmp_path))["outputs"][0]

    expected = similarity.pairwise([output["judge_caption"]], ["a bowl of fruit"])[0]
    assert output["adherence"] == pytest.approx(expected, abs=1e-6)


def test_generation_report(sd3_checkpoint, kosmos_checkpoint, similarity, tmp_path):
    items = [{"item_id": 4, "prompt": "a lighthouse", "seed": 0}]

    report = runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items, GENERATION_OPTIONS,
                                         str(tmp_path))["report"]

    assert REPORT_KEYS <= set(report)
    assert report["standin"] is True
    assert report["batch_size"] == 1
    assert report["inference_time_s"] == pytest.approx(report["generation_time_s"] + report["judge_time_s"])


def test_generation_default_size(sd3_checkpoint, kosmos_checkpoint, similarity, tmp_path):
    options = {key: value for key, value in GENERATION_OPTIONS.items() if key not in ("height", "width")}

    output = runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint),
                                         [{"item_id": 5, "prompt": "a cat", "seed": 0}], options,
                                         str(tmp_path))["outputs"][0]

    assert (output["settings"]["width"], output["settings"]["height"]) == (128, 128)


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_generation_empty_prompt(sd3_checkpoint, kosmos_checkpoint, tmp_path, prompt):
    items = [{"item_id": 1, "prompt": "a cat", "seed": 0}, {"item_id": 7, "prompt": prompt, "seed": 0}]

    with pytest.raises(ValueError, match="item 7: prompt"):
        runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items, GENERATION_OPTIONS,
                                    str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_generation_bad_seed(sd3_checkpoint, kosmos_checkpoint, tmp_path):
    items = [{"item_id": 1, "prompt": "a cat", "seed": -1}]

    with pytest.raises(ValueError, match="item 1: seed -1"):
        runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items, GENERATION_OPTIONS,
                                    str(tmp_path))


def test_generation_unsafe_item_id(sd3_checkpoint, kosmos_checkpoint, tmp_path):
    items = [{"item_id": "../escape", "prompt": "a cat", "seed": 0}]

    with pytest.raises(ValueError, match="'../escape'"):
        runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items, GENERATION_OPTIONS,
                                    str(tmp_path))


def test_generation_missing_steps(sd3_checkpoint, kosmos_checkpoint, tmp_path):
    options = {key: value for key, value in GENERATION_OPTIONS.items() if key != "num_inference_steps"}

    with pytest.raises(ValueError, match="'num_inference_steps' is missing"):
        runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint),
                                    [{"item_id": 1, "prompt": "a cat", "seed": 0}], options, str(tmp_path))


def test_warm_batch_loads_nothing(kosmos_checkpoint, caption_items, similarity):
    options = {"max_new_tokens": 2, "device": "cpu"}
    runner.run_captioning_batch(str(kosmos_checkpoint), caption_items[:1], options)

    report = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items[:1], options)["report"]

    assert report["load_time_s"] == 0.0
    assert report["cache_hit"] is True


def test_cold_batch_reports_load(kosmos_checkpoint, caption_items, similarity):
    runner.cache.clear()

    report = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items[:1],
                                         {"max_new_tokens": 2, "device": "cpu"})["report"]

    assert report["load_time_s"] > 0.0
    assert report["cache_hit"] is False


def test_generation_oom_retries_smaller(sd3_checkpoint, kosmos_checkpoint, similarity, tmp_path, monkeypatch):
    batching.forget_batch_sizes()
    real_generate = Generator.generate
    chunk_sizes = []

    def generate_with_limit(self, prompts, *args, **kwargs):
        chunk_sizes.append(len(prompts))
        if len(prompts) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(self, prompts, *args, **kwargs)

    monkeypatch.setattr(Generator, "generate", generate_with_limit)
    items = [{"item_id": index, "prompt": f"a boat number {index}", "seed": index} for index in range(3)]

    result = runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items,
                                         dict(GENERATION_OPTIONS, height=32, width=32), str(tmp_path))

    assert [output["item_id"] for output in result["outputs"]] == [0, 1, 2]
    assert chunk_sizes == [3, 1, 1, 1]
    assert result["report"]["batch_size"] == 1
    assert result["report"]["oom_retries"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["0.png", "1.png", "2.png"]
    batching.forget_batch_sizes()


def test_generation_matches_unbatched(sd3_checkpoint, kosmos_checkpoint, similarity, tmp_path):
    items = [{"item_id": index, "prompt": prompt, "seed": 7 + index}
             for index, prompt in enumerate(["a red car", "a bowl of fruit", "a lighthouse"])]
    options = dict(GENERATION_OPTIONS, height=32, width=32)

    batched = runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items, options,
                                          str(tmp_path / "batched"))
    single = runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items,
                                         dict(options, batch_size=1), str(tmp_path / "single"))

    for left, right in zip(batched["outputs"], single["outputs"]):
        with Image.open(left["image_path"]) as first, Image.open(right["image_path"]) as second:
            difference = np.abs(np.asarray(first, dtype=np.float32) - np.asarray(second, dtype=np.float32))
        assert difference.max() <= 2.0
    assert batched["report"]["batch_size"] == 3
    assert single["report"]["batch_size"] == 1


def test_bad_cache_budget_named(kosmos_checkpoint, caption_items):
    with pytest.raises(ValueError, match="'model_cache_bytes' must be a positive integer, got -5"):
        runner.run_captioning_batch(str(kosmos_checkpoint), caption_items, {"device": "cpu", "model_cache_bytes": -5})
