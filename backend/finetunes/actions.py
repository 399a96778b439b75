"""Writes for datasets and fine-tunes: uploads, submission, training progress and publishing.

Views, the management command and ``tasks.finetune`` call these functions; nothing else
writes fine-tune state. Job state changes go through ``backend.jobs.actions.finish_job``,
a conditional UPDATE, so a cancel racing with the end of training has one winner.
"""

import hashlib
import logging
import math
import os
import random
import shutil
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.api.errors import ApiError
from backend.catalog.models import ModelEntry
from backend.jobs.actions import finish_job
from backend.jobs.models import Job, JobKind, JobState
from backend.uploads import UploadError, find_imagefolder_root, safe_extract_zip, validate_imagefolder

from . import conf
from .models import Checkpoint, Dataset, FineTune, LossPoint

logger = logging.getLogger(__name__)

DATASETS_DIR = "datasets"
FINETUNES_DIR = "finetunes"
PUBLISHED_ADAPTER_DIR = "adapter"
ADAPTER_ARCHIVE = "adapter.zip"
EVALUATION_SUITE = "sample"
HASH_CHUNK_BYTES = 1024 * 1024


class LeaseHeld(Exception):
    """Another worker sent a heartbeat for this fine-tune less than the lease ago."""

    def __init__(self, worker, retry_after):
        super().__init__(f"fine-tune is held by {worker}; retry in {retry_after:.0f}s")
        self.worker = worker
        self.retry_after = retry_after


class FinetuneAttemptsExceeded(Exception):
    """A fine-tune was started more often than VERSUS_FINETUNE_MAX_ATTEMPTS allows."""


# Access ---------------------------------------------------------------------------------------


def datasets_visible_to(user):
    if user.is_staff:
        return Dataset.objects.all()
    return Dataset.objects.filter(owner=user)


def access_dataset(user, dataset_id):
    """Fetch a dataset the user may see: their own, or any for staff. Others get a 404."""
    if not (user and user.is_authenticated):
        raise ApiError("Dataset not found.", code="not_found", status_code=404)
    dataset = datasets_visible_to(user).filter(pk=dataset_id).first()
    if dataset is None:
        raise ApiError(f"Dataset {dataset_id} not found.", code="not_found", status_code=404)
    return dataset


def finetunes_visible_to(user):
    queryset = FineTune.objects.select_related("job", "base", "dataset", "entry", "evaluation_job")
    if user.is_staff:
        return queryset
    return queryset.filter(job__owner=user)


def access_finetune(user, job_id):
    """Fetch a fine-tune by its job id for its owner or staff. Others get a 404."""
    if not (user and user.is_authenticated):
        raise ApiError("Fine-tune not found.", code="not_found", status_code=404)
    finetune = finetunes_visible_to(user).filter(pk=job_id).first()
    if finetune is None:
        raise ApiError(f"Fine-tune {job_id} not found.", code="not_found", status_code=404)
    return finetune


# Datasets -------------------------------------------------------------------------------------


