"""Turning stored results into metrics, matches, ratings, ranks and verdicts.

The math lives in the pure modules ``metrics``, ``ratings``, ``scoring`` and ``verdicts``;
this module reads rows, calls them and writes rows. Everything here is recomputed from
stored evidence, so running it twice gives the same rows.
"""

import hashlib
import json
import logging
from collections import defaultdict
from itertools import combinations

from django.db import transaction
from django.utils import timezone

from backend.catalog.models import ModelEntry
from backend.jobs.models import Batch, Job, JobKind, JobState, Result

from . import metrics as metric_lib
from . import ratings as rating_lib
from . import scoring, verdicts
from .models import Match, ModelScore, RankSnapshot, Verdict, VerdictState

logger = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0
TIE_TOLERANCE = 0.01


def evidence_row(result):
    """Flatten one stored result into the per-item dict the pure metric functions read."""
    item = result.item
    row = dict(result.metrics)
    row.update(item_id=item.id, category=item.category or None, challenge=item.challenge or None)
    if item.kind == "image":
        row.update(caption=result.output.get("text", ""), entities=result.output.get("entities", []),
                   reference_objects=item.reference_objects)
    return row


def batch_wall_seconds(batches):
    total = 0.0
    for report in batches.values_list("report", flat=True):
        total += float((report or {}).get("inference_time_s") or (report or {}).get("wall_time_s") or 0.0)
    return total or None


def peak_memory_bytes(batches):
    """Return the highest peak memory any of the batches reported, or None."""
    peaks = [(report or {}).get("peak_memory_bytes") for report in batches.values_list("report", flat=True)]
    peaks = [peak for peak in peaks if peak is not None]
    return max(peaks) if peaks else None


def job_model_metrics(job, entry):
    """Aggregate one model's results in one job, with breakdowns by category and challenge."""
    results = Result.objects.filter(job=job, model=entry).select_related("item")
    rows = [evidence_row(result) for result in results]
    batches = Batch.objects.filter(job=job, model=entry)
    summary = metric_lib.aggregate(entry.task, rows, batch_wall_seconds(batches))
    summary["peak_memory_bytes"] = peak_memory_bytes(batches)
    if entry.task == "text-to-image":
        summary["by_category"] = metric_lib.breakdown(rows, "category", task=entry.task)
        summary["by_challenge"] = metric_lib.breakdown(rows, "challenge", task=entry.task)
    return summary, rows


def store_job_matches(job, per_model_rows):
    """Create one match per item for every same-task pair of the job's models."""
    by_task = defaultdict(dict)
    for entry, rows in per_model_rows.items():
        primary = metric_lib.PRIMARY_METRIC[entry.task]
        by_task[entry.task][entry.slug] = {row["item_id"]: row.get(primary) for row in rows}

    entries = {entry.slug: entry for entry in per_model_rows}
    Match.objects.filter(job=job).delete()
    created = []
    for task, per_item in by_task.items():
        for match in rating_lib.pairwise_outcomes(per_item, tolerance=TIE_TOLERANCE):
            created.append(Match(
                job=job, item_id=match.item_id, model_a=entries[match.model_a],
                model_b=entries[match.model_b], metric=metric_lib.PRIMARY_METRIC[task],
                score_a=match.score_a, score_b=match.score_b, outcome=match.outcome,
            ))
    Match.objects.bulk_create(created)
    return len(created)


