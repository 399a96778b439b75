"""A comparison job through real HTTP, a real Celery worker process, PostgreSQL and Redis."""

import pytest
import requests

from backend.evaluation.models import Match, ModelScore, RankSnapshot, Verdict
from backend.jobs.models import Batch, Result
from tests.conftest import auth, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MODELS = ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"]


def test_comparison_reaches_succeeded_with_verdict(live_server, catalog, owner, worker):
    response = requests.post(
        f"{live_server.url}/api/v1/comparisons/", headers=auth(owner), timeout=30,
        json={"models": MODELS, "suite": "sample", "options": {"limit": 3, "batch_size": 2}},
    )
    assert response.status_code == 201, response.text
    job_url = response.json()["url"]

    job = wait_for_job(job_url, auth(owner), timeout=300, worker=worker)

    assert job["state"] == "succeeded", job["error"]
    assert job["progress"] == {"done": 6, "total": 6, "fraction": 1.0, "detail": {}}
    assert job["standin"] is True
    assert "stand-in" in job["standin_note"]
    assert Result.objects.filter(job_id=job["id"]).count() == 6
    for slug in MODELS:
        assert Result.objects.filter(job_id=job["id"], model__slug=slug).count() == 3
    assert set(Batch.objects.filter(job_id=job["id"]).values_list("state", flat=True)) == {"succeeded"}

    # One verdict for the pair, naming both sides; cross-task pairs produce no matches.
    assert len(job["verdicts"]) == 1
    verdict = Verdict.objects.get()
    assert {verdict.model_a.slug, verdict.model_b.slug} == set(MODELS)
    assert "different tasks" in verdict.text
    assert Match.objects.count() == 0
    assert ModelScore.objects.filter(model__slug__in=MODELS).count() == 2
    assert RankSnapshot.objects.count() == 1

    results = requests.get(job["results_url"], headers=auth(owner), timeout=30).json()
    assert results["count"] == 6
    captions = [row for row in results["results"] if row["model"] == MODELS[0]]
    images = [row for row in results["results"] if row["model"] == MODELS[1]]
    assert all("text" in row["output"] and "entities" in row["output"] for row in captions)
    assert all(row["image_url"].endswith(".png") for row in images)
    assert all(row["output"]["seed"] == row["item"]["position"] for row in images)
    image = requests.get(images[0]["image_url"], timeout=30)
    assert image.status_code == 200
    assert image.content[:8] == b"\x89PNG\r\n\x1a\n"

    rankings = requests.get(f"{live_server.url}/api/v1/rankings/", timeout=30).json()["results"]
    assert [row["model"] for row in rankings if row["model"] in MODELS]
    assert all(0 <= row["composite"] <= 100 for row in rankings)


def test_same_task_comparison_stores_matches(live_server, catalog, owner, worker):
    models = ["stable-diffusion-3.5-large", "stable-diffusion-3.5-large-turbo", "stable-diffusion-3.5-medium"]
    response = requests.post(
        f"{live_server.url}/api/v1/comparisons/", headers=auth(owner), timeout=30,
        json={"models": models, "suite": "partiprompts", "options": {"limit": 4, "batch_size": 4}},
    )
    assert response.status_code == 201, response.text

    job = wait_for_job(response.json()["url"], auth(owner), timeout=300, worker=worker)

    assert job["state"] == "succeeded", job["error"]
    # Three pairs, four prompts each.
    assert Match.objects.filter(job_id=job["id"]).count() == 12
    scores = {s.model.slug: s for s in ModelScore.objects.select_related("model")}
    for slug in models:
        assert scores[slug].matches == 8
        assert scores[slug].rating_low <= scores[slug].rating <= scores[slug].rating_high
    assert Verdict.objects.count() == 3
    assert set(job["metrics"]) == set(models)
    assert "by_category" in job["metrics"][models[0]]
    # The stand-in CLIP checkpoint configured for tests scores every image in [0, 100].
    clip = [r.metrics["clip_score"] for r in Result.objects.filter(job_id=job["id"])]
    assert len(clip) == 12
    assert all(0.0 <= value <= 100.0 for value in clip)
    assert job["metrics"][models[0]]["clip_score"] is not None
