"""Fixtures for the pages and the admin: a catalog, scored comparisons and a headless browser.

Comparisons go through the real action functions: ``submit_comparison`` plans the batches,
``claim_batch`` and ``store_batch_results`` store made-up outputs in place of a model run,
and ``finalize_comparison`` scores the job, recomputes rankings and writes verdicts. Only
the Celery ``delay`` calls are replaced, so no message reaches a worker that other tests
may have started.
"""

import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

CAPTIONER = "kosmos-2-patch14-224"
LARGE = "stable-diffusion-3.5-large"
TURBO = "stable-diffusion-3.5-large-turbo"


@pytest.fixture
def enqueued(monkeypatch):
    """Record run_batch and finalize_job messages instead of sending them to the broker."""
    from tasks.comparison import finalize_job, run_batch

    calls = []
    for task in (run_batch, finalize_job):
        # delay() goes through apply_async(), so this catches both ways of sending.
        monkeypatch.setattr(task, "apply_async", lambda args=(), kwargs=None, name=task.name.rsplit(".", 1)[-1],
                            **options: calls.append((name, tuple(args))))
    return calls


@pytest.fixture
def site(db, enqueued):
    """The bundled catalog and the sample suite (8 photos, 12 prompts)."""
    from backend.catalog.actions import import_catalog
    from backend.evaluation.suites import BUNDLED_DIR, install_suite

    entries = {entry.slug: entry for entry in import_catalog()}
    suite = install_suite(
        "sample", "Sample suite", "Photos with references and one prompt per category.", "CC0",
        image_folder=BUNDLED_DIR / "sample" / "images", prompts_path=BUNDLED_DIR / "sample" / "prompts.tsv",
    )
    return {"entries": entries, "suite": suite}


def comparison_options(**values):
    from backend.jobs.options import ComparisonOptionsSerializer

    serializer = ComparisonOptionsSerializer(data=values)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def fake_image(path, colour, text):
    image = Image.new("RGB", (96, 96), colour)
    ImageDraw.Draw(image).text((8, 40), text, fill="white")
    image.save(path)
    return str(path)


def caption_output(item, similarity):
    """A grounded caption naming the item's first two reference objects, boxes slightly shifted."""
    objects = item.reference_objects[:2]
    text, entities = "", []
    for index, obj in enumerate(objects):
        if index:
            text += " next to "
        start = len(text)
        text += obj["phrase"]
        x0, y0, x1, y1 = obj["bbox"]
        entities.append({"phrase": obj["phrase"], "span": [start, len(text)],
                         "boxes": [[x0, y0, max(x0, x1 - 0.05), y1]]})
    text += "."
    matrix = [[1.0 if i == j else 0.1 for j in range(len(item.reference_objects))] for i in range(len(entities))]
    return ({"text": text, "entities": entities, "raw": text},
            {"similarity": similarity, "phrase_similarity": matrix, "latency_s": 0.25})


def batch_report(batch):
    return {"wall_time_s": 2.0 + batch.index, "inference_time_s": 1.5, "load_time_s": 0.4,
            "peak_memory_bytes": 300 * 2**20, "device": "cpu", "dtype": "float32", "standin": True,
            "manifest": {"checkpoint": f"standins/{batch.model.slug}", "versions": {"torch": "test"}}}


def run_batch_step(batch_id, quality, folder):
    """Claim one batch and store made-up outputs for it, as a worker would; return the batch."""
    from backend.evaluation.models import SuiteItem
    from backend.jobs import actions

    batch = actions.claim_batch(batch_id, "test-worker")
    items = SuiteItem.objects.filter(id__in=batch.item_ids).order_by("position")
    outputs = []
    for offset, item in enumerate(items):
        score = quality[batch.model.slug] - 0.05 * offset
        if batch.model.task == "captioning":
            output, metrics = caption_output(item, score)
            outputs.append({"item_id": item.id, "output": output, "metrics": metrics})
        else:
            colour = (int(200 * score), 60, int(200 * (1 - score)))
            path = fake_image(Path(folder) / f"{batch.id}-{item.id}.png", colour, batch.model.slug[:10])
            outputs.append({
                "item_id": item.id, "image_path": path,
                "output": {"prompt": item.prompt, "seed": item.position,
                           "judge_caption": f"an image of {item.prompt[:30].lower()}", "judge": CAPTIONER},
                "metrics": {"adherence": score, "blank": False, "latency_s": 1.0},
            })
    actions.store_batch_results(batch, outputs, batch_report(batch))
    return batch


@pytest.fixture
def comparison(site, tmp_path):
    """Return ``run(owner, slugs, quality, limit=2, finish=True)`` that submits and runs a comparison.

    ``quality`` maps each slug to its primary metric on the first item; later items score
    0.05 lower each. With ``finish=False`` the job is left queued with its batches planned.
    """
    from backend.evaluation.services import finalize_comparison
    from backend.jobs.actions import submit_comparison
    from backend.jobs.models import Job

    def run(owner, slugs, quality, limit=2, finish=True):
        entries = [site["entries"][slug] for slug in slugs]
        job = submit_comparison(owner, entries, site["suite"], comparison_options(limit=limit))
        if finish:
            for batch_id in job.batches.order_by("index").values_list("id", flat=True):
                run_batch_step(batch_id, quality, tmp_path)
            finalize_comparison(job.id)
        return Job.objects.get(pk=job.pk)

    return run


@pytest.fixture
def scored(site, comparison, owner):
    """Two finished comparisons of one captioner and two generators, large ahead of turbo.

    The second job raises every score, so the leaderboard has two rank snapshots.
    """
    first = comparison(owner, [CAPTIONER, LARGE, TURBO], {CAPTIONER: 0.5, LARGE: 0.7, TURBO: 0.3})
    second = comparison(owner, [CAPTIONER, LARGE, TURBO], {CAPTIONER: 0.6, LARGE: 0.8, TURBO: 0.4})
    return {"jobs": [first, second], **site}


# Browser


def chromium_or_skip():
    if CHROMIUM.exists():
        return str(CHROMIUM)
    reason = f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium`"
    if os.environ.get("VERSUS_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (VERSUS_REQUIRE_BROWSER=1 makes this an error)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for one test module.

    Playwright's sync API runs an event loop in the test thread, and Django refuses database
    calls from a thread with a running loop unless DJANGO_ALLOW_ASYNC_UNSAFE is set. The
    variable is set only while the browser is open.
    """
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture(scope="session")
def screenshots():
    """Return ``shoot(page, name)`` that saves full-page PNGs at desktop and phone width."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)

    def shoot(page, name):
        paths = []
        for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            path = SCREENSHOT_DIR / f"{name}-{label}.png"
            page.screenshot(path=str(path), full_page=True)
            paths.append(path)
        page.set_viewport_size(DESKTOP)
        return paths

    return shoot


def login(page, base_url, path, user):
    """Fill a Django login form at ``path`` with the persona's password (``pw-<username>``)."""
    page.goto(base_url + path)
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "pw-" + user.username)
    page.click("[type=submit]")
    page.wait_for_load_state()
