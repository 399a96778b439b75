"""Terminal output shared by the ``compare`` and ``demo`` commands: progress and reports."""

import time

from django.core.management.base import CommandError
from tqdm import tqdm

STANDIN_BANNER = ("NOTE: these scores come from stand-in checkpoints (real architectures, random "
                  "weights); they exercise the pipeline and say nothing about the real models.")


def follow_progress(fetch, interval=0.5, timeout=None, stream=None):
    """Poll ``fetch()`` (returning a job dict as the API shows it) until a terminal state.

    Draws a tqdm bar of items done over total; returns the last job dict. Raises
    TimeoutError after ``timeout`` seconds.
    """
    started = time.monotonic()
    job = fetch()
    total = job["progress"]["total"] or 1
    with tqdm(total=total, unit="item", desc=f"job {str(job['id'])[:8]}", file=stream,
              dynamic_ncols=True) as bar:
        while True:
            done = job["progress"]["done"]
            bar.update(max(0, done - bar.n))
            bar.set_postfix_str(job["state"])
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(f"job {job['id']} still {job['state']} after {timeout:.0f}s")
            time.sleep(interval)
            job = fetch()


def format_subscores(subscores):
    parts = []
    for name, value in subscores.items():
        parts.append(f"{name} {value:.2f}" if value is not None else f"{name} n/a")
    return ", ".join(parts)


def render_report(job, rankings, verdicts, write):
    """Write the job's outcome: scores with sub-scores, the ranking table and verdicts."""
    write(f"Job {job['id']}: {job['state']}")
    write(f"  API:  {job['url']}")
    write(f"  Page: {job['page_url']}")
    if job.get("error"):
        write(f"  Error: {job['error']}")
    if job.get("standin"):
        write(STANDIN_BANNER)

    by_slug = {row["model"]: row for row in rankings}
    write("")
    write("Scores (out of 100):")
    for slug in job["models"]:
        row = by_slug.get(slug)
        if row is None:
            write(f"  {slug}: not scored")
            continue
        write(f"  {slug}: {row['composite']:.1f}/100 ({format_subscores(row['subscores'])})")

    write("")
    write("Ranking:")
    header = f"  {'rank':>4}  {'model':<36} {'task':<14} {'score':>6}  {'matches':>7}"
    write(header)
    for row in rankings:
        flags = " stand-in" if row.get("standin") else ""
        flags += " provisional" if row.get("provisional") else ""
        write(f"  {row['rank'] or '-':>4}  {row['model']:<36} {row['task']:<14} "
              f"{row['composite']:>6.1f}  {row['matches']:>7}{flags}")

    write("")
    write("Verdicts:")
    if not verdicts:
        write("  none")
    for verdict in verdicts:
        write(f"  [{verdict['state']}] {verdict['model_a']} vs {verdict['model_b']}: {verdict['text']}")


def command_user(username):
    """Return the user a management command acts as: ``username``, else the first superuser.

    With neither, a plain user ``cli`` is created so a fresh install can submit jobs.
    """
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    if username:
        user = users.filter(username=username).first()
        if user is None:
            raise CommandError(f"user '{username}' not found; create it with createsuperuser")
        return user
    user = users.filter(is_superuser=True).order_by("pk").first()
    if user is None:
        user, _ = users.get_or_create(username="cli")
    return user


def flatten_errors(detail):
    """Join DRF's nested validation detail into one line for a terminal."""
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {flatten_errors(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(flatten_errors(value) for value in detail)
    return str(detail)
