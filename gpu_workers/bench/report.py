"""Targets, run-to-run comparison and the Markdown page of a bench record."""

import json
from pathlib import Path

from .captioning import BATCH_SIZES

# (name, description, how to read the value, threshold); "min" targets must reach the
# threshold, "max" targets must stay at or below it.
TARGETS = (
    ("caption_vs_naive_b16", "batched captioning at batch 16 vs the per-image loop (images/s ratio)", "min", 4.0),
    ("caption_vs_pipeline_b16", "batched captioning at batch 16 vs the pipeline at batch_size 16 (images/s ratio)",
     "min", 1.25),
    ("warm_vs_pure", "warm job wall time / pure inference time", "max", 1.05),
    ("queue_overhead_ms", "median queue overhead per batch with Redis (ms)", "max", 20.0),
)


def key_metrics(record: dict) -> dict:
    """Return the numbers that the targets and the run-to-run comparison use, None where missing."""
    def get(*path):
        value = record
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    overhead = get("queue", "overhead_per_batch_s", "median")
    metrics = {
        "caption_vs_naive_b16": get("captioning", "ratios", "b16", "worker_vs_naive"),
        "caption_vs_pipeline_b16": get("captioning", "ratios", "b16", "worker_vs_pipeline"),
        "warm_vs_pure": get("warm_cache", "warm_vs_pure"),
        "queue_overhead_ms": overhead * 1000 if overhead is not None else None,
        "worker_b16_images_per_s": get("captioning", "paths", "worker_b16", "images_per_s", "median"),
        "naive_images_per_s": get("captioning", "paths", "naive_loop", "images_per_s", "median"),
        "pipeline_b16_images_per_s": get("captioning", "paths", "pipeline_b16", "images_per_s", "median"),
        "generation_large_batched_s_per_image": get("generation", "settings", "large", "batched",
                                                    "seconds_per_image", "median"),
        "lora_seconds_per_step": get("lora_training", "seconds_per_step", "median"),
    }
    return metrics


def evaluate_targets(metrics: dict) -> list[dict]:
    """Return one verdict per target: met, or missed and by how much (relative to the threshold)."""
    verdicts = []
    for name, description, kind, threshold in TARGETS:
        value = metrics.get(name)
        if value is None:
            verdicts.append({"target": name, "description": description, "threshold": threshold, "value": None,
                             "met": None, "verdict": "not measured"})
            continue
        met = value >= threshold if kind == "min" else value <= threshold
        if met:
            verdict = "met"
        elif kind == "min":
            verdict = f"missed by {100 * (1 - value / threshold):.0f}% (reached {value:.2f} of {threshold:g})"
        else:
            verdict = f"missed by {100 * (value / threshold - 1):.0f}% ({value:.3g} above the limit {threshold:g})"
        verdicts.append({"target": name, "description": description, "threshold": threshold, "value": value,
                         "met": met, "verdict": verdict})
    return verdicts


