"""Job wall time on a cold worker (empty model cache) against a warm one and against pure inference."""

import torch

from .. import cache, runner
from ..images import image_cache, load_image
from .timing import run_interleaved, summarize


def measure_warm_cache(kosmos_checkpoint, items: list[dict], options: dict, cold_repeats: int, repeats: int,
                       device: torch.device) -> dict:
    """Return wall times of cold and warm captioning jobs and of the same inference run directly.

    Cold: the model and image caches are emptied before each job, so the job loads Kosmos-2
    and the similarity model and decodes the image files. Warm: the same job again, with
    models and decoded images cached as on a worker that ran the suite before. Pure
    inference: the captioner and the similarity scoring called directly on the loaded
    models with the images already decoded in memory, which is the job minus cache lookups,
    input checks and bookkeeping.
    """
    checkpoint = str(kosmos_checkpoint)
    cold_reports = []
    for _ in range(cold_repeats):
        cache.clear()
        image_cache().clear()
        cold_reports.append(runner.run_captioning_batch(checkpoint, items, options)["report"])

    captioner = runner.load_captioner(checkpoint, options.get("device"), options.get("precision"))
    similarity = runner.load_similarity(options.get("device"))
    images = [load_image(item["image_path"]) for item in items]
    max_new_tokens = options.get("max_new_tokens", runner.DEFAULT_MAX_NEW_TOKENS)
    warm_reports = []

    def warm_job():
        warm_reports.append(runner.run_captioning_batch(checkpoint, items, options)["report"])

    def pure_inference():
        captions = captioner.caption(images, max_new_tokens=max_new_tokens, batch_size=len(images))
        runner._score_captions(similarity, items, captions, 0.0)

    samples = run_interleaved({"warm_job": warm_job, "pure_inference": pure_inference}, repeats, device)
    warm_reports = warm_reports[1:]  # the untimed first call

    cold = summarize([report["wall_time_s"] for report in cold_reports])
    warm = summarize(samples["warm_job"])
    pure = summarize(samples["pure_inference"])
    return {
        "items": len(items),
        "max_new_tokens": max_new_tokens,
        "cold_job_wall_s": cold,
        "cold_load_s": summarize([report["load_time_s"] for report in cold_reports]),
        "warm_job_wall_s": warm,
        "warm_load_s": summarize([report["load_time_s"] for report in warm_reports]),
        "cold_read_s": summarize([report["read_time_s"] for report in cold_reports]),
        "warm_read_s": summarize([report["read_time_s"] for report in warm_reports]),
        "warm_inference_s": summarize([report["inference_time_s"] for report in warm_reports]),
        "warm_scoring_s": summarize([report["scoring_time_s"] for report in warm_reports]),
        "pure_inference_s": pure,
        "cold_vs_warm": cold["median"] / warm["median"],
        "warm_vs_pure": warm["median"] / pure["median"],
    }
