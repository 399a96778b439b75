"""Tokens, passwords and webhook signing secrets: never logged, and shown only when created."""

import base64
import logging

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.views.debug import SafeExceptionReporterFilter
from rest_framework.test import APIClient

from .conftest import client_for
from .routes import api_routes

pytestmark = pytest.mark.django_db

WEBHOOKS = "/api/v1/webhooks/"
WEBHOOKS_MISSING = pytest.mark.skipif(
    "api/v1/webhooks/" not in api_routes(), reason="the webhooks API is not routed yet")
HOOK_URL = "http://127.0.0.1:9/hook"


def logged_text(caplog):
    """Everything the captured records contain: messages, arguments, tracebacks, and the
    request headers as Django's error reports (mail_admins) show them."""
    parts = []
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), record.exc_text or ""]
        request = getattr(record, "request", None)
        if request is not None:
            parts.append(repr(SafeExceptionReporterFilter().get_safe_request_meta(request)))
    return "\n".join(parts) + caplog.text


def test_tokens_not_logged(caplog, owner):
    caplog.set_level(logging.DEBUG)
    password = f"pw-{owner.username}"
    wrong_password = "wrong-password-5b1f"
    bogus_token = "f" * 64
    basic = base64.b64encode(f"{owner.username}:{password}".encode()).decode()
    wrong_basic = base64.b64encode(f"{owner.username}:{wrong_password}".encode()).decode()

    token = APIClient().post("/api/v1/auth/login/", HTTP_AUTHORIZATION=f"Basic {basic}").json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/jobs/").status_code == 200
    assert client.post("/api/v1/comparisons/", {}, format="json").status_code == 400
    bogus = APIClient()
    bogus.credentials(HTTP_AUTHORIZATION=f"Token {bogus_token}")
    assert bogus.get("/api/v1/jobs/").status_code == 401
    assert APIClient().post("/api/v1/auth/login/",
                            HTTP_AUTHORIZATION=f"Basic {wrong_basic}").status_code == 401
    assert client.post("/api/v1/auth/logout/").status_code == 204
    assert client.get("/api/v1/jobs/").status_code == 401

    text = logged_text(caplog)
    # The 401s are logged by django.request, so the capture works and the check has teeth.
    assert "Unauthorized: /api/v1/jobs/" in text
    for secret in (token, bogus_token, owner.token, password, wrong_password, basic, wrong_basic):
        assert secret not in text


def test_token_not_in_other_responses(owner):
    client = client_for(owner)

    for path in ("/api/v1/jobs/", "/api/v1/webhooks/", "/api/v1/datasets/", "/api/v1/finetunes/"):
        response = client.get(path)
        assert owner.token not in response.content.decode(), path


@WEBHOOKS_MISSING
def test_webhook_secret_shown_once(caplog, owner, staff):
    caplog.set_level(logging.DEBUG)
    client = client_for(owner)

    created = client.post(WEBHOOKS, {"url": HOOK_URL, "events": ["job.failed"]}, format="json")

    assert created.status_code == 201, created.content
    secret = created.json()["secret"]
    endpoint_id = created.json()["id"]
    assert secret.startswith("whsec_")
    rotated = client.post(f"{WEBHOOKS}{endpoint_id}/rotate-secret/", {}, format="json")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret != secret
    assert client.post(f"{WEBHOOKS}{endpoint_id}/test/").status_code == 202

    later = [
        client.get(WEBHOOKS),
        client.get(f"{WEBHOOKS}{endpoint_id}/"),
        client.patch(f"{WEBHOOKS}{endpoint_id}/", {"description": "renamed"}, format="json"),
        client.get(f"{WEBHOOKS}{endpoint_id}/deliveries/"),
        client_for(staff).get(f"{WEBHOOKS}{endpoint_id}/"),
    ]
    for response in later:
        assert response.status_code == 200, response.content[:300]
        body = response.content.decode()
        assert '"secret"' not in body
        assert secret not in body
        assert new_secret not in body
    text = logged_text(caplog)
    assert secret not in text
    assert new_secret not in text


@WEBHOOKS_MISSING
def test_webhook_secret_not_in_admin(owner):
    from backend.webhooks import actions

    endpoint = actions.create_endpoint(owner, HOOK_URL, ["job.failed"])
    admin_user = get_user_model().objects.create_superuser("root", password="pw-root")
    client = Client()
    client.force_login(admin_user)

    for path in (f"/admin/webhooks/endpoint/{endpoint.pk}/change/", "/admin/webhooks/endpoint/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert endpoint.secret not in response.content.decode(), path
