"""The precision option: each value runs on the CPU or is rejected with a message naming a fix."""

import numpy as np
import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from gpu_workers import device, runner
from gpu_workers.captioner import Captioner
from gpu_workers.device import resolve_precision
from gpu_workers.generator import Generator

GENERATION_OPTIONS = {"num_inference_steps": 2, "guidance_scale": 4.0, "height": 32, "width": 32,
                      "device": "cpu", "max_new_tokens": 4}


@pytest.fixture
def caption_items(image_paths):
    return [{"item_id": index, "image_path": str(path)} for index, path in enumerate(image_paths[:2])]


@pytest.mark.parametrize("precision, dtype, quantization", [
    (None, "float32", "none"),
    ("auto", "float32", "none"),
    ("float32", "float32", "none"),
    ("bfloat16", "bfloat16", "none"),
    ("int8", "float32", "dynamic-int8"),
])
def test_captioning_precisions_run(kosmos_checkpoint, caption_items, similarity, precision, dtype, quantization):
    result = runner.run_captioning_batch(str(kosmos_checkpoint), caption_items,
                                         {"max_new_tokens": 4, "device": "cpu", "precision": precision})

    report = result["report"]
    assert report["dtype"] == dtype
    assert report["quantization"] == quantization
    assert report["precision"] == (precision if precision not in (None, "auto") else "float32")
    assert all(output["raw"] for output in result["outputs"])


def test_float16_on_cpu_rejected(kosmos_checkpoint, caption_items):
    with pytest.raises(ValueError, match="'float16' is not supported on device 'cpu'.*use 'float32' or 'bfloat16'"):
        runner.run_captioning_batch(str(kosmos_checkpoint), caption_items, {"device": "cpu", "precision": "float16"})


def test_unknown_precision_lists_choices():
    with pytest.raises(ValueError, match="unknown precision 'int4'; use one of auto, float32, bfloat16, float16, int8"):
        resolve_precision("cpu", "int4")


def test_int8_quantizes_linear_layers(kosmos_checkpoint):
    quantized = Captioner.from_pretrained(kosmos_checkpoint, device="cpu", precision="int8")
    plain = Captioner.from_pretrained(kosmos_checkpoint, device="cpu")

    layers = [module for module in quantized.model.modules() if isinstance(module, torch.nn.Linear)]
    quantized_layers = [module for module in quantized.model.modules()
                        if isinstance(module, DynamicQuantizedLinear)]
    assert layers == []
    assert len(quantized_layers) > 10
    assert quantized.memory_bytes() < plain.memory_bytes()


def test_int8_generation_runs(sd3_checkpoint, kosmos_checkpoint, similarity, tmp_path):
    items = [{"item_id": 1, "prompt": "a red car", "seed": 0}]

    result = runner.run_generation_batch(str(sd3_checkpoint), str(kosmos_checkpoint), items,
                                         dict(GENERATION_OPTIONS, precision="int8"), str(tmp_path))

    assert result["report"]["quantization"] == "dynamic-int8"
    assert result["outputs"][0]["settings"]["precision"] == "int8"
    assert result["outputs"][0]["blank"] is False


def test_int8_image_close_to_float32(sd3_checkpoint):
    settings = {"num_inference_steps": 2, "guidance_scale": 4.0, "height": 32, "width": 32}
    plain = Generator.from_pretrained(sd3_checkpoint, device="cpu").generate(["a cat"], [0], **settings)[0]
    quantized = Generator.from_pretrained(sd3_checkpoint, device="cpu", precision="int8").generate(
        ["a cat"], [0], **settings)[0]

    difference = np.abs(np.asarray(plain, dtype=np.float32) - np.asarray(quantized, dtype=np.float32))
    assert difference.mean() < 10.0


def test_int8_on_cuda_needs_bitsandbytes(monkeypatch):
    monkeypatch.setattr(device, "_resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(device, "_bitsandbytes_installed", lambda: False)

    with pytest.raises(ValueError, match="'int8' on a CUDA device needs the bitsandbytes package"):
        resolve_precision("cuda", "int8")


def test_int8_on_mps_rejected(monkeypatch):
    monkeypatch.setattr(device, "_resolve_device", lambda name: torch.device("mps"))

    with pytest.raises(ValueError, match="'int8' is not supported on device 'mps'"):
        resolve_precision("mps", "int8")
