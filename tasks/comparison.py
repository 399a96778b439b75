"""Celery tasks of a comparison job: run each batch on the gpu queue, then finalize once.

Tasks take primary keys and re-read state, so a re-delivered message is harmless: a batch
that already succeeded is skipped, and results are upserted by (job, model, item).
"""

import logging
import tempfile
import threading
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone

from backend.catalog.models import ModelEntry
from backend.evaluation.models import SuiteItem
from backend.jobs import actions
from backend.jobs.models import Job
from backend.jobs.options import options_for_entry

from gpu_workers.progress import Cancelled

from .manifest import worker_manifest

logger = logging.getLogger(__name__)

# Errors worth retrying with backoff: the database went away or refused a connection.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


def _runner_options(entry, job):
    options = options_for_entry(entry, job.options)
    options["device"] = settings.VERSUS_DEVICE
    if settings.VERSUS_MODEL_CACHE_BYTES:
        options["model_cache_bytes"] = settings.VERSUS_MODEL_CACHE_BYTES
    if options.get("precision") == "auto":
        options["precision"] = None
    return options


def _ensure_checkpoint(entry):
    """Return ``(checkpoint, is_standin)``, building a missing stand-in folder first."""
    checkpoint, standin = entry.checkpoint()
    if standin and not entry.root.local_path:
        from gpu_workers.standins import build_standin

        build_standin(entry.root.architecture, checkpoint, seed=entry.root.standin_seed)
    return checkpoint, standin


class BatchMonitor:
    """Hooks a runner calls between steps: report step progress, and stop on a cancel.

    Both touch the database at most every ``interval`` seconds, so a fast batch does not
    turn into a stream of queries.
    """

    def __init__(self, batch, interval=0.5):
        self.batch, self.interval = batch, interval
        self.last_report = self.last_check = 0.0
        self.cancelled = False

    def progress(self, done_steps, total_steps, items_done, items_total):
        now = time.monotonic()
        if now - self.last_report < self.interval and done_steps < total_steps:
            return
        self.last_report = now
        detail = {"batch": self.batch.index, "model": self.batch.model.slug, "steps_done": done_steps,
                  "steps_total": total_steps, "items_done": items_done, "items_total": items_total}
        Job.objects.filter(pk=self.batch.job_id).update(progress_detail=detail, heartbeat_at=timezone.now())

    def should_stop(self):
        now = time.monotonic()
        if not self.cancelled and now - self.last_check >= self.interval:
            self.last_check = now
            self.cancelled = Job.objects.filter(pk=self.batch.job_id, cancel_requested=True).exists()
        return self.cancelled


def _keep_attention_maps(batch, outputs):
    """Copy attention-map PNGs out of the batch's temporary folder into media storage.

    Each entity's ``attention_map_path`` is replaced by ``attention_map``, the storage name,
    and ``attention_map_url``.
    """
    from django.core.files import File
    from django.core.files.storage import default_storage

    for out in outputs:
        for number, entity in enumerate(out.get("entities") or []):
            path = entity.pop("attention_map_path", None)
            if not path:
                continue
            name = f"results/{batch.job_id}/{batch.model.slug}/{out['item_id']}-attention-{number}.png"
            with open(path, "rb") as handle:
                stored = default_storage.save(name, File(handle))
            entity["attention_map"] = stored
            entity["attention_map_url"] = default_storage.url(stored)


def _run_captioning(batch, entry, items, options, output_dir):
    from gpu_workers.runner import run_captioning_batch

    checkpoint, standin = _ensure_checkpoint(entry)
    runner_items = [
        {"item_id": item.id, "image_path": item.image.path, "references": item.references,
         "objects": item.reference_objects}
        for item in items
    ]
    monitor = BatchMonitor(batch)
    result = run_captioning_batch(checkpoint, runner_items, options, adapter=entry.adapter_path or None,
                                  output_dir=output_dir, progress_callback=monitor.progress,
                                  should_stop=monitor.should_stop)
    _keep_attention_maps(batch, result["outputs"])
    result["report"]["manifest"] = worker_manifest(checkpoint, entry.adapter_path or None)
    outputs = []
    for out in result["outputs"]:
        outputs.append({
            "item_id": out["item_id"],
            "output": {"text": out["text"], "entities": out["entities"], "raw": out.get("raw", "")},
            "metrics": {key: out.get(key) for key in ("similarity", "phrase_similarity", "latency_s")},
        })
    return outputs, result["report"], standin


