"""Webhooks end to end: a real worker, the outbox, retries from the database, and `verify`."""

import json
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from backend.webhooks.models import Delivery, DeliveryAttempt, Event
from tests.conftest import auth, wait_for_job
from versus_webhooks import verify

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MODELS = ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"]


class Receiver:
    """An HTTP receiver on 127.0.0.1 that records every request it gets."""

    def __init__(self, port=0):
        self.requests = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def subscribe(live_server, owner, url):
    response = requests.post(f"{live_server.url}/api/v1/webhooks/", headers=auth(owner), timeout=30,
                             json={"url": url, "events": ["evaluation.completed"]})
    assert response.status_code == 201, response.text
    return response.json()["secret"]


def submit(live_server, owner):
    response = requests.post(
        f"{live_server.url}/api/v1/comparisons/", headers=auth(owner), timeout=30,
        json={"models": MODELS, "suite": "sample", "options": {"limit": 2, "batch_size": 2}},
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_completed_job_delivers_signed_event(live_server, catalog, owner, worker):
    receiver = Receiver()
    try:
        secret = subscribe(live_server, owner, receiver.url)
        job = submit(live_server, owner)
        final = wait_for_job(job["url"], auth(owner), timeout=300, worker=worker)
        assert final["state"] == "succeeded", final["error"]

        assert wait_for(lambda: receiver.requests, timeout=60), worker.tail()
    finally:
        receiver.stop()

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    payload = verify(request["headers"], request["body"], secret)
    assert payload["type"] == "evaluation.completed"
    assert payload["data"]["id"] == job["id"]
    assert set(payload["data"]["scores"]) == set(MODELS)
    assert request["headers"]["webhook-id"] == Event.objects.get().id
    with pytest.raises(Exception):
        verify(request["headers"], request["body"].replace(b"succeeded", b"failed"), secret)


def test_worker_crash_after_failed_attempt_still_delivers(live_server, catalog, owner, start_worker):
    port = free_port()
    secret = subscribe(live_server, owner, f"http://127.0.0.1:{port}/hook")
    job = submit(live_server, owner)
    # Nothing listens on the port yet, so the first attempt fails and a retry is stored.
    first = start_worker("hook-1", VERSUS_WEBHOOK_RETRY_SCHEDULE="2,2,2", VERSUS_WEBHOOK_RETRY_JITTER=0)
    final = wait_for_job(job["url"], auth(owner), timeout=300, worker=first)
    assert final["state"] == "succeeded", final["error"]
    assert wait_for(lambda: DeliveryAttempt.objects.filter(succeeded=False).exists(), timeout=60), first.tail()
    first.stop(signal.SIGKILL)

    receiver = Receiver(port)
    try:
        # Only the periodic dispatch, run by beat in the new worker, can send the retry now.
        second = start_worker("hook-2", extra_args=["--beat", "--schedule", "/tmp/versus-test-beat-hooks"],
                              VERSUS_WEBHOOK_RETRY_SCHEDULE="2,2,2", VERSUS_WEBHOOK_RETRY_JITTER=0)
        assert wait_for(lambda: receiver.requests, timeout=90), second.tail()
    finally:
        receiver.stop()

    payload = verify(receiver.requests[0]["headers"], receiver.requests[0]["body"], secret)
    assert payload["data"]["id"] == job["id"]
    delivery = Delivery.objects.get()
    assert delivery.status == "succeeded"
    assert delivery.attempt_count >= 2
    assert json.loads(Event.objects.get().body)["id"] == receiver.requests[0]["headers"]["webhook-id"]
