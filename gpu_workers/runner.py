"""Batch entry points for the worker tasks: plain data in, plain data out.

Each runner reads top to bottom in phases: 1. check inputs, 2. prepare (load models through
the process-wide cache), 3. encode, 4. generate, 5. decode and score, 6. report. Models stay
loaded between calls, so only the first batch of a model pays the load time. A batch whose
models were all cached reports ``load_time_s`` 0.0.

Both runners accept ``progress_callback(done_steps, total_steps, items_done, items_total)``
and ``should_stop()``; see ``gpu_workers.progress``. When ``should_stop()`` returns True the
runner raises ``Cancelled`` at the next token, denoising step or chunk.
"""

import logging
import re
import time
from pathlib import Path

import numpy as np

from . import cache
from .attention_maps import save_overlay
from .batching import ChunkStats, auto_batch_size, run_in_chunks
from .captioner import GROUNDING_PROMPT, Captioner
from .device import Precision, peak_memory_bytes, reset_peak_memory, resolve_precision
from .generator import Generator
from .images import is_blank, load_images, save_png
from .progress import Cancelled, Progress, ProgressCallback, StopCheck
from .similarity import TextSimilarity, default_model_path
from .standins import is_standin

logger = logging.getLogger(__name__)

__all__ = ["Cancelled", "load_captioner", "load_generator", "load_similarity", "run_captioning_batch",
           "run_generation_batch"]

DEFAULT_MAX_NEW_TOKENS = 32

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# Model loading ------------------------------------------------------------------------------


def load_captioner(checkpoint, device: str | None = None, precision: str | None = None, adapter=None) -> Captioner:
    """Return a cached Captioner for the checkpoint, adapter, device and precision."""
    return _load_captioner_timed(checkpoint, device, precision, adapter)[0]


def load_generator(checkpoint, device: str | None = None, precision: str | None = None, adapter=None) -> Generator:
    """Return a cached Generator for the checkpoint, adapter, device and precision."""
    return _load_generator_timed(checkpoint, device, precision, adapter)[0]


def load_similarity(device: str | None = None) -> TextSimilarity:
    """Return a cached TextSimilarity on ``device``; it always computes in float32."""
    return _load_similarity_timed(device)[0]


def _load_captioner_timed(checkpoint, device, precision, adapter) -> tuple[Captioner, float]:
    torch_device, run_precision = resolve_precision(device, precision)
    key = _cache_key("captioner", checkpoint, adapter, torch_device, run_precision)
    return cache.get_or_load_timed(
        key, lambda: Captioner.from_pretrained(checkpoint, str(torch_device), run_precision.name, adapter),
        _weights_bytes(checkpoint),
    )


def _load_generator_timed(checkpoint, device, precision, adapter) -> tuple[Generator, float]:
    torch_device, run_precision = resolve_precision(device, precision)
    key = _cache_key("generator", checkpoint, adapter, torch_device, run_precision)
    return cache.get_or_load_timed(
        key, lambda: Generator.from_pretrained(checkpoint, str(torch_device), run_precision.name, adapter),
        _weights_bytes(checkpoint),
    )


def _load_similarity_timed(device) -> tuple[TextSimilarity, float]:
    torch_device, _ = resolve_precision(device, "float32")
    model_path = default_model_path()
    key = cache.CacheKey("similarity", str(model_path), None, str(torch_device), "float32")
    return cache.get_or_load_timed(key, lambda: TextSimilarity(device=str(torch_device)), _weights_bytes(model_path))


# Captioning ---------------------------------------------------------------------------------


