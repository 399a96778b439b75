"""Datasets for fine-tuning, fine-tunes (LoRA training jobs), their checkpoints and loss curves.

A fine-tune shares the job table with comparisons (``Job.kind = finetune``), so the generic
job API lists it, shows its progress and cancels it. Files live under MEDIA_ROOT:
``datasets/<dataset id>/`` contains an uploaded imagefolder, and ``finetunes/<job id>/``
contains the checkpoints and the published adapter.
"""

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models


class Dataset(models.Model):
    """An imagefolder (images plus metadata.jsonl with file_name and text) owned by a user."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    folder = models.CharField(max_length=500, help_text="Folder relative to MEDIA_ROOT.")
    items = models.JSONField(default=list, help_text="Rows of metadata.jsonl: file_name and text.")
    item_count = models.PositiveIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0, help_text="Total size of the stored files.")
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the uploaded archive or folder files.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.item_count} items)"

    @property
    def path(self):
        return Path(settings.MEDIA_ROOT) / self.folder

    def training_items(self):
        """Return ``{"image_path", "text"}`` dicts in file order, as the trainer takes them."""
        return [{"image_path": str(self.path / row["file_name"]), "text": row["text"]} for row in self.items]


class FineTune(models.Model):
    """A LoRA fine-tune of a catalog entry on a dataset; its state lives on ``job``."""

    job = models.OneToOneField("jobs.Job", primary_key=True, on_delete=models.CASCADE, related_name="finetune")
    base = models.ForeignKey("catalog.ModelEntry", on_delete=models.PROTECT, related_name="finetunes")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="finetunes")
    name = models.CharField(max_length=80)
    config = models.JSONField(default=dict, help_text="Training settings with defaults filled in.")
    evaluate_after = models.BooleanField(
        default=False, help_text="Score checkpoints on held-out items, publish the best one and "
        "compare the adapted model with its base on the sample suite.",
    )
    validation = models.JSONField(
        default=dict, blank=True, help_text="Items that score checkpoints: file_names, and held_out "
        "(false when the dataset is too small to hold items out, so training items are scored).",
    )
    output_dir = models.CharField(max_length=500, help_text="Folder relative to MEDIA_ROOT.")

    step = models.PositiveIntegerField(default=0, help_text="Optimizer steps done.")
    loss = models.FloatField(null=True, blank=True, help_text="Training loss of the latest step.")
    learning_rate = models.FloatField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="How many times a worker started this run.")
    resume_count = models.PositiveIntegerField(default=0, help_text="Starts that continued from a checkpoint.")
    resumed_from_step = models.PositiveIntegerField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="Worker holding the run (host:pid).")

    adapter_path = models.CharField(max_length=500, blank=True, help_text="Published adapter folder.")
    adapter_sha256 = models.CharField(max_length=64, blank=True)
    adapter_step = models.PositiveIntegerField(null=True, blank=True, help_text="Checkpoint step published.")
    adapter_choice = models.CharField(max_length=300, blank=True, help_text="Why that checkpoint was published.")
    entry = models.OneToOneField(
        "catalog.ModelEntry", null=True, blank=True, on_delete=models.SET_NULL, related_name="finetune",
        help_text="Catalog entry of the base plus the adapter.",
    )
    evaluation_job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Comparison of the adapted entry against its base.",
    )
    evaluation_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "fine-tune"

    def __str__(self):
        return f"{self.name} on {self.base.slug}"

    @property
    def output_path(self):
        return Path(settings.MEDIA_ROOT) / self.output_dir


class Checkpoint(models.Model):
    """A checkpoint folder kept on disk; rows of pruned checkpoints are deleted."""

    finetune = models.ForeignKey(FineTune, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    folder = models.CharField(max_length=500, help_text="Folder relative to MEDIA_ROOT.")
    loss = models.FloatField(null=True, blank=True)
    validation_loss = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["finetune", "step"]
        constraints = [models.UniqueConstraint(fields=["finetune", "step"], name="unique_checkpoint_step")]

    def __str__(self):
        return f"step {self.step} of {self.finetune_id}"


class LossPoint(models.Model):
    """The training loss of one step; a resumed run overwrites the steps it repeats."""

    finetune = models.ForeignKey(FineTune, on_delete=models.CASCADE, related_name="loss_points")
    step = models.PositiveIntegerField()
    loss = models.FloatField()
    learning_rate = models.FloatField()
    grad_norm = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["finetune", "step"]
        constraints = [models.UniqueConstraint(fields=["finetune", "step"], name="unique_loss_step")]