def create_dataset_from_upload(owner, upload, name=""):
    """Check an uploaded imagefolder zip and store it as a dataset of ``owner``.

    Raises ApiError (400, field ``file``) for an archive or image that fails a check in
    ``backend.uploads``; nothing is stored then.
    """
    limit = settings.VERSUS_MAX_UPLOAD_BYTES
    if upload.size > limit:
        raise ApiError(f"file '{upload.name}' is {upload.size} bytes; the limit is {limit} bytes "
                       "(VERSUS_MAX_UPLOAD_BYTES), upload a smaller archive", field="file")
    digest = hashlib.sha256()
    for chunk in upload.chunks(HASH_CHUNK_BYTES):
        digest.update(chunk)
    upload.seek(0)

    datasets_root = _media_folder(DATASETS_DIR)
    staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=datasets_root))
    try:
        safe_extract_zip(upload, staging / "archive")
        root = find_imagefolder_root(staging / "archive")
        rows = validate_imagefolder(root)
        return _store_dataset(owner, root, rows, name or Path(upload.name).stem, digest.hexdigest())
    except UploadError as exc:
        raise ApiError(exc.message, field=exc.field or "file") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def create_dataset_from_folder(owner, folder, name=""):
    """Check a local imagefolder and store a copy of its images and metadata as a dataset.

    Raises ApiError (field ``dataset``) when the folder fails a check.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ApiError(f"dataset folder {folder} not found", field="dataset")
    datasets_root = _media_folder(DATASETS_DIR)
    staging = Path(tempfile.mkdtemp(prefix=".folder-", dir=datasets_root))
    try:
        root = find_imagefolder_root(folder)
        rows = validate_imagefolder(root)
        copy = staging / "copy"
        digest = hashlib.sha256()
        for relative in ["metadata.jsonl"] + [row["file_name"] for row in rows]:
            target = copy / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / relative, target)
            digest.update(relative.encode() + b"\0" + target.read_bytes())
        return _store_dataset(owner, copy, rows, name or root.name, digest.hexdigest())
    except UploadError as exc:
        raise ApiError(exc.message, field="dataset") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _store_dataset(owner, root, rows, name, sha256):
    """Move a checked imagefolder into MEDIA_ROOT/datasets/<id>/ and create its row."""
    dataset_id = uuid.uuid4()
    folder = f"{DATASETS_DIR}/{dataset_id}"
    target = Path(settings.MEDIA_ROOT) / folder
    os.replace(root, target)
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    try:
        dataset = Dataset.objects.create(
            id=dataset_id, owner=owner, name=name[:200], folder=folder, sha256=sha256, size_bytes=size,
            items=[{"file_name": row["file_name"], "text": row["text"]} for row in rows], item_count=len(rows),
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    logger.info("dataset %s stored for %s: %d items, %d bytes", dataset.id, owner, len(rows), size)
    return dataset


# Submission -----------------------------------------------------------------------------------


def split_validation(dataset, evaluate_after, seed):
    """Pick the items that score checkpoints; return ``{"file_names", "held_out"}``.

    Without ``evaluate_after`` nothing is scored. From a dataset with at least twice
    VERSUS_FINETUNE_VALIDATION_ITEMS items, that many are drawn with ``seed`` and kept out of
    training. A smaller dataset is scored on its first training items instead.
    """
    if not evaluate_after:
        return {}
    count = conf.setting("VERSUS_FINETUNE_VALIDATION_ITEMS")
    names = [row["file_name"] for row in dataset.items]
    if count <= 0:
        return {}
    if len(names) >= 2 * count:
        chosen = sorted(random.Random(seed).sample(range(len(names)), count))
        return {"file_names": [names[index] for index in chosen], "held_out": True}
    return {"file_names": names[:count], "held_out": False}


def submit_finetune(owner, base, dataset, config, name="", evaluate_after=False):
    """Create a fine-tune job and enqueue its training task after commit.

    ``config`` is a checked TrainingConfig. Returns the FineTune.
    """
    from tasks.finetune import run_finetune

    validation = split_validation(dataset, evaluate_after, config.seed)
    with transaction.atomic():
        job = Job.objects.create(
            kind=JobKind.FINETUNE, owner=owner, model_order=[base.slug],
            options={"dataset": str(dataset.id), "config": config.to_dict(), "evaluate_after": evaluate_after},
            progress_total=config.max_steps,
            progress_detail={"phase": "queued", "step": 0, "max_steps": config.max_steps},
        )
        job.entries.set([base])
        finetune = FineTune.objects.create(
            job=job, base=base, dataset=dataset, name=(name or dataset.name)[:80], config=config.to_dict(),
            evaluate_after=evaluate_after, validation=validation, output_dir=f"{FINETUNES_DIR}/{job.id}",
        )
        queue = conf.setting("VERSUS_FINETUNE_QUEUE")
        job_id = str(job.id)
        transaction.on_commit(lambda: run_finetune.apply_async(args=[job_id], queue=queue))

    logger.info("fine-tune %s submitted by %s: base=%s dataset=%s (%d items) steps=%d queue=%s",
                job.id, owner, base.slug, dataset.id, dataset.item_count, config.max_steps, queue)
    return finetune


# Training progress (called by tasks.finetune) -------------------------------------------------


def claim_finetune(job_id, worker):
    """Mark a fine-tune running for ``worker``; return it, or None when there is nothing to do.

    A fine-tune left running by a dead worker is taken over once its heartbeat is older than
    VERSUS_FINETUNE_LEASE_SECONDS. Before that, LeaseHeld gives the seconds until a retry,
    because Redis may deliver the task again while the first worker is still training. Each
    claim counts an attempt, and past VERSUS_FINETUNE_MAX_ATTEMPTS the job fails.
    """
    now = timezone.now()
    lease = conf.setting("VERSUS_FINETUNE_LEASE_SECONDS")
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, kind=JobKind.FINETUNE).first()
        if job is None or job.is_terminal or job.cancel_requested:
            return None
        finetune = FineTune.objects.select_for_update(of=("self",)).select_related("base").get(job=job)
        if job.state == JobState.RUNNING and finetune.worker and finetune.worker != worker and job.heartbeat_at:
            age = (now - job.heartbeat_at).total_seconds()
            if age < lease:
                raise LeaseHeld(finetune.worker, lease - age)
        finetune.attempts += 1
        finetune.worker = worker
        finetune.save(update_fields=["attempts", "worker", "updated_at"])
        Job.objects.filter(pk=job.pk, state__in=[JobState.QUEUED, JobState.RUNNING]).update(
            state=JobState.RUNNING, started_at=job.started_at or now, heartbeat_at=now,
            standin=finetune.base.checkpoint()[1],
        )

    max_attempts = conf.setting("VERSUS_FINETUNE_MAX_ATTEMPTS")
    if finetune.attempts > max_attempts:
        message = (f"fine-tune was started {finetune.attempts} times (limit {max_attempts}); its worker "
                   "keeps dying, often from running out of memory: lower batch_size or resolution, "
                   "or use a worker with more memory")
        fail_finetune(finetune, message)
        raise FinetuneAttemptsExceeded(message)
    return FineTune.objects.select_related("job", "base", "dataset").get(pk=finetune.pk)


def record_preparation(finetune, done, total):
    """Store encoding progress and a heartbeat while items are encoded."""
    detail = {"phase": "encoding", "encoded": done, "items": total, "step": finetune.step,
              "max_steps": finetune.config["max_steps"]}
    Job.objects.filter(pk=finetune.pk, state=JobState.RUNNING).update(
        progress_detail=detail, heartbeat_at=timezone.now())


def record_resume(finetune, step):
    """Count a start that continued from the checkpoint of ``step``."""
    from django.db.models import F

    FineTune.objects.filter(pk=finetune.pk).update(
        resume_count=F("resume_count") + 1, resumed_from_step=step, step=step)
    logger.info("fine-tune %s resumed from step %d (attempt %d)", finetune.pk, step, finetune.attempts)


def stop_requested(job_id):
    """Return True when the job was cancelled or is no longer running (one small query)."""
    row = Job.objects.filter(pk=job_id).values_list("state", "cancel_requested").first()
    return row is None or row[1] or row[0] != JobState.RUNNING


def record_step(finetune, report, detail):
    """Store one step's loss point, the fine-tune's latest values and the job's progress.

    Returns False and writes nothing when another worker has taken the run over, because
    this one sent no heartbeat for longer than the lease. The caller must then stop.
    """
    grad_norm = report.grad_norm if math.isfinite(report.grad_norm) else None
    now = timezone.now()
    with transaction.atomic():
        held = FineTune.objects.filter(pk=finetune.pk, worker=finetune.worker).update(
            step=report.step, loss=report.loss, learning_rate=report.learning_rate, updated_at=now)
        if not held:
            logger.warning("fine-tune %s was taken over by another worker; %s stops at step %d",
                           finetune.pk, finetune.worker, report.step)
            return False
        LossPoint.objects.bulk_create(
            [LossPoint(finetune_id=finetune.pk, step=report.step, loss=report.loss,
                       learning_rate=report.learning_rate, grad_norm=grad_norm)],
            update_conflicts=True, unique_fields=["finetune", "step"],
            update_fields=["loss", "learning_rate", "grad_norm"],
        )
        Job.objects.filter(pk=finetune.pk, state=JobState.RUNNING).update(
            progress_done=report.step, progress_detail=detail, heartbeat_at=now)
    return True


def record_checkpoint(finetune, checkpoint, removed_steps):
    """Store a written checkpoint and delete the rows of the checkpoints pruned from disk."""
    folder = Path(checkpoint.path).relative_to(settings.MEDIA_ROOT).as_posix()
    with transaction.atomic():
        Checkpoint.objects.update_or_create(
            finetune_id=finetune.pk, step=checkpoint.step,
            defaults={"folder": folder, "loss": checkpoint.loss, "validation_loss": checkpoint.validation_loss},
        )
        if removed_steps:
            Checkpoint.objects.filter(finetune_id=finetune.pk, step__in=removed_steps).delete()


def fail_finetune(finetune, message):
    """Fail the fine-tune's job with ``message``; checkpoints stay on disk."""
    with transaction.atomic():
        changed = finish_job(finetune.job, JobState.FAILED, message)
    if changed:
        logger.error("fine-tune %s failed: %s", finetune.pk, message)
    return changed


