"""OpenAPI 3.1 ``webhooks`` entries: the requests Versus sends to subscribed URLs.

To publish them in the API schema, set ``SPECTACULAR_SETTINGS["WEBHOOKS"] = WEBHOOK_PATHS``
(import paths, as drf-spectacular expects) and ``SPECTACULAR_SETTINGS["OAS_VERSION"] =
"3.1.0"``.
"""

from drf_spectacular.utils import OpenApiResponse, OpenApiWebhook, extend_schema

from backend.webhooks.models import EventType
from backend.webhooks.serializers import EventEnvelopeSerializer

# drf-spectacular 0.30 drops parameters of webhook operations, so the headers are described
# in text.
SIGNATURE_HEADERS_TEXT = (
    "Headers (Standard Webhooks): webhook-id is the event id, the same on every retry and "
    "redelivery; webhook-timestamp is the attempt time in Unix seconds, reject requests more "
    "than 5 minutes off; webhook-signature holds space-separated v1,<base64 HMAC-SHA256 of "
    "id.timestamp.body> entries, two while a rotated secret is in its grace period. "
    "versus_webhooks.verify() checks all three."
)

RECEIVER_RESPONSES = {
    "2XX": OpenApiResponse(description="Received. Any 2xx ends the delivery."),
    "410": OpenApiResponse(description="Gone: Versus disables the endpoint at once."),
    "default": OpenApiResponse(
        description="Any other status, a redirect, or no response within 15 s is retried with "
        "backoff; with the default settings a delivery gets 8 attempts over about 23 hours. "
        "Test pings are sent once.",
    ),
}


def _webhook(event_type):
    return OpenApiWebhook(
        name=event_type.value,
        decorator=extend_schema(
            summary=event_type.label,
            description=f"POSTed as JSON when {event_type.label.lower()}; the body's type is "
            f"{event_type.value!r}. {SIGNATURE_HEADERS_TEXT}",
            request=EventEnvelopeSerializer,
            responses=RECEIVER_RESPONSES,
        ),
    )


evaluation_completed = _webhook(EventType.EVALUATION_COMPLETED)
job_failed = _webhook(EventType.JOB_FAILED)
job_cancelled = _webhook(EventType.JOB_CANCELLED)
finetune_completed = _webhook(EventType.FINETUNE_COMPLETED)
verdict_published = _webhook(EventType.VERDICT_PUBLISHED)
ranking_changed = _webhook(EventType.RANKING_CHANGED)
ping = _webhook(EventType.PING)

WEBHOOK_PATHS = [
    f"{__name__}.{event_type.value.replace('.', '_')}" for event_type in EventType
]
