from pathlib import Path

from django.conf import settings
from rest_framework import serializers

from backend.catalog.models import ModelEntry
from gpu_workers.lora import ARCHITECTURES, ConfigError, TrainingConfig, check_mixed_precision

from . import actions
from .models import Dataset, FineTune, LossPoint

PREVIEW_ROWS = 5
RECENT_LOSS_POINTS = 10


class DatasetUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="Zip archive in the imagefolder layout: images plus a "
                                           "metadata.jsonl with file_name and text per line.")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class DatasetSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    preview = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = ["id", "name", "item_count", "size_bytes", "sha256", "preview", "created_at", "url"]

    def get_url(self, dataset) -> str:
        return _absolute(self.context, f"/api/v1/datasets/{dataset.id}/")

    def get_preview(self, dataset) -> list[dict]:
        """Return the first rows of metadata.jsonl (file_name and text)."""
        return dataset.items[:PREVIEW_ROWS]


class FinetuneConfigSerializer(serializers.Serializer):
    """Training settings; unset ones take the architecture's defaults (see gpu_workers.lora)."""

    rank = serializers.IntegerField(required=False, help_text="LoRA rank (default 16).")
    alpha = serializers.FloatField(required=False, help_text="LoRA alpha (default: the rank).")
    dropout = serializers.FloatField(required=False, help_text="Dropout on the LoRA input (default 0).")
    target_modules = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False,
        help_text="Module names to adapt (default: the attention projections).")
    learning_rate = serializers.FloatField(required=False, help_text="AdamW learning rate (default 1e-4).")
    max_steps = serializers.IntegerField(required=False, help_text="Optimizer steps (default 500).")
    batch_size = serializers.IntegerField(required=False, help_text="Items per micro-batch (default 1).")
    gradient_accumulation_steps = serializers.IntegerField(required=False)
    resolution = serializers.IntegerField(required=False, allow_null=True,
                                          help_text="SD3 only: square image side in pixels (default 512).")
    seed = serializers.IntegerField(required=False)
    mixed_precision = serializers.CharField(required=False, help_text="no, bf16 or fp16 (GPU only).")
    checkpoint_every = serializers.IntegerField(required=False, help_text="Steps between checkpoints.")
    keep_checkpoints = serializers.IntegerField(required=False, help_text="Latest checkpoints kept on disk.")
    lr_scheduler = serializers.CharField(required=False)
    lr_warmup_steps = serializers.IntegerField(required=False)
    weight_decay = serializers.FloatField(required=False)
    max_grad_norm = serializers.FloatField(required=False)
    weighting_scheme = serializers.CharField(required=False, help_text="SD3 timestep density.")
    logit_mean = serializers.FloatField(required=False)
    logit_std = serializers.FloatField(required=False)
    mode_scale = serializers.FloatField(required=False)
    loss_weighting = serializers.CharField(required=False, help_text="SD3 loss weighting.")
    max_caption_tokens = serializers.IntegerField(required=False, help_text="Kosmos-2 caption length cap.")
    evaluate_after = serializers.BooleanField(
        required=False, default=False,
        help_text="Score checkpoints on held-out items, publish the best, and compare the adapted "
                  "model with its base on the sample suite.")

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"unknown setting '{key}'; known settings: {', '.join(self.fields)}"] for key in unknown})
        return super().to_internal_value(data)


class FinetuneRequestSerializer(serializers.Serializer):
    base_model = serializers.CharField(max_length=120, help_text="Catalog slug of the model to adapt.")
    dataset = serializers.UUIDField(help_text="Id of one of your datasets.")
    name = serializers.CharField(max_length=80, required=False, allow_blank=True,
                                 help_text="Adapter name (default: the dataset's name).")
    config = FinetuneConfigSerializer(required=False, default=dict)

    def validate_base_model(self, slug):
        entry = ModelEntry.objects.filter(slug=slug).select_related("base").first()
        if entry is None:
            raise serializers.ValidationError(f"unknown model slug '{slug}'; GET /api/v1/models/ lists the catalog")
        if entry.base_id:
            raise serializers.ValidationError(
                f"'{slug}' is an adapter on '{entry.base.slug}'; stacking adapters is not supported, "
                f"fine-tune '{entry.base.slug}' instead")
        if entry.architecture not in ARCHITECTURES:
            raise serializers.ValidationError(
                f"'{slug}' has architecture '{entry.architecture}', which cannot be fine-tuned; "
                f"trainable architectures: {', '.join(ARCHITECTURES)}")
        return entry

    def validate_dataset(self, dataset_id):
        user = self.context["request"].user
        dataset = actions.datasets_visible_to(user).filter(pk=dataset_id).first()
        if dataset is None:
            raise serializers.ValidationError(
                f"dataset {dataset_id} not found; upload one with POST /api/v1/datasets/")
        return dataset

    def validate(self, attrs):
        settings_values = dict(attrs.get("config") or {})
        evaluate_after = settings_values.pop("evaluate_after", False)
        base = attrs["base_model"]
        try:
            config = TrainingConfig.from_dict(base.architecture, settings_values)
            check_mixed_precision(config.mixed_precision, training_device_type())
        except ConfigError as exc:
            if exc.field == "base_model":
                raise serializers.ValidationError({"base_model": [exc.message]}) from exc
            raise serializers.ValidationError({"config": {exc.field: [exc.message]}}) from exc
        attrs["training_config"] = config
        attrs["evaluate_after"] = evaluate_after
        return attrs


