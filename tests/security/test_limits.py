"""Request body limits: 413 in the API error shape, before a large body is read or stored."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

import backend.urls

from .conftest import assert_error_shape, client_for

pytestmark = pytest.mark.django_db

MIDDLEWARE = "backend.api.middleware.RequestSizeLimitMiddleware"
BODY_LIMIT = 1024
UPLOAD_LIMIT = 4096


def json_body(size):
    """A comparison request padded to exactly ``size`` bytes of JSON."""
    body = {"models": ["a", "b"], "suite": "sample", "padding": ""}
    body["padding"] = "x" * (size - len(json.dumps(body)))
    encoded = json.dumps(body)
    assert len(encoded) == size
    return encoded


@pytest.fixture
def low_limits(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = BODY_LIMIT
    settings.VERSUS_MAX_UPLOAD_BYTES = UPLOAD_LIMIT
    return settings


@pytest.fixture
def with_middleware(low_limits):
    stack = [name for name in low_limits.MIDDLEWARE if name != MIDDLEWARE]
    stack.insert(1, MIDDLEWARE)
    low_limits.MIDDLEWARE = stack


@pytest.fixture
def with_handlers(low_limits):
    low_limits.ROOT_URLCONF = "tests.security.urls_with_handlers"
    low_limits.MIDDLEWARE = [name for name in low_limits.MIDDLEWARE if name != MIDDLEWARE]


def post_json(user, size, path="/api/v1/comparisons/"):
    return client_for(user).post(path, json_body(size), content_type="application/json")


def limit_wired():
    from django.conf import settings

    return MIDDLEWARE in settings.MIDDLEWARE or getattr(backend.urls, "handler400", None) is not None


@pytest.mark.xfail(
    not limit_wired(), strict=True,
    reason=f"neither {MIDDLEWARE} is in MIDDLEWARE nor backend/urls.py names handler400, "
    "so Django answers an HTML 400 page",
)
def test_json_body_over_limit(low_limits, owner):
    error = assert_error_shape(post_json(owner, 2 * BODY_LIMIT), 413, "request_too_large")

    assert f"{BODY_LIMIT:,}-byte limit" in error["message"]


def test_json_body_at_limit_parsed(low_limits, owner):
    # Exactly at the limit the body reaches the serializer, which rejects the unknown models.
    error = assert_error_shape(post_json(owner, BODY_LIMIT), 400, "invalid")

    assert "models" in error["fields"]


def test_middleware_rejects_json(with_middleware, owner):
    error = assert_error_shape(post_json(owner, BODY_LIMIT + 1), 413, "request_too_large")

    assert "1,025 bytes" in error["message"]
    assert "VERSUS_MAX_REQUEST_BYTES" in error["message"]


def test_middleware_rejects_anonymous_body(with_middleware):
    # The size check runs before authentication, so nobody can make the server read the body.
    from rest_framework.test import APIClient

    response = APIClient().post("/api/v1/comparisons/", json_body(BODY_LIMIT + 1),
                                content_type="application/json")

    assert_error_shape(response, 413, "request_too_large")


def test_middleware_rejects_large_upload(with_middleware, owner):
    upload = SimpleUploadedFile("prompts.txt", b"a prompt\n" * 1000, content_type="text/plain")

    response = client_for(owner).post("/api/v1/suites/", {"slug": "big", "name": "Big",
                                                          "prompts": upload})

    error = assert_error_shape(response, 413, "request_too_large")
    assert "VERSUS_MAX_UPLOAD_BYTES" in error["message"]


def test_middleware_passes_small_upload(with_middleware, owner):
    # Files may exceed DATA_UPLOAD_MAX_MEMORY_SIZE: only VERSUS_MAX_UPLOAD_BYTES limits them.
    upload = SimpleUploadedFile("prompts.txt", b"a prompt\n" * 300, content_type="text/plain")
    assert BODY_LIMIT < upload.size < UPLOAD_LIMIT

    response = client_for(owner).post("/api/v1/suites/", {"slug": "small", "name": "Small",
                                                          "prompts": upload})

    assert response.status_code != 413, response.content[:300]


def test_middleware_page_gets_text(with_middleware):
    from django.test import Client

    response = Client().post("/login/", "x" * (BODY_LIMIT + 1), content_type="text/plain")

    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/plain")


def test_handler_maps_too_big_to_413(with_handlers, owner):
    error = assert_error_shape(post_json(owner, BODY_LIMIT + 1), 413, "request_too_large")

    assert f"{BODY_LIMIT:,}-byte limit" in error["message"]
