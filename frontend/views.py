"""Public pages: leaderboard, A-vs-B comparisons, model pages and private job pages.

These views only read. Job pages go through ``backend.jobs.actions.access_job``, so the
submitter and staff see a job and everyone else gets a 404.
"""

from collections import defaultdict

from django.contrib.auth.views import redirect_to_login
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from backend.api.errors import ApiError
from backend.catalog.models import ModelEntry, Task
from backend.evaluation.models import ModelScore, RankSnapshot, Verdict, VerdictState
from backend.evaluation.scoring import SUBSCORES
from backend.jobs.actions import access_job
from backend.jobs.models import Batch, Job, JobKind, JobState
from backend.jobs.serializers import STANDIN_NOTE

from .gallery import build_gallery
from .panels import render_job_panels
from .plots import history_chart, sparkline

SUBSCORE_LABELS = {
    "quality": "Quality", "adoption": "Adoption", "ecosystem": "Ecosystem",
    "match_graph": "Match graph", "speed": "Speed",
}
# Snapshots drawn in a leaderboard sparkline and in a model's score history.
SPARKLINE_SNAPSHOTS = 30
HISTORY_SNAPSHOTS = 100
# Batches listed on the job page; larger jobs show counts per state only.
MAX_BATCH_ROWS = 200


def subscore_bars(subscores):
    """Return ``[{"name", "label", "value", "percent"}]`` in the composite's weight order."""
    bars = []
    for name in SUBSCORES:
        value = (subscores or {}).get(name)
        bars.append({"name": name, "label": SUBSCORE_LABELS.get(name, name), "value": value,
                     "percent": None if value is None else round(100 * max(0.0, min(value, 1.0)), 1)})
    return bars


def rank_history(limit=SPARKLINE_SNAPSHOTS):
    """Return ``{slug: [rank or None, ...]}`` over the latest ``limit`` snapshots, oldest first."""
    snapshots = list(RankSnapshot.objects.order_by("-created_at", "-id")[:limit])[::-1]
    history = defaultdict(lambda: [None] * len(snapshots))
    for index, snapshot in enumerate(snapshots):
        for row in snapshot.entries:
            history[row["slug"]][index] = row.get("rank")
    return history


def leaderboard(request):
    task = request.GET.get("task", "")
    status, error = 200, ""
    scores = ModelScore.objects.select_related("model").order_by("rank", "model__slug")
    if task and task not in Task.values:
        status = 400
        error = f"Unknown task '{task}'; pick one of: {', '.join(Task.values)}."
        scores = scores.none()
    elif task:
        scores = scores.filter(model__task=task)

    history = rank_history()
    rows = []
    for score in scores:
        ranks = history.get(score.model.slug, [])
        rows.append({
            "score": score, "entry": score.model, "bars": subscore_bars(score.subscores),
            "sparkline": sparkline(ranks, lower_is_better=True,
                                   label=f"Rank history of {score.model.slug}: "
                                         + ", ".join("–" if r is None else str(r) for r in ranks)),
        })
    verdicts = (Verdict.objects.filter(state=VerdictState.APPROVED)
                .select_related("model_a", "model_b", "leader").order_by("model_a__slug", "model_b__slug"))
    if task in Task.values:
        verdicts = verdicts.filter(Q(model_a__task=task) | Q(model_b__task=task))
    context = {
        "rows": rows, "task": task, "tasks": Task.choices, "error": error,
        "any_standin": any(row["score"].standin for row in rows), "standin_note": STANDIN_NOTE,
        "verdicts": verdicts,
    }
    return render(request, "frontend/leaderboard.html", context, status=status)


