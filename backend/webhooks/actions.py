"""Writes for webhooks: endpoints, the event outbox and redeliveries.

Views validate input and call one function here. Functions that create deliveries schedule
``tasks.webhooks.deliver_event`` with ``transaction.on_commit``, so nothing is sent for a
transaction that rolls back. If the broker is unreachable at commit, the delivery stays due
in the database and the periodic ``tasks.webhooks.dispatch_due`` sends it.
"""

import json
import logging
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import NotFound

from backend.api.errors import ApiError
from backend.webhooks import signing
from backend.webhooks.models import (
    PUBLIC_EVENT_TYPES,
    SUBSCRIBABLE_EVENT_TYPES,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    EventType,
)

logger = logging.getLogger(__name__)


def visible_endpoints(user):
    """Return the endpoints ``user`` may see: their own, or all of them for staff."""
    endpoints = Endpoint.objects.select_related("owner")
    if user.is_staff:
        return endpoints
    return endpoints.filter(owner=user)


def access_endpoint(user, endpoint_id):
    """Return endpoint ``endpoint_id`` if ``user`` may see it; raise ``NotFound`` otherwise.

    Someone else's endpoint gets the same 404 as a missing one, so ids reveal nothing.
    """
    try:
        return visible_endpoints(user).get(pk=endpoint_id)
    except (Endpoint.DoesNotExist, ValidationError) as exc:
        raise NotFound(f"Webhook endpoint {endpoint_id} not found.") from exc


def create_endpoint(owner, url, events, description=""):
    """Create an enabled endpoint with a new secret; ``url`` must already be checked."""
    endpoint = Endpoint.objects.create(
        owner=owner, url=url, events=list(dict.fromkeys(events)), description=description,
        secret=signing.generate_secret(),
    )
    logger.info("Webhook endpoint %s created by user %s for %s", endpoint.pk, owner.pk, endpoint.events)
    return endpoint


def update_endpoint(endpoint, actor, **changes):
    """Apply validated ``changes`` (url, events, description, enabled) to ``endpoint``."""
    enabled = changes.pop("enabled", None)
    if "events" in changes:
        changes["events"] = list(dict.fromkeys(changes["events"]))
    with transaction.atomic():
        for name, value in changes.items():
            setattr(endpoint, name, value)
        if changes:
            endpoint.save(update_fields=[*changes, "updated_at"])
        if enabled is False and endpoint.enabled:
            disable_endpoint(endpoint.pk, f"Disabled by {actor.get_username()}.")
        elif enabled is True and not endpoint.enabled:
            enable_endpoint(endpoint)
    endpoint.refresh_from_db()
    return endpoint


def enable_endpoint(endpoint):
    """Enable ``endpoint`` again and clear its failure count and disabled reason."""
    Endpoint.objects.filter(pk=endpoint.pk).update(
        enabled=True, disabled_reason="", disabled_at=None, consecutive_failures=0,
        updated_at=timezone.now(),
    )
    logger.info("Webhook endpoint %s enabled", endpoint.pk)


def disable_endpoint(endpoint_id, reason):
    """Disable an endpoint and fail its pending deliveries; return False if already disabled.

    A conditional update, so concurrent callers (a 410 and the failure limit) disable once
    and the first reason is kept.
    """
    now = timezone.now()
    reason = reason[:500]
    with transaction.atomic():
        updated = Endpoint.objects.filter(pk=endpoint_id, enabled=True).update(
            enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now,
        )
        if not updated:
            return False
        Delivery.objects.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED, next_attempt_at=None, finished_at=now,
            last_error=f"Endpoint disabled: {reason}"[:500],
        )
    logger.warning("Webhook endpoint %s disabled: %s", endpoint_id, reason)
    return True


def rotate_secret(endpoint, grace):
    """Give ``endpoint`` a new secret; the old one keeps signing for ``grace`` (a timedelta).

    Attempts during the grace period carry two signatures, so receivers can switch secrets
    at any time within it. A second rotation inside the grace period drops the oldest secret.
    """
    now = timezone.now()
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        if grace > timedelta(0):
            endpoint.previous_secret = endpoint.secret
            endpoint.previous_secret_expires_at = now + grace
        else:
            endpoint.previous_secret = ""
            endpoint.previous_secret_expires_at = None
        endpoint.secret = signing.generate_secret()
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    logger.info("Webhook endpoint %s secret rotated; previous secret valid until %s",
                endpoint.pk, endpoint.previous_secret_expires_at)
    return endpoint


def delete_endpoint(endpoint):
    endpoint_id = endpoint.pk
    endpoint.delete()
    logger.info("Webhook endpoint %s deleted", endpoint_id)


