"""Public pages and job pages through Django's test client: content and permissions."""

import re

import pytest
from django.conf import settings
from django.test import Client
from django.utils.html import escape

from backend.catalog.models import ModelEntry
from backend.evaluation.models import Match, ModelScore, Verdict, VerdictState
from backend.evaluation.review import approve_verdict
from backend.jobs.models import JobState
from backend.jobs.serializers import STANDIN_NOTE

from .conftest import CAPTIONER, LARGE, TURBO

pytestmark = pytest.mark.django_db


def client_for(user=None):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def text_of(response):
    return response.content.decode()


def leaderboard_row(html, slug):
    match = re.search(r'<tr data-slug="%s">(.*?)</tr>' % re.escape(slug), html, re.S)
    assert match, f"no leaderboard row for {slug}"
    return match.group(1)


def cell(row_html, css_class):
    match = re.search(r'<td class="%s"[^>]*>\s*(.*?)\s*</td>' % css_class, row_html, re.S)
    assert match, f"no {css_class} cell"
    return match.group(1)


def test_leaderboard_numbers(scored):
    html = text_of(Client().get("/"))

    for slug in (CAPTIONER, LARGE, TURBO):
        score = ModelScore.objects.get(model__slug=slug)
        row = leaderboard_row(html, slug)
        assert cell(row, "rank") == str(score.rank)
        assert cell(row, "composite") == f"{score.composite:.1f}"
        assert cell(row, "matches") == str(score.matches)
        assert "<svg class=\"sparkline\"" in row
        assert "stand-in" in row
    # Two jobs with one generator pair on two prompts each: four matches per generator.
    assert ModelScore.objects.get(model__slug=LARGE).matches == 4
    assert cell(leaderboard_row(html, CAPTIONER), "matches") == "0"
    assert STANDIN_NOTE in html


def test_leaderboard_rank_order(scored):
    html = text_of(Client().get("/"))

    order = re.findall(r'<tr data-slug="([^"]+)">', html)
    expected = list(ModelScore.objects.order_by("rank", "model__slug").values_list("model__slug", flat=True))
    assert order == expected
    assert order.index(LARGE) < order.index(TURBO)


def test_leaderboard_task_filter(scored):
    html = text_of(Client().get("/", {"task": "text-to-image"}))

    assert re.findall(r'<tr data-slug="([^"]+)">', html) == [
        slug for slug in ModelScore.objects.order_by("rank", "model__slug").values_list("model__slug", flat=True)
        if slug != CAPTIONER
    ]


def test_leaderboard_unknown_task(scored):
    response = Client().get("/", {"task": "video"})

    assert response.status_code == 400
    assert "Unknown task &#x27;video&#x27;" in text_of(response)
    assert "<tr data-slug" not in text_of(response)


def test_leaderboard_empty(site):
    response = Client().get("/")

    assert response.status_code == 200
    assert "No scored models yet" in text_of(response)


def test_compare_404_until_approved(scored, staff):
    verdict = Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO)
    url = f"/compare/{LARGE}/{TURBO}/"

    assert verdict.state == VerdictState.DRAFT
    assert Client().get(url).status_code == 404

    approve_verdict(verdict, staff)
    response = Client().get(url)
    assert response.status_code == 200
    assert escape(verdict.text) in text_of(response)


def test_compare_rejected_is_404(scored, staff):
    from backend.evaluation.review import reject_verdict

    verdict = Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO)
    reject_verdict(verdict, staff, "numbers look wrong")

    assert Client().get(f"/compare/{LARGE}/{TURBO}/").status_code == 404


def test_compare_reverse_order_redirects(scored, staff):
    approve_verdict(Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO), staff)

    response = Client().get(f"/compare/{TURBO}/{LARGE}/")

    assert response.status_code == 302
    assert response["Location"] == f"/compare/{LARGE}/{TURBO}/"


def test_compare_table_numbers(scored, staff):
    approve_verdict(Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO), staff)
    html = text_of(Client().get(f"/compare/{LARGE}/{TURBO}/"))

    def row_values(label):
        row = re.search(r'<th scope="row">%s</th>(.*?)</tr>' % re.escape(label), html, re.S).group(1)
        return re.findall(r'<span class="value">(.*?)</span>', row, re.S)

    large = ModelScore.objects.get(model__slug=LARGE)
    turbo = ModelScore.objects.get(model__slug=TURBO)
    # Quality is the mean adherence over both jobs: large (0.7, 0.65, 0.8, 0.75), turbo 0.4 lower.
    assert row_values("Quality") == ["72.5", "32.5"]
    assert row_values("Score /100") == [f"{large.composite:.1f}", f"{turbo.composite:.1f}"]
    assert row_values("Rank") == [f"#{large.rank}", f"#{turbo.rank}"]
    assert row_values("Times matched") == ["4", "4"]
    assert row_values("Capabilities") == [
        str(len(ModelEntry.objects.get(slug=slug).capabilities)) for slug in (LARGE, TURBO)]
    assert row_values("Type") == ["Text-to-image", "Text-to-image"]
    assert STANDIN_NOTE in html


def test_compare_sample_outputs(scored, staff):
    approve_verdict(Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO), staff)
    html = text_of(Client().get(f"/compare/{LARGE}/{TURBO}/"))
    latest = scored["jobs"][1]

    images = re.findall(r'<img class="thumb" src="([^"]+)"', html)
    assert len(images) == 4  # two prompts, two models
    assert all(f"/results/{latest.id}/" in src for src in images)
    assert "Captions with grounding" not in html  # the captioner is not part of this pair


