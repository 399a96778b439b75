from django.contrib import admin

from .models import Checkpoint, Dataset, FineTune


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "item_count", "size_bytes", "created_at"]
    search_fields = ["name", "owner__username"]
    readonly_fields = ["id", "folder", "items", "item_count", "size_bytes", "sha256", "created_at"]


class CheckpointInline(admin.TabularInline):
    model = Checkpoint
    extra = 0
    can_delete = False
    readonly_fields = ["step", "folder", "loss", "validation_loss", "created_at"]


@admin.register(FineTune)
class FineTuneAdmin(admin.ModelAdmin):
    list_display = ["job", "name", "base", "state", "step", "loss", "resume_count", "entry"]
    list_select_related = ["job", "base", "entry"]
    search_fields = ["name", "base__slug", "job__id"]
    readonly_fields = [
        "job", "base", "dataset", "config", "evaluate_after", "validation", "output_dir", "step", "loss",
        "learning_rate", "attempts", "resume_count", "resumed_from_step", "worker", "adapter_path",
        "adapter_sha256", "adapter_step", "adapter_choice", "entry", "evaluation_job", "evaluation_error",
    ]
    inlines = [CheckpointInline]

    @admin.display(description="state")
    def state(self, finetune):
        return finetune.job.state
