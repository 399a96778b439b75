"""Fault injection with real processes: killed workers, parallel workers, a restarted Redis,
an unreachable database, batch time limits and a lost finalize message.

Each test controls its own workers (``start_worker``) against PostgreSQL and Redis and
counts what ran: one result per (model, item), batch executions from ``Batch.attempts``.
"""

import signal
import subprocess
import time

import pytest
import requests

from backend.jobs.models import Batch, Job, Result
from tests.conftest import auth, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

GENERATORS = ["stable-diffusion-3.5-large", "stable-diffusion-3.5-medium"]

# Short limits so a killed batch comes back within seconds: the batch time limit stays below
# the visibility timeout, as in production.
FAST_REDELIVERY = {"VERSUS_BATCH_TIME_LIMIT": 40, "VERSUS_VISIBILITY_TIMEOUT": 45, "VERSUS_BATCH_LEASE": 6}


def submit(live_server, user, models, suite, options):
    response = requests.post(
        f"{live_server.url}/api/v1/comparisons/", headers=auth(user), timeout=30,
        json={"models": models, "suite": suite, "options": options},
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_until(condition, timeout, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout}s")


def assert_one_result_per_item(job_id, models, items_per_model):
    for slug in models:
        rows = Result.objects.filter(job_id=job_id, model__slug=slug)
        assert rows.count() == items_per_model, slug
        assert rows.values("item_id").distinct().count() == items_per_model, slug


def running_batch(job_id):
    return Batch.objects.filter(job_id=job_id, state="running").first()


def test_killed_worker_three_times_loses_nothing(live_server, catalog, owner, start_worker):
    job = submit(live_server, owner, GENERATORS, "partiprompts",
                 {"limit": 20, "batch_size": 2, "num_inference_steps": 40})
    batches = Batch.objects.filter(job_id=job["id"]).count()
    assert batches == 20

    current = start_worker("kill-0", **FAST_REDELIVERY)
    kills = 0
    for kill in range(1, 4):
        # Kill while a batch is mid-run, after some progress since the last kill.
        wait_until(lambda: Job.objects.get(pk=job["id"]).progress_done >= kill * 8 and running_batch(job["id"]),
                   timeout=120, message=f"running batch before kill {kill}")
        current.stop(signal.SIGKILL)
        kills += 1
        current = start_worker(f"kill-{kill}", **FAST_REDELIVERY)

    final = wait_for_job(job["url"], auth(owner), timeout=300, worker=current)

    assert final["state"] == "succeeded", final["error"]
    assert_one_result_per_item(job["id"], GENERATORS, 20)
    executions = sum(Batch.objects.filter(job_id=job["id"]).values_list("attempts", flat=True))
    assert batches < executions <= batches + kills


def test_two_workers_share_one_job(live_server, catalog, owner, start_worker):
    job = submit(live_server, owner, GENERATORS, "partiprompts", {"limit": 12, "batch_size": 2})
    first = start_worker("pair-a")
    start_worker("pair-b")

    final = wait_for_job(job["url"], auth(owner), timeout=300, worker=first)

    assert final["state"] == "succeeded", final["error"]
    assert_one_result_per_item(job["id"], GENERATORS, 12)
    workers = set(Batch.objects.filter(job_id=job["id"]).values_list("worker", flat=True))
    assert {name.split("@")[0] for name in workers} == {"pair-a", "pair-b"}
    assert sum(Batch.objects.filter(job_id=job["id"]).values_list("attempts", flat=True)) == 12


def test_batch_time_limit_fails_job(live_server, catalog, owner, start_worker):
    # Captioning batches are fast; the generator's batch with many steps runs past the limit.
    job = submit(live_server, owner, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"], "sample",
                 {"limit": 2, "batch_size": 2, "num_inference_steps": 200, "height": 1024, "width": 1024})
    worker = start_worker("time-limit", VERSUS_BATCH_TIME_LIMIT=6, VERSUS_VISIBILITY_TIMEOUT=30)

    final = wait_for_job(job["url"], auth(owner), timeout=120, worker=worker)

    assert final["state"] == "failed"
    assert "time limit" in final["error"]
    assert "stable-diffusion-3.5-large" in final["error"]
    failed = Batch.objects.get(job_id=job["id"], state="failed")
    assert "VERSUS_BATCH_TIME_LIMIT" in failed.error
    # The captioner's batch finished before and its results stay.
    assert Result.objects.filter(job_id=job["id"], model__slug="kosmos-2-patch14-224").count() == 2
    assert Result.objects.filter(job_id=job["id"], model__slug="stable-diffusion-3.5-large").count() == 0


def test_sweep_finalizes_job_whose_finalize_was_lost(live_server, catalog, owner, start_worker):
    from django.conf import settings

    from tasks.maintenance import sweep_once
    from tests.conftest import purge_broker

    job = submit(live_server, owner, GENERATORS, "partiprompts", {"limit": 2, "batch_size": 2})
    # Only the gpu queue is consumed, so the finalize message waits unseen on the default queue.
    gpu_only = start_worker("gpu-only", queues="gpu")
    wait_until(lambda: not Batch.objects.filter(job_id=job["id"]).exclude(state="succeeded").exists(),
               timeout=120, message="all batches succeeded")
    gpu_only.stop()
    assert Job.objects.get(pk=job["id"]).state == "running"

    # The broker loses the finalize message; the sweep finds a job whose batches all succeeded.
    purge_broker(settings.CELERY_BROKER_URL)
    counts = sweep_once()
    assert counts["finalized"] == 1
    both = start_worker("sweep-both")

    final = wait_for_job(job["url"], auth(owner), timeout=120, worker=both)

    assert final["state"] == "succeeded", final["error"]


def restart_redis():
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], check=False,
                   capture_output=True, timeout=30)
    wait_until(lambda: subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).returncode != 0,
               timeout=20, message="redis stopped")
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
         "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
         "--logfile", "/var/log/redis/ci.log"],
        check=True, timeout=30,
    )
    wait_until(lambda: subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).stdout.strip() == b"PONG",
               timeout=20, message="redis answering")


