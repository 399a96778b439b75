"""One error shape, ``{"error": {"code", "message", "fields"}}``, for every API error status."""

import uuid

import pytest
from django.test import Client
from rest_framework.test import APIClient

import backend.urls

from .conftest import assert_error_shape, client_for

pytestmark = pytest.mark.django_db

HANDLERS_URLCONF = "tests.security.urls_with_handlers"
HANDLERS_MISSING = pytest.mark.xfail(
    getattr(backend.urls, "handler404", None) is None,
    reason="backend/urls.py does not name backend.api.handlers as handler400/403/404/500",
    strict=True,
)


def test_400_validation(owner):
    response = client_for(owner).post("/api/v1/comparisons/", {}, format="json")

    error = assert_error_shape(response, 400, "invalid")
    assert "models" in error["fields"]


def test_400_malformed_json(owner):
    response = client_for(owner).post("/api/v1/comparisons/", "{not json",
                                      content_type="application/json")

    assert_error_shape(response, 400, "parse_error")


def test_401_without_credentials():
    response = APIClient().get("/api/v1/jobs/")

    assert_error_shape(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


def test_401_bad_token():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 64)

    assert_error_shape(client.get("/api/v1/jobs/"), 401, "authentication_failed")


def test_403_session_without_csrf(owner):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post("/api/v1/comparisons/", {}, format="json")

    error = assert_error_shape(response, 403, "permission_denied")
    assert "CSRF" in error["message"]


def test_404_missing_job(owner):
    missing = uuid.uuid4()

    error = assert_error_shape(client_for(owner).get(f"/api/v1/jobs/{missing}/"), 404, "not_found")
    assert str(missing) in error["message"]


def test_405_wrong_method(owner):
    response = client_for(owner).delete("/api/v1/jobs/")

    assert_error_shape(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


def test_415_unsupported_media_type(owner):
    response = client_for(owner).post("/api/v1/comparisons/", "models=a",
                                      content_type="text/plain")

    assert_error_shape(response, 415, "unsupported_media_type")


def test_429_throttled(settings, owner):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"anon": "1/min", "user": "1/min",
                                                          "login": "1/min"}}
    client = client_for(owner)
    client.get("/api/v1/jobs/")

    response = client.get("/api/v1/jobs/")

    assert_error_shape(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize("path", ["/api/v1/no-such-endpoint/", "/api/v1/jobs/not-a-uuid/",
                                  "/api/nothing"])
def test_handler_unknown_api_url(settings, path):
    settings.ROOT_URLCONF = HANDLERS_URLCONF

    error = assert_error_shape(Client().get(path), 404, "not_found")
    assert path in error["message"]


def test_handler_page_404_stays_html(settings):
    settings.ROOT_URLCONF = HANDLERS_URLCONF

    response = Client().get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_handler_500_json(settings):
    settings.ROOT_URLCONF = HANDLERS_URLCONF
    client = Client(raise_request_exception=False)

    assert_error_shape(client.get("/api/v1/test-crash/"), 500, "server_error")
    page = client.get("/test-crash/")
    assert page.status_code == 500
    assert page["Content-Type"].startswith("text/html")


@HANDLERS_MISSING
@pytest.mark.parametrize("path", ["/api/v1/no-such-endpoint/", "/api/v1/jobs/not-a-uuid/"])
def test_unknown_api_url_json(path):
    assert_error_shape(Client().get(path), 404, "not_found")