def load_previous(path: Path) -> dict | None:
    """Return the key metrics of the record at ``path`` with its date, or None when there is none."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {"date": record.get("machine", {}).get("date"), "metrics": key_metrics(record)}


def write_markdown(record: dict, path: Path) -> None:
    """Write the record as a Markdown page of tables."""
    lines = ["# Model runtime benchmarks", ""]
    lines += _intro(record)
    lines += _targets_table(record)
    lines += _captioning_table(record.get("captioning"))
    lines += _flops_table(record.get("flops"))
    lines += _generation_table(record.get("generation"))
    lines += _training_table(record.get("lora_training"))
    lines += _warm_cache_table(record.get("warm_cache"))
    lines += _queue_table(record.get("queue"))
    lines += _noise_table(record)
    lines += _errors(record)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _intro(record: dict) -> list[str]:
    machine = record["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items() if version)
    ram = machine["ram_bytes"] / 2**30 if machine.get("ram_bytes") else float("nan")
    load = ", ".join(f"{value:.1f}" for value in machine["load_average_at_start"])
    lines = [
        f"Recorded {machine['date']} by `{' '.join(['python -m gpu_workers.bench', *record['settings']['argv']])}`.",
        "",
        "| Machine | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} |",
        f"| Cores | {machine['cpu_cores']} (torch threads: {machine['torch_threads']}) |",
        f"| RAM | {ram:.1f} GiB |",
        f"| Device | {machine['device']}{' (' + machine['gpu'] + ')' if machine.get('gpu') else ''} |",
        f"| Load average at start (1, 5, 15 min) | {load} |",
        f"| Python | {machine['python']} |",
        f"| Libraries | {versions} |",
        "",
        "Models are the stand-in checkpoints of `gpu_workers.standins`: the real Kosmos-2 and SD3 "
        "architectures with tiny configurations and random weights. Their per-call overheads are real, "
        "but their compute per image is a tiny fraction of the real models', so ratios here say how much "
        "per-call overhead batching removes, not what a GPU run of the real models gains. Numbers are "
        f"medians over {record['settings']['repeats']} rounds in which all cases of a table run in turn; "
        "ranges are min to max.",
        "",
    ]
    return lines


def _targets_table(record: dict) -> list[str]:
    lines = ["## Targets", "", "| Target | Threshold | This run | Verdict |", "|---|---|---|---|"]
    for verdict in record["targets"]:
        value = "n/a" if verdict["value"] is None else f"{verdict['value']:.3g}"
        comparison = "at least" if verdict["target"].startswith("caption") else "at most"
        lines.append(f"| {verdict['description']} | {comparison} {verdict['threshold']:g} | {value} | "
                     f"{verdict['verdict']} |")
    return lines + [""]


def _range(summary: dict, digits: int = 1) -> str:
    return f"{summary['median']:.{digits}f} ({summary['min']:.{digits}f} to {summary['max']:.{digits}f})"


def _captioning_table(result: dict | None) -> list[str]:
    if not result or "paths" not in result:
        return []
    paths = result["paths"]
    lines = [
        "## Captioning throughput (images/s)",
        "",
        f"{result['images']} images (the 8 sample photos repeated), prompt `{result['prompt']}`, exactly "
        f"{result['max_new_tokens']} new tokens per image on every path. The per-image loop does not batch, "
        "so one number serves all rows.",
        "",
        "| Batch size | Per-image loop | Pipeline (`batch_size`) | Worker | Worker / loop | Worker / pipeline |",
        "|---|---|---|---|---|---|",
    ]
    naive = paths["naive_loop"]["images_per_s"]
    for size in BATCH_SIZES:
        ratios = result["ratios"][f"b{size}"]
        lines.append(
            f"| {size} | {_range(naive)} | {_range(paths[f'pipeline_b{size}']['images_per_s'])} | "
            f"{_range(paths[f'worker_b{size}']['images_per_s'])} | {ratios['worker_vs_naive']:.2f}x | "
            f"{ratios['worker_vs_pipeline']:.2f}x |")
    one_call = paths.get("pipeline_one_call")
    if one_call:
        lines += ["", f"The pipeline called once with the list of {result['images']} images and a list of prompts "
                      "ignores `batch_size` and runs all images as one batch: "
                      f"{_range(one_call['images_per_s'])} images/s."]
    return lines + [""]


def _flops_table(result: dict | None) -> list[str]:
    if not result or "matmul_peak" not in result:
        return []
    peak = result["matmul_peak"]
    per_image = result["per_image"]
    lines = [
        "## Achieved FLOP/s",
        "",
        f"Peak: a {peak['size']} x {peak['size']} {peak['dtype']} `torch.matmul` in the same run, "
        f"{peak['flops_per_s']['median'] / 1e9:.1f} GFLOP/s. Model FLOPs per image are an estimate, "
        f"2 x parameters x tokens: {per_image['text_parameters']:,} text-decoder parameters over "
        f"{per_image['text_tokens']} tokens plus {per_image['vision_parameters']:,} vision parameters over "
        f"{per_image['vision_tokens']} patch tokens = {per_image['flops'] / 1e6:.2f} MFLOP per image.",
        "",
        "| Path | Images/s | Achieved GFLOP/s | Share of matmul peak |",
        "|---|---|---|---|",
    ]
    for name, entry in result["achieved"].items():
        lines.append(f"| {name} | {entry['images_per_s']:.1f} | {entry['flops_per_s'] / 1e9:.3f} | "
                     f"{100 * entry['share_of_peak']:.3f}% |")
    return lines + [""]


def _generation_table(result: dict | None) -> list[str]:
    if not result or "settings" not in result:
        return []
    lines = [
        "## Generation (seconds per image)",
        "",
        f"{result['prompts']} prompts at {result['width']} x {result['height']} with the SD3 stand-in.",
        "",
        "| Settings | Steps | Guidance | Batched | One prompt at a time | Speedup |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in result["settings"].items():
        lines.append(f"| {name} | {entry['num_inference_steps']} | {entry['guidance_scale']:g} | "
                     f"{_range(entry['batched']['seconds_per_image'], 4)} | "
                     f"{_range(entry['one_at_a_time']['seconds_per_image'], 4)} | {entry['speedup']:.2f}x |")
    return lines + [""]


def _training_table(result: dict | None) -> list[str]:
    if not result or "seconds_per_step" not in result:
        return []
    settings = ", ".join(f"{key} {value}" for key, value in result["settings"].items())
    lines = [
        "## LoRA training",
        "",
        f"Measured with {result['source']} ({settings}; {result['trainable_parameters']:,} trainable parameters).",
    ]
    if result.get("trainer_error"):
        lines.append(f"`gpu_workers.training` could not be used: {result['trainer_error']}.")
    lines += ["", "| Seconds per step |", "|---|", f"| {_range(result['seconds_per_step'], 4)} |", ""]
    return lines


def _warm_cache_table(result: dict | None) -> list[str]:
    if not result or "warm_job_wall_s" not in result:
        return []
    return [
        "## Warm model cache",
        "",
        f"A captioning job of {result['items']} items ({result['max_new_tokens']} new tokens, similarity "
        "scoring included). Cold: the model and decoded-image caches are emptied first, so Kosmos-2 and the "
        "similarity model load and the image files are decoded. Warm: the same job again, as on a worker "
        "that already ran the suite's images for another model. Pure inference: the captioner and the "
        "scoring called directly on loaded models and images already decoded in memory. The similarity "
        "model keeps embeddings by text, so after the first job both the warm job and the pure-inference "
        "call find the captions and references already embedded.",
        "",
        "| Measure | Seconds |",
        "|---|---|",
        f"| Cold job wall time | {_range(result['cold_job_wall_s'], 3)} |",
        f"| of which loading | {_range(result['cold_load_s'], 3)} |",
        f"| of which reading image files | {_range(result['cold_read_s'], 3)} |",
        f"| Warm job wall time | {_range(result['warm_job_wall_s'], 3)} |",
        f"| of which loading | {_range(result['warm_load_s'], 3)} |",
        f"| of which reading image files | {_range(result['warm_read_s'], 3)} |",
        f"| of which captioning | {_range(result['warm_inference_s'], 3)} |",
        f"| of which scoring | {_range(result['warm_scoring_s'], 3)} |",
        f"| Pure inference | {_range(result['pure_inference_s'], 3)} |",
        "",
        f"Cold / warm: {result['cold_vs_warm']:.2f}x. Warm / pure inference: {result['warm_vs_pure']:.3f}.",
        "",
    ]


def _queue_table(result: dict | None) -> list[str]:
    if not result:
        return []
    if "skipped" in result:
        return ["## Queue overhead", "", f"Skipped: {result['skipped']}", ""]
    if "overhead_per_batch_s" not in result:
        return []

    def row(name, summary):
        return (f"| {name} | {1000 * summary['median']:.2f} | {1000 * summary['p95']:.2f} | "
                f"{1000 * summary['min']:.2f} to {1000 * summary['max']:.2f} |")

    return [
        "## Queue overhead",
        "",
        f"{result['tasks']} no-op tasks sent one after another through Celery with Redis ({result['broker']}) "
        "to a solo-pool worker started by the bench. This is the broker's share only: the real batch task "
        "also claims its batch and stores results in the database.",
        "",
        "| Hop | Median (ms) | p95 (ms) | Range (ms) |",
        "|---|---|---|---|",
        row("submit to task start", result["submit_to_start_s"]),
        row("task end to result seen by the caller", result["end_to_result_s"]),
        row("both, per batch", result["overhead_per_batch_s"]),
        "",
    ]


def _noise_table(record: dict) -> list[str]:
    lines = ["## Run-to-run noise", ""]
    lines.append(record["settings"].get("noise_note", ""))
    previous = record.get("previous_run")
    if not previous:
        return lines + ["", "No earlier record was found to compare with.", ""]
    current = key_metrics(record)
    lines += ["", f"This run against the previous record ({previous['date']}):", "",
              "| Metric | Previous | This run | Change |", "|---|---|---|---|"]
    for name, value in current.items():
        before = previous["metrics"].get(name)
        if value is None or before is None:
            continue
        change = f"{100 * (value / before - 1):+.0f}%" if before else "n/a"
        lines.append(f"| {name} | {before:.4g} | {value:.4g} | {change} |")
    return lines + [""]


def _errors(record: dict) -> list[str]:
    errors = record.get("errors") or {}
    if not errors:
        return []
    lines = ["## Sections that failed", ""]
    lines += [f"- {name}: {message}" for name, message in errors.items()]
    return lines + [""]
