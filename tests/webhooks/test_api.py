"""Webhooks REST API: secrets shown once, ownership, guard errors, rotation, deliveries."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from backend.webhooks import actions
from backend.webhooks.delivery import attempt_delivery
from backend.webhooks.models import Delivery, DeliveryStatus, Endpoint
from versus_webhooks import verify

from .conftest import reply

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/webhooks/"


def detail_url(endpoint_id, suffix=""):
    return f"{LIST_URL}{endpoint_id}/{suffix}"


@pytest.fixture
def own_endpoint(owner, receiver, allow_local):
    return actions.create_endpoint(owner, receiver.url, ["job.failed"], description="CI")


def test_create_shows_secret_once(owner_client, receiver, allow_local):
    response = owner_client.post(
        LIST_URL, {"url": receiver.url, "events": ["job.failed", "ranking.changed"]}, format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["job.failed", "ranking.changed"]
    assert body["enabled"] is True
    assert Endpoint.objects.get(pk=body["id"]).secret == body["secret"]
    listed = owner_client.get(LIST_URL).json()["results"]
    assert [e["id"] for e in listed] == [body["id"]]
    assert "secret" not in listed[0]
    detail = owner_client.get(detail_url(body["id"])).json()
    assert "secret" not in detail
    assert body["secret"] not in str(detail)


def test_create_requires_auth(receiver, allow_local):
    response = APIClient().post(LIST_URL, {"url": receiver.url, "events": ["job.failed"]}, format="json")

    assert response.status_code == 401
    assert APIClient().get(LIST_URL).status_code == 401


@pytest.mark.parametrize(
    ("events", "expected"),
    [([], "events"), (["job.exploded"], "job.exploded"), (["ping"], "ping")],
)
def test_create_invalid_events(owner_client, receiver, allow_local, events, expected):
    response = owner_client.post(LIST_URL, {"url": receiver.url, "events": events}, format="json")

    assert response.status_code == 400
    assert expected in response.json()["error"]["message"]
    assert [name.split(".")[0] for name in response.json()["error"]["fields"]] == ["events"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "127.0.0.1 is a loopback address"),
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://localhost:8000/hook", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://[::1]:8000/hook", "::1 is a loopback address"),
        ("http://metadata.google.internal/", "metadata.google.internal is a cloud metadata host"),
        ("ftp://127.0.0.1/hook", "scheme must be http or https"),
    ],
)
def test_create_blocked_target(owner_client, url, reason):
    response = owner_client.post(LIST_URL, {"url": url, "events": ["job.failed"]}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert url in error["message"]
    assert reason in error["message"]
    assert list(error["fields"]) == ["url"]
    assert Endpoint.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8000/hook",
    ],
)
def test_create_allowed_by_setting(owner_client, settings, url):
    settings.VERSUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "localhost"]

    response = owner_client.post(LIST_URL, {"url": url, "events": ["job.failed"]}, format="json")

    assert response.status_code == 201
    assert response.json()["url"] == url


def test_list_own_only(owner_client, outsider_client, own_endpoint, outsider):
    other = actions.create_endpoint(outsider, "http://127.0.0.1:9/bob", ["job.failed"])

    assert [e["id"] for e in owner_client.get(LIST_URL).json()["results"]] == [str(own_endpoint.pk)]
    assert [e["id"] for e in outsider_client.get(LIST_URL).json()["results"]] == [str(other.pk)]


def test_list_staff_sees_all(staff_client, own_endpoint, outsider):
    other = actions.create_endpoint(outsider, "http://127.0.0.1:9/bob", ["job.failed"])

    listed = {e["id"] for e in staff_client.get(LIST_URL).json()["results"]}

    assert listed == {str(own_endpoint.pk), str(other.pk)}
    assert staff_client.get(detail_url(own_endpoint.pk)).status_code == 200


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "rotate-secret/"),
        ("post", "test/"),
        ("get", "deliveries/"),
    ],
)
def test_other_users_endpoint_404(outsider_client, own_endpoint, method, suffix):
    response = getattr(outsider_client, method)(detail_url(own_endpoint.pk, suffix), {}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    own_endpoint.refresh_from_db()
    assert own_endpoint.enabled


def test_other_users_redeliver_404(outsider_client, own_endpoint):
    [event] = actions.emit_event("job.failed", {}, owner=own_endpoint.owner)
    delivery = event.deliveries.get()

    response = outsider_client.post(detail_url(own_endpoint.pk, f"deliveries/{delivery.pk}/redeliver/"))

    assert response.status_code == 404
    assert Delivery.objects.count() == 1


def test_missing_endpoint_404(owner_client):
    assert owner_client.get(detail_url(uuid.uuid4())).status_code == 404


def test_update_events_and_url(owner_client, own_endpoint, receiver):
    response = owner_client.patch(
        detail_url(own_endpoint.pk),
        {"events": ["ranking.changed"], "url": receiver.url + "/v2", "description": "prod"},
        format="json",
    )

    assert response.status_code == 200
    own_endpoint.refresh_from_db()
    assert own_endpoint.events == ["ranking.changed"]
    assert own_endpoint.url == receiver.url + "/v2"
    assert own_endpoint.description == "prod"


def test_update_blocked_url(owner_client, own_endpoint, receiver):
    response = owner_client.patch(detail_url(own_endpoint.pk), {"url": "http://10.0.0.1/"}, format="json")

    assert response.status_code == 400
    assert "10.0.0.1 is a private address" in response.json()["error"]["message"]
    own_endpoint.refresh_from_db()
    assert own_endpoint.url == receiver.url


def test_disable_and_enable(owner_client, own_endpoint):
    Endpoint.objects.filter(pk=own_endpoint.pk).update(consecutive_failures=4)
    [event] = actions.emit_event("job.failed", {}, owner=own_endpoint.owner)

    disabled = owner_client.patch(detail_url(own_endpoint.pk), {"enabled": False}, format="json").json()

    assert disabled["enabled"] is False
    assert disabled["disabled_reason"] == "Disabled by owner."
    assert event.deliveries.get().status == DeliveryStatus.FAILED
    enabled = owner_client.patch(detail_url(own_endpoint.pk), {"enabled": True}, format="json").json()
    assert enabled["enabled"] is True
    assert enabled["disabled_reason"] == ""
    assert enabled["consecutive_failures"] == 0


def test_rotate_secret(owner_client, own_endpoint):
    old_secret = own_endpoint.secret

    response = owner_client.post(detail_url(own_endpoint.pk, "rotate-secret/"), {}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != old_secret
    own_endpoint.refresh_from_db()
    assert own_endpoint.previous_secret == old_secret
    grace = own_endpoint.previous_secret_expires_at - timezone.now()
    assert timedelta(hours=23, minutes=59) < grace <= timedelta(hours=24)


def test_rotate_secret_grace_hours(owner_client, own_endpoint):
    response = owner_client.post(
        detail_url(own_endpoint.pk, "rotate-secret/"), {"grace_period_hours": 0}, format="json",
    )

    assert response.json()["previous_secret_expires_at"] is None
    too_long = owner_client.post(
        detail_url(own_endpoint.pk, "rotate-secret/"), {"grace_period_hours": 1000}, format="json",
    )
    assert too_long.status_code == 400
    assert "grace_period_hours" in too_long.json()["error"]["fields"]


def test_delete(owner_client, own_endpoint):
    actions.emit_event("job.failed", {}, owner=own_endpoint.owner)

    assert owner_client.delete(detail_url(own_endpoint.pk)).status_code == 204
    assert not Endpoint.objects.exists()
    assert not Delivery.objects.exists()


def test_test_event_ping(owner_client, own_endpoint, receiver, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(detail_url(own_endpoint.pk, "test/"))

    assert response.status_code == 202
    body = response.json()
    assert body["event_type"] == "ping"
    assert body["retry"] is False
    assert enqueued == [([body["event_id"]], {"queue": "default"})]
    attempt_delivery(body["id"])
    payload = verify(receiver.requests[0].headers, receiver.requests[0].body, own_endpoint.secret)
    assert payload["type"] == "ping"
    assert payload["data"]["endpoint_id"] == str(own_endpoint.pk)


def test_test_event_no_retry(owner_client, own_endpoint, receiver):
    receiver.respond(500)
    delivery_id = owner_client.post(detail_url(own_endpoint.pk, "test/")).json()["id"]

    attempt_delivery(delivery_id)

    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_count == 1
    own_endpoint.refresh_from_db()
    assert own_endpoint.consecutive_failures == 0


def test_test_event_disabled_endpoint(owner_client, own_endpoint):
    actions.disable_endpoint(own_endpoint.pk, "test")

    response = owner_client.post(detail_url(own_endpoint.pk, "test/"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "endpoint_disabled"


def test_deliveries_list_attempts(owner_client, own_endpoint, receiver):
    receiver.respond(reply(500, body=b"x" * 2000), 200)
    [event] = actions.emit_event("job.failed", {"job_id": "job-1"}, owner=own_endpoint.owner)
    delivery = event.deliveries.get()
    attempt_delivery(delivery.pk)
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    attempt_delivery(delivery.pk)

    response = owner_client.get(detail_url(own_endpoint.pk, "deliveries/"))

    assert response.status_code == 200
    [listed] = response.json()["results"]
    assert listed["event_id"] == event.pk
    assert listed["event_type"] == "job.failed"
    assert listed["status"] == "succeeded"
    assert listed["payload"]["id"] == event.pk
    assert listed["payload"]["data"] == {"job_id": "job-1"}
    first, second = listed["attempts"]
    assert first["number"] == 1
    assert first["status_code"] == 500
    assert first["error"] == "HTTP 500."
    assert first["response_excerpt"] == "x" * 500
    assert first["latency_ms"] >= 0
    assert first["started_at"]
    assert second["status_code"] == 200
    assert second["succeeded"] is True
    assert second["error"] == ""


def test_deliveries_filter_status(owner_client, own_endpoint):
    actions.emit_event("job.failed", {}, owner=own_endpoint.owner)

    pending = owner_client.get(detail_url(own_endpoint.pk, "deliveries/"), {"status": "pending"})
    failed = owner_client.get(detail_url(own_endpoint.pk, "deliveries/"), {"status": "failed"})

    assert pending.json()["count"] == 1
    assert failed.json()["count"] == 0


def test_redeliver(owner_client, own_endpoint, receiver, settings):
    settings.VERSUS_WEBHOOK_RETRY_SCHEDULE = []
    receiver.respond(500)
    [event] = actions.emit_event("job.failed", {}, owner=own_endpoint.owner)
    failed = event.deliveries.get()
    attempt_delivery(failed.pk)

    response = owner_client.post(detail_url(own_endpoint.pk, f"deliveries/{failed.pk}/redeliver/"))

    assert response.status_code == 202
    body = response.json()
    assert body["id"] != failed.pk
    assert body["event_id"] == event.pk
    assert body["status"] == "pending"
    attempt_delivery(body["id"])
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.pk, event.pk]
    assert Delivery.objects.get(pk=body["id"]).status == DeliveryStatus.SUCCEEDED


def test_redeliver_while_pending(owner_client, own_endpoint):
    [event] = actions.emit_event("job.failed", {}, owner=own_endpoint.owner)
    pending = event.deliveries.get()

    response = owner_client.post(detail_url(own_endpoint.pk, f"deliveries/{pending.pk}/redeliver/"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "delivery_pending"
    assert Delivery.objects.count() == 1


def test_schema_documents_webhooks(owner_client):
    response = owner_client.get("/api/v1/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert "/api/v1/webhooks/{endpoint_id}/rotate-secret/" in schema["paths"]
    assert "/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver/" in schema["paths"]
    envelope = schema["components"]["schemas"]["EventEnvelope"]
    assert set(envelope["properties"]) == {"type", "id", "timestamp", "data"}
    created = schema["paths"]["/api/v1/webhooks/"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/EndpointWithSecret")


def test_schema_webhooks_section(owner_client):
    from drf_spectacular.settings import patched_settings

    from backend.webhooks.schema import WEBHOOK_PATHS

    # The settings the lead adds to SPECTACULAR_SETTINGS to publish the webhooks section.
    with patched_settings({"OAS_VERSION": "3.1.0", "WEBHOOKS": WEBHOOK_PATHS}):
        schema = owner_client.get("/api/v1/schema/", {"format": "json"}).json()

    assert sorted(schema["webhooks"]) == sorted(
        ["evaluation.completed", "job.failed", "job.cancelled", "finetune.completed",
         "verdict.published", "ranking.changed", "ping"],
    )
    operation = schema["webhooks"]["job.failed"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/EventEnvelope")
    assert "webhook-signature" in operation["description"]
    assert set(operation["responses"]) == {"2XX", "410", "default"}


@pytest.mark.parametrize("events", [[], ["job.exploded"], "job.failed", {"job.failed": True}])
def test_endpoint_clean_rejects_events(own_endpoint, events):
    from django.core.exceptions import ValidationError

    own_endpoint.events = events

    with pytest.raises(ValidationError) as excinfo:
        own_endpoint.full_clean()

    assert "events" in excinfo.value.message_dict

