from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.api.errors import ApiError
from backend.catalog.models import ModelEntry
from backend.evaluation.models import ModelScore, Verdict, VerdictState

from . import actions
from .options import ComparisonOptionsSerializer
from .serializers import (
    ComparisonRequestSerializer,
    JobSerializer,
    ModelEntrySerializer,
    RankingSerializer,
    ResultSerializer,
    VerdictSerializer,
)


class ResultPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class ComparisonCreateView(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=ComparisonRequestSerializer, responses={201: JobSerializer})
    def post(self, request):
        serializer = ComparisonRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = actions.submit_comparison(request.user, data["models"], data["suite"], data["options"])
        body = JobSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


class JobListView(generics.ListAPIView):
    serializer_class = JobSerializer
    permission_classes = [permissions.IsAuthenticated]
    filterset_fields = ["state", "kind"]

    def get_queryset(self):
        return actions.jobs_visible_to(self.request.user)


class JobDetailView(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=JobSerializer)
    def get(self, request, job_id):
        job = actions.access_job(request.user, job_id)
        return Response(JobSerializer(job, context={"request": request}).data)


class JobCancelView(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses=JobSerializer)
    def post(self, request, job_id):
        job = actions.access_job(request.user, job_id)
        job = actions.cancel_job(job)
        return Response(JobSerializer(job, context={"request": request}).data)


class RerunRequestSerializer(ComparisonOptionsSerializer):
    """Options that replace the original job's; omitted ones are copied from it."""

    seed = None
    precision = None

    def validate(self, attrs):
        return attrs


class JobRerunView(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=RerunRequestSerializer, responses={201: JobSerializer})
    def post(self, request, job_id):
        job = actions.access_job(request.user, job_id)
        serializer = RerunRequestSerializer(data=request.data.get("options", {}) if hasattr(request.data, "get") else {})
        serializer.is_valid(raise_exception=True)
        new_job = actions.rerun_comparison(job, request.user, serializer.validated_data)
        body = JobSerializer(new_job, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


class JobResultsView(generics.ListAPIView):
    serializer_class = ResultSerializer
    permission_classes = [permissions.IsAuthenticated]
    pagination_class = ResultPagination

    @extend_schema(parameters=[OpenApiParameter("model", OpenApiTypes.STR, description="Catalog slug")])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        job = actions.access_job(self.request.user, self.kwargs["job_id"])
        queryset = job.results.select_related("model", "item").order_by(
            "model__slug", "item__kind", "item__position")
        slug = self.request.query_params.get("model")
        if slug:
            queryset = queryset.filter(model__slug=slug)
        return queryset


class ModelListView(generics.ListAPIView):
    serializer_class = ModelEntrySerializer
    permission_classes = [permissions.AllowAny]
    queryset = ModelEntry.objects.select_related("base", "score").order_by("slug")
    filterset_fields = ["task", "architecture"]


class ModelDetailView(generics.RetrieveAPIView):
    serializer_class = ModelEntrySerializer
    permission_classes = [permissions.AllowAny]
    queryset = ModelEntry.objects.select_related("base", "score")
    lookup_field = "slug"

    def get_object(self):
        entry = self.get_queryset().filter(slug=self.kwargs["slug"]).first()
        if entry is None:
            raise ApiError(f"Model '{self.kwargs['slug']}' not found; GET /api/v1/models/ lists the catalog.",
                           code="not_found", status_code=404)
        return entry


class RankingListView(generics.ListAPIView):
    serializer_class = RankingSerializer
    permission_classes = [permissions.AllowAny]
    filterset_fields = {"model__task": ["exact"]}

    def get_queryset(self):
        return ModelScore.objects.select_related("model").order_by("rank", "model__slug")


class VerdictListView(generics.ListAPIView):
    """Approved verdicts for everyone; staff also see drafts and rejected ones."""

    serializer_class = VerdictSerializer
    permission_classes = [permissions.AllowAny]

    @extend_schema(parameters=[
        OpenApiParameter("a", OpenApiTypes.STR, description="Slug of one model of the pair"),
        OpenApiParameter("b", OpenApiTypes.STR, description="Slug of the other model"),
        OpenApiParameter("state", OpenApiTypes.STR, description="draft, approved or rejected (staff)"),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        queryset = Verdict.objects.select_related("model_a", "model_b", "leader")
        user = self.request.user
        if user.is_authenticated and user.is_staff:
            if params.get("state"):
                queryset = queryset.filter(state=params["state"])
        else:
            queryset = queryset.filter(state=VerdictState.APPROVED)

        slug_a, slug_b = params.get("a"), params.get("b")
        for slug, name in ((slug_a, "a"), (slug_b, "b")):
            if slug and not ModelEntry.objects.filter(slug=slug).exists():
                raise ApiError(f"unknown model slug '{slug}' in parameter '{name}'", field=name)
        if slug_a and slug_b:
            queryset = queryset.filter(
                Q(model_a__slug=slug_a, model_b__slug=slug_b) | Q(model_a__slug=slug_b, model_b__slug=slug_a))
        elif slug_a or slug_b:
            slug = slug_a or slug_b
            queryset = queryset.filter(Q(model_a__slug=slug) | Q(model_b__slug=slug))
        return queryset