def _run_generation(batch, entry, items, options, output_dir):
    from gpu_workers.runner import run_generation_batch

    checkpoint, standin = _ensure_checkpoint(entry)
    judge = ModelEntry.objects.filter(judge=True).order_by("slug").first()
    if judge is None:
        raise ValueError("no judge captioner in the catalog; mark a captioning entry with judge=true")
    judge_checkpoint, judge_standin = _ensure_checkpoint(judge)

    runner_items = [
        {"item_id": item.id, "prompt": item.prompt, "seed": options["seed"] + item.position}
        for item in items
    ]
    monitor = BatchMonitor(batch)
    result = run_generation_batch(checkpoint, judge_checkpoint, runner_items, options, output_dir,
                                  adapter=entry.adapter_path or None,
                                  progress_callback=monitor.progress, should_stop=monitor.should_stop)
    result["report"]["manifest"] = worker_manifest(checkpoint, entry.adapter_path or None, judge_checkpoint)
    clip_checkpoint = settings.VERSUS_CLIP_CHECKPOINT
    if clip_checkpoint:
        from gpu_workers.clip_score import clip_scores

        scores = clip_scores(clip_checkpoint, [out["image_path"] for out in result["outputs"]],
                             [out["prompt"] for out in result["outputs"]], device=options.get("device"))
        for out, score in zip(result["outputs"], scores):
            out["clip_score"] = score
        result["report"]["manifest"]["clip_checkpoint"] = worker_manifest(clip_checkpoint)["checkpoint"]
    outputs = []
    for out in result["outputs"]:
        outputs.append({
            "item_id": out["item_id"],
            "image_path": out["image_path"],
            "output": {"prompt": out["prompt"], "seed": out["seed"], "settings": out.get("settings", {}),
                       "judge_caption": out.get("judge_caption", ""), "judge": judge.slug,
                       "truncated": out.get("truncated", False)},
            "metrics": {key: out.get(key) for key in ("adherence", "blank", "latency_s", "clip_score")},
        })
    return outputs, result["report"], standin or judge_standin


class LeaseKeeper:
    """Renews a running batch's lease from a background thread while the model works.

    Progress callbacks cannot do it alone: loading a large checkpoint or a slow first step
    can take longer than the lease.
    """

    def __init__(self, batch_id, worker):
        self.batch_id, self.worker = batch_id, worker
        self.interval = max(1.0, settings.VERSUS_BATCH_LEASE / 3)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"lease-{batch_id}", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join()

    def _run(self):
        from django.db import connection

        try:
            while not self.stop.wait(self.interval):
                try:
                    actions.beat_batch(self.batch_id, self.worker)
                except DatabaseError:
                    logger.warning("batch %s: could not renew its lease", self.batch_id, exc_info=True)
        finally:
            connection.close()


