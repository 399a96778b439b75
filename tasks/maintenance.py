"""Periodic housekeeping: find work whose broker message or worker was lost, and resume it.

The broker only carries ids, so anything lost with it (a Redis restart without persistence,
a worker killed past the visibility timeout) is visible in the database as a batch that
stays queued or running too long. ``sweep_stalled_jobs`` runs every minute from Celery beat
(see ``backend/celery.py``).
"""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from backend.jobs.models import Batch, BatchState, Job, JobKind, JobState

logger = logging.getLogger(__name__)


def requeue_after():
    """Seconds a batch may wait in ``queued`` before its message counts as lost."""
    return getattr(settings, "VERSUS_REQUEUE_AFTER", 900)


def running_grace():
    """Seconds without a lease renewal after which a ``running`` batch counts as orphaned."""
    return 3 * settings.VERSUS_BATCH_LEASE + getattr(settings, "VERSUS_RUNNING_GRACE", 120)


def sweep_once(now=None):
    """Re-enqueue lost batches and finalize jobs whose finalize message was lost.

    Returns counts of what it did. Safe to run from several beat processes at once: each
    re-enqueue is guarded by a conditional update, and a duplicate delivery of a batch is
    harmless (results are upserted and the claim counts attempts).
    """
    from tasks.comparison import enqueue_batch, enqueue_finalize

    now = now or timezone.now()
    active_jobs = Job.objects.filter(
        kind=JobKind.COMPARISON, state__in=[JobState.QUEUED, JobState.RUNNING], cancel_requested=False,
    )
    counts = {"requeued_queued": 0, "requeued_running": 0, "finalized": 0}

    stale_queued = Batch.objects.filter(
        job__in=active_jobs, state=BatchState.QUEUED, queued_at__lt=now - timedelta(seconds=requeue_after()),
    )
    for batch_id, queued_at in stale_queued.values_list("id", "queued_at"):
        if Batch.objects.filter(pk=batch_id, state=BatchState.QUEUED, queued_at=queued_at).update(queued_at=now):
            enqueue_batch(batch_id)
            counts["requeued_queued"] += 1

    # A running batch whose worker stopped renewing its lease is orphaned; requeueing it lets
    # the next claim count an attempt and run it again.
    orphaned = Batch.objects.filter(
        job__in=active_jobs, state=BatchState.RUNNING,
        heartbeat_at__lt=now - timedelta(seconds=running_grace()),
    )
    for batch_id, heartbeat_at in orphaned.values_list("id", "heartbeat_at"):
        if Batch.objects.filter(pk=batch_id, state=BatchState.RUNNING, heartbeat_at=heartbeat_at).update(
                state=BatchState.QUEUED, queued_at=now):
            enqueue_batch(batch_id)
            counts["requeued_running"] += 1

    complete = active_jobs.annotate(
        open_batches=Count("batches", filter=~Q(batches__state=BatchState.SUCCEEDED)),
        all_batches=Count("batches"),
    ).filter(open_batches=0, all_batches__gt=0)
    for job_id in complete.values_list("id", flat=True):
        enqueue_finalize(job_id)
        counts["finalized"] += 1

    counts["requeued_finetunes"] = sweep_finetunes(now)

    if any(counts.values()):
        logger.warning("sweep re-enqueued work: %s", counts)
    return counts


def sweep_finetunes(now):
    """Re-enqueue fine-tunes whose message was lost or whose worker stopped sending heartbeats.

    A fine-tune still queued after VERSUS_REQUEUE_AFTER, or running with a heartbeat older
    than twice its lease, gets a new message. The claim's lease makes a duplicate harmless:
    it waits while the first worker is alive and takes over from the last checkpoint after.
    """
    from backend.finetunes import conf as finetune_conf
    from tasks.finetune import run_finetune

    lease = finetune_conf.setting("VERSUS_FINETUNE_LEASE_SECONDS")
    stalled = Job.objects.filter(kind=JobKind.FINETUNE, cancel_requested=False).filter(
        Q(state=JobState.QUEUED, created_at__lt=now - timedelta(seconds=requeue_after()),
          heartbeat_at__isnull=True)
        | Q(state=JobState.QUEUED, heartbeat_at__lt=now - timedelta(seconds=requeue_after()))
        | Q(state=JobState.RUNNING, heartbeat_at__lt=now - timedelta(seconds=2 * lease))
    )
    requeued = 0
    for job_id, heartbeat in stalled.values_list("id", "heartbeat_at"):
        # Moving the heartbeat marks this sweep's re-enqueue, so the next sweep waits again.
        if Job.objects.filter(pk=job_id, heartbeat_at=heartbeat).update(heartbeat_at=now):
            run_finetune.apply_async(args=[str(job_id)], queue=finetune_conf.setting("VERSUS_FINETUNE_QUEUE"))
            requeued += 1
    return requeued


@shared_task(name="tasks.maintenance.sweep_stalled_jobs", ignore_result=True)
def sweep_stalled_jobs():
    return sweep_once()
