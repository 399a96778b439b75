"""The pages in headless Chromium against a live server: numbers, live progress, review flow.

Each test also saves full-page screenshots at desktop and phone width under
test-artifacts/screenshots/.
"""

import pytest
from django.contrib.auth.models import Permission

from backend.evaluation.models import ModelScore, Verdict, VerdictState
from backend.evaluation.review import approve_verdict
from backend.evaluation.services import finalize_comparison
from backend.jobs.models import Job
from backend.jobs.serializers import STANDIN_NOTE

from .conftest import CAPTIONER, LARGE, TURBO, login, run_batch_step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]



def wait_for_images(page):
    """Load lazy images now and wait until every image on the page has decoded."""
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(img => { img.loading = 'eager'; })")
    page.wait_for_function(
        "() => Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)")


def test_leaderboard_and_compare(live_server, page, scored, staff, screenshots):
    approve_verdict(Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO), staff)

    response = page.goto(live_server.url + "/")
    assert response.status == 200
    for slug in (CAPTIONER, LARGE, TURBO):
        score = ModelScore.objects.get(model__slug=slug)
        row = page.locator(f'tr[data-slug="{slug}"]')
        assert row.locator("td.rank").inner_text() == str(score.rank)
        assert row.locator("td.composite").inner_text() == f"{score.composite:.1f}"
        assert row.locator("td.matches").inner_text() == str(score.matches)
        assert row.locator(".badge.standin").count() == 1
        assert row.locator("svg.sparkline polyline").count() == 1
    assert page.locator(".standin-note").first.inner_text().endswith(STANDIN_NOTE)
    screenshots(page, "leaderboard")

    page.click(f'a[href="/compare/{LARGE}/{TURBO}/"]')
    page.wait_for_load_state()
    quality = page.locator('tr:has(th:text-is("Quality")) .value')
    assert quality.all_inner_texts() == ["72.5", "32.5"]
    assert page.locator("table.compare td.best").count() > 0
    assert page.locator(".verdict-text").inner_text().strip() == Verdict.objects.get(
        model_a__slug=LARGE).text.strip()
    assert page.locator("img.thumb").count() == 4
    wait_for_images(page)
    screenshots(page, "compare")

    page.click(f'h1 a[href="/models/{LARGE}/"]')
    page.wait_for_load_state()
    assert page.locator(".jobs-count").inner_text() == "2"
    assert page.locator("svg.chart circle.dot").count() == 2
    screenshots(page, "model")


def test_cross_task_compare_draws_boxes(live_server, page, scored, staff, screenshots):
    approve_verdict(Verdict.objects.get(model_a__slug=CAPTIONER, model_b__slug=LARGE), staff)

    page.goto(f"{live_server.url}/compare/{CAPTIONER}/{LARGE}/")

    overlay = page.locator(".photo svg.overlay").first
    assert overlay.locator("rect").count() >= 2
    photo_box = page.locator(".photo img").first.bounding_box()
    overlay_box = overlay.bounding_box()
    # The overlay covers the photo exactly, so fractional boxes land on the right pixels.
    for key in ("x", "y", "width", "height"):
        assert abs(photo_box[key] - overlay_box[key]) < 1.5, key
    wait_for_images(page)
    screenshots(page, "compare-cross-task")


def test_job_page_live_progress(live_server, page, site, comparison, owner, tmp_path, screenshots):
    quality = {CAPTIONER: 0.6, LARGE: 0.8, TURBO: 0.4}
    job = comparison(owner, [CAPTIONER, LARGE, TURBO], quality, finish=False)
    batch_ids = list(job.batches.order_by("index").values_list("id", flat=True))

    login(page, live_server.url, f"/login/?next=/jobs/{job.id}/", owner)
    assert page.url == f"{live_server.url}/jobs/{job.id}/"
    page.evaluate("window.sameDocument = true")
    assert page.locator("#job-state").inner_text() == "Queued"
    assert page.locator("#job-done").inner_text() == "0"

    for step, batch_id in enumerate(batch_ids, start=1):
        run_batch_step(batch_id, quality, tmp_path)
        done = Job.objects.get(pk=job.pk).progress_done
        page.wait_for_function("n => document.getElementById('job-done').textContent === String(n)", arg=done)
        assert page.locator("#job-state").inner_text() == "Running"
        assert page.locator("#job-batches .badge.state-succeeded").count() == step
        if step == 1:
            page.wait_for_timeout(500)  # let the bar's width transition finish
            screenshots(page, "job-running")

    finalize_comparison(job.id)
    page.wait_for_selector('#job[data-results="loaded"]')
    assert page.locator("#job-state").inner_text() == "Succeeded"
    assert page.locator("#job-percent").inner_text() == "100.0"
    assert page.locator("#job-results img.thumb").count() == 4
    assert page.locator("#job-results svg.overlay").count() == 2
    assert page.evaluate("window.sameDocument") is True  # updated in place, never reloaded
    wait_for_images(page)
    screenshots(page, "job-succeeded")


def test_admin_approval_publishes(live_server, page, scored, staff, screenshots):
    staff.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_verdict", "change_verdict", "view_job"]))
    verdict = Verdict.objects.get(model_a__slug=LARGE, model_b__slug=TURBO)
    compare_url = f"{live_server.url}/compare/{LARGE}/{TURBO}/"
    assert page.goto(compare_url).status == 404

    login(page, live_server.url, "/admin/login/?next=/admin/", staff)
    assert page.url == f"{live_server.url}/admin/"
    page.goto(f"{live_server.url}/admin/evaluation/verdict/?state__exact=draft")
    page.click(f'a:text-is("{LARGE} vs {TURBO}")')
    page.wait_for_load_state()
    assert page.locator(".verdict-state").inner_text() == "Draft"
    screenshots(page, "admin-verdict-review")

    page.fill("textarea[name=note]", "Checked against the job gallery.")
    page.click("input[value=Approve]")
    page.wait_for_load_state()
    assert "approved and published" in page.locator("ul.messagelist li.success").inner_text()
    assert page.locator(".verdict-state").inner_text() == "Approved"

    verdict.refresh_from_db()
    assert verdict.state == VerdictState.APPROVED
    assert verdict.reviewed_by == staff
    assert verdict.review_note == "Checked against the job gallery."

    assert page.goto(compare_url).status == 200
    assert page.locator(".verdict-text").inner_text().strip() == verdict.text.strip()

    page.goto(f"{live_server.url}/admin/jobs/job/")
    assert page.locator(".vs-progress").count() == 2
    screenshots(page, "admin-jobs")
    page.goto(f"{live_server.url}/admin/jobs/job/{scored['jobs'][1].id}/change/")
    wait_for_images(page)
    assert page.locator("#job-results svg.overlay").count() == 2
    screenshots(page, "admin-job")
