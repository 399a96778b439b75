"""A re-run from the manifest reproduces the metrics, whatever the batch size."""

import pytest
import requests

from backend.jobs.models import Result
from tests.conftest import auth, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MODELS = ["kosmos-2-patch14-224", "stable-diffusion-3.5-medium"]


RUNTIME_KEYS = {"items_per_second", "latency_p50", "latency_p95", "peak_memory_bytes"}
# A generated image can differ by 1/255 in a few channels between batch sizes, where a float
# lands on a rounding boundary, so CLIPScore is compared to 0.01 and every other metric exactly.
APPROXIMATE_KEYS = {"clip_score"}


def without_runtime(metrics, drop=frozenset()):
    """Drop timing metrics, which measure the run rather than the outputs, at every level."""
    if isinstance(metrics, dict):
        return {key: without_runtime(value, drop) for key, value in metrics.items()
                if key not in RUNTIME_KEYS | drop}
    return metrics


def approximate_values(metrics, found=None):
    """Collect every CLIPScore in a nested metrics dict, in key order."""
    found = [] if found is None else found
    if isinstance(metrics, dict):
        for key in sorted(metrics):
            if key in APPROXIMATE_KEYS and metrics[key] is not None:
                found.append(metrics[key])
            else:
                approximate_values(metrics[key], found)
    return found


def per_item(job_id):
    rows = Result.objects.filter(job_id=job_id).select_related("model")
    return {(row.model.slug, row.item_id): (row.output.get("text") or row.output.get("judge_caption"),
                                            row.metrics) for row in rows}


def test_rerun_with_other_batch_size_matches(live_server, catalog, owner, worker):
    response = requests.post(
        f"{live_server.url}/api/v1/comparisons/", headers=auth(owner), timeout=30,
        json={"models": MODELS, "suite": "sample", "options": {"limit": 4, "batch_size": 1, "seed": 3}},
    )
    assert response.status_code == 201, response.text
    first = wait_for_job(response.json()["url"], auth(owner), timeout=300, worker=worker)
    assert first["state"] == "succeeded", first["error"]

    rerun = requests.post(f"{first['url']}rerun/", headers=auth(owner), timeout=30,
                          json={"options": {"batch_size": 4}})
    assert rerun.status_code == 201, rerun.text
    second = wait_for_job(rerun.json()["url"], auth(owner), timeout=300, worker=worker)
    assert second["state"] == "succeeded", second["error"]

    assert second["options"]["seed"] == 3
    assert second["options"]["batch_size"] == 4
    assert second["manifest"]["suite"] == first["manifest"]["suite"]
    for slug in MODELS:
        assert second["manifest"]["models"][slug]["checkpoint"] == first["manifest"]["models"][slug]["checkpoint"]
        assert first["manifest"]["models"][slug]["batch_sizes"] == [1] * 4
        assert second["manifest"]["models"][slug]["batch_sizes"] == [4]
    assert first["manifest"]["versions"]["torch"]

    before, after = per_item(first["id"]), per_item(second["id"])
    assert len(before) == 8
    assert sorted(key[1] for key in before) == sorted(key[1] for key in after)
    for key, (text, metrics) in before.items():
        text_after, metrics_after = after[key]
        assert text_after == text, key
        for name in ("similarity", "adherence", "phrase_similarity", "blank"):
            assert metrics_after.get(name) == metrics.get(name), (key, name)
        if metrics.get("clip_score") is not None:
            assert metrics_after["clip_score"] == pytest.approx(metrics["clip_score"], abs=0.01), key
    for slug in MODELS:
        exact_before = without_runtime(first["metrics"][slug], APPROXIMATE_KEYS)
        exact_after = without_runtime(second["metrics"][slug], APPROXIMATE_KEYS)
        assert exact_after == exact_before, slug
        assert approximate_values(second["metrics"][slug]) == pytest.approx(
            approximate_values(first["metrics"][slug]), abs=0.01), slug
