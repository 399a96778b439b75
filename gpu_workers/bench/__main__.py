"""Run the model-runtime benchmarks and write docs/benchmarks.json and docs/benchmarks.md.

    python -m gpu_workers.bench                      # stand-ins on the CPU, about 5 minutes
    python -m gpu_workers.bench --full-size --dry-run  # check the full-size configs on the meta device
    python -m gpu_workers.bench --device cuda --full-size  # full-size random weights on a GPU
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from .. import cache
from ..captioner import Captioner
from ..generator import Generator
from ..images import load_image, to_rgb
from ..standins import build_standin
from . import report
from .captioning import PROMPT, flops_per_image, load_baseline_model, matmul_peak_flops, measure_throughput
from .generation import measure_generation
from .lora_step import measure_lora_step
from .queue import measure_queue
from .timing import machine_info
from .warm_cache import measure_warm_cache

logger = logging.getLogger("gpu_workers.bench")

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO_ROOT / "backend" / "evaluation" / "bundled" / "sample" / "images"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "docs"


def main(argv: list[str] | None = None) -> int:
    arguments = _parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)

    if arguments.full_size and arguments.dry_run:
        from .fullsize import describe_on_meta

        print(json.dumps(describe_on_meta(), indent=2))
        return 0

    samples = _load_samples()
    record = {
        "machine": machine_info(device),
        "settings": {
            "argv": sys.argv[1:] if argv is None else list(argv),
            "repeats": arguments.repeats,
            "images": arguments.images,
            "max_new_tokens": arguments.max_new_tokens,
            "full_size": arguments.full_size,
        },
        "errors": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="versus-bench-") as workdir:
        workdir = Path(workdir)
        if arguments.full_size:
            _run_full_size(record, samples, device, arguments)
        else:
            _run_standins(record, samples, device, arguments, workdir)
    record["settings"]["total_seconds"] = time.perf_counter() - started
    record["settings"]["noise_note"] = _noise_note(record)

    metrics = report.key_metrics(record)
    record["targets"] = report.evaluate_targets(metrics)
    stem = "benchmarks-full-size" if arguments.full_size else "benchmarks"
    output_dir = Path(arguments.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / f"{stem}.json"
    record["previous_run"] = report.load_previous(json_path)
    json_path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    report.write_markdown(record, output_dir / f"{stem}.md")
    for verdict in record["targets"]:
        logger.info("target %s: %s", verdict["target"], verdict["verdict"])
    logger.info("wrote %s and %s.md in %.0fs", json_path, output_dir / stem, record["settings"]["total_seconds"])
    return 1 if record["errors"] else 0


def _parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m gpu_workers.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device to measure on (default: cpu)")
    parser.add_argument("--full-size", action="store_true",
                        help="use full-size random-weight Kosmos-2 and SD3.5-Large-like models (needs a GPU)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --full-size: build the configs on the meta device, print sizes, measure nothing")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per measurement (default: 7)")
    parser.add_argument("--images", type=int, default=32, help="images per captioning measurement (default: 32)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per image (default: 32)")
    parser.add_argument("--queue-tasks", type=int, default=50, help="no-op tasks for the queue overhead (default: 50)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_DIR),
                        help="folder for benchmarks.json and benchmarks.md (default: docs/)")
    arguments = parser.parse_args(argv)
    if arguments.dry_run and not arguments.full_size:
        parser.error("--dry-run checks the full-size configurations; add --full-size")
    if arguments.repeats < 1 or arguments.images < 1 or arguments.max_new_tokens < 1:
        parser.error("--repeats, --images and --max-new-tokens must be at least 1")
    return arguments


def _load_samples() -> list[dict]:
    """Return the bundled sample photos with their captions and objects, decoded and in RGB."""
    samples = []
    for line in (SAMPLE_DIR / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        path = SAMPLE_DIR / entry["file_name"]
        samples.append({"path": path, "image": to_rgb(load_image(path)), "text": entry["text"],
                        "captions": entry.get("captions") or [entry["text"]], "objects": entry.get("objects") or []})
    return samples


def _section(record: dict, name: str, function, *args) -> None:
    logger.info("measuring %s", name)
    started = time.perf_counter()
    try:
        record[name] = function(*args)
    except Exception as exc:  # one failed section must not lose the others' results
        logger.exception("bench section %s failed", name)
        record["errors"][name] = f"{type(exc).__name__}: {exc}"
    logger.info("%s took %.0fs", name, time.perf_counter() - started)


def _run_standins(record, samples, device, arguments, workdir: Path) -> None:
    kosmos = build_standin("kosmos-2", workdir / "kosmos-2", seed=0)
    sd3 = build_standin("sd3", workdir / "sd3", seed=1)
    images = [samples[index % len(samples)]["image"].copy() for index in range(arguments.images)]

    captioner = Captioner.from_pretrained(kosmos, device=str(device))
    model, processor = load_baseline_model(kosmos, device, captioner.dtype)
    _section(record, "captioning", measure_throughput, captioner, model, processor, images,
             arguments.max_new_tokens, arguments.repeats, device)
    _section(record, "flops", _measure_flops, record, captioner, device, arguments)
    del model, processor, captioner

    generator = Generator.from_pretrained(sd3, device=str(device))
    prompts = [sample["text"] for sample in samples]
    _section(record, "generation", measure_generation, generator, prompts, generator.default_size,
             generator.default_size, max(2, arguments.repeats // 2), device)
    del generator

    training_items = [{"image_path": str(sample["path"]), "text": sample["text"]} for sample in samples]
    _section(record, "lora_training", measure_lora_step, sd3, training_items, 2 * arguments.repeats,
             workdir / "lora")

    job_items = [
        {"item_id": index, "image_path": str(sample["path"]), "references": sample["captions"],
         "objects": [{"phrase": obj["phrase"], "bbox": obj.get("bbox")} for obj in sample["objects"]]}
        for index, sample in enumerate(samples * 2)
    ]
    options = {"device": str(device), "max_new_tokens": arguments.max_new_tokens}
    _section(record, "warm_cache", measure_warm_cache, kosmos, job_items, options, 3, arguments.repeats, device)
    cache.clear()

    _section(record, "queue", measure_queue, arguments.queue_tasks)


def _run_full_size(record, samples, device, arguments) -> None:
    from .fullsize import build_kosmos2, build_sd35_large

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    images = [samples[index % len(samples)]["image"].copy() for index in range(arguments.images)]
    model, processor = build_kosmos2(device, dtype)
    captioner = Captioner(model, processor, device, dtype)
    _section(record, "captioning", measure_throughput, captioner, model, processor, images,
             arguments.max_new_tokens, arguments.repeats, device)
    _section(record, "flops", _measure_flops, record, captioner, device, arguments)
    del model, processor, captioner
    cache.clear()

    generator = Generator(build_sd35_large(device, dtype), device, dtype)
    prompts = [sample["text"] for sample in samples[:4]]
    _section(record, "generation", measure_generation, generator, prompts, 1024, 1024,
             max(2, arguments.repeats // 2), device)


def _measure_flops(record: dict, captioner: Captioner, device: torch.device, arguments) -> dict:
    """Return the matmul peak, the estimated FLOPs per image and the share of the peak each path reached."""
    if device.type == "cuda":
        peak = matmul_peak_flops(device, torch.bfloat16, 8192, arguments.repeats)
    else:
        peak = matmul_peak_flops(device, torch.float32, 2048, arguments.repeats)
    prompt_tokens = len(captioner._prompt_tokens(PROMPT).input_ids)
    per_image = flops_per_image(captioner.model, prompt_tokens, arguments.max_new_tokens)
    achieved = {}
    paths = record.get("captioning", {}).get("paths", {})
    for name in ("naive_loop", "pipeline_b16", "worker_b16"):
        if name in paths:
            rate = paths[name]["images_per_s"]["median"]
            achieved[name] = {"images_per_s": rate, "flops_per_s": rate * per_image["flops"],
                              "share_of_peak": rate * per_image["flops"] / peak["flops_per_s"]["median"]}
    return {"matmul_peak": peak, "per_image": per_image, "achieved": achieved}


def _noise_note(record: dict) -> str:
    load = record["machine"]["load_average_at_start"][0]
    cores = record["machine"]["cpu_cores"]
    note = (f"The 1-minute load average was {load:.1f} on {cores} cores when the run started. Other "
            "processes on this machine may take CPU time during any round.")
    paths = record.get("captioning", {}).get("paths", {})
    spreads = {name: entry["seconds"]["max"] / entry["seconds"]["min"] for name, entry in paths.items()}
    if spreads:
        widest = max(spreads, key=spreads.get)
        note += (f" Among the captioning cases, the slowest round of {widest} took {spreads[widest]:.1f} times "
                 "as long as its fastest, the widest spread of this run.")
    return note


if __name__ == "__main__":
    sys.exit(main())
