"""Production settings (VERSUS_SECURE=1), each checked in a fresh process with its own environment."""

import json
import os
import secrets
import subprocess
import sys

import pytest

from tests.testenv import ROOT

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "VERSUS_SECURE": "1",
    "DJANGO_ALLOWED_HOSTS": "versus.example.com",
}
# Variables a developer's shell or the test run may set, which would change the result.
CLEARED = ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "VERSUS_SECURE", "DJANGO_ALLOWED_HOSTS",
           "VERSUS_CACHE_URL", "VERSUS_NUM_PROXIES", "VERSUS_TOKEN_TTL_HOURS",
           "VERSUS_THROTTLE_ANON", "VERSUS_THROTTLE_USER", "VERSUS_THROTTLE_LOGIN",
           "VERSUS_MAX_REQUEST_BYTES", "DJANGO_SETTINGS_MODULE")

# Reads the settings and sends two requests through the whole middleware stack.
PROBE = """
import json
import django
from django.conf import settings
django.setup()
from django.test import Client

client = Client()
http = client.get("/api/v1/metrics/", HTTP_HOST="versus.example.com")
https = client.get("/api/v1/metrics/", HTTP_HOST="versus.example.com",
                   HTTP_X_FORWARDED_PROTO="https")
ttl = settings.REST_KNOX["TOKEN_TTL"]
print(json.dumps({
    "http": [http.status_code, http.get("Location")],
    "https": [https.status_code, dict(https.items())],
    "session_cookie_secure": settings.SESSION_COOKIE_SECURE,
    "csrf_cookie_secure": settings.CSRF_COOKIE_SECURE,
    "token_ttl_s": ttl.total_seconds() if ttl else None,
    "rates": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
    "num_proxies": settings.REST_FRAMEWORK["NUM_PROXIES"],
    "max_request_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    "cache": settings.CACHES["default"],
}))
"""


def run_django(tmp_path, env, *args):
    full_env = {key: value for key, value in os.environ.items() if key not in CLEARED}
    full_env.update(VERSUS_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="backend.settings", **env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=120)


def secret_key():
    return secrets.token_urlsafe(50)


def test_check_deploy_clean(tmp_path):
    result = run_django(tmp_path, {**PRODUCTION, "DJANGO_SECRET_KEY": secret_key()},
                        "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_flags_dev_settings(tmp_path):
    # The same check without VERSUS_SECURE must fail, or the test above proves nothing.
    result = run_django(tmp_path, {"DJANGO_DEBUG": "0"}, "manage.py", "check", "--deploy",
                        "--tag", "security", "--fail-level", "WARNING")

    assert result.returncode != 0
    for check_id in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check_id in result.stderr, check_id


def test_secure_requires_secret_key(tmp_path):
    result = run_django(tmp_path, PRODUCTION, "manage.py", "check")

    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is not set" in result.stderr
    assert "token_urlsafe" in result.stderr


def test_secure_rejects_debug(tmp_path):
    env = {**PRODUCTION, "DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": secret_key()}

    result = run_django(tmp_path, env, "manage.py", "check")

    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_DEBUG=1 and VERSUS_SECURE=1" in result.stderr


def test_production_probe(tmp_path):
    env = {**PRODUCTION, "DJANGO_SECRET_KEY": secret_key(), "VERSUS_TOKEN_TTL_HOURS": "2",
           "VERSUS_THROTTLE_ANON": "7/min", "VERSUS_THROTTLE_USER": "70/min",
           "VERSUS_THROTTLE_LOGIN": "5/hour", "VERSUS_NUM_PROXIES": "1",
           "VERSUS_MAX_REQUEST_BYTES": "2048", "VERSUS_CACHE_URL": "redis://127.0.0.1:6379/3"}

    result = run_django(tmp_path, env, "-c", PROBE)

    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["http"] == [301, "https://versus.example.com/api/v1/metrics/"]
    status, headers = probe["https"]
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert probe["session_cookie_secure"] is True
    assert probe["csrf_cookie_secure"] is True
    assert probe["token_ttl_s"] == 2 * 3600
    assert probe["rates"] == {"anon": "7/min", "user": "70/min", "login": "5/hour"}
    assert probe["num_proxies"] == 1
    assert probe["max_request_bytes"] == 2048
    assert probe["cache"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert probe["cache"]["LOCATION"] == "redis://127.0.0.1:6379/3"


def test_development_defaults(tmp_path):
    result = run_django(tmp_path, {"VERSUS_TOKEN_TTL_HOURS": "0"}, "-c", PROBE)

    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["token_ttl_s"] is None
    assert probe["num_proxies"] == 0
    assert probe["session_cookie_secure"] is False
    assert probe["rates"] == {"anon": "120/min", "user": "1200/min", "login": "10/min"}
    assert probe["max_request_bytes"] == 10 * 1024 * 1024


@pytest.mark.parametrize("value", ["", "   "])
def test_secure_rejects_blank_key(tmp_path, value):
    env = {**PRODUCTION, "DJANGO_SECRET_KEY": value}

    result = run_django(tmp_path, env, "manage.py", "check")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr
