"""emit_event writes the outbox in the caller's transaction and enqueues only after commit."""

import json
import uuid

import pytest
from django.db import transaction

from backend.webhooks import actions
from backend.webhooks.models import Delivery, DeliveryStatus, Event

pytestmark = pytest.mark.django_db

EVENTS = ["job.failed", "evaluation.completed", "ranking.changed", "verdict.published"]


@pytest.fixture
def endpoints(owner, outsider, staff, allow_local):
    return {
        "owner": actions.create_endpoint(owner, "http://127.0.0.1:9/owner", EVENTS),
        "outsider": actions.create_endpoint(outsider, "http://127.0.0.1:9/outsider", EVENTS),
        "staff": actions.create_endpoint(staff, "http://127.0.0.1:9/staff", EVENTS),
    }


def recipients(event, endpoints):
    names = {endpoint.pk: name for name, endpoint in endpoints.items()}
    return sorted(names[d.endpoint_id] for d in event.deliveries.all())


def test_emit_rolled_back_sends_nothing(owner, endpoints, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                actions.emit_event("job.failed", {"job_id": "job-1"}, owner=owner)
                raise RuntimeError("job update failed")

    assert Event.objects.count() == 0
    assert Delivery.objects.count() == 0
    assert callbacks == []
    assert enqueued == []


def test_emit_committed_writes_outbox(owner, endpoints, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with transaction.atomic():
            [event] = actions.emit_event("job.failed", {"job_id": "job-1"}, owner=owner)
        assert enqueued == []

    assert Event.objects.get().pk == event.pk
    assert Delivery.objects.filter(event=event, status=DeliveryStatus.PENDING).count() == 2
    assert len(callbacks) == 1
    callbacks[0]()
    assert enqueued == [([event.pk], {"queue": "default"})]


def test_emit_owner_event_audience(owner, outsider, endpoints):
    [event] = actions.emit_event("job.failed", {"job_id": "job-1"}, owner=owner)

    assert recipients(event, endpoints) == ["owner", "staff"]


def test_emit_ownerless_event_staff_only(endpoints):
    [event] = actions.emit_event("evaluation.completed", {"job_id": "job-1"}, owner=None)

    assert recipients(event, endpoints) == ["staff"]


@pytest.mark.parametrize("event_type", ["ranking.changed", "verdict.published"])
def test_emit_public_event_everyone(owner, endpoints, event_type):
    [event] = actions.emit_event(event_type, {"suite": "captions"}, owner=owner)

    assert recipients(event, endpoints) == ["outsider", "owner", "staff"]


def test_emit_skips_disabled_and_unsubscribed(owner, endpoints):
    actions.disable_endpoint(endpoints["staff"].pk, "test")
    endpoints["owner"].events = ["ranking.changed"]
    endpoints["owner"].save()

    assert actions.emit_event("job.failed", {"job_id": "job-1"}, owner=owner) == []
    assert Event.objects.count() == 0


def test_emit_envelope(owner, endpoints):
    job_id = uuid.uuid4()

    [event] = actions.emit_event("job.failed", {"job_id": job_id, "error": "OOM"}, owner=owner)

    envelope = json.loads(event.body)
    assert list(envelope) == ["type", "id", "timestamp", "data"]
    assert envelope["type"] == "job.failed"
    assert envelope["id"] == event.pk
    assert envelope["id"].startswith("evt_")
    assert envelope["data"] == {"job_id": str(job_id), "error": "OOM"}
    assert event.data == envelope["data"]
    assert event.owner == owner


def test_emit_unknown_type(owner):
    with pytest.raises(ValueError, match="Unknown webhook event type 'job.exploded'"):
        actions.emit_event("job.exploded", {}, owner=owner)


def test_emit_ping_not_emittable(owner):
    with pytest.raises(ValueError, match="Unknown webhook event type 'ping'"):
        actions.emit_event("ping", {}, owner=owner)
