"""The staff admin: job list and page, job actions, verdict review and catalog editing."""

import re

import pytest
from django.test import Client

from backend.catalog.models import ModelEntry
from backend.evaluation.models import RankSnapshot, Verdict, VerdictState
from backend.jobs import actions
from backend.jobs.models import Batch, BatchState, Job, JobState

from .conftest import CAPTIONER, LARGE, TURBO

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(staff):
    staff.is_superuser = True
    staff.save(update_fields=["is_superuser"])
    client = Client()
    client.force_login(staff)
    return client


def changelist_ids(response):
    return re.findall(r'/admin/jobs/job/([0-9a-f-]{36})/change/', response.content.decode())


def post_action(client, action, jobs):
    return client.post("/admin/jobs/job/", {
        "action": action, "_selected_action": [str(job.pk) for job in jobs], "index": 0,
    }, follow=True)


def test_job_list_columns(admin_client, scored):
    html = admin_client.get("/admin/jobs/job/").content.decode()

    assert html.count('class="vs-progress"') == 2
    assert "6/6" in html  # two prompts for each generator and two photos for the captioner
    assert html.count(f'<span class="vs-nowrap">{LARGE}</span>') == 2
    assert html.count('<span class="badge state state-succeeded">Succeeded</span>') == 2


def test_job_search_by_id_prefix(admin_client, scored):
    job = scored["jobs"][0]

    response = admin_client.get("/admin/jobs/job/", {"q": str(job.id)[:8]})

    assert set(changelist_ids(response)) == {str(job.id)}


def test_job_search_by_full_id(admin_client, scored):
    job = scored["jobs"][1]

    response = admin_client.get("/admin/jobs/job/", {"q": str(job.id)})

    assert set(changelist_ids(response)) == {str(job.id)}


def test_job_filter_by_model(admin_client, scored, comparison, owner):
    other = comparison(owner, [LARGE, TURBO], {LARGE: 0.5, TURBO: 0.5}, finish=False)

    response = admin_client.get("/admin/jobs/job/", {"model": CAPTIONER})

    assert str(other.id) not in set(changelist_ids(response))
    assert set(changelist_ids(response)) == {str(job.id) for job in scored["jobs"]}


def test_job_change_page(admin_client, scored):
    job = scored["jobs"][0]

    html = admin_client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()

    assert "Peak memory" in html
    assert "300.0\xa0MB" in html  # peak_memory_bytes of the made-up batch report
    assert "2.0 s" in html  # wall time of batch 0
    assert html.count('<svg class="overlay"') == 2
    assert len(re.findall(r'<img class="thumb"', html)) == 4
    assert 'id="job-manifest"' in html
    assert "&quot;checkpoint&quot;: &quot;standins/" in html


def test_job_page_view_only_staff(staff, scored):
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.force_login(staff)

    html = client.get(f"/admin/jobs/job/{scored['jobs'][0].id}/change/").content.decode()

    assert "Peak memory" in html  # batches are visible with the job's view permission alone
    assert 'name="_save"' not in html


def test_job_page_admin_panels(admin_client, owner, monkeypatch):
    from collections import defaultdict

    from backend.jobs.models import JobKind
    from frontend import panels

    monkeypatch.setattr(panels, "_PANELS", defaultdict(list))
    panels.register_job_panel("finetune", lambda job: '<p id="staff-only">loss</p>', public=False)
    job = Job.objects.create(kind=JobKind.FINETUNE, owner=owner)

    html = admin_client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()

    assert '<p id="staff-only">loss</p>' in html


def test_job_page_shows_batch_errors(admin_client, site, comparison, owner):
    job = comparison(owner, [LARGE, TURBO], {LARGE: 0.5, TURBO: 0.5}, finish=False)
    batch = job.batches.get(index=1)
    actions.claim_batch(batch.id, "test-worker")
    actions.fail_batch(batch.id, "CUDA out of memory")

    html = admin_client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()

    assert f"batch 1 ({TURBO}, failed, attempt 1): CUDA out of memory" in html


def test_cancel_action(admin_client, site, comparison, owner):
    job = comparison(owner, [LARGE, TURBO], {LARGE: 0.5, TURBO: 0.5}, finish=False)

    post_action(admin_client, "cancel_jobs", [job])

    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert set(job.batches.values_list("state", flat=True)) == {BatchState.CANCELLED}


def test_retry_failed_action(admin_client, site, comparison, owner, enqueued, django_capture_on_commit_callbacks):
    job = comparison(owner, [LARGE, TURBO], {LARGE: 0.5, TURBO: 0.5}, finish=False)
    failing = job.batches.get(index=0)
    actions.claim_batch(failing.id, "test-worker")
    actions.fail_batch(failing.id, "worker died")
    enqueued.clear()

    with django_capture_on_commit_callbacks(execute=True):
        post_action(admin_client, "retry_failed_batches", [job])

    job.refresh_from_db()
    assert job.state == JobState.RUNNING
    assert job.error == ""
    assert list(job.batches.order_by("index").values_list("state", "attempts", "error")) == [
        (BatchState.QUEUED, 0, ""), (BatchState.QUEUED, 0, "")]
    assert sorted(enqueued) == sorted(("run_batch", (batch.id,)) for batch in job.batches.all())


def test_retry_after_scoring_failure(site, comparison, owner, enqueued, django_capture_on_commit_callbacks):
    job = comparison(owner, [LARGE, TURBO], {LARGE: 0.5, TURBO: 0.5}, finish=False)
    Batch.objects.filter(job=job).update(state=BatchState.SUCCEEDED)
    Job.objects.filter(pk=job.pk).update(state=JobState.FAILED, error="scoring crashed")

    with django_capture_on_commit_callbacks(execute=True):
        assert actions.retry_failed_batches(job) == 0

    assert Job.objects.get(pk=job.pk).state == JobState.RUNNING
    assert enqueued == [("finalize_job", (str(job.id),))]


def test_retry_running_job_refused(site, comparison, owner):
    job = comparison(owner, [LARGE, TURBO], {LARGE: 0.5, TURBO: 0.5}, finish=False)

    with pytest.raises(actions.ApiError, match="only failed jobs"):
        actions.retry_failed_batches(job)
    assert Job.objects.get(pk=job.pk).state == JobState.QUEUED


def test_rerun_action(admin_client, scored, owner):
    job = scored["jobs"][0]

    post_action(admin_client, "rerun_jobs", [job])

    rerun = Job.objects.exclude(pk__in=[j.pk for j in scored["jobs"]]).get()
    assert rerun.owner == owner
    assert rerun.model_order == job.model_order
    assert rerun.options == job.options
    assert rerun.suite == job.suite
    assert rerun.state == JobState.QUEUED
    assert Batch.objects.filter(job=rerun).count() == job.batches.count()


def test_recompute_action(admin_client, scored):
    ModelEntry.objects.filter(slug=TURBO).update(downloads=50_000_000, likes=50_000)
    before = RankSnapshot.objects.count()

    response = post_action(admin_client, "recompute_rankings", [scored["jobs"][0]])

    assert RankSnapshot.objects.count() == before + 1
    assert "Rankings recomputed for 3 model(s)." in response.content.decode()


# Verdict review


def review_url(verdict):
    return f"/admin/evaluation/verdict/{verdict.pk}/change/"


def review_form(client, verdict):
    html = client.get(review_url(verdict)).content.decode()
    sha = re.search(r'name="generated_sha256" value="([0-9a-f]+)"', html).group(1)
    return {"text": verdict.text, "note": "", "generated_sha256": sha}


def test_review_page_approve(admin_client, scored, staff):
    verdict = Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO)
    data = review_form(admin_client, verdict)

    response = admin_client.post(review_url(verdict), {**data, "decision": "Approve"}, follow=True)

    verdict.refresh_from_db()
    assert verdict.state == VerdictState.APPROVED
    assert verdict.reviewed_by == staff
    assert "approved and published" in response.content.decode()


def test_review_page_reject_needs_note(admin_client, scored):
    verdict = Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO)
    data = review_form(admin_client, verdict)

    response = admin_client.post(review_url(verdict), {**data, "decision": "Reject"})

    assert response.status_code == 200
    assert "Write a note saying why the verdict is rejected." in response.content.decode()
    assert Verdict.objects.get(pk=verdict.pk).state == VerdictState.DRAFT