def _compare_rows(sides):
    """Rows of the A-vs-B table: ``{"label", "cells": [{"text", "bar", "best"}]}``."""

    def row(label, values, texts=None, bars=None, better=max):
        # The better value is highlighted only when every side has a number and they differ.
        numeric = all(isinstance(value, (int, float)) for value in values)
        best = better(values) if better and numeric and len(set(values)) > 1 else None
        cells = []
        for index, value in enumerate(values):
            if texts:
                text = texts[index]
            else:
                text = "—" if value in (None, "") else value
            cells.append({
                "text": text,
                "bar": bars[index] if bars else None,
                "best": best is not None and value == best,
            })
        return {"label": label, "cells": cells}

    scores = [side["score"] for side in sides]
    entries = [side["entry"] for side in sides]
    rows = [
        row("Type", [e.get_task_display() for e in entries], better=None),
        row("Rank", [s.rank if s else None for s in scores],
            texts=[f"#{s.rank}" if s and s.rank else "—" for s in scores], better=min),
        row("Score /100", [round(s.composite, 1) if s else None for s in scores],
            texts=[f"{s.composite:.1f}" if s else "—" for s in scores],
            bars=[s.composite if s else None for s in scores]),
    ]
    for name in ("adoption", "quality", "ecosystem", "match_graph", "speed"):
        values = [(s.subscores or {}).get(name) if s else None for s in scores]
        rows.append(row(SUBSCORE_LABELS[name], values,
                        texts=["—" if v is None else f"{100 * v:.1f}" for v in values],
                        bars=[None if v is None else 100 * v for v in values]))
    rows += [
        row("Pricing", [e.pricing or "—" for e in entries], better=None),
        row("Capabilities", [len(e.capabilities or []) for e in entries]),
        row("Times matched", [s.matches if s else 0 for s in scores]),
    ]
    return rows


def compare(request, slug_a, slug_b):
    if slug_a > slug_b:
        return redirect("frontend:compare", slug_a=slug_b, slug_b=slug_a)
    verdict = (Verdict.objects.filter(model_a__slug=slug_a, model_b__slug=slug_b, state=VerdictState.APPROVED)
               .select_related("model_a", "model_b", "leader").first())
    if verdict is None:
        raise Http404(f"No published verdict for {slug_a} vs {slug_b}.")

    entries = [verdict.model_a, verdict.model_b]
    scores = {score.model_id: score for score in ModelScore.objects.filter(model__in=entries)}
    sides = [{"entry": entry, "score": scores.get(entry.pk)} for entry in entries]
    job = (Job.objects.filter(kind=JobKind.COMPARISON, state=JobState.SUCCEEDED, entries=entries[0])
           .filter(entries=entries[1]).order_by("-finished_at", "-created_at").first())
    standin = bool(verdict.structured.get("standin")) or any(s["score"] and s["score"].standin for s in sides)
    context = {
        "verdict": verdict, "sides": sides, "rows": _compare_rows(sides), "job": job,
        "gallery": build_gallery(job, models=entries, limit=6) if job else None,
        "standin": standin, "standin_note": STANDIN_NOTE,
    }
    return render(request, "frontend/compare.html", context)


def score_history(slug, limit=HISTORY_SNAPSHOTS):
    """Return ``[(created_at, composite, rank)]`` of ``slug`` over the latest snapshots, oldest first."""
    points = []
    for snapshot in RankSnapshot.objects.order_by("-created_at", "-id")[:limit]:
        for row in snapshot.entries:
            if row.get("slug") == slug and row.get("composite") is not None:
                points.append((snapshot.created_at, float(row["composite"]), row.get("rank")))
    return points[::-1]


def model_detail(request, slug):
    entry = get_object_or_404(ModelEntry.objects.select_related("base"), slug=slug)
    score = ModelScore.objects.filter(model=entry).first()
    jobs = Job.objects.filter(kind=JobKind.COMPARISON, state=JobState.SUCCEEDED, entries=entry)
    latest_job = jobs.order_by("-finished_at").first()
    verdicts = Verdict.objects.filter(Q(model_a=entry) | Q(model_b=entry), state=VerdictState.APPROVED)
    context = {
        "entry": entry, "score": score, "bars": subscore_bars(score.subscores if score else {}),
        "chart": history_chart(score_history(entry.slug), label=f"Composite score history of {entry.slug}"),
        "jobs_count": jobs.count(), "latest_job": latest_job,
        "adapters": entry.adapters.order_by("slug"),
        "verdicts": verdicts.select_related("model_a", "model_b", "leader"),
        "standin_note": STANDIN_NOTE,
    }
    return render(request, "frontend/model.html", context)