def training_device_type():
    """Return the device type fine-tunes will train on: VERSUS_DEVICE, else CUDA when this host
    has it, else the CPU.

    NOTE: with VERSUS_DEVICE unset this assumes the workers have this host's devices. A worker
    on another device checks again and fails the job with the same message.
    """
    if settings.VERSUS_DEVICE:
        return settings.VERSUS_DEVICE.split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FinetuneSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="job_id", read_only=True)
    state = serializers.CharField(source="job.state", read_only=True)
    error = serializers.CharField(source="job.error", read_only=True)
    base_model = serializers.SlugRelatedField(source="base", slug_field="slug", read_only=True)
    dataset = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    loss = serializers.SerializerMethodField()
    elapsed_s = serializers.FloatField(source="job.duration_s", read_only=True)
    eta_s = serializers.SerializerMethodField()
    checkpoints = serializers.SerializerMethodField()
    adapter = serializers.SerializerMethodField()
    model = serializers.SerializerMethodField()
    evaluation = serializers.SerializerMethodField()
    standin = serializers.BooleanField(source="job.standin", read_only=True)
    created_at = serializers.DateTimeField(source="job.created_at", read_only=True)
    started_at = serializers.DateTimeField(source="job.started_at", read_only=True)
    finished_at = serializers.DateTimeField(source="job.finished_at", read_only=True)
    urls = serializers.SerializerMethodField()

    class Meta:
        model = FineTune
        fields = [
            "id", "name", "state", "error", "base_model", "dataset", "config", "evaluate_after", "progress",
            "loss", "learning_rate", "elapsed_s", "eta_s", "attempts", "resume_count", "resumed_from_step",
            "checkpoints", "validation", "adapter", "model", "evaluation", "standin", "created_at",
            "started_at", "finished_at", "urls",
        ]

    def get_dataset(self, finetune) -> dict:
        dataset = finetune.dataset
        return {"id": str(dataset.id), "name": dataset.name, "item_count": dataset.item_count,
                "url": _absolute(self.context, f"/api/v1/datasets/{dataset.id}/")}

    def get_progress(self, finetune) -> dict:
        max_steps = finetune.config["max_steps"]
        job = finetune.job
        phase = job.state if job.is_terminal else (job.progress_detail or {}).get("phase", job.state)
        return {"step": finetune.step, "max_steps": max_steps, "fraction": round(finetune.step / max_steps, 4),
                "phase": phase}

    def get_loss(self, finetune) -> dict:
        points = list(LossPoint.objects.filter(finetune=finetune).order_by("-step")
                      .values("step", "loss")[:RECENT_LOSS_POINTS])
        points.reverse()
        return {"current": finetune.loss, "recent": points}

    def get_eta_s(self, finetune) -> float | None:
        if finetune.job.is_terminal:
            return 0.0 if finetune.job.state == "succeeded" else None
        return (finetune.job.progress_detail or {}).get("eta_s")

    def get_checkpoints(self, finetune) -> list[dict]:
        rows = []
        for checkpoint in finetune.checkpoints.order_by("step"):
            folder = Path(settings.MEDIA_ROOT) / checkpoint.folder / "adapter"
            rows.append({
                "step": checkpoint.step, "loss": checkpoint.loss, "validation_loss": checkpoint.validation_loss,
                "adapter_url": self._media(folder / "adapter_model.safetensors"),
                "created_at": checkpoint.created_at,
            })
        return rows

    def get_adapter(self, finetune) -> dict | None:
        if not finetune.adapter_path:
            return None
        folder = Path(settings.MEDIA_ROOT) / finetune.output_dir / actions.PUBLISHED_ADAPTER_DIR
        files = sorted(path.name for path in folder.iterdir() if path.is_file()) if folder.is_dir() else []
        return {
            "path": finetune.adapter_path,
            "sha256": finetune.adapter_sha256,
            "step": finetune.adapter_step,
            "choice": finetune.adapter_choice,
            "url": self._media(folder.parent / actions.ADAPTER_ARCHIVE),
            "files": {name: self._media(folder / name) for name in files},
        }

    def get_model(self, finetune) -> dict | None:
        if not finetune.entry_id:
            return None
        entry = finetune.entry
        return {"slug": entry.slug, "name": entry.name,
                "url": _absolute(self.context, f"/api/v1/models/{entry.slug}/")}

    def get_evaluation(self, finetune) -> dict | None:
        if finetune.evaluation_job_id:
            job = finetune.evaluation_job
            return {"job": str(job.id), "state": job.state,
                    "url": _absolute(self.context, f"/api/v1/jobs/{job.id}/"), "error": ""}
        if finetune.evaluation_error:
            return {"job": None, "state": None, "url": None, "error": finetune.evaluation_error}
        return None

    def get_urls(self, finetune) -> dict[str, str]:
        base = f"/api/v1/finetunes/{finetune.job_id}/"
        return {
            "self": _absolute(self.context, base),
            "loss": _absolute(self.context, base + "loss/"),
            "job": _absolute(self.context, f"/api/v1/jobs/{finetune.job_id}/"),
            "cancel": _absolute(self.context, f"/api/v1/jobs/{finetune.job_id}/cancel/"),
        }

    def _media(self, path):
        url = actions.media_url(path)
        return _absolute(self.context, url) if url else None


class LossPointSerializer(serializers.ModelSerializer):
    class Meta:
        model = LossPoint
        fields = ["step", "loss", "learning_rate", "grad_norm"]


class LossCurveSerializer(serializers.Serializer):
    """A fine-tune's loss curve: one point per optimizer step, oldest first."""

    id = serializers.UUIDField()
    max_steps = serializers.IntegerField()
    points = LossPointSerializer(many=True)


def _absolute(context, path):
    request = context.get("request")
    return request.build_absolute_uri(path) if request else path
