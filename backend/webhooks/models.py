"""Webhook endpoints, the event outbox and per-endpoint deliveries.

An ``Event`` is written in the same transaction as the change that causes it, together with
one ``Delivery`` per matching endpoint. Workers send a delivery when its ``next_attempt_at``
is due and record every HTTP attempt as a ``DeliveryAttempt``. The event id is the
``webhook-id`` header, so every attempt and every redelivery of an event carries the same id.
"""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from backend.webhooks.guard import validate_target_url


class EventType(models.TextChoices):
    EVALUATION_COMPLETED = "evaluation.completed", "Evaluation completed"
    JOB_FAILED = "job.failed", "Job failed"
    JOB_CANCELLED = "job.cancelled", "Job cancelled"
    FINETUNE_COMPLETED = "finetune.completed", "Fine-tune completed"
    VERDICT_PUBLISHED = "verdict.published", "Verdict published"
    RANKING_CHANGED = "ranking.changed", "Ranking changed"
    PING = "ping", "Ping"


# Event types an endpoint can subscribe to. ``ping`` is only sent by the test action.
SUBSCRIBABLE_EVENT_TYPES = tuple(t.value for t in EventType if t != EventType.PING)

# Events about public data (rankings, verdicts) go to every subscribed endpoint. All other
# events go only to endpoints of the subject's owner and to staff-owned endpoints.
PUBLIC_EVENT_TYPES = (EventType.VERDICT_PUBLISHED.value, EventType.RANKING_CHANGED.value)


def new_event_id():
    return f"evt_{uuid.uuid4().hex}"


class Endpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints",
    )
    url = models.URLField(max_length=2000, validators=[validate_target_url])
    description = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list, help_text="Subscribed event types.")
    # Secrets are stored in plain text because signing needs the key itself.
    # NOTE: database backups therefore contain signing secrets; encrypting this column needs a
    # key-management setting that the project does not have yet.
    secret = models.CharField(max_length=200)
    previous_secret = models.CharField(max_length=200, blank=True)
    previous_secret_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Until then attempts are also signed with the previous secret.",
    )
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(
        default=0, help_text="Deliveries in a row that failed every attempt; reset by a success.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["enabled"])]

    def __str__(self):
        return self.url

    def clean(self):
        events = self.events
        valid = isinstance(events, list) and events and all(
            name in SUBSCRIBABLE_EVENT_TYPES for name in events
        )
        if not valid:
            raise ValidationError({
                "events": f"Events {self.events!r} are invalid; use a non-empty list of "
                f"{', '.join(SUBSCRIBABLE_EVENT_TYPES)}.",
            })

    def subscribes_to(self, event_type):
        return event_type in self.events


class Event(models.Model):
    """One outbox event; ``body`` is the exact JSON sent on every attempt."""

    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    type = models.CharField(max_length=40, choices=EventType.choices, db_index=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="webhook_events", help_text="Owner of the subject; empty for public events.",
    )
    data = models.JSONField(default=dict)
    body = models.TextField(help_text="Serialized envelope, signed and sent byte for byte.")
    # Set by emit_event to the envelope's ``timestamp``.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.type} {self.id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """The sending of one event to one endpoint, with retries."""

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(
        max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING,
    )
    retry = models.BooleanField(
        default=True, help_text="Retry on failure; test pings are sent once.",
    )
    attempt_count = models.PositiveIntegerField(default=0)
    # While an attempt runs, next_attempt_at holds the end of the claim lease, so a worker
    # that dies mid-attempt only delays the delivery until the lease ends.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self):
        return f"delivery {self.pk} of {self.event_id} to {self.endpoint_id}"


class DeliveryAttempt(models.Model):
    """One HTTP request of a delivery and what the receiver returned."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=500, blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="unique_attempt_number"),
        ]

    def __str__(self):
        return f"attempt {self.number} of delivery {self.delivery_id}"