def build_manifest(job):
    """Everything the job's numbers depend on, for reproducing them."""
    batches = list(job.batches.select_related("model").order_by("index"))
    models = {}
    for batch in batches:
        report = batch.report or {}
        entry = models.setdefault(batch.model.slug, {
            "checkpoint": report.get("manifest", {}).get("checkpoint"),
            "adapter": report.get("manifest", {}).get("adapter"),
            "judge_checkpoint": report.get("manifest", {}).get("judge_checkpoint"),
            "standin": report.get("standin"),
            "device": report.get("device"),
            "dtype": report.get("dtype"),
            "batch_sizes": [],
        })
        entry["batch_sizes"].append(batch.size)
    first = next((b.report for b in batches if b.report), {}) or {}
    return {
        "suite": {"slug": job.suite.slug, "sha256": job.suite.content_sha256} if job.suite_id else None,
        "options": job.options,
        "seed": job.options.get("seed", 0),
        "models": models,
        "versions": first.get("manifest", {}).get("versions", {}),
        "hosts": sorted({(b.report or {}).get("manifest", {}).get("host", "") for b in batches} - {""}),
        "scoring": {"weights": scoring.WEIGHTS, "tie_tolerance": TIE_TOLERANCE,
                    "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}},
    }


def finalize_comparison(job_id):
    """Score a comparison job whose batches all succeeded and mark it succeeded, once.

    Runs in one transaction: a crash part-way leaves the job running and the re-delivered
    finalize task starts over.
    """
    from backend.jobs.actions import job_summary
    from backend.webhooks.actions import emit_event

    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state not in (JobState.QUEUED, JobState.RUNNING):
            return None
        entries = [ModelEntry.objects.get(slug=slug) for slug in job.model_order]

        per_model_rows = {}
        job_metrics = {}
        for entry in entries:
            summary, rows = job_model_metrics(job, entry)
            job_metrics[entry.slug] = summary
            per_model_rows[entry] = rows
        n_matches = store_job_matches(job, per_model_rows)

        standin = any((b.report or {}).get("standin") for b in job.batches.all())
        job.metrics = job_metrics
        job.standin = standin
        job.manifest = build_manifest(job)
        job.state = JobState.SUCCEEDED
        job.finished_at = timezone.now()
        job.progress_done = job.progress_total
        job.progress_detail = {}
        job.save(update_fields=["metrics", "standin", "manifest", "state", "finished_at", "progress_done",
                                "progress_detail"])
        ModelEntry.objects.filter(slug__in=job.model_order).update(is_standin=standin)

        recompute_rankings(reason=f"job {job.id}")
        job_verdicts = update_verdicts(entries, job)

        summary = job_summary(job)
        summary["scores"] = {
            score.model.slug: {"composite": score.composite, "rank": score.rank, "subscores": score.subscores}
            for score in ModelScore.objects.filter(model__in=entries).select_related("model")
        }
        summary["verdicts"] = [
            {"a": v.model_a.slug, "b": v.model_b.slug, "leader": v.leader.slug if v.leader else None,
             "text": v.text, "state": v.state}
            for v in job_verdicts
        ]
        emit_event("evaluation.completed", summary, owner=job.owner)

    logger.info("job %s succeeded: %d models, %d matches", job.id, len(entries), n_matches)
    return job


def catalog_fields(entry):
    return {
        "downloads": entry.downloads, "likes": entry.likes, "license": entry.license,
        "open_weights": entry.open_weights, "integrations": entry.integrations,
        "supports_lora": entry.supports_lora, "supports_quantization": entry.supports_quantization,
    }


def succeeded_results():
    return Result.objects.filter(job__state=JobState.SUCCEEDED, job__kind=JobKind.COMPARISON)


def _ratings_by_task(entries_by_task):
    """Fit Bradley-Terry ratings with bootstrap intervals per task over all stored matches."""
    ratings = {}
    for task, entries in entries_by_task.items():
        slugs = sorted(entry.slug for entry in entries)
        matches = [
            rating_lib.Match(m.item_id, m.model_a.slug, m.model_b.slug, m.outcome, m.score_a, m.score_b)
            for m in Match.objects.filter(model_a__task=task, job__state=JobState.SUCCEEDED)
            .select_related("model_a", "model_b").order_by("job__created_at", "id")
        ]
        if not matches:
            continue
        fitted = rating_lib.bradley_terry(matches, slugs)
        intervals = rating_lib.bootstrap_intervals(
            matches, slugs, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
        match_count = rating_lib.match_counts(matches, slugs)
        for slug in slugs:
            ratings[slug] = {
                "rating": fitted[slug], "interval": intervals[slug],
                "field": [fitted[s] for s in slugs], "match_counts": match_count.get(slug, {}),
                "possible_opponents": len(slugs) - 1,
            }
    return ratings


def recompute_rankings(reason=""):
    """Recompute every scored model's sub-scores, composite and rank from stored evidence.

    Takes a lock on the catalog rows so two recomputes run one after the other. Stores a
    snapshot when the leaderboard changed and emits ``ranking.changed`` then.
    """
    from backend.webhooks.actions import emit_event

    with transaction.atomic():
        list(ModelEntry.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
        evidence = defaultdict(list)
        jobs_by_model = defaultdict(set)
        for result in succeeded_results().select_related("item", "model"):
            evidence[result.model_id].append(evidence_row(result))
            jobs_by_model[result.model_id].add(str(result.job_id))

        entries = list(ModelEntry.objects.filter(pk__in=evidence.keys()))
        entries_by_task = defaultdict(list)
        for entry in entries:
            entries_by_task[entry.task].append(entry)
        ratings = _ratings_by_task(entries_by_task)

        composites = {}
        rows = {}
        for entry in entries:
            batches = Batch.objects.filter(model=entry, job__state=JobState.SUCCEEDED,
                                           job__kind=JobKind.COMPARISON)
            summary = metric_lib.aggregate(entry.task, evidence[entry.pk], batch_wall_seconds(batches))
            rating = ratings.get(entry.slug, {})
            match_count = rating.get("match_counts", {})
            scored = scoring.score_model(
                entry.task, summary, catalog_fields(entry),
                rating=rating.get("rating"), field_ratings=rating.get("field", ()),
                opponents_met=match_count.get("opponents", 0),
                possible_opponents=rating.get("possible_opponents", 0),
                n_matches=match_count.get("matches", 0),
            )
            scored["provenance"]["jobs"] = sorted(jobs_by_model[entry.pk])
            standin = Job.objects.filter(
                pk__in=jobs_by_model[entry.pk], standin=True).exists()
            rows[entry] = (summary, scored, rating, match_count, standin)
            composites[entry.slug] = scored["composite"]

        ranking = {row["slug"]: row["rank"] for row in scoring.rank_models(composites)}
        snapshot_entries = []
        for entry, (summary, scored, rating, match_count, standin) in sorted(rows.items(), key=lambda kv: kv[0].slug):
            interval = rating.get("interval")
            n_matches = match_count.get("matches", 0)
            ModelScore.objects.update_or_create(model=entry, defaults={
                "subscores": scored["subscores"], "composite": scored["composite"],
                "rank": ranking[entry.slug], "metrics": summary, "provenance": scored["provenance"],
                "rating": rating.get("rating"),
                "rating_low": interval[0] if interval else None,
                "rating_high": interval[1] if interval else None,
                "matches": n_matches, "provisional": rating_lib.is_provisional(n_matches),
                "standin": standin,
            })
            snapshot_entries.append({
                "slug": entry.slug, "rank": ranking[entry.slug], "composite": round(scored["composite"], 6),
                "subscores": {k: (round(v, 6) if v is not None else None)
                              for k, v in scored["subscores"].items()},
                "rating": round(rating["rating"], 6) if rating.get("rating") is not None else None,
                "matches": n_matches,
            })

        sha = hashlib.sha256(json.dumps(snapshot_entries, sort_keys=True).encode()).hexdigest()
        latest = RankSnapshot.objects.first()
        if latest is None or latest.content_sha256 != sha:
            RankSnapshot.objects.create(reason=reason, entries=snapshot_entries, content_sha256=sha)
            previous = {row["slug"]: row["rank"] for row in (latest.entries if latest else [])}
            current = {row["slug"]: row["rank"] for row in snapshot_entries}
            if previous != current:
                emit_event("ranking.changed", {"reason": reason, "previous": previous,
                                               "ranking": snapshot_entries})
    logger.info("rankings recomputed (%s): %d models", reason or "manual", len(rows))
    return rows


def verdict_side(entry):
    score = ModelScore.objects.filter(model=entry).first()
    side = {
        "slug": entry.slug, "name": entry.name, "task": entry.task,
        "composite": score.composite if score else 0.0,
        "subscores": score.subscores if score else {},
        "standin": score.standin if score else False,
        "evidence": score.provenance.get("jobs", []) if score else [],
    }
    if score and score.rating_low is not None:
        side["interval"] = (score.rating_low, score.rating_high)
    return side


def update_verdicts(entries, job=None):
    """Write a draft verdict for every pair among ``entries`` from their current scores.

    A verdict whose generated text changed goes back to draft for review; an unchanged one
    keeps its review state.
    """
    written = []
    for first, second in combinations(sorted(entries, key=lambda e: e.slug), 2):
        same_task = first.task == second.task
        side_a, side_b = verdict_side(first), verdict_side(second)
        if not same_task:
            side_a.pop("interval", None)
            side_b.pop("interval", None)
        structured = verdicts.build_verdict(side_a, side_b, same_task=same_task)
        structured["standin"] = bool(side_a["standin"] or side_b["standin"])
        leader = {first.slug: first, second.slug: second}.get(structured["leader"])

        verdict = Verdict.objects.filter(model_a=first, model_b=second).first()
        if verdict and verdict.generated_text == structured["text"]:
            verdict.structured = structured
            verdict.job = job or verdict.job
            verdict.save(update_fields=["structured", "job", "updated_at"])
        else:
            verdict = verdict or Verdict(model_a=first, model_b=second)
            verdict.text = verdict.generated_text = structured["text"]
            verdict.structured, verdict.leader, verdict.job = structured, leader, job
            verdict.state, verdict.reviewed_by, verdict.reviewed_at = VerdictState.DRAFT, None, None
            verdict.save()
        written.append(verdict)
    return written