def run_captioning_batch(checkpoint: str, items: list[dict], options: dict, adapter: str | None = None, *,
                         output_dir: str | None = None, progress_callback: ProgressCallback | None = None,
                         should_stop: StopCheck | None = None) -> dict:
    """Caption each item's image and score the caption against the item's references.

    ``items``: ``{"item_id", "image_path", "references": [str], "objects": [{"phrase", "bbox"}]}``
    and an optional ``"prompt"`` (default the grounding prompt). ``options``:
    ``max_new_tokens`` (default 32), ``precision``, ``device``, ``batch_size`` (most items per
    forward pass; default what fits in free memory), ``attention_maps`` (default False) and
    ``model_cache_bytes`` (the model cache's memory budget).

    Returns ``{"outputs", "report"}``. ``outputs`` has one dict per item, in item order:

    - ``text``, ``entities`` and ``raw``: the captioner's result.
    - ``similarity``: cosine of the caption with the closest reference caption.
    - ``phrase_similarity``: a matrix of cosines, one row per predicted entity phrase and one
      column per reference object phrase.
    - ``latency_s``: the item's equal share of the captioning time.

    With ``attention_maps`` each entity gets ``attention_map_path``: a PNG in ``output_dir``
    that overlays the phrase's attention over the image patches on the image, or None for an
    entity without a phrase.

    Raises ValueError for invalid items or options, FileNotFoundError for a missing image and
    Cancelled when ``should_stop()`` returns True.
    """
    wall_start = time.perf_counter()

    # 1. Check inputs
    _check_item_ids(items)
    for item in items:
        _check_captioning_item(item)
    max_new_tokens = _positive_int_option(options, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    requested_batch_size = _positive_int_option(options, "batch_size", max(len(items), 1))
    attention_maps = _bool_option(options, "attention_maps")
    if attention_maps:
        if output_dir is None:
            raise ValueError("option 'attention_maps' needs an output_dir for the PNG files; pass output_dir")
        for item in items:
            _check_safe_id(item["item_id"])
    torch_device, precision = resolve_precision(options.get("device"), options.get("precision"))
    progress = Progress(len(items), max_new_tokens, progress_callback, should_stop)
    progress.check_stop()

    # 2. Prepare
    _apply_cache_budget(options)
    reset_peak_memory(torch_device)
    captioner, captioner_load = _load_captioner_timed(checkpoint, str(torch_device), precision.name, adapter)
    similarity, similarity_load = _load_similarity_timed(str(torch_device))
    load_time = captioner_load + similarity_load

    # 3. Encode
    started = time.perf_counter()
    images = load_images(item["image_path"] for item in items)
    read_time = time.perf_counter() - started

    # 4. Generate
    start_size = auto_batch_size(torch_device, captioner.estimate_item_bytes(max_new_tokens), len(items),
                                 requested_batch_size)
    memo_key = ("captioner", _checkpoint_key(checkpoint), _adapter_key(adapter), str(torch_device), precision.name,
                max_new_tokens, attention_maps)
    stats = ChunkStats()
    started = time.perf_counter()
    captions = captioner.caption(images, max_new_tokens=max_new_tokens,
                                 prompts=[item.get("prompt") or GROUNDING_PROMPT for item in items],
                                 batch_size=start_size, memo_key=memo_key, progress=progress,
                                 attention_maps=attention_maps, stats=stats)
    inference_time = time.perf_counter() - started

    # 5. Decode and score
    started = time.perf_counter()
    outputs = _score_captions(similarity, items, captions, inference_time / max(len(items), 1))
    scoring_time = time.perf_counter() - started
    started = time.perf_counter()
    if attention_maps:
        _save_attention_maps(items, images, outputs, Path(output_dir))
    save_time = time.perf_counter() - started

    # 6. Report
    report = _report(wall_start, load_time, inference_time, torch_device, precision, stats, is_standin(checkpoint))
    report.update({"read_time_s": read_time, "scoring_time_s": scoring_time, "save_time_s": save_time,
                   "attn_implementation": captioner.attn_implementation,
                   "decoding": "greedy-loop" if captioner.uses_greedy_loop else "generate"})
    logger.info(
        "captioning batch of %d items with %s on %s (%s): load %.2fs, read %.2fs, inference %.2fs, "
        "scoring %.2fs, wall %.2fs, batch size %d, peak memory %.1f MiB",
        len(items), checkpoint, report["device"], report["precision"], load_time, read_time, inference_time,
        scoring_time, report["wall_time_s"], report["batch_size"], report["peak_memory_bytes"] / 2**20,
    )
    return {"outputs": outputs, "report": report}


def _score_captions(similarity: TextSimilarity, items: list[dict], captions: list[dict], latency: float) -> list[dict]:
    """Return the captioning outputs with their similarity scores, embedding every text in one pass."""
    references = [list(item.get("references") or []) for item in items]
    expected = [[obj["phrase"] for obj in item.get("objects") or []] for item in items]
    predicted = [[entity["phrase"] for entity in caption["entities"]] for caption in captions]
    texts = [caption["text"] for caption in captions]
    table = similarity.embedding_table(
        texts + [text for group in references + expected + predicted for text in group])

    outputs = []
    for item, caption, item_references, item_expected, item_predicted in zip(
            items, captions, references, expected, predicted):
        text = caption["text"]
        score = 0.0
        if item_references and text.strip():
            score = float(max(float(table[reference] @ table[text]) for reference in item_references))
        matrix = np.array([[float(table[a] @ table[b]) for b in item_expected] for a in item_predicted],
                          dtype=np.float32).reshape(len(item_predicted), len(item_expected))
        outputs.append({
            "item_id": item["item_id"],
            "text": text,
            "entities": caption["entities"],
            "raw": caption["raw"],
            "similarity": score,
            "phrase_similarity": matrix.tolist(),
            "latency_s": latency,
        })
        logger.debug("item %s: %r (similarity %.3f, %d entities)", item["item_id"], text, score,
                     len(caption["entities"]))
    return outputs


def _save_attention_maps(items: list[dict], images, outputs: list[dict], output_dir: Path) -> None:
    for item, image, output in zip(items, images, outputs):
        for index, entity in enumerate(output["entities"]):
            heatmap = entity.pop("attention", None)
            entity["attention_map_path"] = None
            if heatmap is not None:
                path = output_dir / f"{item['item_id']}-attention-{index}.png"
                entity["attention_map_path"] = save_overlay(image, heatmap, path)


# Generation ---------------------------------------------------------------------------------


def run_generation_batch(checkpoint: str, judge_checkpoint: str, items: list[dict], options: dict,
                         output_dir: str, adapter: str | None = None, *,
                         progress_callback: ProgressCallback | None = None,
                         should_stop: StopCheck | None = None) -> dict:
    """Generate an image per prompt, save it, caption it with the judge and score adherence.

    ``items``: ``{"item_id", "prompt", "seed"}``. ``options``: ``num_inference_steps`` and
    ``guidance_scale`` (required), ``height`` and ``width`` (default: the pipeline's size),
    ``precision``, ``device``, ``max_new_tokens`` for the judge (default 32), ``batch_size``
    (most prompts per forward pass; default what fits in free memory) and
    ``model_cache_bytes``. Images are saved as ``<output_dir>/<item_id>.png``.

    Returns ``{"outputs", "report"}``. ``outputs`` has one dict per item, in item order:

    - ``prompt``, ``seed``, ``image_path`` and ``settings`` (what reproduces the image).
    - ``judge_caption`` and ``adherence``: the judge's caption of the image and its cosine
      with the prompt.
    - ``latency_s``: the item's equal share of generation and judging.
    - ``blank``: the image is nearly one flat color.
    - ``truncated``: a text encoder saw only the start of the prompt.

    Progress counts denoising steps of items (``num_inference_steps`` per item). Raises
    ValueError naming the item for an empty prompt, a bad seed or an unsafe item id, and
    Cancelled when ``should_stop()`` returns True.
    """
    wall_start = time.perf_counter()

    # 1. Check inputs
    _check_item_ids(items)
    for item in items:
        _check_generation_item(item)
    num_inference_steps = _positive_int_option(options, "num_inference_steps")
    guidance_scale = _guidance_scale_option(options)
    max_new_tokens = _positive_int_option(options, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    requested_batch_size = _positive_int_option(options, "batch_size", max(len(items), 1))
    torch_device, precision = resolve_precision(options.get("device"), options.get("precision"))
    output_dir = Path(output_dir)
    progress = Progress(len(items), num_inference_steps, progress_callback, should_stop)
    progress.check_stop()

    # 2. Prepare
    _apply_cache_budget(options)
    reset_peak_memory(torch_device)
    generator, generator_load = _load_generator_timed(checkpoint, str(torch_device), precision.name, adapter)
    judge, judge_load = _load_captioner_timed(judge_checkpoint, str(torch_device), precision.name, None)
    similarity, similarity_load = _load_similarity_timed(str(torch_device))
    load_time = generator_load + judge_load + similarity_load

    height = _positive_int_option(options, "height", generator.default_size)
    width = _positive_int_option(options, "width", generator.default_size)
    settings = {
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "height": height,
        "width": width,
        "precision": precision.name,
        "scheduler": generator.scheduler_name,
        "judge_max_new_tokens": max_new_tokens,
        "vae_tiling": generator.uses_vae_tiling(height, width),
    }
    timings = {"generation": 0.0, "judge": 0.0, "save": 0.0, "scoring": 0.0}

    def run_chunk(chunk: list[dict]) -> list[dict]:
        # 3. Encode
        prompts = [item["prompt"] for item in chunk]
        truncated = generator.truncated(prompts)

        # 4. Generate
        started = time.perf_counter()
        images = generator.generate(prompts, [int(item["seed"]) for item in chunk], num_inference_steps,
                                    guidance_scale, height, width,
                                    step_callback=lambda step, total: progress.step(len(chunk), step))
        generation_time = time.perf_counter() - started
        started = time.perf_counter()
        captions = judge.caption(images, max_new_tokens=max_new_tokens, batch_size=len(chunk))
        judge_time = time.perf_counter() - started

        # 5. Decode and score
        started = time.perf_counter()
        paths = [save_png(image, output_dir / f"{item['item_id']}.png") for item, image in zip(chunk, images)]
        timings["save"] += time.perf_counter() - started
        started = time.perf_counter()
        judge_texts = [caption["text"] for caption in captions]
        adherence = similarity.pairwise(judge_texts, prompts)
        timings["scoring"] += time.perf_counter() - started
        timings["generation"] += generation_time
        timings["judge"] += judge_time

        outputs = []
        for index, item in enumerate(chunk):
            output = {
                "item_id": item["item_id"],
                "prompt": item["prompt"],
                "seed": int(item["seed"]),
                "image_path": str(paths[index]),
                "judge_caption": judge_texts[index],
                "adherence": adherence[index],
                "settings": dict(settings, seed=int(item["seed"])),
                "latency_s": (generation_time + judge_time) / len(chunk),
                "blank": is_blank(images[index]),
                "truncated": truncated[index],
            }
            outputs.append(output)
            logger.debug("item %s: judge caption %r, adherence %.3f, blank %s, truncated %s",
                         item["item_id"], judge_texts[index], adherence[index], output["blank"], truncated[index])
        progress.finish_chunk(len(chunk))
        return outputs

    per_item_bytes = generator.estimate_item_bytes(height, width, guidance_scale)
    start_size = auto_batch_size(torch_device, per_item_bytes, len(items), requested_batch_size)
    memo_key = ("generator", _checkpoint_key(checkpoint), _adapter_key(adapter), str(torch_device), precision.name,
                height, width, guidance_scale > 1)
    stats = ChunkStats()
    outputs = run_in_chunks(items, run_chunk, start_size, memo_key, stats)

    # 6. Report
    standin = is_standin(checkpoint) or is_standin(judge_checkpoint)
    inference_time = timings["generation"] + timings["judge"]
    report = _report(wall_start, load_time, inference_time, torch_device, precision, stats, standin)
    report.update({f"{phase}_time_s": seconds for phase, seconds in timings.items()})
    logger.info(
        "generation batch of %d items with %s on %s (%s), %d steps at %dx%d: load %.2fs, generation %.2fs, "
        "judge %.2fs, save %.2fs, scoring %.2fs, wall %.2fs, batch size %d, peak memory %.1f MiB",
        len(items), checkpoint, report["device"], report["precision"], num_inference_steps, width, height,
        load_time, timings["generation"], timings["judge"], timings["save"], timings["scoring"],
        report["wall_time_s"], report["batch_size"], report["peak_memory_bytes"] / 2**20,
    )
    return {"outputs": outputs, "report": report}


# Helpers ------------------------------------------------------------------------------------


def _report(wall_start, load_time, inference_time, torch_device, precision: Precision, stats: ChunkStats,
            standin) -> dict:
    return {
        "wall_time_s": time.perf_counter() - wall_start,
        "load_time_s": load_time,
        "cache_hit": load_time == 0.0,
        "inference_time_s": inference_time,
        "peak_memory_bytes": peak_memory_bytes(torch_device),
        "device": str(torch_device),
        "precision": precision.name,
        "dtype": precision.dtype_name,
        "quantization": precision.quantization,
        "batch_size": stats.batch_size,
        "oom_retries": stats.oom_retries,
        "standin": standin,
    }


def _apply_cache_budget(options: dict) -> None:
    budget = options.get("model_cache_bytes")
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"option 'model_cache_bytes' must be a positive integer, got {budget!r}")
    cache.default_cache().set_budget(budget)


def _cache_key(kind, checkpoint, adapter, torch_device, precision: Precision) -> cache.CacheKey:
    return cache.CacheKey(kind, _checkpoint_key(checkpoint), _adapter_key(adapter), str(torch_device), precision.name)


def _checkpoint_key(checkpoint) -> str:
    # A local folder is keyed by its resolved path, so "a/../b" and "b" share one entry;
    # a hub id is kept as written.
    path = Path(checkpoint)
    return str(path.resolve()) if path.exists() else str(checkpoint)


def _adapter_key(adapter) -> str | None:
    return _checkpoint_key(adapter) if adapter else None


def _weights_bytes(checkpoint) -> int:
    """Return the size of a local checkpoint's weight files, an estimate of its memory; 0 for a hub id."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.suffix in _WEIGHT_SUFFIXES)


def _check_item_ids(items: list[dict]) -> None:
    seen = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "item_id" not in item:
            raise ValueError(f"item {index} has no 'item_id'; every item needs one")
        if item["item_id"] in seen:
            raise ValueError(f"item_id {item['item_id']!r} appears twice; item ids must be unique in a batch")
        seen.add(item["item_id"])


def _check_safe_id(item_id) -> None:
    # The id names output files, so it must not contain path separators.
    if isinstance(item_id, bool) or not isinstance(item_id, (int, str)) or not _SAFE_ID.fullmatch(str(item_id)):
        raise ValueError(f"item_id {item_id!r} is not an integer or a name of letters, digits, '_' and '-'")


def _check_captioning_item(item: dict) -> None:
    item_id = item["item_id"]
    if not item.get("image_path"):
        raise ValueError(f"item {item_id}: 'image_path' is missing or empty")
    # Checked before any model loads, so a bad batch fails in milliseconds.
    if not Path(item["image_path"]).is_file():
        raise FileNotFoundError(f"item {item_id}: image file not found: {item['image_path']}")
    references = item.get("references") or []
    if not isinstance(references, list) or not all(isinstance(text, str) for text in references):
        raise ValueError(f"item {item_id}: 'references' must be a list of strings, got {references!r}")
    for obj in item.get("objects") or []:
        if not isinstance(obj, dict) or not isinstance(obj.get("phrase"), str):
            raise ValueError(f"item {item_id}: each object needs a 'phrase' string, got {obj!r}")
    prompt = item.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise ValueError(f"item {item_id}: prompt {prompt!r} is empty; leave it out to use the grounding prompt")


def _check_generation_item(item: dict) -> None:
    item_id = item["item_id"]
    _check_safe_id(item_id)
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"item {item_id}: prompt {prompt!r} is empty; every item needs prompt text")
    seed = item.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"item {item_id}: seed {seed!r} is not an integer from 0 to 2**63 - 1")


def _positive_int_option(options: dict, name: str, default: int | None = None) -> int:
    value = options.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"option {name!r} is missing; set it to a positive integer")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"option {name!r} must be a positive integer, got {value!r}")
    return value


def _bool_option(options: dict, name: str) -> bool:
    value = options.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"option {name!r} must be true or false, got {value!r}")
    return value


def _guidance_scale_option(options: dict) -> float:
    value = options.get("guidance_scale")
    if value is None:
        raise ValueError("option 'guidance_scale' is missing; set it to a number of 0 or more")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"option 'guidance_scale' must be a number of 0 or more, got {value!r}")
    return float(value)
