"""Captioning throughput: the worker's batched path against a per-image loop and transformers' pipeline.

All paths run the same model weights on the same RGB images with the same prompt, greedy
decoding and a fixed number of new tokens (min_new_tokens = max_new_tokens), so each
generates exactly the same number of tokens per image.

transformers 5.25's image-text-to-text pipeline honors ``batch_size`` only when its inputs
come as an iterable of ``{"images", "text"}`` dicts, such as a generator or a dataset. A
list of images with a list of prompts becomes one input that runs as a single batch. A list
of dicts is read as chat messages, and Kosmos-2's processor has no chat template. The bench
times the iterable form at each batch size, and the single-call form once.
"""

import logging
import time

import torch
from transformers import AutoProcessor, Kosmos2ForConditionalGeneration, pipeline

from ..captioner import Captioner
from .timing import run_interleaved, summarize, synchronize

logger = logging.getLogger(__name__)

PROMPT = "<grounding>An image of"
BATCH_SIZES = (1, 4, 8, 16)


def naive_loop(model, processor, images, max_new_tokens: int, device: torch.device) -> list[str]:
    """Caption images one ``generate`` call at a time, as on the Kosmos-2 model card."""
    captions = []
    for image in images:
        inputs = processor(text=PROMPT, images=image, return_tensors="pt").to(device)
        generated_ids = model.generate(
            pixel_values=inputs["pixel_values"].to(model.dtype),
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            image_embeds=None,
            image_embeds_position_mask=inputs["image_embeds_position_mask"],
            use_cache=True,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
        )
        generated_text = processor.batch_decode(generated_ids, skip_special_tokens=True)[0]
        captions.append(processor.post_process_generation(generated_text)[0])
    return captions


def load_baseline_model(checkpoint, device: torch.device, dtype: torch.dtype):
    """Load the checkpoint the way the model card does (default attention implementation)."""
    model = Kosmos2ForConditionalGeneration.from_pretrained(str(checkpoint), dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(str(checkpoint))
    return model, processor


def build_pipeline(model, processor, device: torch.device):
    """Return transformers' image-text-to-text pipeline over the same model and processor."""
    return pipeline("image-text-to-text", model=model, processor=processor, device=device)


def measure_throughput(captioner: Captioner, model, processor, images, max_new_tokens: int, repeats: int,
                       device: torch.device) -> dict:
    """Return images per second of the three paths at each batch size, medians over ``repeats`` rounds."""
    itt = build_pipeline(model, processor, device)
    generate_kwargs = {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens, "do_sample": False}

    cases = {
        "naive_loop": lambda: naive_loop(model, processor, images, max_new_tokens, device),
        "pipeline_one_call": lambda: itt(images=images, text=[PROMPT] * len(images), generate_kwargs=generate_kwargs),
    }
    for batch_size in BATCH_SIZES:
        cases[f"pipeline_b{batch_size}"] = (
            lambda size=batch_size: list(itt(({"images": image, "text": PROMPT} for image in images),
                                             batch_size=size, generate_kwargs=generate_kwargs)))
        cases[f"worker_b{batch_size}"] = (
            lambda size=batch_size: captioner.caption(images, max_new_tokens=max_new_tokens, prompts=PROMPT,
                                                      min_new_tokens=max_new_tokens, batch_size=size))
    with torch.inference_mode():
        samples = run_interleaved(cases, repeats, device)

    results = {"images": len(images), "max_new_tokens": max_new_tokens, "prompt": PROMPT, "paths": {}}
    for name, seconds in samples.items():
        rates = [len(images) / value for value in seconds]
        results["paths"][name] = {"images_per_s": summarize(rates), "seconds": summarize(seconds)}
    naive = results["paths"]["naive_loop"]["images_per_s"]["median"]
    results["ratios"] = {}
    for batch_size in BATCH_SIZES:
        worker = results["paths"][f"worker_b{batch_size}"]["images_per_s"]["median"]
        piped = results["paths"][f"pipeline_b{batch_size}"]["images_per_s"]["median"]
        results["ratios"][f"b{batch_size}"] = {"worker_vs_naive": worker / naive, "worker_vs_pipeline": worker / piped}
    return results


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> dict:
    """Return the FLOP/s of a square ``torch.matmul`` of ``size``, the machine's practical peak."""
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(left, right)
    samples = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        torch.matmul(left, right)
        synchronize(device)
        samples.append(time.perf_counter() - started)
    flops = 2 * size ** 3
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "flops_per_s": summarize([flops / s for s in samples])}


def flops_per_image(model, prompt_tokens: int, new_tokens: int) -> dict:
    """Estimate the model FLOPs to caption one image as 2 x parameters x tokens processed.

    Text decoder parameters count over prompt plus generated tokens, and vision encoder plus
    image-to-text projection parameters over the patch tokens. It is an estimate: it leaves
    out attention-score FLOPs and counts the output projection for every prompt token,
    although only the last prompt position is projected to the vocabulary.
    """
    config = model.config.vision_config
    patches = (config.image_size // config.patch_size) ** 2 + 1
    text_parameters = sum(parameter.numel() for parameter in model.text_model.parameters())
    vision_parameters = sum(parameter.numel() for parameter in model.vision_model.parameters())
    vision_parameters += sum(parameter.numel() for parameter in model.image_to_text_projection.parameters())
    text_tokens = prompt_tokens + new_tokens
    return {
        "text_parameters": text_parameters,
        "vision_parameters": vision_parameters,
        "text_tokens": text_tokens,
        "vision_tokens": patches,
        "flops": 2 * text_parameters * text_tokens + 2 * vision_parameters * patches,
    }
