"""Delivery attempts against a real receiver on 127.0.0.1: retries, timeouts, 410, guard, claims."""

import socket
import threading
import time

import pytest
from django.utils import timezone

from backend.webhooks import actions, delivery, guard, transport
from backend.webhooks.delivery import attempt_delivery, claim_delivery, dispatch_due
from backend.webhooks.models import Delivery, DeliveryStatus, Endpoint

from .conftest import hang, reply, trickle

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]


def emit_one(endpoint, event_type="job.failed"):
    [event] = actions.emit_event(event_type, {"job_id": "job-1"}, owner=endpoint.owner)
    return event, event.deliveries.get(endpoint=endpoint)


def run_until_finished(delivery_id, timeout=10):
    """Call dispatch_due, as Celery beat would, until the delivery is no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatch_due()
        current = Delivery.objects.get(pk=delivery_id)
        if current.status != DeliveryStatus.PENDING:
            return current
        time.sleep(0.02)
    raise AssertionError(f"delivery {delivery_id} still pending after {timeout} s")


@pytest.fixture
def endpoint(owner, receiver, allow_local):
    return actions.create_endpoint(owner, receiver.url, ["job.failed", "ranking.changed"])


def test_retry_500_twice_then_200(endpoint, receiver):
    receiver.respond(500, 500, 200)
    event, first = emit_one(endpoint)

    finished = run_until_finished(first.pk)

    assert finished.status == DeliveryStatus.SUCCEEDED
    assert finished.attempt_count == 3
    assert [a.status_code for a in finished.attempts.all()] == [500, 500, 200]
    assert [a.succeeded for a in finished.attempts.all()] == [False, False, True]
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event.id}
    assert len({r.body for r in receiver.requests}) == 1
    # Schedule [0.2, 0.6] with 20 % jitter: waits of 0.16-0.24 s, then 0.48-0.72 s.
    first_wait = receiver.requests[1].received_at - receiver.requests[0].received_at
    second_wait = receiver.requests[2].received_at - receiver.requests[1].received_at
    assert first_wait >= 0.16
    assert second_wait >= 0.48
    assert second_wait > first_wait


def test_retry_schedule_exhausted(endpoint, receiver, settings):
    settings.VERSUS_WEBHOOK_RETRY_SCHEDULE = [0.05]
    receiver.respond(503, 503, 503)
    _, first = emit_one(endpoint)

    finished = run_until_finished(first.pk)

    assert finished.status == DeliveryStatus.FAILED
    assert finished.attempt_count == 2
    assert finished.last_status_code == 503
    assert finished.last_error == "HTTP 503."
    assert len(receiver.requests) == 2
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 1
    assert endpoint.enabled


def test_failure_sets_next_attempt(endpoint, receiver):
    receiver.respond(500)
    _, first = emit_one(endpoint)
    before = timezone.now()

    attempt = attempt_delivery(first.pk)

    first.refresh_from_db()
    assert attempt.status_code == 500
    assert first.status == DeliveryStatus.PENDING
    wait = (first.next_attempt_at - before).total_seconds()
    assert 0.16 <= wait <= 0.3


def test_success_resets_failure_count(endpoint, receiver):
    Endpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=3)
    _, first = emit_one(endpoint)

    attempt_delivery(first.pk)

    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 0


def test_disable_after_consecutive_failures(endpoint, receiver, settings):
    settings.VERSUS_WEBHOOK_RETRY_SCHEDULE = []
    settings.VERSUS_WEBHOOK_DISABLE_AFTER_FAILURES = 2
    receiver.respond(500, 500)
    _, first = emit_one(endpoint)
    _, second = emit_one(endpoint)
    _, third = emit_one(endpoint)

    attempt_delivery(first.pk)
    attempt_delivery(second.pk)

    endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert "2 deliveries in a row failed" in endpoint.disabled_reason
    third.refresh_from_db()
    assert third.status == DeliveryStatus.FAILED
    assert third.last_error.startswith("Endpoint disabled:")
    assert attempt_delivery(third.pk) is None
    assert len(receiver.requests) == 2


def test_hanging_receiver_cut_at_timeout(endpoint, receiver, settings):
    settings.VERSUS_WEBHOOK_TOTAL_TIMEOUT = 1
    receiver.respond(hang)
    _, first = emit_one(endpoint)
    started = time.monotonic()

    attempt = attempt_delivery(first.pk)

    elapsed = time.monotonic() - started
    assert elapsed < 2.5
    assert attempt.error == "Timed out after 1 s."
    assert attempt.status_code is None
    assert not attempt.succeeded
    first.refresh_from_db()
    assert first.status == DeliveryStatus.PENDING


def test_trickling_body_cut_at_total_deadline(endpoint, receiver, settings):
    # One byte every 0.2 s never trips a per-read timeout; only the total deadline stops it.
    settings.VERSUS_WEBHOOK_TOTAL_TIMEOUT = 1
    receiver.respond(trickle(0.2))
    _, first = emit_one(endpoint)
    started = time.monotonic()

    attempt = attempt_delivery(first.pk)

    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert attempt.error == "Timed out after 1 s."
    assert attempt.status_code == 200
    assert not attempt.succeeded


def test_large_response_capped(endpoint, receiver, settings):
    settings.VERSUS_WEBHOOK_MAX_RESPONSE_BYTES = 1024
    receiver.respond(reply(200, body=b"a" * 2_000_000))
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert attempt.succeeded
    assert attempt.response_excerpt == "a" * 500


def test_response_excerpt_stored(endpoint, receiver):
    receiver.respond(reply(400, body="invalid payload: ünknown field".encode()))
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert attempt.status_code == 400
    assert attempt.response_excerpt == "invalid payload: ünknown field"
    assert attempt.error == "HTTP 400."
    assert attempt.latency_ms < 3000


def test_redirect_not_followed(endpoint, receiver):
    receiver.respond(reply(302, headers={"Location": f"http://127.0.0.1:{receiver.port}/other"}))
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert len(receiver.requests) == 1
    assert attempt.status_code == 302
    assert not attempt.succeeded
    assert attempt.error.startswith("Redirect not followed: HTTP 302 to http://127.0.0.1:")


def test_410_disables_endpoint(endpoint, receiver):
    receiver.respond(410)
    _, first = emit_one(endpoint)
    _, other = emit_one(endpoint)

    attempt_delivery(first.pk)

    endpoint.refresh_from_db()
    first.refresh_from_db()
    other.refresh_from_db()
    assert not endpoint.enabled
    assert "410 Gone" in endpoint.disabled_reason
    assert endpoint.disabled_at is not None
    assert first.status == DeliveryStatus.FAILED
    assert first.attempt_count == 1
    assert other.status == DeliveryStatus.FAILED
    assert actions.emit_event("job.failed", {}, owner=endpoint.owner) == []


def test_connection_refused_recorded(owner, allow_local):
    # Port 9 (discard) on 127.0.0.1 has no listener here, so the connect fails at once.
    endpoint = actions.create_endpoint(owner, "http://127.0.0.1:9/hook", ["job.failed"])
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert attempt.status_code is None
    assert attempt.error.startswith("Request to 127.0.0.1 (127.0.0.1) failed:")
    assert "Connection refused" in attempt.error


def test_claim_only_once(endpoint):
    _, first = emit_one(endpoint)

    assert claim_delivery(first.pk) == 1
    assert claim_delivery(first.pk) is None
    first.refresh_from_db()
    assert first.attempt_count == 1
    assert first.next_attempt_at > timezone.now()


def test_attempt_skips_claimed_delivery(endpoint, receiver):
    _, first = emit_one(endpoint)
    claim_delivery(first.pk)

    assert attempt_delivery(first.pk) is None
    assert receiver.requests == []


def test_attempt_skips_finished_delivery(endpoint, receiver):
    _, first = emit_one(endpoint)
    attempt_delivery(first.pk)
    Delivery.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now())

    assert attempt_delivery(first.pk) is None
    assert len(receiver.requests) == 1


def test_connect_time_guard_blocks(endpoint, receiver, settings, monkeypatch):
    settings.VERSUS_WEBHOOK_ALLOWED_HOSTS = []

    def no_connect(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(transport.urllib3_connection, "create_connection", no_connect)
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert "127.0.0.1 is a loopback address" in attempt.error
    assert attempt.status_code is None
    assert receiver.requests == []


def test_dns_rebinding_blocked(owner, receiver, monkeypatch, owner_client):
    # At subscribe time the name resolves to a public address; no connection is made then.
    monkeypatch.setattr(guard, "resolve_host", lambda host, port: ["93.184.215.14"])
    url = f"http://hooks.example.com:{receiver.port}/hook"
    response = owner_client.post("/api/v1/webhooks/", {"url": url, "events": ["job.failed"]}, format="json")
    assert response.status_code == 201
    # Before the attempt the name starts resolving to loopback.
    monkeypatch.setattr(guard, "resolve_host", lambda host, port: ["127.0.0.1"])
    endpoint = Endpoint.objects.get(pk=response.json()["id"])
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert "hooks.example.com resolves to 127.0.0.1, a loopback address" in attempt.error
    assert receiver.requests == []


def test_connection_pinned_to_checked_address(owner, receiver, settings, monkeypatch):
    # webhook.test never resolves in real DNS (.test is reserved), so the request can only
    # arrive if the transport connects to the address the guard returned.
    lookups = []

    def resolve(host, port):
        lookups.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(guard, "resolve_host", resolve)
    settings.VERSUS_WEBHOOK_ALLOWED_HOSTS = ["webhook.test"]
    endpoint = actions.create_endpoint(owner, f"http://webhook.test:{receiver.port}/hook", ["job.failed"])
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert attempt.succeeded
    assert lookups == ["webhook.test"]
    assert receiver.requests[0].headers["host"] == f"webhook.test:{receiver.port}"
    assert receiver.requests[0].path == "/hook"


def test_dispatch_due_skips_future(endpoint, receiver):
    _, first = emit_one(endpoint)
    Delivery.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now() + timezone.timedelta(hours=1))

    assert dispatch_due() == 0
    assert receiver.requests == []


def test_deliver_event_sends_each_endpoint(owner, staff, receiver, allow_local):
    own = actions.create_endpoint(owner, receiver.url + "/own", ["job.failed"])
    staff_endpoint = actions.create_endpoint(staff, receiver.url + "/staff", ["job.failed"])
    [event] = actions.emit_event("job.failed", {"job_id": "job-1"}, owner=owner)

    assert delivery.deliver_event(event.id) == 2
    assert delivery.deliver_event(event.id) == 0
    assert sorted(r.path for r in receiver.requests) == ["/hook/own", "/hook/staff"]
    statuses = set(Delivery.objects.filter(endpoint__in=[own, staff_endpoint]).values_list("status", flat=True))
    assert statuses == {DeliveryStatus.SUCCEEDED}


def test_attempt_logged_without_secret(endpoint, receiver, caplog):
    _, first = emit_one(endpoint)

    with caplog.at_level("INFO", logger="backend.webhooks.delivery"):
        attempt_delivery(first.pk)

    messages = [record.getMessage() for record in caplog.records if record.name == "backend.webhooks.delivery"]
    assert len(messages) == 1
    assert first.event_id in messages[0]
    assert str(endpoint.pk) in messages[0]
    assert "status=200" in messages[0]
    assert "latency_ms=" in messages[0]
    assert endpoint.secret not in caplog.text
    assert receiver.requests[0].headers["webhook-signature"] not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_send_once(owner, receiver, allow_local):
    from django.db import connection

    endpoint = actions.create_endpoint(owner, receiver.url, ["job.failed"])
    _, first = emit_one(endpoint)
    barrier = threading.Barrier(4)
    results = []

    def worker():
        try:
            barrier.wait()
            results.append(attempt_delivery(first.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert len(results) == 4
    assert sum(result is not None for result in results) == 1
    assert len(receiver.requests) == 1
    first.refresh_from_db()
    assert first.attempt_count == 1
    assert first.status == DeliveryStatus.SUCCEEDED


@pytest.fixture
def trust_certificate(monkeypatch, tls_certificate):
    """Make the transport trust the self-signed test certificate."""
    cert, _ = tls_certificate

    class TrustingSession(transport.requests.Session):
        def __init__(self):
            super().__init__()
            self.verify = str(cert)

    monkeypatch.setattr(transport.requests, "Session", TrustingSession)


@pytest.fixture
def webhook_test_resolves_to_loopback(monkeypatch, settings):
    monkeypatch.setattr(guard, "resolve_host", lambda host, port: ["127.0.0.1"])
    settings.VERSUS_WEBHOOK_ALLOWED_HOSTS = ["webhook.test"]


def test_https_pinned_keeps_sni_and_host(owner, tls_receiver, trust_certificate, webhook_test_resolves_to_loopback):
    url = f"https://webhook.test:{tls_receiver.port}/hook"
    endpoint = actions.create_endpoint(owner, url, ["job.failed"])
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert attempt.error == ""
    assert attempt.succeeded
    assert tls_receiver.server_names == ["webhook.test"]
    assert tls_receiver.requests[0].headers["host"] == f"webhook.test:{tls_receiver.port}"


def test_https_certificate_checked(owner, tls_receiver, webhook_test_resolves_to_loopback):
    # Without trusting the self-signed certificate the TLS handshake must fail.
    url = f"https://webhook.test:{tls_receiver.port}/hook"
    endpoint = actions.create_endpoint(owner, url, ["job.failed"])
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert not attempt.succeeded
    assert "CERTIFICATE_VERIFY_FAILED" in attempt.error
    assert tls_receiver.requests == []


def test_connect_timeout_recorded(endpoint, receiver, monkeypatch):
    def slow_connect(*args, **kwargs):
        raise socket.timeout("timed out")

    monkeypatch.setattr(transport.urllib3_connection, "create_connection", slow_connect)
    _, first = emit_one(endpoint)

    attempt = attempt_delivery(first.pk)

    assert attempt.error == "Connection timed out after 1 s."
    assert attempt.status_code is None
    assert receiver.requests == []


def test_dispatch_fails_orphaned_delivery(endpoint, receiver):
    _, first = emit_one(endpoint)
    Endpoint.objects.filter(pk=endpoint.pk).update(enabled=False)

    assert dispatch_due() == 0

    first.refresh_from_db()
    assert first.status == DeliveryStatus.FAILED
    assert first.last_error == "Endpoint disabled."
    assert receiver.requests == []
