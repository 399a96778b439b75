"""Evaluation API: suites (upload, list, detail), rank history, the match graph and metrics."""

from django.db.models import Count, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.api.errors import ApiError
from backend.catalog.models import ModelEntry, Task
from backend.jobs.models import JobState

from . import metrics as metric_lib
from . import ratings as rating_lib
from .models import ItemKind, Match, ModelScore, RankSnapshot, Suite
from .serializers import (
    MatchGraphSerializer,
    MetricSerializer,
    RankSnapshotSerializer,
    SuiteSerializer,
    SuiteUploadSerializer,
    category_counts,
)
from .uploads import create_uploaded_suite

METRIC_TASKS = (metric_lib.CAPTIONING, metric_lib.TEXT_TO_IMAGE, metric_lib.RUNTIME)


def suites_with_counts():
    return Suite.objects.select_related("owner").annotate(
        image_count=Count("items", filter=Q(items__kind=ItemKind.IMAGE)),
        prompt_count=Count("items", filter=Q(items__kind=ItemKind.PROMPT)),
    )


def task_parameter(request, choices):
    """Return the ``task`` query parameter, None when absent; ApiError for an unknown task."""
    task = request.query_params.get("task") or None
    if task is not None and task not in choices:
        raise ApiError(f"unknown task '{task}'; use one of {list(choices)}", field="task")
    return task


class SuiteListCreateView(generics.ListAPIView):
    """Suites for everyone to read; any signed-in user can upload one."""

    serializer_class = SuiteSerializer
    permission_classes = [permissions.IsAuthenticatedOrReadOnly]
    parser_classes = [MultiPartParser, FormParser]
    filter_backends = []

    def get_queryset(self):
        return suites_with_counts().order_by("slug")

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        context = self.get_serializer_context()
        context["categories"] = category_counts([suite.id for suite in page])
        return self.get_paginated_response(SuiteSerializer(page, many=True, context=context).data)

    @extend_schema(
        request={"multipart/form-data": SuiteUploadSerializer},
        responses={
            201: SuiteSerializer,
            400: OpenApiResponse(description="Rejected upload. The message names the field and the "
                                 "bad archive entry or line numbers. Nothing was stored."),
        },
        description="Upload a suite: an imagefolder zip, a prompt file, or both. Every file is "
        "checked before anything is stored.",
    )
    def post(self, request):
        serializer = SuiteUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        suite = create_uploaded_suite(
            request.user, data["slug"], data["name"], description=data["description"],
            license_text=data["license"], images=data.get("images"), prompts=data.get("prompts"),
        )
        body = SuiteSerializer(suites_with_counts().get(pk=suite.pk), context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


class SuiteDetailView(generics.RetrieveAPIView):
    serializer_class = SuiteSerializer
    permission_classes = [permissions.AllowAny]
    lookup_field = "slug"
    filter_backends = []

    def get_queryset(self):
        return suites_with_counts()

    def get_object(self):
        slug = self.kwargs["slug"]
        suite = self.get_queryset().filter(slug=slug).first()
        if suite is None:
            raise ApiError(f"suite '{slug}' not found; GET /api/v1/suites/ lists the suites",
                           code="not_found", status_code=404)
        return suite


class RankHistoryView(generics.ListAPIView):
    """Leaderboard snapshots, newest first: one per recompute that changed the leaderboard."""

    serializer_class = RankSnapshotSerializer
    permission_classes = [permissions.AllowAny]
    filter_backends = []

    @extend_schema(parameters=[
        OpenApiParameter("model", OpenApiTypes.STR,
                         description="Catalog slug; keeps only this model's entry in each snapshot."),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return RankSnapshot.objects.order_by("-created_at", "-id")

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["model"] = self.request.query_params.get("model") or None
        return context


class MatchGraphView(APIView):
    """Match counts, wins and ties per pair of models, from succeeded comparison jobs."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(
        parameters=[OpenApiParameter("task", OpenApiTypes.STR, enum=Task.values,
                                     description="Only this task's models and matches.")],
        responses=MatchGraphSerializer,
    )
    def get(self, request):
        task = task_parameter(request, Task.values)
        matches = Match.objects.filter(job__state=JobState.SUCCEEDED)
        entries = ModelEntry.objects.all()
        if task:
            matches = matches.filter(model_a__task=task)
            entries = entries.filter(task=task)
        rows = matches.values_list("item_id", "model_a__slug", "model_b__slug", "outcome",
                                   "score_a", "score_b")
        graph = rating_lib.match_graph([rating_lib.Match(*row) for row in rows.iterator()],
                                       entries.values_list("slug", flat=True))
        return Response(MatchGraphSerializer({
            "task": task,
            "matches": sum(edge["count"] for edge in graph["edges"]),
            "nodes": self.describe_nodes(graph),
            "edges": graph["edges"],
        }).data)

    @staticmethod
    def describe_nodes(graph):
        played = dict.fromkeys(graph["nodes"], 0)
        for edge in graph["edges"]:
            played[edge["a"]] += edge["count"]
            played[edge["b"]] += edge["count"]
        entries = {entry.slug: entry for entry in ModelEntry.objects.filter(slug__in=graph["nodes"])}
        ratings = dict(ModelScore.objects.filter(model__slug__in=graph["nodes"])
                       .values_list("model__slug", "rating"))
        return [
            {"slug": slug, "name": entries[slug].name if slug in entries else slug,
             "task": entries[slug].task if slug in entries else "",
             "rating": ratings.get(slug), "matches": played[slug]}
            for slug in graph["nodes"]
        ]


class MetricListView(generics.ListAPIView):
    """The metric registry: what each metric measures, its range, direction and primary flag."""

    serializer_class = MetricSerializer
    permission_classes = [permissions.AllowAny]
    filter_backends = []

    @extend_schema(parameters=[
        OpenApiParameter("task", OpenApiTypes.STR, enum=list(METRIC_TASKS),
                         description="Only this task's metrics."),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        task = task_parameter(self.request, METRIC_TASKS)
        return [metric for metric in metric_lib.METRICS.values() if task in (None, metric.task)]
