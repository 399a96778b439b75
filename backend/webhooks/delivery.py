"""Sending deliveries: claim, sign, POST, record, schedule the retry.

The loop is built from one-step functions: ``attempt_delivery(delivery_id)`` makes at most
one HTTP attempt, and ``deliver_event`` / ``dispatch_due`` call it for every due delivery.
Retry times live in ``Delivery.next_attempt_at``, not in the broker, so a lost task message
only delays a delivery until the next ``dispatch_due`` run.
"""

import logging
import random
import time
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from backend.webhooks import conf, guard, signing, transport
from backend.webhooks.actions import disable_endpoint
from backend.webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint

logger = logging.getLogger(__name__)

USER_AGENT = "Versus-Webhooks/1.0"
# dispatch_due stops claiming after this many seconds; the next run picks up the rest.
DISPATCH_BUDGET_SECONDS = 60
DISPATCH_BATCH_SIZE = 200


def retry_delay(failed_attempt):
    """Return the seconds to wait after failed attempt ``failed_attempt`` (1-based).

    Returns ``None`` when the schedule is used up. The wait is the schedule's entry scaled by
    a random factor in [1 - jitter, 1 + jitter], so receivers recovering from an outage do
    not get every retry at the same second.
    """
    schedule = conf.retry_schedule()
    if failed_attempt > len(schedule):
        return None
    jitter = conf.retry_jitter()
    return schedule[failed_attempt - 1] * random.uniform(1 - jitter, 1 + jitter)


def claim_delivery(delivery_id):
    """Claim the next attempt of a due delivery and return its number, or ``None``.

    The conditional UPDATE matches only while the delivery is pending, due and still at the
    attempt count read here, so of two workers racing for it exactly one gets a row. The
    winner moves ``next_attempt_at`` to the end of the claim lease, which keeps the delivery
    off the due list while the attempt runs.
    """
    now = timezone.now()
    row = (
        Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .values("attempt_count", "endpoint__enabled")
        .first()
    )
    if row is None or not row["endpoint__enabled"]:
        return None

    number = row["attempt_count"] + 1
    claimed = Delivery.objects.filter(
        pk=delivery_id,
        status=DeliveryStatus.PENDING,
        attempt_count=row["attempt_count"],
        next_attempt_at__lte=now,
    ).update(
        attempt_count=number,
        next_attempt_at=now + timedelta(seconds=conf.claim_lease_seconds()),
    )
    return number if claimed else None


def _send(delivery, now):
    endpoint = delivery.endpoint
    try:
        target = guard.check_url(endpoint.url)
    except guard.TargetError as exc:
        return transport.SendResult(status_code=None, latency_ms=0, error=str(exc)[:500])

    body = delivery.event.body.encode("utf-8")
    headers = signing.signature_headers(
        delivery.event_id, body, signing.active_secrets(endpoint, now), now,
    )
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = USER_AGENT
    return transport.post(
        target, endpoint.url, body, headers,
        connect_timeout=conf.connect_timeout(),
        total_timeout=conf.total_timeout(),
        max_response_bytes=conf.max_response_bytes(),
    )


def attempt_delivery(delivery_id):
    """Make one attempt of a due delivery and return its ``DeliveryAttempt``.

    Returns ``None`` without sending when the delivery is not due, already finished, claimed
    by another worker, or its endpoint is disabled.
    """
    number = claim_delivery(delivery_id)
    if number is None:
        return None

    delivery = Delivery.objects.select_related("event", "endpoint").get(pk=delivery_id)
    started_at = timezone.now()
    result = _send(delivery, started_at)
    attempt = _record_attempt(delivery, number, started_at, result)
    logger.info(
        "Webhook attempt %d of event %s (%s) to endpoint %s: status=%s latency_ms=%d outcome=%s%s",
        number, delivery.event_id, delivery.event.type, delivery.endpoint_id,
        result.status_code, result.latency_ms, "succeeded" if result.succeeded else "failed",
        f" error={result.error!r}" if result.error else "",
    )
    return attempt


