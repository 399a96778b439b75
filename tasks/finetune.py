"""Celery task of fine-tune jobs: train a LoRA adapter on the gpu queue, resumably.

The task takes the job id and re-reads state. A message delivered again after its worker
died (late acks) continues from the latest checkpoint. A message delivered while another
worker still sends heartbeats is retried once that worker's lease has run out.
"""

import logging
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, InterfaceError, OperationalError

from backend.finetunes import actions, conf

from .manifest import combined_hash, folder_hashes, worker_manifest

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)

_TIME_LIMIT = conf.setting("VERSUS_FINETUNE_TIME_LIMIT")


class JobHooks:
    """Training callbacks that write progress to the database and read the cancel flag."""

    def __init__(self, finetune):
        self.finetune = finetune
        self.started = time.monotonic()
        self.first_step = None
        self.lease_lost = False

    def on_prepare(self, done, total):
        actions.record_preparation(self.finetune, done, total)

    def on_resume(self, checkpoint):
        actions.record_resume(self.finetune, checkpoint.step)

    def should_stop(self):
        return self.lease_lost or actions.stop_requested(self.finetune.pk)

    def on_step(self, report):
        if self.first_step is None:
            self.first_step = report.step - 1
            self.started = time.monotonic() - report.duration_s
        elapsed = time.monotonic() - self.started
        rate = (report.step - self.first_step) / elapsed if elapsed > 0 else None
        detail = {
            "phase": "training",
            "step": report.step,
            "max_steps": report.max_steps,
            "loss": report.loss,
            "learning_rate": report.learning_rate,
            "steps_per_second": round(rate, 4) if rate else None,
            "eta_s": round((report.max_steps - report.step) / rate, 1) if rate else None,
        }
        self.lease_lost = not actions.record_step(self.finetune, report, detail)

    def on_checkpoint(self, checkpoint, removed_steps):
        actions.record_checkpoint(self.finetune, checkpoint, removed_steps)


@shared_task(
    bind=True, name="tasks.finetune.run_finetune", acks_late=True,
    autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60, retry_jitter=True,
    max_retries=8, time_limit=_TIME_LIMIT, soft_time_limit=max(1, _TIME_LIMIT - 60),
)
def run_finetune(self, job_id):
    """Train, checkpoint and publish one fine-tune, continuing from its latest checkpoint."""
    # Imported here, so that web processes that only enqueue this task never load torch.
    from gpu_workers.lora import ConfigError
    from gpu_workers.training import CheckpointMismatchError, NonFiniteLossError

    # Errors whose message names what the user should change: settings, data, a diverged loss.
    permanent_errors = (ConfigError, CheckpointMismatchError, NonFiniteLossError, FileNotFoundError)
    worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"
    try:
        finetune = actions.claim_finetune(job_id, worker)
    except actions.LeaseHeld as held:
        logger.info("fine-tune %s is held by %s; retrying in %.0fs", job_id, held.worker, held.retry_after)
        raise self.retry(countdown=max(1.0, held.retry_after), max_retries=None)
    except actions.FinetuneAttemptsExceeded:
        return
    if finetune is None:
        logger.info("fine-tune %s: nothing to do (finished, cancelled or unknown)", job_id)
        return

    logger.info("fine-tune %s (%s on %s, %d steps) started by %s, attempt %d", job_id, finetune.name,
                finetune.base.slug, finetune.config["max_steps"], worker, finetune.attempts)
    try:
        outcome = train(finetune)
        if outcome.completed:
            publish(finetune)
        else:
            logger.info("fine-tune %s stopped at step %d; its checkpoints stay in %s",
                        job_id, outcome.step, finetune.output_path)
    except TRANSIENT_ERRORS:
        logger.warning("fine-tune %s: database unavailable, retrying", job_id)
        raise
    except SoftTimeLimitExceeded:
        actions.fail_finetune(finetune, "fine-tune exceeded its time limit (VERSUS_FINETUNE_TIME_LIMIT); "
                                        "lower max_steps or raise the limit, checkpoints are kept")
    except DatabaseError:
        logger.exception("fine-tune %s: database error", job_id)
        raise
    except permanent_errors as exc:
        logger.warning("fine-tune %s failed: %s", job_id, exc)
        actions.fail_finetune(finetune, str(exc))
    except Exception as exc:  # a model or runtime error: permanent for this run
        logger.exception("fine-tune %s failed", job_id)
        actions.fail_finetune(finetune, f"{type(exc).__name__}: {exc}")


