"""Writes to jobs, batches and results.

Views and tasks call these functions and nothing else writes job state. State changes are
conditional UPDATEs, so two deliveries of one task, or two workers, cannot both win.
"""

import logging
import random
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from backend.api.errors import ApiError
from backend.evaluation.models import ItemKind

from .models import Batch, BatchState, Job, JobKind, JobState, Result

logger = logging.getLogger(__name__)

ITEM_KIND_FOR_TASK = {"captioning": ItemKind.IMAGE, "text-to-image": ItemKind.PROMPT}


class BatchAttemptsExceeded(Exception):
    """A batch was delivered more often than VERSUS_MAX_BATCH_ATTEMPTS allows."""


def access_job(user, job_id, queryset=None):
    """Fetch a job the user may see: their own, or any for staff. Others get a 404."""
    queryset = queryset if queryset is not None else Job.objects.all()
    if not (user and user.is_authenticated):
        raise ApiError("Job not found.", code="not_found", status_code=404)
    if not user.is_staff:
        queryset = queryset.filter(owner=user)
    job = queryset.filter(pk=job_id).first()
    if job is None:
        raise ApiError(f"Job {job_id} not found.", code="not_found", status_code=404)
    return job


def sample_items(items, limit, seed):
    """Pick at most ``limit`` items, stratified by category, reproducibly for a seed.

    Each category gets a share proportional to its size (largest remainders first), then
    items are drawn within it with ``random.Random(seed)``. The result keeps suite order.
    """
    if limit is None or limit >= len(items):
        return list(items)
    by_category = defaultdict(list)
    for item in items:
        by_category[item.category].append(item)

    quotas = {}
    remainders = []
    for category, members in by_category.items():
        # Integer arithmetic, so equal remainders tie exactly and fall back to category order.
        quotas[category], remainder = divmod(limit * len(members), len(items))
        remainders.append((remainder, category))
    for _, category in sorted(remainders, key=lambda pair: (-pair[0], pair[1]))[: limit - sum(quotas.values())]:
        quotas[category] += 1

    rng = random.Random(seed)
    chosen = []
    for category in sorted(by_category):
        members = by_category[category]
        chosen.extend(rng.sample(members, quotas[category]))
    return sorted(chosen, key=lambda item: item.position)


def plan_batches(entries, suite, options):
    """Return ``[(entry, [item ids])]`` for every model, each chunk at most batch_size items."""
    plan = []
    batch_size = options["batch_size"]
    for entry in entries:
        kind = ITEM_KIND_FOR_TASK[entry.task]
        items = sample_items(list(suite.items.filter(kind=kind)), options.get("limit"), options["seed"])
        ids = [item.id for item in items]
        for start in range(0, len(ids), batch_size):
            plan.append((entry, ids[start:start + batch_size]))
    return plan


def submit_comparison(owner, entries, suite, options):
    """Create a comparison job with its batches and enqueue the batches after commit."""
    plan = plan_batches(entries, suite, options)
    if not plan:
        raise ApiError(
            f"Suite '{suite.slug}' has no items for the tasks of {[e.slug for e in entries]}; "
            "pick a suite with images for captioners and prompts for generators.",
            field="suite",
        )

    with transaction.atomic():
        job = Job.objects.create(
            kind=JobKind.COMPARISON, owner=owner, suite=suite, options=options,
            model_order=[entry.slug for entry in entries],
            progress_total=sum(len(ids) for _, ids in plan),
            standin=any(entry.checkpoint()[1] for entry in entries),
        )
        job.entries.set(entries)
        batches = Batch.objects.bulk_create(
            Batch(job=job, index=index, model=entry, item_ids=ids)
            for index, (entry, ids) in enumerate(plan)
        )
        batch_ids = [batch.id for batch in Batch.objects.filter(job=job).order_by("index")]
        transaction.on_commit(lambda: enqueue_batches(job.id, batch_ids))

    logger.info("job %s submitted by %s: models=%s suite=%s items=%d batches=%d",
                job.id, owner, job.model_order, suite.slug, job.progress_total, len(batches))
    return job


