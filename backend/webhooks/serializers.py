import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backend.webhooks import conf
from backend.webhooks.models import (
    SUBSCRIBABLE_EVENT_TYPES,
    Delivery,
    DeliveryAttempt,
    Endpoint,
    EventType,
)

MAX_GRACE_HOURS = 7 * 24


class EventTypesField(serializers.ListField):
    child = serializers.ChoiceField(choices=SUBSCRIBABLE_EVENT_TYPES)

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_empty", False)
        kwargs.setdefault("help_text", "Event types to receive: " + ", ".join(SUBSCRIBABLE_EVENT_TYPES) + ".")
        super().__init__(**kwargs)


class EndpointSerializer(serializers.ModelSerializer):
    events = EventTypesField(read_only=True)

    class Meta:
        model = Endpoint
        fields = [
            "id", "url", "description", "events", "enabled", "disabled_reason", "disabled_at",
            "consecutive_failures", "previous_secret_expires_at", "created_at", "updated_at",
        ]
        read_only_fields = fields


class EndpointWithSecretSerializer(EndpointSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="Signing secret (whsec_ + base64). Shown only when the endpoint is created "
        "or its secret is rotated; store it now.",
    )

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class EndpointCreateSerializer(serializers.ModelSerializer):
    events = EventTypesField()

    class Meta:
        model = Endpoint
        fields = ["url", "events", "description"]


class EndpointUpdateSerializer(serializers.ModelSerializer):
    events = EventTypesField(required=False)
    enabled = serializers.BooleanField(
        required=False,
        help_text="false disables the endpoint; true enables it again and clears its failure count.",
    )

    class Meta:
        model = Endpoint
        fields = ["url", "events", "description", "enabled"]
        extra_kwargs = {"url": {"required": False}, "description": {"required": False}}


class RotateSecretSerializer(serializers.Serializer):
    grace_period_hours = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_GRACE_HOURS,
        help_text="Hours the previous secret keeps signing, 0 to revoke it now. Defaults to "
        "VERSUS_WEBHOOK_SECRET_GRACE_HOURS (24).",
    )

    def validate(self, attrs):
        attrs.setdefault("grace_period_hours", conf.secret_grace_hours())
        return attrs


class EventEnvelopeSerializer(serializers.Serializer):
    """The JSON body of every webhook request."""

    type = serializers.ChoiceField(choices=EventType.choices, help_text="Event type.")
    id = serializers.CharField(
        help_text="Event id (evt_…), also sent as the webhook-id header. It stays the same on "
        "every retry and redelivery, so receivers can drop duplicates by it.",
    )
    timestamp = serializers.DateTimeField(help_text="When the event happened (ISO 8601, UTC).")
    data = serializers.DictField(
        help_text="Event details, set by the code that emits the event: job events carry the "
        "job's id, kind, state, error, metrics and URLs; verdict.published the verdict and "
        "its two models; ranking.changed the reason, previous ranks and new ranking; ping "
        "endpoint_id and message.",
    )


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = [
            "number", "started_at", "status_code", "latency_ms", "response_excerpt", "error",
            "succeeded",
        ]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.CharField(read_only=True)
    event_type = serializers.CharField(source="event.type", read_only=True)
    attempts = DeliveryAttemptSerializer(many=True, read_only=True)
    payload = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = [
            "id", "event_id", "event_type", "status", "retry", "attempt_count",
            "next_attempt_at", "last_status_code", "last_error", "created_at", "finished_at",
            "attempts", "payload",
        ]
        read_only_fields = fields

    @extend_schema_field(EventEnvelopeSerializer)
    def get_payload(self, delivery):
        return json.loads(delivery.event.body)