def complete_finetune(finetune, adapter_dir, adapter_sha256, step, choice, manifest):
    """Mark the fine-tune succeeded and publish its adapter as a catalog entry, once.

    ``adapter_dir`` is the published adapter folder, copied from the checkpoint of ``step``,
    and ``choice`` explains why that checkpoint was chosen. The entry, the job's success and the
    ``finetune.completed`` event commit together. Returns the new entry, or None when the
    job had already ended (for example cancelled during publishing).
    """
    from backend.webhooks.actions import emit_event

    base = finetune.base
    with transaction.atomic():
        if not finish_job(finetune.job, JobState.SUCCEEDED):
            return None
        short_id = finetune.pk.hex[:8]
        entry = ModelEntry.objects.create(
            slug=f"{base.slug[:100]}-lora-{short_id}",
            name=f"{base.name} + {finetune.name}"[:200],
            task=base.task,
            architecture=base.architecture,
            base=base,
            adapter_path=str(adapter_dir),
            adapter_sha256=adapter_sha256,
            license=base.license,
            open_weights=base.open_weights,
            default_options=base.default_options,
            description=f"LoRA adapter (rank {finetune.config['rank']}, {step} steps) trained on dataset "
                        f"'{finetune.dataset.name}' ({finetune.dataset.item_count} items).",
            owner=finetune.job.owner,
        )
        FineTune.objects.filter(pk=finetune.pk).update(
            entry=entry, adapter_path=str(adapter_dir), adapter_sha256=adapter_sha256,
            adapter_step=step, adapter_choice=choice,
        )
        Job.objects.filter(pk=finetune.pk).update(manifest=manifest)
        finetune.refresh_from_db()
        emit_event("finetune.completed", finetune_summary(finetune), owner=finetune.job.owner)

    logger.info("fine-tune %s succeeded: adapter from step %d (%s), catalog entry %s",
                finetune.pk, step, choice, entry.slug)
    return entry


