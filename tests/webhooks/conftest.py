"""Fixtures for webhook tests: API clients for the personas and a real HTTP receiver on 127.0.0.1.

Tests route requests through ``urlpatterns`` below (the admin, the API schema and the webhook
URLs under ``api/v1/``, as in ``backend.urls``), so they do not depend on other apps' URLs.
"""

import contextlib
import shutil
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.test import APIClient

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/", include("backend.webhooks.urls")),
]


@pytest.fixture(autouse=True)
def webhook_urls(settings):
    settings.ROOT_URLCONF = sys.modules[__name__]


@pytest.fixture(autouse=True)
def enqueued(monkeypatch):
    """Record deliver_event messages instead of sending them to the broker."""
    from tasks.webhooks import deliver_event

    calls = []
    monkeypatch.setattr(
        deliver_event, "apply_async", lambda args=None, **options: calls.append((args, options)),
    )
    return calls


@pytest.fixture(autouse=True)
def fast_webhooks(settings):
    """Short retry schedule and timeouts, so retries and hangs take fractions of a second."""
    settings.VERSUS_WEBHOOK_ALLOWED_HOSTS = []
    settings.VERSUS_WEBHOOK_RETRY_SCHEDULE = [0.2, 0.6, 30]
    settings.VERSUS_WEBHOOK_RETRY_JITTER = 0.2
    settings.VERSUS_WEBHOOK_CONNECT_TIMEOUT = 1
    settings.VERSUS_WEBHOOK_TOTAL_TIMEOUT = 3
    # Persona fixtures hash passwords; the fast hasher saves about 0.2 s per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


@pytest.fixture
def allow_local(settings):
    settings.VERSUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


def client_for(user):
    """An API client authenticated with the persona's knox token (see tests/conftest.py)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.token}")
    return client


@pytest.fixture
def owner_client(owner):
    return client_for(owner)


@pytest.fixture
def outsider_client(outsider):
    return client_for(outsider)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)


@dataclass
class ReceivedRequest:
    path: str
    headers: dict
    body: bytes
    received_at: float


def reply(status, body=b"ok", headers=None):
    """Behaviour: respond at once with ``status``."""

    def respond(handler, release):
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def hang(handler, release):
    """Behaviour: send no response until the test ends."""
    release.wait(30)


def trickle(interval):
    """Behaviour: send a 200 status line, then one body byte per ``interval`` seconds."""

    def respond(handler, release):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.flush()
        while not release.wait(interval):
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return

    return respond


@dataclass
class Receiver:
    """A webhook receiver that records requests and responds with queued behaviours, then 200."""

    url: str = ""
    port: int = 0
    requests: list = field(default_factory=list)
    behaviours: list = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server_names: list = field(default_factory=list)

    def respond(self, *behaviours):
        self.behaviours.extend(reply(b) if isinstance(b, int) else b for b in behaviours)


def _handler_class(receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            receiver.requests.append(ReceivedRequest(
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                received_at=time.monotonic(),
            ))
            behaviour = receiver.behaviours.pop(0) if receiver.behaviours else reply(200)
            behaviour(self, receiver.release)

        def log_message(self, format, *args):
            pass

    return Handler


@contextlib.contextmanager
def running_receiver(ssl_context=None):
    state = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(state))
    server.daemon_threads = True
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    scheme = "https" if ssl_context is not None else "http"
    state.url = f"{scheme}://127.0.0.1:{state.port}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver():
    with running_receiver() as state:
        yield state


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory):
    """A self-signed certificate for webhook.test, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=webhook.test",
         "-addext", "subjectAltName=DNS:webhook.test"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_receiver(tls_certificate):
    """A receiver serving HTTPS as webhook.test; ``server_names`` records the TLS SNI."""
    cert, key = tls_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server_names = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    with running_receiver(context) as state:
        state.server_names = server_names
        yield state