def test_compare_cross_task_shows_boxes(scored, staff):
    approve_verdict(Verdict.objects.get(model_a__slug=CAPTIONER, model_b__slug=LARGE), staff)
    html = text_of(Client().get(f"/compare/{CAPTIONER}/{LARGE}/"))

    assert html.count('<svg class="overlay"') == 2
    assert "<rect" in html
    assert "<mark" in html


def test_model_page(scored):
    html = text_of(Client().get(f"/models/{LARGE}/"))

    assert '<span class="jobs-count">2</span>' in html
    assert '<svg class="chart"' in html
    # One point per snapshot in which the model appears: one per finished job.
    assert html.count('<circle class="dot"') == 2
    assert "Text-to-image generation up to one megapixel" in html


def test_model_page_lists_adapters(site):
    base = site["entries"][LARGE]
    ModelEntry.objects.create(slug="large-lora-cats", name="Large with cat LoRA", task=base.task,
                              architecture=base.architecture, base=base, adapter_path="/tmp/adapter")

    html = text_of(Client().get(f"/models/{LARGE}/"))

    assert 'href="/models/large-lora-cats/"' in html


def test_model_page_unknown_404(site):
    assert Client().get("/models/no-such-model/").status_code == 404


# Job pages


def test_job_page_anonymous_redirects(scored):
    job = scored["jobs"][0]

    response = Client().get(f"/jobs/{job.id}/")

    assert response.status_code == 302
    assert response["Location"] == f"{settings.LOGIN_URL}?next=/jobs/{job.id}/"


def test_job_page_outsider_404(scored, outsider):
    job = scored["jobs"][0]

    assert client_for(outsider).get(f"/jobs/{job.id}/").status_code == 404
    assert client_for(outsider).get(f"/jobs/{job.id}/progress.json").status_code == 404
    assert client_for(outsider).get(f"/jobs/{job.id}/results/").status_code == 404


def test_job_progress_anonymous_404(scored):
    job = scored["jobs"][0]

    assert Client().get(f"/jobs/{job.id}/progress.json").status_code == 404
    assert Client().get(f"/jobs/{job.id}/results/").status_code == 404


def test_job_page_owner_and_staff(scored, owner, staff):
    job = scored["jobs"][0]

    for user in (owner, staff):
        response = client_for(user).get(f"/jobs/{job.id}/")
        assert response.status_code == 200
        html = text_of(response)
        assert 'id="job-state">Succeeded</span>' in html
        assert html.count('<svg class="overlay"') == 2  # two photos captioned by one captioner
        assert len(re.findall(r'<img class="thumb"', html)) == 4


def test_job_progress_json(site, comparison, owner, tmp_path):
    from .conftest import run_batch_step

    job = comparison(owner, [LARGE, TURBO], {LARGE: 0.7, TURBO: 0.3}, finish=False)
    client = client_for(owner)

    before = client.get(f"/jobs/{job.id}/progress.json").json()
    first = job.batches.order_by("index").first()
    run_batch_step(first.id, {LARGE: 0.7, TURBO: 0.3}, tmp_path)
    after = client.get(f"/jobs/{job.id}/progress.json").json()

    assert before["state"] == JobState.QUEUED
    assert (before["done"], before["total"]) == (0, 4)
    assert before["batches"]["by_state"] == {"queued": 2}
    assert after["state"] == JobState.RUNNING
    assert (after["done"], after["percent"]) == (2, 50.0)
    assert after["batches"]["by_state"] == {"queued": 1, "succeeded": 1}
    assert after["terminal"] is False


def test_job_page_panels(owner, staff, monkeypatch):
    from collections import defaultdict

    from backend.jobs.models import Job, JobKind
    from frontend import panels

    monkeypatch.setattr(panels, "_PANELS", defaultdict(list))
    panels.register_job_panel("finetune", lambda job: f'<p id="loss-curve">{job.kind}</p>')
    panels.register_job_panel("finetune", lambda job: '<p id="staff-only">x</p>', public=False)
    job = Job.objects.create(kind=JobKind.FINETUNE, owner=owner, state=JobState.SUCCEEDED)

    public = text_of(client_for(owner).get(f"/jobs/{job.id}/"))
    admin = text_of(client_for(staff).get(f"/jobs/{job.id}/results/"))

    assert '<p id="loss-curve">finetune</p>' in public
    assert "staff-only" not in public
    assert '<p id="loss-curve">finetune</p>' in admin
    assert "staff-only" not in admin  # the public page never shows admin-only panels


def test_job_page_unknown_404(owner):
    assert client_for(owner).get("/jobs/00000000-0000-0000-0000-000000000000/").status_code == 404


# Admin access


def test_admin_anonymous_redirects():
    response = Client().get("/admin/jobs/job/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_admin_non_staff_redirects(owner):
    response = client_for(owner).get("/admin/evaluation/verdict/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_static_files_served():
    response = Client().get("/static/frontend/versus.css")

    assert response.status_code == 200
    assert b".leaderboard" in b"".join(response.streaming_content)


def test_match_rows_count(scored):
    # Guards the numbers above: one match per prompt per generator pair and job.
    assert Match.objects.count() == 4


def test_job_page_shows_model_scores(scored, owner):
    from backend.evaluation.models import ModelScore

    job = scored["jobs"][0]
    job.refresh_from_db()

    html = client_for(owner).get(f"/jobs/{job.id}/").content.decode()

    assert "<h3>Scores</h3>" in html
    for slug in job.model_order:
        score = ModelScore.objects.get(model__slug=slug)
        assert f">{slug}</a>" in html
        assert f"<td>{score.composite:.1f}</td>" in html
