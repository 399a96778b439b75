from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.api.errors import ApiError

from . import actions
from .models import Dataset, FineTune, LossPoint
from .serializers import (
    DatasetSerializer,
    DatasetUploadSerializer,
    FinetuneRequestSerializer,
    FinetuneSerializer,
    LossCurveSerializer,
    LossPointSerializer,
)


class DatasetListCreateView(generics.ListAPIView):
    """Your datasets; POST a zip in the imagefolder layout to add one."""

    serializer_class = DatasetSerializer
    permission_classes = [permissions.IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Dataset.objects.none()
        return actions.datasets_visible_to(self.request.user)

    @extend_schema(request={"multipart/form-data": DatasetUploadSerializer}, responses={201: DatasetSerializer})
    def post(self, request):
        serializer = DatasetUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        dataset = actions.create_dataset_from_upload(request.user, data["file"], data.get("name", ""))
        body = DatasetSerializer(dataset, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


class DatasetDetailView(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=DatasetSerializer)
    def get(self, request, dataset_id):
        dataset = actions.access_dataset(request.user, dataset_id)
        return Response(DatasetSerializer(dataset, context={"request": request}).data)


class FinetuneListCreateView(generics.ListAPIView):
    """Your fine-tunes; POST a base model, a dataset and settings to start one."""

    serializer_class = FinetuneSerializer
    permission_classes = [permissions.IsAuthenticated]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return FineTune.objects.none()
        return actions.finetunes_visible_to(self.request.user).order_by("-job__created_at")

    @extend_schema(request=FinetuneRequestSerializer, responses={201: FinetuneSerializer})
    def post(self, request):
        serializer = FinetuneRequestSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        finetune = actions.submit_finetune(
            request.user, data["base_model"], data["dataset"], data["training_config"],
            name=data.get("name", ""), evaluate_after=data["evaluate_after"],
        )
        finetune = actions.access_finetune(request.user, finetune.pk)
        body = FinetuneSerializer(finetune, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["urls"]["self"]})


class FinetuneDetailView(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=FinetuneSerializer)
    def get(self, request, job_id):
        finetune = actions.access_finetune(request.user, job_id)
        return Response(FinetuneSerializer(finetune, context={"request": request}).data)


class FinetuneLossView(APIView):
    """The loss curve: one point per optimizer step."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=LossCurveSerializer, parameters=[
        OpenApiParameter("after", OpenApiTypes.INT, description="Only points with a step above this one"),
    ])
    def get(self, request, job_id):
        finetune = actions.access_finetune(request.user, job_id)
        after = request.query_params.get("after", "0")
        if not after.isdigit():
            raise ApiError(f"parameter 'after' must be a step number, got '{after}'", field="after")
        points = LossPoint.objects.filter(finetune=finetune, step__gt=int(after)).order_by("step")
        return Response({
            "id": str(finetune.pk),
            "max_steps": finetune.config["max_steps"],
            "points": LossPointSerializer(points, many=True).data,
        })