def enqueue_batches(job_id, batch_ids):
    """Send one run_batch message per batch; a broker outage leaves them to the sweep.

    The job and its batches are already committed as queued, so a failed publish loses
    nothing: ``tasks.maintenance.sweep_stalled_jobs`` re-enqueues batches that stay queued.
    """
    from kombu.exceptions import OperationalError as BrokerError

    from tasks.comparison import enqueue_batch

    for batch_id in batch_ids:
        try:
            enqueue_batch(batch_id)
        except BrokerError:
            logger.exception("job %s: could not enqueue batch %s; the sweep will retry it",
                             job_id, batch_id)
            return


def rerun_comparison(job, owner, option_overrides=None):
    """Submit a new comparison with the models, suite and options recorded on ``job``.

    ``option_overrides`` replaces single options, for example ``batch_size``. Seeds and
    everything else come from the original job, so on CPU the new job's metrics equal the
    original's.
    """
    from backend.catalog.models import ModelEntry

    if job.kind != JobKind.COMPARISON or job.suite_id is None:
        raise ApiError(f"Job {job.id} is a {job.kind} job; only comparisons can be re-run.",
                       code="conflict", status_code=409)
    entries = {entry.slug: entry for entry in ModelEntry.objects.filter(slug__in=job.model_order)}
    missing = [slug for slug in job.model_order if slug not in entries]
    if missing:
        raise ApiError(f"Job {job.id} cannot be re-run: models {missing} are no longer in the catalog.",
                       code="conflict", status_code=409)
    options = dict(job.options)
    options.update(option_overrides or {})
    new_job = submit_comparison(owner, [entries[slug] for slug in job.model_order], job.suite, options)
    logger.info("job %s re-run as %s by %s", job.id, new_job.id, owner)
    return new_job


class BatchLeaseHeld(Exception):
    """Another worker ran this batch recently; retry after ``seconds``."""

    def __init__(self, worker, seconds):
        super().__init__(f"batch is running on {worker}; retry in {seconds:.0f}s")
        self.worker, self.seconds = worker, seconds


