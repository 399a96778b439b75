"""The model catalog: every entry that can take part in a comparison."""

from pathlib import Path

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class Task(models.TextChoices):
    CAPTIONING = "captioning", "Captioning"
    TEXT_TO_IMAGE = "text-to-image", "Text-to-image"


class Architecture(models.TextChoices):
    KOSMOS2 = "kosmos-2", "Kosmos-2"
    SD3 = "sd3", "Stable Diffusion 3"


class ModelEntry(models.Model):
    """A model users can compare: a checkpoint, optionally with a LoRA adapter on a base entry."""

    slug = models.CharField(
        max_length=120, unique=True,
        validators=[RegexValidator(
            r"^[-a-zA-Z0-9_.]+$", "Use only letters, digits, hyphens, underscores and dots.")],
        help_text="Letters, digits, hyphens, underscores and dots; used in URLs and the API.",
    )
    name = models.CharField(max_length=200)
    task = models.CharField(max_length=20, choices=Task.choices)
    architecture = models.CharField(max_length=20, choices=Architecture.choices)
    source = models.CharField(
        max_length=300, blank=True,
        help_text="Hugging Face hub repo id, loaded with from_pretrained when no local path is set.",
    )
    local_path = models.CharField(
        max_length=500, blank=True,
        help_text="Folder with a checkpoint in the Hugging Face layout; takes precedence over source.",
    )
    standin_seed = models.PositiveIntegerField(
        default=0, help_text="Seed of the random-weight stand-in checkpoint used when stand-ins are on.",
    )
    base = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="adapters",
        help_text="Base entry for an adapter entry.",
    )
    adapter_path = models.CharField(max_length=500, blank=True, help_text="PEFT LoRA adapter folder.")
    adapter_sha256 = models.CharField(max_length=64, blank=True)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    license = models.CharField(max_length=120, blank=True)
    pricing = models.CharField(max_length=200, blank=True)
    capabilities = models.JSONField(default=list, blank=True)
    default_options = models.JSONField(
        default=dict, blank=True,
        help_text="Generation options this entry runs with unless a job overrides them "
        "(e.g. 4 steps and no guidance for a turbo model).",
    )
    description = models.TextField(blank=True)

    # Adoption and ecosystem signals, edited by staff or imported from JSON.
    downloads = models.BigIntegerField(default=0)
    likes = models.IntegerField(default=0)
    integrations = models.JSONField(default=list, blank=True)
    supports_lora = models.BooleanField(default=False)
    supports_quantization = models.BooleanField(default=False)
    open_weights = models.BooleanField(default=True)

    is_standin = models.BooleanField(
        default=False, help_text="Set when this entry's latest scores came from a stand-in checkpoint.",
    )
    judge = models.BooleanField(
        default=False, help_text="Captioner used to caption generated images for round-trip adherence.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="model_entries",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "model entry"
        verbose_name_plural = "model entries"

    def __str__(self):
        return self.slug

    @property
    def root(self):
        """The entry whose checkpoint this entry loads (itself unless it is an adapter)."""
        return self.base.root if self.base_id else self

    def checkpoint(self):
        """Return ``(checkpoint path or hub id, is_standin)`` for loading this entry's weights."""
        root = self.root
        if root.local_path:
            path = Path(root.local_path)
            return str(path), (path / "versus_standin.json").exists()
        if settings.VERSUS_USE_STANDINS:
            return str(standin_path(root.architecture, root.standin_seed)), True
        return root.source, False


def standin_path(architecture, seed):
    """Folder of the stand-in checkpoint for an architecture and seed."""
    return Path(settings.VERSUS_STANDIN_DIR) / f"{architecture}-seed{seed}"