def execute_batch(batch, worker):
    """Run one claimed batch and store its results; return True when it succeeded."""
    started = time.monotonic()
    job, entry = batch.job, batch.model
    logger.info("job %s batch %s (%s, %d items) started on %s, attempt %d",
                job.id, batch.index, entry.slug, batch.size, worker, batch.attempts)
    items = list(SuiteItem.objects.filter(id__in=batch.item_ids).order_by("position"))
    options = _runner_options(entry, job)

    try:
        with LeaseKeeper(batch.id, worker), \
                tempfile.TemporaryDirectory(prefix=f"versus-batch-{batch.id}-") as output_dir:
            if entry.task == "captioning":
                outputs, report, standin = _run_captioning(batch, entry, items, options, output_dir)
            else:
                outputs, report, standin = _run_generation(batch, entry, items, options, output_dir)
            report["standin"] = standin
            completed = actions.store_batch_results(batch, outputs, report)
    except TRANSIENT_ERRORS:
        logger.warning("job %s batch %s: database unavailable, retrying", job.id, batch.index)
        raise
    except Cancelled:
        actions.stop_cancelled_batch(batch.id)
        return False
    except SoftTimeLimitExceeded:
        actions.fail_batch(batch.id, "batch exceeded its time limit (VERSUS_BATCH_TIME_LIMIT); "
                                     "lower batch_size or raise the limit")
        return False
    except DatabaseError:
        logger.exception("job %s batch %s: database error", job.id, batch.index)
        raise
    except Exception as exc:  # a model or input error: permanent for this batch
        logger.exception("job %s batch %s failed", job.id, batch.index)
        actions.fail_batch(batch.id, f"{type(exc).__name__}: {exc}")
        return False

    logger.info("job %s batch %s finished in %.2fs (load %.2fs, inference %.2fs, peak memory %s bytes)",
                job.id, batch.index, time.monotonic() - started, report.get("load_time_s", 0.0),
                report.get("inference_time_s", 0.0), report.get("peak_memory_bytes"))
    if completed and actions.pending_batches(job.id) == 0:
        enqueue_finalize(job.id)
    return True


@shared_task(
    bind=True, name="tasks.comparison.run_batch", acks_late=True,
    autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60, retry_jitter=True,
    max_retries=8,
)
def run_batch(self, batch_id):
    """Run one batch, then queued batches of the same model while the model is loaded.

    Running the next queued batch of a loaded model here, claimed in the database, gives
    model affinity without per-worker queues: that batch's own message later finds it done.
    The chain stops after VERSUS_AFFINITY_CHAIN batches or half the time limit.
    """
    worker = self.request.hostname or "worker"
    started = time.monotonic()
    try:
        batch = actions.claim_batch(batch_id, worker)
    except actions.BatchAttemptsExceeded:
        return
    except actions.BatchLeaseHeld as held:
        logger.info("batch %s: %s", batch_id, held)
        raise self.retry(countdown=held.seconds, max_retries=1000)
    except TRANSIENT_ERRORS:
        logger.warning("batch %s: database unavailable, retrying", batch_id)
        raise
    if batch is None:
        logger.info("batch %s: nothing to do (finished, cancelled or job ended)", batch_id)
        return

    chain_budget = settings.CELERY_TASK_SOFT_TIME_LIMIT / 2
    for _ in range(settings.VERSUS_AFFINITY_CHAIN + 1):
        if not execute_batch(batch, worker):
            return
        if time.monotonic() - started > chain_budget:
            return
        next_id = actions.next_queued_batch_id(batch.model_id)
        if next_id is None:
            return
        try:
            batch = actions.claim_batch(next_id, worker)
        except (actions.BatchAttemptsExceeded, actions.BatchLeaseHeld):
            return
        if batch is None:
            return
        logger.info("batch %s follows on %s, which has %s loaded", next_id, worker, batch.model.slug)


@shared_task(
    bind=True, name="tasks.comparison.finalize_job", acks_late=True,
    autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60, max_retries=8,
)
def finalize_job(self, job_id):
    """Aggregate metrics, update rankings and verdicts, and mark the job succeeded, once."""
    from backend.evaluation.services import finalize_comparison

    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_terminal:
        return
    if actions.pending_batches(job.id):
        logger.info("job %s: finalize skipped, batches still pending", job_id)
        return
    finalize_comparison(job.id)


def enqueue_batch(batch_id):
    """Send ``run_batch`` for one batch, leaving its time limits to the consuming worker.

    Celery copies the publisher's configured time limits into each message, so a web server
    configured with another VERSUS_BATCH_TIME_LIMIT than the gpu workers would override
    theirs. Sending None makes each worker apply its own limit, which it keeps below its
    broker visibility timeout.
    """
    run_batch.apply_async((batch_id,), time_limit=None, soft_time_limit=None)


def enqueue_finalize(job_id):
    finalize_job.apply_async((str(job_id),), time_limit=None, soft_time_limit=None)
