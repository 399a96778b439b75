"""Webhook endpoints API. Every view fetches the endpoint through ``access_endpoint``."""

from datetime import timedelta

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.webhooks import actions
from backend.webhooks.models import Delivery, Endpoint
from backend.webhooks.serializers import (
    DeliverySerializer,
    EndpointCreateSerializer,
    EndpointSerializer,
    EndpointUpdateSerializer,
    EndpointWithSecretSerializer,
    RotateSecretSerializer,
)

TAG = "webhooks"


class EndpointAccessMixin:
    permission_classes = [IsAuthenticated]

    def get_endpoint(self):
        return actions.access_endpoint(self.request.user, self.kwargs["endpoint_id"])


@extend_schema_view(
    get=extend_schema(tags=[TAG], summary="List webhook endpoints (your own; staff see all)"),
    post=extend_schema(
        tags=[TAG], summary="Subscribe a URL to events",
        request=EndpointCreateSerializer,
        responses={201: EndpointWithSecretSerializer},
        description="The URL must be http(s) on a public host; loopback, private, link-local, "
        "multicast, reserved and cloud metadata addresses are rejected with 400. The response "
        "is the only one that shows the signing secret.",
    ),
)
class EndpointListCreateView(generics.ListCreateAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = EndpointSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Endpoint.objects.none()
        return actions.visible_endpoints(self.request.user)

    def create(self, request, *args, **kwargs):
        serializer = EndpointCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = actions.create_endpoint(owner=request.user, **serializer.validated_data)
        return Response(EndpointWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(tags=[TAG], summary="Show a webhook endpoint"),
    patch=extend_schema(
        tags=[TAG], summary="Change URL, events or description, or disable/enable",
        request=EndpointUpdateSerializer, responses={200: EndpointSerializer},
    ),
    delete=extend_schema(tags=[TAG], summary="Delete a webhook endpoint and its deliveries"),
)
class EndpointDetailView(EndpointAccessMixin, generics.RetrieveUpdateDestroyAPIView):
    queryset = Endpoint.objects.none()  # for the schema only; get_object uses access_endpoint
    serializer_class = EndpointSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_object(self):
        return self.get_endpoint()

    def partial_update(self, request, *args, **kwargs):
        endpoint = self.get_endpoint()
        serializer = EndpointUpdateSerializer(endpoint, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = actions.update_endpoint(endpoint, request.user, **serializer.validated_data)
        return Response(EndpointSerializer(endpoint).data)

    def perform_destroy(self, instance):
        actions.delete_endpoint(instance)


class RotateSecretView(EndpointAccessMixin, APIView):
    @extend_schema(
        tags=[TAG], summary="Replace the signing secret",
        request=RotateSecretSerializer, responses={200: EndpointWithSecretSerializer},
        description="Returns the new secret once. Until previous_secret_expires_at every "
        "request carries two v1 signatures, one per secret.",
    )
    def post(self, request, endpoint_id):
        endpoint = self.get_endpoint()
        serializer = RotateSecretSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        grace = timedelta(hours=serializer.validated_data["grace_period_hours"])
        endpoint = actions.rotate_secret(endpoint, grace)
        return Response(EndpointWithSecretSerializer(endpoint).data)


class SendTestEventView(EndpointAccessMixin, APIView):
    @extend_schema(
        tags=[TAG], summary="Send a ping event", request=None,
        responses={202: DeliverySerializer, 409: OpenApiResponse(description="Endpoint disabled.")},
        description="Queues one signed ping event, attempted once without retries. Its result "
        "appears in the deliveries list.",
    )
    def post(self, request, endpoint_id):
        delivery = actions.send_test_event(self.get_endpoint())
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    get=extend_schema(
        tags=[TAG], summary="List deliveries with every attempt",
        description="Newest first. Each attempt has its time, HTTP status, latency, the first "
        "500 characters of the response and the error. Filter with ?status=pending|succeeded|failed.",
    ),
)
class DeliveryListView(EndpointAccessMixin, generics.ListAPIView):
    serializer_class = DeliverySerializer
    filterset_fields = ["status"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no endpoint id
            return Delivery.objects.none()
        endpoint = self.get_endpoint()
        return (
            Delivery.objects.filter(endpoint=endpoint)
            .select_related("event")
            .prefetch_related("attempts")
        )


class RedeliverView(EndpointAccessMixin, APIView):
    @extend_schema(
        tags=[TAG], summary="Send a delivery's event again", request=None,
        responses={
            202: DeliverySerializer,
            409: OpenApiResponse(description="Endpoint disabled, or a delivery is still pending."),
        },
        description="Creates a new delivery of the same event (same webhook-id) with retries.",
    )
    def post(self, request, endpoint_id, delivery_id):
        endpoint = self.get_endpoint()
        delivery = Delivery.objects.select_related("endpoint").filter(pk=delivery_id, endpoint=endpoint).first()
        if delivery is None:
            raise NotFound(f"Delivery {delivery_id} of webhook endpoint {endpoint.pk} not found.")
        new_delivery = actions.redeliver(delivery)
        return Response(DeliverySerializer(new_delivery).data, status=status.HTTP_202_ACCEPTED)
