"""Signed deliveries verify with versus_webhooks.verify; tampering, staleness and rotation."""

import base64
import json
import time
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.utils import timezone

from backend.webhooks import actions, signing
from backend.webhooks.delivery import attempt_delivery
from versus_webhooks import (
    InvalidSignatureError,
    MissingHeaderError,
    TimestampOutOfToleranceError,
    WebhookVerificationError,
    verify,
)

pytestmark = pytest.mark.django_db


def deliver_one(endpoint, receiver, event_type="job.failed", data=None):
    [event] = actions.emit_event(event_type, data or {"job_id": "job-1"}, owner=endpoint.owner)
    attempt = attempt_delivery(event.deliveries.get(endpoint=endpoint).pk)
    return event, attempt, receiver.requests[-1]


def test_secret_format():
    secret = signing.generate_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert secret != signing.generate_secret()


def test_delivered_event_verifies(owner, receiver, allow_local):
    endpoint = actions.create_endpoint(owner, receiver.url, ["job.failed"])

    event, attempt, request = deliver_one(endpoint, receiver, data={"job_id": "job-1", "error": "OOM"})

    assert attempt.succeeded
    payload = verify(request.headers, request.body, endpoint.secret)
    assert payload["type"] == "job.failed"
    assert payload["id"] == event.id
    assert payload["data"] == {"job_id": "job-1", "error": "OOM"}
    assert datetime.fromisoformat(payload["timestamp"]) == event.created_at
    assert request.headers["webhook-id"] == event.id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-signature"].count("v1,") == 1


def test_verify_tampered_body(owner, receiver, allow_local):
    endpoint = actions.create_endpoint(owner, receiver.url, ["job.failed"])
    _, _, request = deliver_one(endpoint, receiver)
    tampered = request.body.replace(b"job-1", b"job-2")

    with pytest.raises(InvalidSignatureError):
        verify(request.headers, tampered, endpoint.secret)


def test_verify_wrong_secret(owner, receiver, allow_local):
    endpoint = actions.create_endpoint(owner, receiver.url, ["job.failed"])
    _, _, request = deliver_one(endpoint, receiver)

    with pytest.raises(InvalidSignatureError):
        verify(request.headers, request.body, signing.generate_secret())


@pytest.mark.parametrize("offset", [-301, 301])
def test_verify_timestamp_outside_tolerance(offset):
    secret = signing.generate_secret()
    body = json.dumps({"type": "ping", "id": "evt_1", "timestamp": "", "data": {}}).encode()
    signed_at = datetime.fromtimestamp(time.time() + offset, tz=dt_timezone.utc)
    headers = signing.signature_headers("evt_1", body, [secret], signed_at)

    with pytest.raises(TimestampOutOfToleranceError):
        verify(headers, body, secret)
    # A wider tolerance accepts the same, correctly signed request.
    assert verify(headers, body, secret, tolerance=600)["id"] == "evt_1"


def test_verify_missing_header():
    secret = signing.generate_secret()
    body = b'{"id": "evt_1"}'
    headers = signing.signature_headers("evt_1", body, [secret], timezone.now())
    del headers["webhook-signature"]

    with pytest.raises(MissingHeaderError, match="webhook-signature"):
        verify(headers, body, secret)


def test_verify_errors_share_base_class():
    import standardwebhooks

    for error in (InvalidSignatureError, MissingHeaderError, TimestampOutOfToleranceError):
        assert issubclass(error, WebhookVerificationError)
        assert issubclass(error, standardwebhooks.WebhookVerificationError)


def test_rotated_secret_both_verify(owner, receiver, allow_local):
    endpoint = actions.create_endpoint(owner, receiver.url, ["job.failed"])
    old_secret = endpoint.secret

    endpoint = actions.rotate_secret(endpoint, timedelta(hours=24))
    _, _, request = deliver_one(endpoint, receiver)

    assert endpoint.secret != old_secret
    assert request.headers["webhook-signature"].count("v1,") == 2
    assert verify(request.headers, request.body, old_secret)["type"] == "job.failed"
    assert verify(request.headers, request.body, endpoint.secret)["type"] == "job.failed"


def test_rotated_secret_after_grace(owner, receiver, allow_local):
    endpoint = actions.create_endpoint(owner, receiver.url, ["job.failed"])
    old_secret = endpoint.secret
    endpoint = actions.rotate_secret(endpoint, timedelta(hours=24))
    endpoint.previous_secret_expires_at = timezone.now() - timedelta(seconds=1)
    endpoint.save()

    _, _, request = deliver_one(endpoint, receiver)

    assert request.headers["webhook-signature"].count("v1,") == 1
    assert verify(request.headers, request.body, endpoint.secret)
    with pytest.raises(InvalidSignatureError):
        verify(request.headers, request.body, old_secret)


def test_rotate_without_grace_drops_old_secret(owner, receiver, allow_local):
    endpoint = actions.create_endpoint(owner, receiver.url, ["job.failed"])

    endpoint = actions.rotate_secret(endpoint, timedelta(0))

    assert endpoint.previous_secret == ""
    assert signing.active_secrets(endpoint, timezone.now()) == [endpoint.secret]
