"""Evaluation suites and the evidence derived from jobs: scores, matches, ratings, verdicts."""

from django.conf import settings
from django.db import models


class Suite(models.Model):
    """A named set of evaluation items: photos with references and text-to-image prompts."""

    slug = models.SlugField(max_length=120, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    license = models.TextField(blank=True)
    content_sha256 = models.CharField(max_length=64, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="suites",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug


class ItemKind(models.TextChoices):
    IMAGE = "image", "Image with references"
    PROMPT = "prompt", "Text-to-image prompt"


class SuiteItem(models.Model):
    suite = models.ForeignKey(Suite, on_delete=models.CASCADE, related_name="items")
    kind = models.CharField(max_length=10, choices=ItemKind.choices)
    position = models.PositiveIntegerField()
    key = models.CharField(max_length=300, help_text="File name for an image, row id for a prompt.")
    image = models.FileField(upload_to="suites/", blank=True)
    text = models.TextField(blank=True, help_text="Main reference caption of an image.")
    captions = models.JSONField(default=list, blank=True)
    reference_objects = models.JSONField(
        default=list, blank=True, help_text="Reference phrases with boxes as [x0, y0, x1, y1] fractions.",
    )
    prompt = models.TextField(blank=True)
    category = models.CharField(max_length=120, blank=True)
    challenge = models.CharField(max_length=120, blank=True)
    license = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["suite", "kind", "position"]
        constraints = [
            models.UniqueConstraint(fields=["suite", "kind", "position"], name="unique_suite_item"),
        ]

    def __str__(self):
        return f"{self.suite.slug}:{self.kind}:{self.key}"

    @property
    def references(self):
        """Reference captions: the main text first, then the extra captions."""
        refs = [self.text] if self.text else []
        return refs + [c for c in self.captions if c and c != self.text]


class ModelScore(models.Model):
    """Latest sub-scores and composite of one entry, with where each number came from."""

    model = models.OneToOneField("catalog.ModelEntry", on_delete=models.CASCADE, related_name="score")
    subscores = models.JSONField(default=dict)
    composite = models.FloatField(default=0.0)
    rank = models.PositiveIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, help_text="Aggregated metrics per task from the evidence.")
    provenance = models.JSONField(default=dict)
    rating = models.FloatField(null=True, blank=True)
    rating_low = models.FloatField(null=True, blank=True)
    rating_high = models.FloatField(null=True, blank=True)
    matches = models.PositiveIntegerField(default=0)
    provisional = models.BooleanField(default=True)
    standin = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["rank", "model__slug"]


class Match(models.Model):
    """A pairwise outcome of two same-task entries on one item of one job."""

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="matches")
    item = models.ForeignKey(SuiteItem, on_delete=models.CASCADE, related_name="matches")
    model_a = models.ForeignKey("catalog.ModelEntry", on_delete=models.CASCADE, related_name="+")
    model_b = models.ForeignKey("catalog.ModelEntry", on_delete=models.CASCADE, related_name="+")
    metric = models.CharField(max_length=60)
    score_a = models.FloatField()
    score_b = models.FloatField()
    outcome = models.CharField(max_length=4, choices=[("a", "A wins"), ("b", "B wins"), ("tie", "Tie")])

    class Meta:
        verbose_name_plural = "matches"
        constraints = [
            models.UniqueConstraint(fields=["job", "item", "model_a", "model_b"], name="unique_match"),
        ]


class RankSnapshot(models.Model):
    """The whole leaderboard after one recompute, kept so rank history can be plotted."""

    created_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=200, blank=True)
    entries = models.JSONField(default=list)
    content_sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["-created_at", "-id"]


class VerdictState(models.TextChoices):
    DRAFT = "draft", "Draft"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class Verdict(models.Model):
    """The written comparison of a pair, ordered so model_a.slug < model_b.slug."""

    model_a = models.ForeignKey("catalog.ModelEntry", on_delete=models.CASCADE, related_name="+")
    model_b = models.ForeignKey("catalog.ModelEntry", on_delete=models.CASCADE, related_name="+")
    leader = models.ForeignKey(
        "catalog.ModelEntry", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    text = models.TextField()
    generated_text = models.TextField(blank=True)
    structured = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=VerdictState.choices, default=VerdictState.DRAFT)
    review_note = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="verdicts")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["model_a", "model_b"], name="unique_verdict_pair"),
        ]

    def __str__(self):
        return f"{self.model_a.slug} vs {self.model_b.slug}"