def claim_batch(batch_id, worker):
    """Mark a batch running for this worker; return it, or None when there is nothing to do.

    A queued batch is claimed at once. A running one is claimed only once its worker's
    heartbeat is older than VERSUS_BATCH_LEASE seconds. So a re-delivered message takes over
    from a dead worker but never runs a batch twice at the same time. Before the lease
    expires, the claim raises BatchLeaseHeld. Each claim counts an attempt, and past VERSUS_MAX_BATCH_ATTEMPTS the
    batch and its job fail instead of looping forever.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.VERSUS_BATCH_LEASE)
    with transaction.atomic():
        job_active = Job.objects.filter(
            batches__pk=batch_id, state__in=[JobState.QUEUED, JobState.RUNNING], cancel_requested=False,
        ).exists()
        # The UPDATE filters on the batch row alone: with a join, PostgreSQL would re-check only
        # the row id after waiting for a concurrent claim, and both claims would succeed.
        claimed = job_active and Batch.objects.filter(
            Q(state=BatchState.QUEUED)
            | Q(state=BatchState.RUNNING, heartbeat_at__lt=stale)
            | Q(state=BatchState.RUNNING, heartbeat_at__isnull=True),
            pk=batch_id,
        ).update(state=BatchState.RUNNING, attempts=F("attempts") + 1, worker=worker, started_at=now,
                 heartbeat_at=now)
        if not claimed:
            batch = Batch.objects.filter(pk=batch_id).select_related("job").first()
            if batch and batch.state in (BatchState.QUEUED, BatchState.RUNNING) and batch.job.is_terminal:
                Batch.objects.filter(pk=batch_id, state=batch.state).update(state=BatchState.CANCELLED)
            elif batch and batch.state == BatchState.RUNNING and not batch.job.cancel_requested:
                remaining = (batch.heartbeat_at - stale).total_seconds()
                raise BatchLeaseHeld(batch.worker, max(1.0, remaining))
            return None

        batch = Batch.objects.select_related("job", "model").get(pk=batch_id)
        Job.objects.filter(pk=batch.job_id, state=JobState.QUEUED).update(
            state=JobState.RUNNING, started_at=now)
        Job.objects.filter(pk=batch.job_id).update(heartbeat_at=now)

    if batch.attempts > settings.VERSUS_MAX_BATCH_ATTEMPTS:
        message = (f"batch {batch.index} was started {batch.attempts} times (limit "
                   f"{settings.VERSUS_MAX_BATCH_ATTEMPTS}); its worker keeps dying, often from "
                   "running out of memory: lower batch_size or raise the worker's memory")
        fail_batch(batch_id, message)
        raise BatchAttemptsExceeded(message)
    return batch


def beat_batch(batch_id, worker):
    """Renew a running batch's lease; return False when the batch is no longer this worker's."""
    return bool(Batch.objects.filter(pk=batch_id, state=BatchState.RUNNING, worker=worker).update(
        heartbeat_at=timezone.now()))


def next_queued_batch_id(model_id):
    """Return the oldest queued batch id of a model in an active job, or None."""
    return Batch.objects.filter(
        state=BatchState.QUEUED, model_id=model_id,
        job__state__in=[JobState.QUEUED, JobState.RUNNING], job__cancel_requested=False,
    ).order_by("job__created_at", "index").values_list("id", flat=True).first()


def store_batch_results(batch, outputs, report):
    """Upsert one result per item and mark the batch succeeded, in one transaction.

    Results are keyed by (job, model, item), so a batch run twice overwrites its own rows.
    Returns True when this call completed the batch, False when it was already finished.
    """
    from django.core.files import File

    with transaction.atomic():
        for output in outputs:
            fields = {"batch": batch, "output": output["output"], "metrics": output["metrics"]}
            result, _ = Result.objects.update_or_create(
                job_id=batch.job_id, model_id=batch.model_id, item_id=output["item_id"],
                defaults=fields,
            )
            if output.get("image_path"):
                with open(output["image_path"], "rb") as handle:
                    name = f"{batch.job_id}/{batch.model.slug}/{output['item_id']}.png"
                    result.image.save(name, File(handle), save=True)

        finished = Batch.objects.filter(pk=batch.pk, state=BatchState.RUNNING).update(
            state=BatchState.SUCCEEDED, finished_at=timezone.now(), report=report, error="",
        )
        if finished:
            refresh_progress(batch.job_id)
    return bool(finished)


def stop_cancelled_batch(batch_id):
    """Mark a batch that stopped mid-run because its job was cancelled; its items are dropped."""
    Batch.objects.filter(pk=batch_id, state=BatchState.RUNNING).update(
        state=BatchState.CANCELLED, finished_at=timezone.now(), error="stopped: job cancelled")
    logger.info("batch %s stopped at a step because its job was cancelled", batch_id)


def refresh_progress(job_id):
    """Recompute a job's done-item count from its succeeded batches (safe to repeat)."""
    done = 0
    for item_ids in Batch.objects.filter(job_id=job_id, state=BatchState.SUCCEEDED).values_list(
            "item_ids", flat=True):
        done += len(item_ids)
    Job.objects.filter(pk=job_id).update(progress_done=done, heartbeat_at=timezone.now())


def fail_batch(batch_id, message):
    """Mark a batch failed and fail its job, keeping results stored so far."""
    with transaction.atomic():
        Batch.objects.filter(pk=batch_id).exclude(state=BatchState.SUCCEEDED).update(
            state=BatchState.FAILED, error=message, finished_at=timezone.now(),
        )
        batch = Batch.objects.select_related("job").get(pk=batch_id)
        finish_job(batch.job, JobState.FAILED, f"batch {batch.index} ({batch.model.slug}): {message}")
    logger.error("job %s batch %s failed: %s", batch.job_id, batch.index, message)