def queue_evaluation(finetune):
    """Submit a comparison of the adapted entry against its base on the sample suite.

    Failures are stored on the fine-tune (it already succeeded) and returned as None.
    """
    from backend.evaluation.models import Suite
    from backend.jobs.actions import submit_comparison
    from backend.jobs.options import ComparisonOptionsSerializer

    suite = Suite.objects.filter(slug=EVALUATION_SUITE).first()
    if suite is None:
        return _evaluation_failed(finetune, f"suite '{EVALUATION_SUITE}' is not installed; run "
                                            "`manage.py load_suites` and compare the models by hand")
    options = ComparisonOptionsSerializer(data={
        "limit": conf.setting("VERSUS_FINETUNE_EVALUATION_LIMIT"), "seed": finetune.config["seed"],
    })
    options.is_valid(raise_exception=True)
    try:
        job = submit_comparison(finetune.job.owner, [finetune.entry, finetune.base], suite, options.validated_data)
    except ApiError as exc:
        return _evaluation_failed(finetune, str(exc.detail))
    FineTune.objects.filter(pk=finetune.pk).update(evaluation_job=job)
    logger.info("fine-tune %s: evaluation comparison %s queued", finetune.pk, job.id)
    return job


def _evaluation_failed(finetune, message):
    FineTune.objects.filter(pk=finetune.pk).update(evaluation_error=message)
    logger.warning("fine-tune %s: evaluation not queued: %s", finetune.pk, message)
    return None


# Presentation ---------------------------------------------------------------------------------


def media_url(path):
    """Return the URL of a file or folder under MEDIA_ROOT, or None for other paths."""
    try:
        relative = Path(path).relative_to(settings.MEDIA_ROOT).as_posix()
    except ValueError:
        return None
    return settings.MEDIA_URL.rstrip("/") + "/" + relative


def finetune_summary(finetune):
    """Plain-data summary of a fine-tune for webhook payloads and the CLI."""
    job = finetune.job
    adapter_url = media_url(Path(finetune.adapter_path).parent / ADAPTER_ARCHIVE) if finetune.adapter_path else None
    return {
        "id": str(job.id),
        "name": finetune.name,
        "state": job.state,
        "base_model": finetune.base.slug,
        "dataset": str(finetune.dataset_id),
        "step": finetune.step,
        "max_steps": finetune.config["max_steps"],
        "loss": finetune.loss,
        "model": finetune.entry.slug if finetune.entry_id else None,
        "adapter": {"path": finetune.adapter_path, "sha256": finetune.adapter_sha256,
                    "step": finetune.adapter_step, "choice": finetune.adapter_choice, "url": adapter_url},
        "evaluation_job": str(finetune.evaluation_job_id) if finetune.evaluation_job_id else None,
        "error": job.error,
        "url": f"/api/v1/finetunes/{job.id}/",
        "job_url": f"/api/v1/jobs/{job.id}/",
    }


def _media_folder(name):
    folder = Path(settings.MEDIA_ROOT) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
