"""Repeated timing with medians, and a description of the machine the numbers come from."""

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

LIBRARIES = ("torch", "transformers", "diffusers", "peft", "sentence-transformers", "celery", "redis")


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Return the wall time of ``fn()`` in seconds, waiting for queued GPU work on CUDA."""
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(samples: list[float]) -> dict:
    """Return the median, minimum, maximum and count of ``samples``."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def percentile(samples: list[float], share: float) -> float:
    """Return the ``share`` (0-1) quantile of ``samples`` with linear interpolation."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * share
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def run_interleaved(cases: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Time every case once per round, ``repeats`` rounds, and return the seconds per case.

    Interleaving spreads slow periods (other processes on the machine) over all cases
    instead of penalizing whichever case ran during them. Each case runs once untimed
    first, so one-time costs (lazy imports, allocator growth) are not counted.
    """
    for fn in cases.values():
        fn()
    samples = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            samples[name].append(timed(fn, device))
    return samples


def machine_info(device: torch.device) -> dict:
    """Return the CPU model, core count, RAM, GPU, library versions and the date of the run."""
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_average_at_start": os.getloadavg(),
        "versions": {},
    }
    for name in LIBRARIES:
        try:
            info["versions"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["versions"][name] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