def _record_attempt(delivery, number, started_at, result):
    """Store the attempt, then finish the delivery or schedule its next attempt."""
    now = timezone.now()
    receiver_gone = result.status_code == 410
    fields = {"last_status_code": result.status_code, "last_error": result.error}
    exhausted = False
    if result.succeeded:
        fields.update(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None, finished_at=now)
    else:
        delay = retry_delay(number) if delivery.retry and not receiver_gone else None
        if delay is None:
            exhausted = True
            fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None, finished_at=now)
        else:
            fields["next_attempt_at"] = now + timedelta(seconds=delay)

    with transaction.atomic():
        attempt = DeliveryAttempt.objects.create(
            delivery=delivery, number=number, started_at=started_at,
            status_code=result.status_code, latency_ms=result.latency_ms,
            response_excerpt=result.response_excerpt, error=result.error,
            succeeded=result.succeeded,
        )
        current = Delivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.PENDING, attempt_count=number,
        ).update(**fields)
    if not current:
        # The claim lease ran out and another worker started a newer attempt, or the
        # endpoint was disabled meanwhile; that state wins over this late result.
        logger.warning(
            "Webhook attempt %d of delivery %s finished after its delivery moved on; "
            "result kept in the attempt log only.", number, delivery.pk,
        )
        return attempt

    _update_endpoint_health(delivery, result, receiver_gone, exhausted)
    return attempt


def _update_endpoint_health(delivery, result, receiver_gone, exhausted):
    endpoint_id = delivery.endpoint_id
    if result.succeeded:
        Endpoint.objects.filter(pk=endpoint_id, consecutive_failures__gt=0).update(consecutive_failures=0)
        return
    if receiver_gone:
        disable_endpoint(
            endpoint_id,
            f"The receiver returned 410 Gone on {timezone.now():%Y-%m-%d %H:%M} UTC.",
        )
        return
    if not (exhausted and delivery.retry):
        return

    Endpoint.objects.filter(pk=endpoint_id).update(consecutive_failures=F("consecutive_failures") + 1)
    failures = Endpoint.objects.values_list("consecutive_failures", flat=True).get(pk=endpoint_id)
    limit = conf.disable_after_failures()
    if failures >= limit:
        disable_endpoint(
            endpoint_id,
            f"{failures} deliveries in a row failed every attempt (limit "
            f"VERSUS_WEBHOOK_DISABLE_AFTER_FAILURES={limit}); last error: {result.error}",
        )


def _attempt_each(delivery_ids, budget_seconds):
    started = time.monotonic()
    attempts = 0
    for delivery_id in delivery_ids:
        if time.monotonic() - started > budget_seconds:
            break
        try:
            if attempt_delivery(delivery_id) is not None:
                attempts += 1
        except Exception:
            # The claim lease makes the delivery due again, so one broken row does not
            # stop the others.
            logger.exception("Webhook delivery %s failed unexpectedly", delivery_id)
    return attempts


def deliver_event(event_id):
    """Attempt every due delivery of one event; return the number of attempts made."""
    due = Delivery.objects.filter(
        event_id=event_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=timezone.now(),
    ).order_by("pk").values_list("pk", flat=True)
    return _attempt_each(list(due), DISPATCH_BUDGET_SECONDS)


def dispatch_due():
    """Attempt deliveries whose ``next_attempt_at`` has passed, oldest first.

    Stops after ``DISPATCH_BATCH_SIZE`` deliveries or ``DISPATCH_BUDGET_SECONDS``, whichever
    comes first. Several runs may overlap; claims keep them from sending an attempt twice.
    Returns the number of attempts made.
    """
    _fail_orphaned_deliveries()
    due = Delivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=timezone.now(), endpoint__enabled=True,
    ).order_by("next_attempt_at").values_list("pk", flat=True)[:DISPATCH_BATCH_SIZE]
    return _attempt_each(list(due), DISPATCH_BUDGET_SECONDS)


def _fail_orphaned_deliveries():
    # disable_endpoint fails pending deliveries, but emit_event may add one for an endpoint
    # that is being disabled concurrently; it would otherwise stay pending forever.
    orphaned = Delivery.objects.filter(status=DeliveryStatus.PENDING, endpoint__enabled=False)
    count = orphaned.update(
        status=DeliveryStatus.FAILED, next_attempt_at=None, finished_at=timezone.now(),
        last_error="Endpoint disabled.",
    )
    if count:
        logger.info("Failed %d pending webhook deliveries of disabled endpoints", count)