def _enqueue_on_commit(event_id):
    def enqueue():
        from tasks.webhooks import deliver_event

        deliver_event.apply_async(args=[event_id], queue="default")

    # robust: a broker error after commit is logged, not raised into the caller; the
    # deliveries are already due in the database and dispatch_due sends them.
    transaction.on_commit(enqueue, robust=True)


def _create_event(event_type, data, owner):
    now = timezone.now()
    event = Event(type=event_type, owner=owner, created_at=now)
    envelope = {"type": event_type, "id": event.id, "timestamp": now.isoformat(), "data": data}
    event.body = json.dumps(envelope, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)
    # Store the data as it was serialized, so the admin and the API show what was sent.
    event.data = json.loads(event.body)["data"]
    event.save(force_insert=True)
    return event


def _matching_endpoints(event_type, owner):
    endpoints = Endpoint.objects.filter(enabled=True)
    if event_type not in PUBLIC_EVENT_TYPES:
        audience = Q(owner__is_staff=True)
        if owner is not None:
            audience |= Q(owner=owner)
        endpoints = endpoints.filter(audience)
    # Subscriptions are filtered in Python because SQLite has no JSON containment lookup.
    return [endpoint for endpoint in endpoints.order_by("created_at") if endpoint.subscribes_to(event_type)]


def emit_event(event_type, data, owner=None):
    """Write ``event_type`` with ``data`` to the outbox for every endpoint that should get it.

    Call it inside the transaction of the change that causes the event. Endpoints of
    ``owner`` and staff-owned endpoints get owner events; every subscribed endpoint gets
    ``verdict.published`` and ``ranking.changed``. Returns the created events: one event
    with a delivery per endpoint, or an empty list when no enabled endpoint subscribes.
    ``data`` must be JSON-serializable with Django's encoder (UUIDs and datetimes are).
    """
    if event_type not in SUBSCRIBABLE_EVENT_TYPES:
        raise ValueError(
            f"Unknown webhook event type {event_type!r}; use one of {', '.join(SUBSCRIBABLE_EVENT_TYPES)}.",
        )
    if not isinstance(data, dict):
        raise ValueError(f"Webhook event data must be a dict, got {type(data).__name__}.")

    with transaction.atomic():
        endpoints = _matching_endpoints(event_type, owner)
        if not endpoints:
            return []
        event = _create_event(event_type, data, owner)
        now = timezone.now()
        Delivery.objects.bulk_create(
            [Delivery(event=event, endpoint=endpoint, next_attempt_at=now) for endpoint in endpoints],
        )
        _enqueue_on_commit(event.pk)
    logger.debug("Webhook event %s (%s) queued for %d endpoints", event.pk, event_type, len(endpoints))
    return [event]


def send_test_event(endpoint):
    """Queue a ``ping`` event to ``endpoint`` alone, sent once without retries."""
    if not endpoint.enabled:
        raise ApiError(
            f"Webhook endpoint {endpoint.pk} is disabled; enable it before sending a test event.",
            code="endpoint_disabled", status_code=status.HTTP_409_CONFLICT,
        )
    with transaction.atomic():
        data = {"endpoint_id": str(endpoint.pk), "message": "Test event from Versus."}
        event = _create_event(EventType.PING.value, data, endpoint.owner)
        delivery = Delivery.objects.create(
            event=event, endpoint=endpoint, retry=False, next_attempt_at=timezone.now(),
        )
        _enqueue_on_commit(event.pk)
    return delivery


def redeliver(delivery):
    """Queue a new delivery of ``delivery``'s event to the same endpoint, with retries.

    The event keeps its id, so the receiver gets the same ``webhook-id`` as before.
    """
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        raise ApiError(
            f"Webhook endpoint {endpoint.pk} is disabled; enable it before redelivering.",
            code="endpoint_disabled", status_code=status.HTTP_409_CONFLICT,
        )
    with transaction.atomic():
        pending = Delivery.objects.filter(
            event_id=delivery.event_id, endpoint=endpoint, status=DeliveryStatus.PENDING,
        ).exists()
        if pending:
            raise ApiError(
                f"Event {delivery.event_id} already has a pending delivery to endpoint "
                f"{endpoint.pk}; wait for it to finish.",
                code="delivery_pending", status_code=status.HTTP_409_CONFLICT,
            )
        new_delivery = Delivery.objects.create(
            event_id=delivery.event_id, endpoint=endpoint, retry=delivery.retry,
            next_attempt_at=timezone.now(),
        )
        _enqueue_on_commit(delivery.event_id)
    logger.info("Webhook event %s redelivery %s queued for endpoint %s",
                delivery.event_id, new_delivery.pk, endpoint.pk)
    return new_delivery