@pytest.mark.skipif(subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0,
                    reason="redis-server is not installed on this machine")
def test_redis_restart_mid_job_completes(live_server, catalog, owner, start_worker):
    from django.conf import settings

    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("this test needs CELERY_BROKER_URL on Redis")
    job = submit(live_server, owner, GENERATORS, "partiprompts",
                 {"limit": 10, "batch_size": 2, "num_inference_steps": 30})
    # Embedded beat runs the sweep every 2 s; a batch queued for 3 s counts as lost.
    worker = start_worker("redis-restart", extra_args=["--beat", "--schedule", "/tmp/versus-test-beat"],
                          VERSUS_REQUEUE_AFTER=3, VERSUS_SWEEP_INTERVAL=2, **FAST_REDELIVERY)
    wait_until(lambda: Job.objects.get(pk=job["id"]).progress_done >= 4, timeout=120,
               message="some progress before the restart")

    restart_redis()

    final = wait_for_job(job["url"], auth(owner), timeout=300, worker=worker)
    assert final["state"] == "succeeded", final["error"]
    assert_one_result_per_item(job["id"], GENERATORS, 10)

    # The web server publishes again after the restart, and the worker consumes it.
    second = submit(live_server, owner, GENERATORS, "partiprompts", {"limit": 2, "batch_size": 2})
    assert wait_for_job(second["url"], auth(owner), timeout=120, worker=worker)["state"] == "succeeded"


class TcpProxy:
    """A loopback TCP proxy whose link can be cut and restored, standing in for a network
    outage between a worker and PostgreSQL."""

    def __init__(self, target_port):
        import socket
        import threading

        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.connections = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self):
        """Drop every open connection and refuse new ones until ``restore``."""
        import socket

        self.open = False
        with self.lock:
            for sock in self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.connections = []

    def restore(self):
        self.open = True

    def close(self):
        self.cut()
        self.listener.close()


def test_database_outage_retries_batch(live_server, catalog, owner, start_worker, worker_env):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the outage is simulated in front of PostgreSQL")
    proxy = TcpProxy(int(connection.settings_dict.get("PORT") or 5432))
    try:
        url = worker_env["DATABASE_URL"].replace(
            f":{connection.settings_dict.get('PORT') or 5432}/", f":{proxy.port}/")
        job = submit(live_server, owner, GENERATORS, "partiprompts",
                     {"limit": 8, "batch_size": 2, "num_inference_steps": 30})
        worker = start_worker("db-outage", DATABASE_URL=url)
        wait_until(lambda: Job.objects.get(pk=job["id"]).progress_done >= 2, timeout=120,
                   message="progress before the outage")

        proxy.cut()
        time.sleep(4)
        proxy.restore()

        final = wait_for_job(job["url"], auth(owner), timeout=300, worker=worker)
    finally:
        proxy.close()

    assert final["state"] == "succeeded", final["error"]
    assert_one_result_per_item(job["id"], GENERATORS, 8)
    assert "database unavailable, retrying" in worker.log_path.read_text()


def test_cancel_stops_running_batch_at_next_step(live_server, catalog, owner, start_worker):
    # The captioner's batch finishes first; the generator's batch runs long enough to cancel.
    job = submit(live_server, owner, ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"], "sample",
                 {"limit": 2, "batch_size": 2, "num_inference_steps": 200, "height": 1024, "width": 1024})
    worker = start_worker("cancel")
    wait_until(lambda: Batch.objects.filter(job_id=job["id"], index=1, state="running").exists()
               and (Job.objects.get(pk=job["id"]).progress_detail or {}).get("batch") == 1,
               timeout=120, message="generator batch reporting steps")
    detail = Job.objects.get(pk=job["id"]).progress_detail
    assert detail["model"] == "stable-diffusion-3.5-large"
    assert 0 < detail["steps_done"] < detail["steps_total"] == 2 * 200

    response = requests.post(f"{job['url']}cancel/", headers=auth(owner), timeout=30)
    assert response.status_code == 200
    stopped = wait_until(lambda: Batch.objects.filter(job_id=job["id"], index=1, state="cancelled").first(),
                         timeout=30, message="running batch stopped")

    assert "cancelled" in stopped.error
    final = requests.get(job["url"], headers=auth(owner), timeout=30).json()
    assert final["state"] == "cancelled"
    # The captioner's finished batch keeps its results; the stopped batch stores none.
    assert Result.objects.filter(job_id=job["id"], model__slug="kosmos-2-patch14-224").count() == 2
    assert Result.objects.filter(job_id=job["id"], model__slug="stable-diffusion-3.5-large").count() == 0
    assert "stopping at" in worker.log_path.read_text()
