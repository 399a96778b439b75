"""Staff editing of the catalog: identity, checkpoint, capabilities, adoption and ecosystem."""

from django import forms
from django.contrib import admin

from .models import ModelEntry


class LinesField(forms.CharField):
    """A list of strings edited as a textarea, one item per line; blank lines are dropped."""

    widget = forms.Textarea(attrs={"rows": 6, "cols": 80})

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


class ModelEntryForm(forms.ModelForm):
    capabilities = LinesField(required=False, help_text="One capability per line.")
    integrations = LinesField(
        required=False, help_text="Libraries and tools that load this model, one per line (e.g. diffusers).")

    class Meta:
        model = ModelEntry
        fields = "__all__"

    def clean(self):
        data = super().clean()
        base = data.get("base")
        if base is not None and self.instance.pk and base.pk == self.instance.pk:
            self.add_error("base", "An entry cannot be an adapter on itself; pick another base entry.")
        if base is not None and not data.get("adapter_path"):
            self.add_error("adapter_path", "An entry with a base must name its LoRA adapter folder.")
        return data


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin):
    form = ModelEntryForm
    list_display = ["slug", "name", "task", "architecture", "downloads", "likes", "open_weights",
                    "capability_count", "is_standin", "judge"]
    list_filter = ["task", "architecture", "is_standin", "open_weights", "supports_lora", "judge"]
    search_fields = ["slug", "name", "source"]
    list_select_related = ["base"]
    autocomplete_fields = ["base"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "task", "architecture", "description", "owner"]}),
        ("Checkpoint", {"fields": ["source", "local_path", "standin_seed", "base", "adapter_path",
                                   "adapter_sha256", "parameter_count", "default_options", "judge"]}),
        ("Capabilities", {"fields": ["capabilities"]}),
        ("Adoption", {"fields": ["downloads", "likes"]}),
        ("Ecosystem", {"fields": ["license", "open_weights", "integrations", "supports_lora",
                                  "supports_quantization", "pricing"]}),
        ("Stand-in", {"fields": ["is_standin"],
                      "description": "Set by each finished job from the checkpoints it ran; edit it "
                                     "only to correct a wrong flag."}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description="capabilities")
    def capability_count(self, entry):
        return len(entry.capabilities or [])
