"""Fine-tune API and task, run in-process: validation, progress, publishing, cancel, failure."""

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from backend.catalog.models import ModelEntry
from backend.finetunes import actions
from backend.finetunes.models import Checkpoint, FineTune, LossPoint
from backend.jobs.models import Job, JobKind
from tasks.finetune import run_finetune
from tasks.manifest import combined_hash, folder_hashes

from .conftest import SD3_FAST

URL = "/api/v1/finetunes/"


def submit(api, base, dataset, **config):
    return api.post(URL, {"base_model": base, "dataset": str(dataset.id), "config": config}, format="json")


@pytest.fixture
def outsider_api(outsider):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {outsider.token}")
    return client


def test_submit_queues_job(api, base_entries, folder_dataset, django_capture_on_commit_callbacks):
    dataset = folder_dataset(2)

    with django_capture_on_commit_callbacks() as callbacks:
        response = submit(api, "sd3-tiny", dataset, max_steps=3, **SD3_FAST)

    body = response.json()
    assert response.status_code == 201, body
    assert len(callbacks) == 1
    assert body["state"] == "queued"
    assert body["progress"] == {"step": 0, "max_steps": 3, "fraction": 0.0, "phase": "queued"}
    assert body["config"]["alpha"] == 4.0
    assert body["config"]["target_modules"] == ["to_q", "to_k", "to_v", "to_out.0"]
    assert body["dataset"]["item_count"] == 2
    job = api.get(f"/api/v1/jobs/{body['id']}/").json()
    assert (job["kind"], job["models"], job["progress"]["total"]) == ("finetune", ["sd3-tiny"], 3)


@pytest.mark.parametrize("base, config, field, phrase", [
    ("sd3-tiny", {"rank": 0}, "config.rank", "rank must be between 1 and 1024, got 0"),
    ("sd3-tiny", {"rank": -4}, "config.rank", "got -4"),
    ("sd3-tiny", {"learning_rate": 0}, "config.learning_rate", "learning_rate must be a number > 0, got 0"),
    ("sd3-tiny", {"learning_rate": 5}, "config.learning_rate", "learning_rate 5.0 is too large"),
    ("sd3-tiny", {"target_modules": ["to_q", "lm_head"]}, "config.target_modules",
     "unknown target module(s) ['lm_head'] for sd3; valid: to_q, to_k, to_v, to_out.0, add_q_proj"),
    ("kosmos-tiny", {"target_modules": ["to_q"]}, "config.target_modules", "valid: q_proj, k_proj"),
    ("sd3-tiny", {"resolution": 500}, "config.resolution", "resolution 500 is not a multiple of 16"),
    ("kosmos-tiny", {"resolution": 224}, "config.resolution", "applies to SD3 only"),
    ("sd3-tiny", {"mixed_precision": "fp16"}, "config.mixed_precision", "'fp16' is not supported on the CPU"),
    ("sd3-tiny", {"rnak": 4}, "config.rnak", "unknown setting 'rnak'"),
    ("sd3-tiny", {"rank": "four"}, "config.rank", "valid integer"),
    ("no-such-model", {}, "base_model", "unknown model slug 'no-such-model'"),
])
def test_invalid_request_rejected(api, base_entries, folder_dataset, settings, base, config, field, phrase):
    settings.VERSUS_DEVICE = None
    dataset = folder_dataset(1)

    response = submit(api, base, dataset, **config)

    body = response.json()["error"]
    assert response.status_code == 400, body
    assert list(body["fields"]) == [field]
    assert phrase in body["message"]
    assert FineTune.objects.count() == 0
    assert Job.objects.count() == 0


def test_adapter_base_rejected(api, base_entries, folder_dataset):
    sd3 = base_entries["sd3"]
    ModelEntry.objects.create(slug="sd3-tiny-lora", name="adapted", task=sd3.task, architecture="sd3",
                              base=sd3, adapter_path="/nowhere")

    response = submit(api, "sd3-tiny-lora", folder_dataset(1))

    body = response.json()["error"]
    assert response.status_code == 400
    assert list(body["fields"]) == ["base_model"]
    assert "stacking adapters is not supported, fine-tune 'sd3-tiny' instead" in body["message"]


def test_foreign_dataset_rejected(api, base_entries, folder_dataset, outsider):
    foreign = folder_dataset(1, user=outsider)

    response = submit(api, "sd3-tiny", foreign)
    unknown = api.post(URL, {"base_model": "sd3-tiny", "dataset": str(uuid.uuid4())}, format="json")

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["dataset"]
    assert f"dataset {foreign.id} not found" in response.json()["error"]["message"]
    assert unknown.status_code == 400
    assert FineTune.objects.count() == 0