def test_review_page_edit_with_note(admin_client, scored):
    verdict = Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO)
    data = review_form(admin_client, verdict)

    admin_client.post(review_url(verdict), {**data, "text": "Large leads.", "note": "tightened",
                                            "decision": "Approve"})

    verdict.refresh_from_db()
    assert (verdict.state, verdict.text, verdict.review_note) == (VerdictState.APPROVED, "Large leads.", "tightened")


def test_review_page_stale_form(admin_client, scored):
    verdict = Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO)
    data = review_form(admin_client, verdict)
    Verdict.objects.filter(pk=verdict.pk).update(generated_text="new text", text="new text")

    response = admin_client.post(review_url(verdict), {**data, "decision": "Approve"})

    assert "regenerated this verdict" in response.content.decode()
    assert Verdict.objects.get(pk=verdict.pk).state == VerdictState.DRAFT


def test_verdict_list_filters_by_state(admin_client, scored):
    html = admin_client.get("/admin/evaluation/verdict/", {"state__exact": "draft"}).content.decode()

    assert f"{LARGE} vs {TURBO}" in html
    assert f"{CAPTIONER} vs {LARGE}" in html


# Catalog


def test_catalog_edit_capabilities(admin_client, site):
    entry = ModelEntry.objects.get(slug=TURBO)
    html = admin_client.get(f"/admin/catalog/modelentry/{entry.pk}/change/").content.decode()
    form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', html))
    form.update({
        "slug": entry.slug, "name": entry.name, "task": entry.task, "architecture": entry.architecture,
        "capabilities": "Four-step sampling\n\n  Text rendering  \n", "integrations": "diffusers\nComfyUI",
        "default_options": "{}", "downloads": "1234", "likes": "56", "standin_seed": "2",
        "is_standin": "on", "open_weights": "on",
    })
    for flag in ("judge", "supports_lora", "supports_quantization"):
        form.pop(flag, None)

    response = admin_client.post(f"/admin/catalog/modelentry/{entry.pk}/change/", form)

    assert response.status_code == 302, re.findall(r"errorlist.*?</ul>", response.content.decode(), re.S)
    entry.refresh_from_db()
    assert entry.capabilities == ["Four-step sampling", "Text rendering"]
    assert entry.integrations == ["diffusers", "ComfyUI"]
    assert (entry.downloads, entry.likes, entry.is_standin) == (1234, 56, True)


def catalog_form(client, entry, **changes):
    html = client.get(f"/admin/catalog/modelentry/{entry.pk}/change/").content.decode()
    form = {"slug": entry.slug, "name": entry.name, "task": entry.task, "architecture": entry.architecture,
            "capabilities": "\n".join(entry.capabilities), "integrations": "\n".join(entry.integrations),
            "default_options": "{}", "downloads": str(entry.downloads), "likes": str(entry.likes),
            "standin_seed": str(entry.standin_seed), "open_weights": "on"}
    assert 'name="slug"' in html
    form.update(changes)
    return client.post(f"/admin/catalog/modelentry/{entry.pk}/change/", form)


def test_catalog_slug_with_space_rejected(admin_client, site):
    entry = ModelEntry.objects.get(slug=LARGE)

    response = catalog_form(admin_client, entry, slug="stable diffusion")

    assert response.status_code == 200
    assert "Use only letters, digits, hyphens, underscores and dots." in response.content.decode()
    assert ModelEntry.objects.filter(slug=LARGE).exists()


def test_catalog_slug_taken_rejected(admin_client, site):
    entry = ModelEntry.objects.get(slug=LARGE)

    response = catalog_form(admin_client, entry, slug=TURBO)

    assert response.status_code == 200
    assert "Model entry with this Slug already exists." in response.content.decode()


def test_catalog_adapter_needs_path(admin_client, site):
    entry = ModelEntry.objects.get(slug=TURBO)

    response = catalog_form(admin_client, entry, base=str(ModelEntry.objects.get(slug=LARGE).pk))

    assert response.status_code == 200
    assert "must name its LoRA adapter folder" in response.content.decode()
