from django.conf import settings
from rest_framework import serializers

from backend.catalog.models import ModelEntry
from backend.evaluation.models import ModelScore, Suite, Verdict

from .models import Batch, Job, Result
from .options import ComparisonOptionsSerializer

STANDIN_NOTE = ("Scores come from stand-in checkpoints (real architectures with random weights); "
                "they test the pipeline, not the models.")


class ComparisonRequestSerializer(serializers.Serializer):
    models = serializers.ListField(
        child=serializers.CharField(max_length=120), allow_empty=False,
        help_text="Two or more catalog slugs.",
    )
    suite = serializers.CharField(max_length=120, default="sample")
    options = ComparisonOptionsSerializer(required=False, default=dict)

    def validate_models(self, slugs):
        if len(slugs) < 2:
            raise serializers.ValidationError(
                f"got {len(slugs)} model ({slugs}); a comparison needs at least two catalog slugs")
        if len(set(slugs)) != len(slugs):
            raise serializers.ValidationError(f"duplicate slugs in {slugs}; list each model once")
        entries = {entry.slug: entry for entry in ModelEntry.objects.filter(slug__in=slugs)}
        unknown = [slug for slug in slugs if slug not in entries]
        if unknown:
            raise serializers.ValidationError(
                f"unknown model slug(s) {unknown}; GET /api/v1/models/ lists the catalog")
        return [entries[slug] for slug in slugs]

    def validate_suite(self, slug):
        suite = Suite.objects.filter(slug=slug).first()
        if suite is None:
            known = list(Suite.objects.values_list("slug", flat=True))
            raise serializers.ValidationError(f"unknown suite '{slug}'; known suites: {known}")
        return suite

    def validate_options(self, options):
        if not options:
            serializer = ComparisonOptionsSerializer(data={})
            serializer.is_valid(raise_exception=True)
            return serializer.validated_data
        return options


class ModelEntrySerializer(serializers.ModelSerializer):
    base = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    score = serializers.SerializerMethodField()

    class Meta:
        model = ModelEntry
        fields = [
            "slug", "name", "task", "architecture", "source", "base", "parameter_count",
            "license", "pricing", "capabilities", "default_options", "downloads", "likes",
            "integrations", "supports_lora", "supports_quantization", "open_weights", "is_standin",
            "judge", "score", "created_at",
        ]

    def get_score(self, entry):
        score = getattr(entry, "score", None)
        if score is None:
            return None
        return {"composite": round(score.composite, 2), "rank": score.rank,
                "subscores": score.subscores, "standin": score.standin,
                "note": STANDIN_NOTE if score.standin else ""}


class BatchSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Batch
        fields = ["index", "model", "state", "attempts", "size", "error", "report", "started_at",
                  "finished_at"]


class JobSerializer(serializers.ModelSerializer):
    models = serializers.ListField(source="model_order", read_only=True)
    suite = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    progress = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    results_url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()
    standin_note = serializers.SerializerMethodField()
    batches = serializers.SerializerMethodField()
    verdicts = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "kind", "state", "models", "suite", "options", "progress", "error", "metrics",
            "standin", "standin_note", "manifest", "created_at", "started_at", "finished_at",
            "duration_s", "url", "results_url", "page_url", "batches", "verdicts",
        ]

    def get_progress(self, job):
        return {"done": job.progress_done, "total": job.progress_total,
                "fraction": round(job.progress_fraction, 4), "detail": job.progress_detail}

    def _absolute(self, path):
        request = self.context.get("request")
        if request is None:
            return settings.VERSUS_PUBLIC_URL + path
        return request.build_absolute_uri(path)

    def get_url(self, job):
        return self._absolute(f"/api/v1/jobs/{job.id}/")

    def get_results_url(self, job):
        return self._absolute(f"/api/v1/jobs/{job.id}/results/")

    def get_page_url(self, job):
        return self._absolute(f"/jobs/{job.id}/")

    def get_standin_note(self, job):
        return STANDIN_NOTE if job.standin else ""

    def get_verdicts(self, job):
        """Verdicts this job produced, in any review state: the submitter can read its own evidence."""
        verdicts = job.verdicts.select_related("model_a", "model_b", "leader")
        return VerdictSerializer(verdicts, many=True, context=self.context).data

    def get_batches(self, job):
        counts = {}
        for state in job.batches.values_list("state", flat=True):
            counts[state] = counts.get(state, 0) + 1
        return {"total": sum(counts.values()), "by_state": counts}


class ResultSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    item = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = Result
        fields = ["id", "model", "item", "output", "metrics", "image_url", "updated_at"]

    def get_item(self, result):
        item = result.item
        data = {"id": item.id, "kind": item.kind, "key": item.key, "position": item.position}
        if item.kind == "image":
            data.update(references=item.references, objects=item.reference_objects,
                        image_url=self._media(item.image))
        else:
            data.update(prompt=item.prompt, category=item.category, challenge=item.challenge)
        return data

    def _media(self, field):
        if not field:
            return None
        request = self.context.get("request")
        return request.build_absolute_uri(field.url) if request else field.url

    def get_image_url(self, result):
        return self._media(result.image)


class RankingSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    name = serializers.CharField(source="model.name", read_only=True)
    task = serializers.CharField(source="model.task", read_only=True)
    interval = serializers.SerializerMethodField()
    note = serializers.SerializerMethodField()

    class Meta:
        model = ModelScore
        fields = ["rank", "model", "name", "task", "composite", "subscores", "metrics", "rating",
                  "interval", "matches", "provisional", "standin", "note", "provenance", "updated_at"]

    def get_interval(self, score):
        if score.rating_low is None:
            return None
        return [score.rating_low, score.rating_high]

    def get_note(self, score):
        return STANDIN_NOTE if score.standin else ""


class VerdictSerializer(serializers.ModelSerializer):
    model_a = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model_b = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    leader = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    job = serializers.PrimaryKeyRelatedField(read_only=True)
    standin_note = serializers.SerializerMethodField()

    class Meta:
        model = Verdict
        fields = ["id", "model_a", "model_b", "leader", "text", "structured", "state", "job",
                  "standin_note", "reviewed_at", "created_at", "updated_at"]

    def get_standin_note(self, verdict):
        return STANDIN_NOTE if verdict.structured.get("standin") else ""