def finish_job(job, state, error=""):
    """Move a job from queued/running to a terminal state once; emit its webhook event.

    Must run inside a transaction so the event commits with the state change. Returns True
    when this call made the change.
    """
    from backend.webhooks.actions import emit_event

    changed = Job.objects.filter(
        pk=job.pk, state__in=[JobState.QUEUED, JobState.RUNNING],
    ).update(state=state, error=error, finished_at=timezone.now())
    if not changed:
        return False
    job.refresh_from_db()
    if state != JobState.SUCCEEDED:
        Batch.objects.filter(job=job, state=BatchState.QUEUED).update(state=BatchState.CANCELLED)
        event = "job.failed" if state == JobState.FAILED else "job.cancelled"
        emit_event(event, job_summary(job), owner=job.owner)
    logger.info("job %s %s%s", job.id, state, f": {error}" if error else "")
    return True


def cancel_job(job):
    """Stop a job: no new batch starts, running ones stop at their next step, results stay."""
    with transaction.atomic():
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        changed = finish_job(job, JobState.CANCELLED, "cancelled by request")
    if not changed:
        job.refresh_from_db()
        raise ApiError(f"Job {job.id} is already {job.state}; only queued or running jobs can be "
                       "cancelled.", code="conflict", status_code=409)
    return job


def pending_batches(job_id):
    return Batch.objects.filter(job_id=job_id).exclude(state=BatchState.SUCCEEDED).count()


def job_summary(job):
    """Plain-data summary of a job for webhook payloads and the CLI."""
    return {
        "id": str(job.id),
        "kind": job.kind,
        "state": job.state,
        "models": job.model_order,
        "suite": job.suite.slug if job.suite_id else None,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "error": job.error,
        "metrics": job.metrics,
        "standin": job.standin,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "url": f"{settings.VERSUS_PUBLIC_URL}/api/v1/jobs/{job.id}/",
        "results_url": f"{settings.VERSUS_PUBLIC_URL}/api/v1/jobs/{job.id}/results/",
        "page_url": f"{settings.VERSUS_PUBLIC_URL}/jobs/{job.id}/",
    }


def jobs_visible_to(user):
    if user.is_staff:
        return Job.objects.all()
    return Job.objects.filter(owner=user)


__all__ = [
    "BatchAttemptsExceeded", "access_job", "cancel_job", "claim_batch", "fail_batch",
    "finish_job", "job_summary", "jobs_visible_to", "pending_batches", "plan_batches",
    "refresh_progress", "sample_items", "store_batch_results", "submit_comparison",
]


def retry_failed_batches(job):
    """Requeue the unfinished batches of a failed comparison job and set it running again.

    A failed batch fails its whole job and cancels the job's queued batches. So both the
    failed and the cancelled batches go back to ``queued`` with their attempt count reset,
    while succeeded batches and their results stay. Returns the number of requeued batches.
    Raises ApiError (409) unless the job is a failed comparison.
    """
    from tasks.comparison import enqueue_finalize

    if job.kind != JobKind.COMPARISON:
        raise ApiError(f"Job {job.id} is a {job.kind} job; only comparison batches can be retried.",
                       code="conflict", status_code=409)
    with transaction.atomic():
        changed = Job.objects.filter(pk=job.pk, state=JobState.FAILED).update(
            state=JobState.RUNNING, error="", finished_at=None, cancel_requested=False,
            heartbeat_at=timezone.now(),
        )
        if not changed:
            job.refresh_from_db()
            raise ApiError(f"Job {job.id} is {job.state}; only failed jobs can retry their batches.",
                           code="conflict", status_code=409)
        retry = Batch.objects.filter(job=job, state__in=[BatchState.FAILED, BatchState.CANCELLED])
        batch_ids = list(retry.order_by("index").values_list("id", flat=True))
        retry.update(state=BatchState.QUEUED, attempts=0, error="", worker="",
                     started_at=None, finished_at=None)
        if batch_ids:
            transaction.on_commit(lambda: enqueue_batches(job.id, batch_ids))
        else:
            # Every batch succeeded and the job failed later, while scoring: score it again.
            transaction.on_commit(lambda: enqueue_finalize(job.id))
    job.refresh_from_db()
    logger.info("job %s: %d failed or cancelled batches requeued", job.id, len(batch_ids))
    return len(batch_ids)


__all__ += ["retry_failed_batches"]
