"""Comparison submission over the API: validation errors, planning and access."""

import pytest

from backend.jobs.models import Batch, Job

pytestmark = pytest.mark.django_db


def submit(api, models, suite="sample", options=None):
    body = {"models": models, "suite": suite}
    if options is not None:
        body["options"] = options
    return api.post("/api/v1/comparisons/", body, format="json")


def error_of(response):
    return response.json()["error"]


def test_unknown_model_slug_rejected(api, catalog):
    response = submit(api, ["kosmos-2-patch14-224", "no-such-model"])

    assert response.status_code == 400
    assert "models" in error_of(response)["fields"]
    assert "no-such-model" in error_of(response)["message"]
    assert Job.objects.count() == 0


def test_single_model_rejected(api, catalog):
    response = submit(api, ["kosmos-2-patch14-224"])

    assert response.status_code == 400
    assert "models" in error_of(response)["fields"]
    assert "at least two" in error_of(response)["message"]


def test_duplicate_models_rejected(api, catalog):
    response = submit(api, ["kosmos-2-patch14-224", "kosmos-2-patch14-224"])

    assert response.status_code == 400
    assert "duplicate" in error_of(response)["message"]


def test_unknown_suite_rejected(api, catalog):
    response = submit(api, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"], suite="nope")

    assert response.status_code == 400
    assert "suite" in error_of(response)["fields"]
    assert "'nope'" in error_of(response)["message"]


@pytest.mark.parametrize("options, field, fragment", [
    ({"limit": 0}, "options.limit", "got 0; must be at least 1"),
    ({"batch_size": 1000}, "options.batch_size", "got 1000; must be at most 256"),
    ({"height": 100}, "options.height", "multiple of 16"),
    ({"guidance_scale": -1}, "options.guidance_scale", "got -1.0; must be at least 0.0"),
    ({"precision": "float8"}, "options.precision", "use one of ['auto', 'float32'"),
    ({"steps": 4}, "options", "unknown option(s) ['steps']"),
    ({"num_inference_steps": "many"}, "options.num_inference_steps", "valid integer"),
])
def test_bad_option_values_rejected(api, catalog, options, field, fragment):
    response = submit(api, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"], options=options)

    assert response.status_code == 400
    assert field in error_of(response)["fields"]
    assert fragment in error_of(response)["message"]
    assert Job.objects.count() == 0


def test_anonymous_submit_rejected(client, catalog):
    response = client.post("/api/v1/comparisons/", {"models": ["a", "b"]}, content_type="application/json")

    assert response.status_code == 401


def test_submit_plans_batches_per_model(api, catalog, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = submit(api, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"],
                          options={"batch_size": 5})

    assert response.status_code == 201
    job = Job.objects.get(pk=response.json()["id"])
    assert job.state == "queued"
    assert job.progress_total == 8 + 12
    sizes = {}
    for batch in Batch.objects.filter(job=job).select_related("model"):
        sizes.setdefault(batch.model.slug, []).append(batch.size)
    assert sizes == {"kosmos-2-patch14-224": [5, 3], "stable-diffusion-3.5-large": [5, 5, 2]}
    assert len(callbacks) == 1
    assert response["Location"].endswith(f"/api/v1/jobs/{job.id}/")


def test_limit_samples_each_kind(api, catalog, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = submit(api, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"],
                          options={"limit": 3, "seed": 7})

    assert response.status_code == 201
    assert response.json()["progress"]["total"] == 6


def test_other_users_job_is_not_found(api, catalog, outsider, django_capture_on_commit_callbacks):
    from rest_framework.test import APIClient

    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(api, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"]).json()["id"]
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {outsider.token}")

    assert other.get(f"/api/v1/jobs/{job_id}/").status_code == 404
    assert other.get(f"/api/v1/jobs/{job_id}/results/").status_code == 404
    assert other.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 404
    assert api.get(f"/api/v1/jobs/{job_id}/").status_code == 200


def test_staff_sees_any_job(api, catalog, staff, django_capture_on_commit_callbacks):
    from rest_framework.test import APIClient

    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(api, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"]).json()["id"]
    reviewer = APIClient()
    reviewer.credentials(HTTP_AUTHORIZATION=f"Token {staff.token}")

    assert reviewer.get(f"/api/v1/jobs/{job_id}/").status_code == 200


def test_cancel_queued_job(api, catalog, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(api, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"]).json()["id"]

    response = api.post(f"/api/v1/jobs/{job_id}/cancel/")

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert set(Batch.objects.filter(job_id=job_id).values_list("state", flat=True)) == {"cancelled"}
    again = api.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert again.status_code == 409


def test_models_endpoint_lists_catalog(client, catalog):
    response = client.get("/api/v1/models/")

    assert response.status_code == 200
    slugs = [row["slug"] for row in response.json()["results"]]
    assert slugs == sorted(catalog)
    kosmos = next(row for row in response.json()["results"] if row["slug"] == "kosmos-2-patch14-224")
    assert kosmos["task"] == "captioning"
    assert kosmos["source"] == "microsoft/kosmos-2-patch14-224"
    assert len(kosmos["capabilities"]) == 5


def test_openapi_schema_served(client, catalog):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/comparisons/" in paths
    assert "/api/v1/jobs/{job_id}/results/" in paths
