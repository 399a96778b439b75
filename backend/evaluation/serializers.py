import math
from collections import defaultdict

from django.db.models import Count
from rest_framework import serializers

from .models import ItemKind, RankSnapshot, Suite, SuiteItem

# Upload slugs are shorter than the column so that "suites/<slug>/<position><extension>"
# always fits the image FileField (100 characters).
MAX_UPLOAD_SLUG_CHARS = 50


def category_counts(suite_ids):
    """Return ``{suite id: [{"name", "prompts"}]}`` for the prompt categories, sorted by name."""
    counts = defaultdict(list)
    rows = (SuiteItem.objects.filter(suite_id__in=suite_ids, kind=ItemKind.PROMPT).exclude(category="")
            .values("suite_id", "category").annotate(prompts=Count("id")).order_by("suite_id", "category"))
    for row in rows:
        counts[row["suite_id"]].append({"name": row["category"], "prompts": row["prompts"]})
    return counts


class SuiteUploadSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=MAX_UPLOAD_SLUG_CHARS,
                                 help_text="Identifier used in URLs and comparison requests.")
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    license = serializers.CharField(required=False, allow_blank=True, default="",
                                    help_text="License of the images and prompts.")
    images = serializers.FileField(
        required=False,
        help_text="Zip of an imagefolder: images plus metadata.jsonl with one "
        '{"file_name", "text", "captions", "objects", "license"} object per line.',
    )
    prompts = serializers.FileField(
        required=False,
        help_text="Prompt file: TSV with a Prompt column (and Category, Challenge), JSON Lines "
        "with prompt (and category, challenge), or plain text with one prompt per line.",
    )

    def validate_slug(self, slug):
        if Suite.objects.filter(slug=slug).exists():
            raise serializers.ValidationError(f"suite '{slug}' already exists; choose another slug")
        return slug

    def validate(self, attrs):
        if not attrs.get("images") and not attrs.get("prompts"):
            raise serializers.ValidationError(
                "no files: send an 'images' zip, a 'prompts' file, or both")
        return attrs


class SuiteSerializer(serializers.ModelSerializer):
    """A suite with its item counts and prompt categories.

    ``categories`` comes from the ``categories`` context entry (suite id to list) when the
    view precomputed it for a page, else from one query per suite.
    """

    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    item_counts = serializers.SerializerMethodField()
    categories = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Suite
        fields = ["slug", "name", "description", "license", "owner", "content_sha256", "item_counts",
                  "categories", "created_at", "url"]

    def get_item_counts(self, suite) -> dict:
        images = getattr(suite, "image_count", None)
        prompts = getattr(suite, "prompt_count", None)
        if images is None or prompts is None:
            images = suite.items.filter(kind="image").count()
            prompts = suite.items.filter(kind="prompt").count()
        return {"total": images + prompts, "images": images, "prompts": prompts}

    def get_categories(self, suite) -> list:
        precomputed = self.context.get("categories")
        if precomputed is None:
            precomputed = category_counts([suite.id])
        return precomputed.get(suite.id, [])

    def get_url(self, suite) -> str:
        path = f"/api/v1/suites/{suite.slug}/"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class RankSnapshotSerializer(serializers.ModelSerializer):
    """A leaderboard snapshot; with a ``model`` slug in the context, only that model's entry."""

    entries = serializers.SerializerMethodField()

    class Meta:
        model = RankSnapshot
        fields = ["id", "created_at", "reason", "entries"]

    def get_entries(self, snapshot) -> list[dict]:
        slug = self.context.get("model")
        if not slug:
            return snapshot.entries
        return [entry for entry in snapshot.entries if entry.get("slug") == slug]


class MatchGraphNodeSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    task = serializers.CharField()
    rating = serializers.FloatField(allow_null=True)
    matches = serializers.IntegerField()


class MatchGraphEdgeSerializer(serializers.Serializer):
    a = serializers.CharField(help_text="Slug of one model; a < b.")
    b = serializers.CharField()
    count = serializers.IntegerField(help_text="Matches between a and b.")
    wins_a = serializers.IntegerField()
    wins_b = serializers.IntegerField()
    ties = serializers.IntegerField()


class MatchGraphSerializer(serializers.Serializer):
    task = serializers.CharField(allow_null=True)
    matches = serializers.IntegerField()
    nodes = MatchGraphNodeSerializer(many=True)
    edges = MatchGraphEdgeSerializer(many=True)


class MetricSerializer(serializers.Serializer):
    """A metric registry entry; infinite range ends are null."""

    name = serializers.CharField()
    task = serializers.CharField()
    formula = serializers.CharField()
    range = serializers.SerializerMethodField()
    direction = serializers.CharField()
    unit = serializers.CharField()
    primary = serializers.BooleanField()

    def get_range(self, metric) -> list[float | None]:
        return [None if math.isinf(end) else end for end in metric.value_range]
