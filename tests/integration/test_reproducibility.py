"""A re-run from the manifest reproduces every metric exactly, whatever the batch size."""

import pytest
import requests

from backend.jobs.models import Result
from tests.conftest import auth, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MODELS = ["kosmos-2-patch14-224", "stable-diffusion-3.5-medium"]


RUNTIME_KEYS = {"items_per_second", "latency_p50", "latency_p95"}


def without_runtime(metrics):
    """Drop timing metrics, which measure the run rather than the outputs, at every level."""
    if isinstance(metrics, dict):
        return {key: without_runtime(value) for key, value in metrics.items() if key not in RUNTIME_KEYS}
    return metrics


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
        for name in ("similarity", "adherence", "phrase_similarity"):
            assert metrics_after.get(name) == metrics.get(name), (key, name)
    for slug in MODELS:
        assert without_runtime(second["metrics"][slug]) == without_runtime(first["metrics"][slug]), slug