def test_outsider_gets_404(api, outsider_api, base_entries, folder_dataset, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        created = submit(api, "sd3-tiny", folder_dataset(1), max_steps=2, **SD3_FAST).json()

    assert outsider_api.get(f"{URL}{created['id']}/").status_code == 404
    assert outsider_api.get(f"{URL}{created['id']}/loss/").status_code == 404
    assert outsider_api.get(URL).json()["results"] == []
    assert outsider_api.post(f"/api/v1/jobs/{created['id']}/cancel/").status_code == 404


def test_run_publishes_best_checkpoint(api, owner, catalog, folder_dataset, django_capture_on_commit_callbacks):
    from backend.webhooks.models import Endpoint, Event

    Endpoint.objects.create(owner=owner, url="http://127.0.0.1:9/hook", events=["finetune.completed"], secret="s")
    base = catalog["stable-diffusion-3.5-large"]
    dataset = folder_dataset(4)
    with django_capture_on_commit_callbacks():
        created = api.post(URL, {"base_model": base.slug, "dataset": str(dataset.id), "name": "squares", "config": {
            **SD3_FAST, "max_steps": 6, "checkpoint_every": 2, "learning_rate": 5e-2, "evaluate_after": True,
        }}, format="json").json()

    with django_capture_on_commit_callbacks():
        run_finetune.apply(args=[created["id"]])
    body = api.get(f"{URL}{created['id']}/").json()

    assert body["state"] == "succeeded", body["error"]
    assert body["progress"] == {"step": 6, "max_steps": 6, "fraction": 1.0, "phase": "succeeded"}
    assert body["validation"]["held_out"] is True
    assert len(body["validation"]["file_names"]) == 2
    scores = {row["step"]: row["validation_loss"] for row in body["checkpoints"]}
    assert sorted(scores) == [2, 4, 6]
    best = min(scores, key=lambda step: (scores[step], -step))
    assert body["adapter"]["step"] == best
    assert "lowest validation loss" in body["adapter"]["choice"]
    assert sorted(body["adapter"]["files"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                "pytorch_lora_weights.safetensors"]
    assert body["adapter"]["url"].endswith(f"/media/finetunes/{created['id']}/adapter.zip")

    entry = ModelEntry.objects.get(slug=body["model"]["slug"])
    assert entry.slug == f"{base.slug}-lora-{created['id'].replace('-', '')[:8]}"
    assert entry.name == f"{base.name} + squares"
    assert (entry.base, entry.task, entry.architecture) == (base, base.task, base.architecture)
    assert entry.adapter_sha256 == combined_hash(folder_hashes(entry.adapter_path))
    listed = {row["slug"]: row for row in api.get("/api/v1/models/?architecture=sd3").json()["results"]}
    assert listed[entry.slug]["base"] == base.slug

    evaluation = Job.objects.get(pk=body["evaluation"]["job"])
    assert (evaluation.kind, evaluation.model_order, evaluation.suite.slug) == (
        JobKind.COMPARISON, [entry.slug, base.slug], "sample")
    event = Event.objects.get(type="finetune.completed")
    assert json.loads(event.body)["data"]["model"] == entry.slug

    loss = api.get(f"{URL}{created['id']}/loss/").json()
    assert [point["step"] for point in loss["points"]] == [1, 2, 3, 4, 5, 6]
    assert [point["step"] for point in api.get(f"{URL}{created['id']}/loss/?after=4").json()["points"]] == [5, 6]
    job = api.get(f"/api/v1/jobs/{created['id']}/").json()
    assert (job["progress"]["done"], job["progress"]["total"]) == (6, 6)
    assert job["manifest"]["adapter"]["sha256"] == entry.adapter_sha256

    # A second delivery of the finished task changes nothing.
    run_finetune.apply(args=[created["id"]])
    assert FineTune.objects.get(pk=created["id"]).attempts == 1
    assert ModelEntry.objects.filter(base=base).count() == 1


def test_cancel_keeps_last_checkpoint(api, base_entries, folder_dataset, monkeypatch,
                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        created = submit(api, "sd3-tiny", folder_dataset(2), max_steps=10, checkpoint_every=2, **SD3_FAST).json()
    record_checkpoint = actions.record_checkpoint
    cancels = []

    def record_then_cancel(finetune, checkpoint, removed_steps):
        record_checkpoint(finetune, checkpoint, removed_steps)
        if checkpoint.step == 2:
            cancels.append(api.post(f"/api/v1/jobs/{created['id']}/cancel/").status_code)

    monkeypatch.setattr(actions, "record_checkpoint", record_then_cancel)

    with django_capture_on_commit_callbacks():
        run_finetune.apply(args=[created["id"]])
    finetune = FineTune.objects.select_related("job").get(pk=created["id"])

    assert cancels == [200]
    assert finetune.job.state == "cancelled"
    assert finetune.step == 2
    assert LossPoint.objects.filter(finetune=finetune).count() == 2
    assert list(Checkpoint.objects.filter(finetune=finetune).values_list("step", flat=True)) == [2]
    adapter = finetune.output_path / "checkpoints" / "step-000002" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert finetune.entry is None
    assert not (finetune.output_path / "adapter").exists()
    assert api.get(f"{URL}{created['id']}/").json()["checkpoints"][0]["adapter_url"].endswith(
        f"/finetunes/{created['id']}/checkpoints/step-000002/adapter/adapter_model.safetensors")


def test_diverged_loss_fails_job(api, base_entries, folder_dataset, monkeypatch,
                                 django_capture_on_commit_callbacks):
    from gpu_workers.training import SD3Objective

    with django_capture_on_commit_callbacks():
        created = submit(api, "sd3-tiny", folder_dataset(1), max_steps=4, **SD3_FAST).json()
    real_loss = SD3Objective.loss
    calls = []

    def diverging(self, model, batch, generator):
        calls.append(1)
        loss = real_loss(self, model, batch, generator)
        return loss * float("inf") if len(calls) == 3 else loss

    monkeypatch.setattr(SD3Objective, "loss", diverging)

    with django_capture_on_commit_callbacks():
        run_finetune.apply(args=[created["id"]])
    body = api.get(f"{URL}{created['id']}/").json()

    assert body["state"] == "failed"
    assert body["error"] == ("loss became inf at step 3; training diverged. Lower learning_rate (now 0.01), "
                             "e.g. to 0.001")
    assert body["progress"]["step"] == 2


def test_claim_respects_lease(base_entries, folder_dataset, owner, settings, django_capture_on_commit_callbacks):
    from gpu_workers.lora import TrainingConfig

    settings.VERSUS_FINETUNE_LEASE_SECONDS = 60
    with django_capture_on_commit_callbacks():
        finetune = actions.submit_finetune(owner, base_entries["sd3"], folder_dataset(1),
                                           TrainingConfig.from_dict("sd3", SD3_FAST))
    assert actions.claim_finetune(finetune.pk, "first:1").attempts == 1

    with pytest.raises(actions.LeaseHeld) as held:
        actions.claim_finetune(finetune.pk, "second:2")
    Job.objects.filter(pk=finetune.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    taken = actions.claim_finetune(finetune.pk, "second:2")

    assert held.value.worker == "first:1"
    assert 55 < held.value.retry_after <= 60
    assert (taken.attempts, taken.worker) == (2, "second:2")


def test_claim_fails_after_max_attempts(base_entries, folder_dataset, owner, settings,
                                        django_capture_on_commit_callbacks):
    from gpu_workers.lora import TrainingConfig

    settings.VERSUS_FINETUNE_MAX_ATTEMPTS = 2
    with django_capture_on_commit_callbacks():
        finetune = actions.submit_finetune(owner, base_entries["sd3"], folder_dataset(1),
                                           TrainingConfig.from_dict("sd3", SD3_FAST))
    FineTune.objects.filter(pk=finetune.pk).update(attempts=2)

    with pytest.raises(actions.FinetuneAttemptsExceeded):
        actions.claim_finetune(finetune.pk, "worker:1")
    job = Job.objects.get(pk=finetune.pk)

    assert job.state == "failed"
    assert job.error.startswith("fine-tune was started 3 times (limit 2)")


def test_taken_over_run_stops(api, base_entries, folder_dataset, monkeypatch, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        created = submit(api, "sd3-tiny", folder_dataset(1), max_steps=6, checkpoint_every=2, **SD3_FAST).json()
    record_checkpoint = actions.record_checkpoint

    def record_then_lose_lease(finetune, checkpoint, removed_steps):
        record_checkpoint(finetune, checkpoint, removed_steps)
        FineTune.objects.filter(pk=finetune.pk).update(worker="other-host:99")

    monkeypatch.setattr(actions, "record_checkpoint", record_then_lose_lease)

    with django_capture_on_commit_callbacks():
        run_finetune.apply(args=[created["id"]])
    finetune = FineTune.objects.select_related("job").get(pk=created["id"])

    assert finetune.job.state == "running"
    assert finetune.step == 2
    assert LossPoint.objects.filter(finetune=finetune).count() == 2
    assert finetune.entry is None


def test_job_panel_draws_loss_curve(api, client, owner, base_entries, folder_dataset,
                                    django_capture_on_commit_callbacks):
    from frontend.panels import render_job_panels

    with django_capture_on_commit_callbacks():
        created = submit(api, "sd3-tiny", folder_dataset(1), max_steps=3, **SD3_FAST).json()
    with django_capture_on_commit_callbacks():
        run_finetune.apply(args=[created["id"]])

    html = render_job_panels(Job.objects.get(pk=created["id"]))

    assert "<dt>Step</dt><dd>3 of 3</dd>" in html
    assert "<polyline" in html
    assert f"sd3-tiny-lora-{created['id'].replace('-', '')[:8]}" in html
    client.force_login(owner)
    assert "<h2>Fine-tune sample-1</h2>" in client.get(f"/jobs/{created['id']}/").content.decode()
