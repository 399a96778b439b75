"""Comparison job options: one serializer validates them for the API and the CLI alike."""

from django.conf import settings
from rest_framework import serializers

PRECISIONS = ["auto", "float32", "bfloat16", "float16", "int8"]

# Defaults used when neither the job nor the catalog entry sets a value. Stable Diffusion 3.5
# Large's model card samples with 28 steps at guidance 3.5.
GENERATION_DEFAULTS = {"num_inference_steps": 28, "guidance_scale": 3.5}
CAPTIONING_DEFAULTS = {"max_new_tokens": 32}


def _multiple_of_16(value):
    if value is not None and value % 16:
        raise serializers.ValidationError(
            f"{value} is not a multiple of 16; SD3 needs sizes divisible by 16 (VAE factor 8 "
            "times patch size 2), e.g. {0} or {1}".format(value - value % 16, value - value % 16 + 16)
        )


# Range errors name the value received; Django's validators fill in %(value)s.
RANGE_ERRORS = {"min_value": "got %(value)s; must be at least {min_value}.",
                "max_value": "got %(value)s; must be at most {max_value}."}


class ComparisonOptionsSerializer(serializers.Serializer):
    limit = serializers.IntegerField(error_messages=RANGE_ERRORS,
        required=False, min_value=1, max_value=100_000,
        help_text="Sample at most this many items of each kind, stratified by category.",
    )
    seed = serializers.IntegerField(error_messages=RANGE_ERRORS,
        required=False, default=0, min_value=0, max_value=2**31 - 1,
        help_text="Seed for sampling items; item i is generated with seed + i.",
    )
    batch_size = serializers.IntegerField(error_messages=RANGE_ERRORS,
        required=False, min_value=1, max_value=256, help_text="Items per batch task.",
    )
    max_new_tokens = serializers.IntegerField(error_messages=RANGE_ERRORS, required=False, min_value=1, max_value=512)
    num_inference_steps = serializers.IntegerField(error_messages=RANGE_ERRORS, required=False, min_value=1, max_value=200)
    guidance_scale = serializers.FloatField(error_messages=RANGE_ERRORS, required=False, min_value=0.0, max_value=30.0)
    height = serializers.IntegerField(error_messages=RANGE_ERRORS, required=False, min_value=16, max_value=2048,
                                      validators=[_multiple_of_16])
    width = serializers.IntegerField(error_messages=RANGE_ERRORS, required=False, min_value=16, max_value=2048,
                                     validators=[_multiple_of_16])
    precision = serializers.ChoiceField(
        choices=PRECISIONS, required=False, default="auto",
        error_messages={"invalid_choice": f'"{{input}}" is not a valid precision; use one of {PRECISIONS}.'},
        help_text="Weights and activations: auto (bfloat16 on CUDA, else float32), float32, bfloat16, "
        "float16 (CUDA only) or int8 weights (dynamic quantization on CPU, bitsandbytes on CUDA).",
    )
    attention_maps = serializers.BooleanField(
        required=False, default=False,
        help_text="Captioners also save, per grounded phrase, a heatmap of its attention over the image.",
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    f"unknown option(s) {unknown}; known options: {sorted(self.fields)}")
        return super().to_internal_value(data)

    def validate(self, attrs):
        attrs.setdefault("batch_size", settings.VERSUS_BATCH_SIZE)
        return attrs


def options_for_entry(entry, job_options):
    """Merge defaults, the entry's own defaults and the job's explicit options, in that order."""
    base = dict(GENERATION_DEFAULTS if entry.task == "text-to-image" else CAPTIONING_DEFAULTS)
    base.update(entry.root.default_options or {})
    base.update(entry.default_options or {})
    base.update({key: value for key, value in job_options.items() if value is not None})
    return base
