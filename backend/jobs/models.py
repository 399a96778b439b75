"""Jobs, their batches and per-item results.

The database is the source of truth for job and batch state; Celery messages carry only
primary keys. Every state change is a conditional UPDATE (see ``backend.jobs.actions``), so a
duplicate delivery or two workers racing on one batch cannot move a state backwards.
"""

import uuid

from django.conf import settings
from django.db import models


class JobKind(models.TextChoices):
    COMPARISON = "comparison", "Comparison"
    FINETUNE = "finetune", "Fine-tune"


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_JOB_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=20, choices=JobKind.choices, default=JobKind.COMPARISON)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="jobs",
    )
    state = models.CharField(max_length=20, choices=JobState.choices, default=JobState.QUEUED)
    entries = models.ManyToManyField("catalog.ModelEntry", related_name="jobs", blank=True)
    model_order = models.JSONField(default=list, help_text="Model slugs in the order submitted.")
    suite = models.ForeignKey(
        "evaluation.Suite", null=True, blank=True, on_delete=models.PROTECT, related_name="jobs",
    )
    options = models.JSONField(default=dict, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    progress_detail = models.JSONField(
        default=dict, blank=True, help_text="Step-level progress of running batches or training.",
    )
    error = models.TextField(blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Aggregated metrics per model slug.")
    standin = models.BooleanField(default=False, help_text="Some model ran on a stand-in checkpoint.")
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "kind"])]

    def __str__(self):
        return f"{self.kind} {self.id}"

    @property
    def is_terminal(self):
        return self.state in TERMINAL_JOB_STATES

    @property
    def duration_s(self):
        if not self.started_at:
            return None
        end = self.finished_at
        if end is None:
            from django.utils import timezone

            end = timezone.now()
        return (end - self.started_at).total_seconds()

    @property
    def progress_fraction(self):
        return self.progress_done / self.progress_total if self.progress_total else 0.0


class BatchState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Batch(models.Model):
    """A slice of a job's items for one model, run by one ``run_batch`` task on the gpu queue."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="batches")
    index = models.PositiveIntegerField()
    model = models.ForeignKey("catalog.ModelEntry", on_delete=models.PROTECT, related_name="batches")
    item_ids = models.JSONField(default=list)
    state = models.CharField(max_length=20, choices=BatchState.choices, default=BatchState.QUEUED)
    attempts = models.PositiveIntegerField(default=0, help_text="How many times a worker started this batch.")
    worker = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    report = models.JSONField(default=dict, blank=True, help_text="Timings, memory, device and dtype.")
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life from the worker running this batch.",
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        indexes = [models.Index(fields=["state", "model"])]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="unique_batch_index")]
        verbose_name_plural = "batches"

    def __str__(self):
        return f"batch {self.index} of job {self.job_id}"

    @property
    def size(self):
        return len(self.item_ids)


class Result(models.Model):
    """One model's output on one suite item, with its per-item metrics (the evidence)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="results")
    model = models.ForeignKey("catalog.ModelEntry", on_delete=models.PROTECT, related_name="results")
    item = models.ForeignKey("evaluation.SuiteItem", on_delete=models.PROTECT, related_name="results")
    batch = models.ForeignKey(Batch, null=True, on_delete=models.SET_NULL, related_name="results")
    output = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    image = models.FileField(upload_to="results/", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job", "model__slug", "item__kind", "item__position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "model", "item"], name="unique_result_per_item"),
        ]