def train(finetune):
    """Build the trainer for a claimed fine-tune and run it until done or cancelled."""
    from django.conf import settings

    from gpu_workers.lora import TrainingConfig
    from gpu_workers.training import Trainer, run_training

    checkpoint = ensure_base_checkpoint(finetune.base)
    config = TrainingConfig.from_dict(finetune.base.architecture, finetune.config)
    train_items, validation_items = split_items(finetune)
    hooks = JobHooks(finetune)

    started = time.monotonic()
    trainer = Trainer.from_pretrained(
        checkpoint, train_items, config, finetune.output_path, validation_items=validation_items,
        device=settings.VERSUS_DEVICE, on_prepare=hooks.on_prepare,
    )
    prepared = time.monotonic()
    outcome = run_training(trainer, hooks)
    logger.info("fine-tune %s: %s at step %d (load and encode %.2fs, training %.2fs)", finetune.pk,
                "completed" if outcome.completed else "stopped", outcome.step, prepared - started,
                time.monotonic() - prepared)
    return outcome


def publish(finetune):
    """Copy the chosen checkpoint's adapter to the published folder and record success.

    With ``evaluate_after`` the checkpoint with the lowest validation loss is published;
    otherwise the last one.
    """
    from gpu_workers.training import best_checkpoint, latest_checkpoint, list_checkpoints

    output = finetune.output_path
    scored = [checkpoint for checkpoint in list_checkpoints(output) if checkpoint.validation_loss is not None]
    if finetune.evaluate_after and scored:
        chosen = best_checkpoint(output)
        held_out = "held-out" if finetune.validation.get("held_out") else "training"
        choice = (f"lowest validation loss {chosen.validation_loss:.6g} on {len(finetune.validation['file_names'])} "
                  f"{held_out} items among the checkpoints of steps {[checkpoint.step for checkpoint in scored]}")
    else:
        chosen = latest_checkpoint(output)
        choice = f"last checkpoint (step {chosen.step})"

    adapter_dir = output / actions.PUBLISHED_ADAPTER_DIR
    _replace_folder(chosen.adapter_path, adapter_dir)
    _write_archive(adapter_dir, output / actions.ADAPTER_ARCHIVE)
    sha256 = combined_hash(folder_hashes(adapter_dir))
    checkpoint, _ = finetune.base.checkpoint()
    manifest = worker_manifest(checkpoint, adapter_dir)
    manifest.update({
        "kind": "finetune",
        "dataset": {"id": str(finetune.dataset_id), "sha256": finetune.dataset.sha256,
                    "items": finetune.dataset.item_count, "validation": finetune.validation},
        "config": finetune.config,
        "adapter_step": chosen.step,
    })

    entry = actions.complete_finetune(finetune, adapter_dir, sha256, chosen.step, choice, manifest)
    if entry is not None and finetune.evaluate_after:
        finetune.refresh_from_db()
        actions.queue_evaluation(finetune)


def ensure_base_checkpoint(entry):
    """Return the base checkpoint path, building a missing stand-in folder first."""
    checkpoint, standin = entry.checkpoint()
    if standin and not entry.root.local_path:
        from gpu_workers.standins import build_standin

        build_standin(entry.root.architecture, checkpoint, seed=entry.root.standin_seed)
    return checkpoint


def split_items(finetune):
    """Return (training items, validation items) of the fine-tune's dataset.

    Held-out validation items are left out of training; otherwise they are scored while
    also being trained on (a dataset too small to hold items out).
    """
    dataset = finetune.dataset
    names = set(finetune.validation.get("file_names", []))
    held_out = finetune.validation.get("held_out", False)
    training, validation = [], []
    for row, item in zip(dataset.items, dataset.training_items()):
        if row["file_name"] in names:
            validation.append(item)
            if held_out:
                continue
        training.append(item)
    return training, validation


def _replace_folder(source, target):
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(source, staging / "copy")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "copy", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_archive(folder, archive):
    partial = archive.with_name(archive.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                handle.write(path, arcname=path.name)
    os.replace(partial, archive)