def _visible_job(request, job_id):
    try:
        return access_job(request.user, job_id, Job.objects.select_related("suite", "owner"))
    except ApiError as exc:
        raise Http404(str(exc.detail)) from exc


def progress_data(job):
    """Plain-data progress of a job for the page's poller."""
    counts = defaultdict(int)
    batch_rows = []
    batches = Batch.objects.filter(job=job).select_related("model").order_by("index")
    for batch in batches:
        counts[batch.state] += 1
        if len(batch_rows) < MAX_BATCH_ROWS:
            batch_rows.append({"index": batch.index, "model": batch.model.slug, "state": batch.state,
                               "attempts": batch.attempts, "size": batch.size, "error": batch.error})
    return {
        "id": str(job.id),
        "state": job.state,
        "state_label": job.get_state_display(),
        "terminal": job.is_terminal,
        "done": job.progress_done,
        "total": job.progress_total,
        "percent": round(100 * job.progress_fraction, 1),
        "detail": job.progress_detail,
        "batches": {"total": sum(counts.values()), "by_state": dict(counts), "rows": batch_rows},
        "error": job.error,
        "duration_s": round(job.duration_s, 1) if job.duration_s is not None else None,
    }




def job_scores(job):
    """Return each model's current score and this job's primary metric, for the job page."""
    if not job.is_terminal or job.kind != "comparison":
        return []
    from backend.evaluation.models import ModelScore

    scores = {score.model.slug: score for score in
              ModelScore.objects.filter(model__slug__in=job.model_order).select_related("model")}
    rows = []
    for slug in job.model_order:
        metrics = (job.metrics or {}).get(slug, {})
        score = scores.get(slug)
        rows.append({
            "slug": slug, "score": score, "primary_metric": metrics.get("primary_metric"),
            "primary": metrics.get("primary"), "items_per_second": metrics.get("items_per_second"),
        })
    return rows


@never_cache
def job_detail(request, job_id):
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    job = _visible_job(request, job_id)
    progress = progress_data(job)
    context = {
        "job": job, "progress": progress, "by_state": sorted(progress["batches"]["by_state"].items()),
        "gallery": build_gallery(job) if job.is_terminal else None,
        "verdicts": job.verdicts.select_related("model_a", "model_b", "leader"),
        "scores": job_scores(job),
        "panels": render_job_panels(job),
        "standin_note": STANDIN_NOTE,
        "progress_url": reverse("frontend:job-progress", args=[job.id]),
        "gallery_url": reverse("frontend:job-gallery", args=[job.id]),
    }
    return render(request, "frontend/job.html", context)


@never_cache
def job_progress(request, job_id):
    try:
        job = access_job(request.user, job_id)
    except ApiError as exc:
        return JsonResponse({"error": {"code": "not_found", "message": str(exc.detail)}}, status=404)
    return JsonResponse(progress_data(job))


@never_cache
def job_gallery(request, job_id):
    """Render the results gallery alone; the job page fetches it when the job ends."""
    if not request.user.is_authenticated:
        raise Http404("Job not found.")
    job = _visible_job(request, job_id)
    context = {"gallery": build_gallery(job), "job": job, "panels": render_job_panels(job),
               "scores": job_scores(job),
               "verdicts": job.verdicts.select_related("model_a", "model_b", "leader"),
               "standin_note": STANDIN_NOTE}
    return render(request, "frontend/_job_results.html", context)
