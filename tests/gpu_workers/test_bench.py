"""The bench's pure parts: target verdicts, the Markdown page and the full-size configs on meta."""

import json

import pytest

from gpu_workers.bench import report
from gpu_workers.bench.fullsize import describe_on_meta


def _record(naive=10.0, worker=50.0, pipeline=35.0, warm_vs_pure=1.02, overhead_s=0.004):
    def rates(value):
        return {"images_per_s": {"median": value, "min": value, "max": value, "n": 1}}

    paths = {"naive_loop": rates(naive), "pipeline_one_call": rates(pipeline)}
    ratios = {}
    for size in report.BATCH_SIZES:
        paths[f"pipeline_b{size}"] = rates(pipeline)
        paths[f"worker_b{size}"] = rates(worker)
        ratios[f"b{size}"] = {"worker_vs_naive": worker / naive, "worker_vs_pipeline": worker / pipeline}
    return {
        "machine": {"date": "2026-01-01T00:00:00+00:00", "cpu": "test CPU", "cpu_cores": 2, "torch_threads": 2,
                    "ram_bytes": 2**30, "device": "cpu", "gpu": None, "load_average_at_start": [0.5, 0.5, 0.5],
                    "python": "3.11", "versions": {"torch": "2.13"}},
        "settings": {"argv": [], "repeats": 1, "noise_note": "quiet machine"},
        "captioning": {"images": 32, "prompt": "<grounding>An image of", "max_new_tokens": 32,
                       "paths": paths, "ratios": ratios},
        "warm_cache": {"warm_vs_pure": warm_vs_pure},
        "queue": {"tasks": 50, "broker": "redis://127.0.0.1:6379/14",
                  **{hop: {"median": overhead_s / 2, "min": 0.0, "max": overhead_s, "p95": overhead_s}
                     for hop in ("submit_to_start_s", "end_to_result_s")},
                  "overhead_per_batch_s": {"median": overhead_s, "min": 0.0, "max": overhead_s, "p95": overhead_s}},
        "errors": {},
    }


def _verdicts(record):
    return {verdict["target"]: verdict for verdict in report.evaluate_targets(report.key_metrics(record))}


def test_targets_met():
    verdicts = _verdicts(_record())

    assert all(verdict["met"] for verdict in verdicts.values())
    assert verdicts["queue_overhead_ms"]["value"] == pytest.approx(4.0)


def test_targets_missed_by_share():
    verdicts = _verdicts(_record(worker=30.0, warm_vs_pure=1.26, overhead_s=0.025))

    assert verdicts["caption_vs_naive_b16"]["verdict"] == "missed by 25% (reached 3.00 of 4)"
    assert verdicts["caption_vs_pipeline_b16"]["met"] is False
    assert verdicts["warm_vs_pure"]["verdict"].startswith("missed by 20%")
    assert verdicts["queue_overhead_ms"]["verdict"].startswith("missed by 25%")


def test_missing_section_not_measured():
    record = _record()
    del record["queue"]

    assert _verdicts(record)["queue_overhead_ms"]["verdict"] == "not measured"


def test_markdown_compares_previous(tmp_path):
    previous = _record(worker=40.0)
    (tmp_path / "benchmarks.json").write_text(json.dumps(previous))
    record = _record()
    record["targets"] = report.evaluate_targets(report.key_metrics(record))
    record["previous_run"] = report.load_previous(tmp_path / "benchmarks.json")

    report.write_markdown(record, tmp_path / "benchmarks.md")

    page = (tmp_path / "benchmarks.md").read_text()
    assert "| worker_b16_images_per_s | 40 | 50 | +25% |" in page
    assert "| 16 | 10.0 (10.0 to 10.0) | 35.0 (35.0 to 35.0) | 50.0 (50.0 to 50.0) | 5.00x | 1.43x |" in page
    assert "| both, per batch | 4.00 | 4.00 | 0.00 to 4.00 |" in page


def test_full_size_configs_on_meta():
    sizes = describe_on_meta()

    # Kosmos-2 patch14-224 has 1.66B parameters and SD3.5 Large's transformer 8.1B.
    assert sizes["kosmos2"]["parameters"] == pytest.approx(1.664e9, rel=0.01)
    assert sizes["sd35_large"]["transformer_parameters"] == pytest.approx(8.06e9, rel=0.01)
    assert sizes["sd35_large"]["default_size"] == 1024
    assert sizes["kosmos2"]["prompt_tokens"] > 64  # the image placeholder plus the prompt
