"""API tokens: login with HTTP Basic, hashed storage, expiry, revocation, and writes needing one."""

import base64
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework.test import APIClient

from .conftest import assert_error_shape, client_for
from .routes import api_routes

pytestmark = pytest.mark.django_db

LOGIN_URL = "/api/v1/auth/login/"
PROTECTED_URL = "/api/v1/jobs/"
WRITE_METHODS = ("post", "put", "patch", "delete")


def basic(username, password):
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {credentials}"}


def login(user, password=None):
    return APIClient().post(LOGIN_URL, **basic(user.username, password or f"pw-{user.username}"))


def token_client(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def all_database_text():
    """Every value of every table of the test database, as one string."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_login_returns_token(owner):
    response = login(owner)

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token", "expiry"}
    assert token_client(body["token"]).get(PROTECTED_URL).status_code == 200


def test_login_wrong_password(owner):
    response = login(owner, password="not-the-password")

    assert_error_shape(response, 401, "authentication_failed")
    assert "token" not in response.json()


def test_login_rejects_token_auth(owner):
    # Only a password proves who logs in; a token must not mint further tokens.
    response = client_for(owner).post(LOGIN_URL)

    assert_error_shape(response, 401)
    assert AuthToken.objects.filter(user=owner).count() == 1


def test_token_stored_as_digest(owner):
    token = login(owner).json()["token"]

    row = AuthToken.objects.get(user=owner, token_key=token[:CONSTANTS.TOKEN_KEY_LENGTH])
    assert row.digest == hash_token(token)
    # The lookup prefix is stored in clear; it is too short to authenticate with.
    assert len(row.token_key) == CONSTANTS.TOKEN_KEY_LENGTH < len(token)
    assert token not in all_database_text()
    assert token_client(row.token_key).get(PROTECTED_URL).status_code == 401


def test_expired_token_rejected(owner):
    row, token = AuthToken.objects.create(owner, expiry=timedelta(seconds=-1))

    response = token_client(token).get(PROTECTED_URL)

    assert_error_shape(response, 401, "authentication_failed")
    assert not AuthToken.objects.filter(pk=row.pk).exists()


def test_token_expiry_follows_ttl(settings, owner):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": timedelta(hours=2)}

    before = timezone.now()
    expiry = parse_datetime(login(owner).json()["expiry"])

    assert before + timedelta(hours=2) <= expiry <= timezone.now() + timedelta(hours=2)


def test_logout_revokes_current_token(owner):
    first = login(owner).json()["token"]
    second = login(owner).json()["token"]

    response = token_client(first).post("/api/v1/auth/logout/")

    assert response.status_code == 204
    assert_error_shape(token_client(first).get(PROTECTED_URL), 401, "authentication_failed")
    assert token_client(second).get(PROTECTED_URL).status_code == 200


def test_logoutall_revokes_every_token(owner, outsider):
    first = login(owner).json()["token"]
    second = login(owner).json()["token"]

    response = token_client(second).post("/api/v1/auth/logoutall/")

    assert response.status_code == 204
    for token in (first, second, owner.token):
        assert_error_shape(token_client(token).get(PROTECTED_URL), 401, "authentication_failed")
    assert client_for(outsider).get(PROTECTED_URL).status_code == 200


def test_inactive_user_token_rejected(owner):
    owner.is_active = False
    owner.save(update_fields=["is_active"])

    assert_error_shape(client_for(owner).get(PROTECTED_URL), 401, "authentication_failed")


def test_writes_need_credentials():
    """No API URL accepts a write without credentials: each returns 401, or 405 to everyone."""
    accepted = []
    for route in api_routes().values():
        url = route.url(*route.missing_ids())
        for method in WRITE_METHODS:
            response = getattr(APIClient(), method)(url, {}, format="json")
            if response.status_code == 401:
                assert_error_shape(response, 401, "not_authenticated")
            elif response.status_code != 405:
                accepted.append(f"{method.upper()} {url} -> {response.status_code}")

    assert not accepted, accepted
