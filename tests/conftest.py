"""Shared fixtures: personas with tokens, the catalog and suites, and a real Celery worker.

``make test`` points DATABASE_URL at PostgreSQL and CELERY_BROKER_URL at Redis; the worker
fixture starts ``celery worker`` as a separate process on the test database.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.testenv import ROOT  # noqa: F401  (also loaded early by pytest.ini)



@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """MD5 instead of PBKDF2 for test personas: hashing speed is not under test."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def database_url_for_worker(settings_dict):
    """Rebuild a DATABASE_URL that points a child process at the current test database."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def standins(django_db_setup):
    """Build the stand-in checkpoints of the bundled catalog once per session."""
    from django.conf import settings

    from backend.catalog.actions import DEFAULT_CATALOG
    from gpu_workers.standins import build_standin
    import json

    built = {}
    for row in json.loads(Path(DEFAULT_CATALOG).read_text())["entries"]:
        path = Path(settings.VERSUS_STANDIN_DIR) / f"{row['architecture']}-seed{row['standin_seed']}"
        build_standin(row["architecture"], path, seed=row["standin_seed"])
        built[row["slug"]] = path
    if settings.VERSUS_CLIP_CHECKPOINT:
        build_standin("clip", Path(settings.VERSUS_CLIP_CHECKPOINT), seed=0)
    return built


@pytest.fixture
def catalog(db, standins):
    """The bundled catalog and suites in the test database."""
    from backend.catalog.actions import import_catalog
    from backend.evaluation.suites import install_bundled_suites

    entries = import_catalog()
    install_bundled_suites()
    return {entry.slug: entry for entry in entries}


def make_user(username, staff=False):
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    user = get_user_model().objects.create_user(username=username, password="pw-" + username,
                                                is_staff=staff)
    _, token = AuthToken.objects.create(user)
    user.token = token
    return user


@pytest.fixture
def owner(db):
    return make_user("owner")


@pytest.fixture
def outsider(db):
    return make_user("outsider")


@pytest.fixture
def staff(db):
    return make_user("reviewer", staff=True)


def auth(user):
    return {"Authorization": f"Token {user.token}"}


@pytest.fixture
def api(owner):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {owner.token}")
    return client


class WorkerProcess:
    """A ``celery worker`` child process consuming both queues on the test database."""

    def __init__(self, env, name, queues="gpu,default", concurrency=1, extra_args=()):
        self.env, self.name, self.queues, self.concurrency = env, name, queues, concurrency
        self.extra_args = list(extra_args)
        self.process = None
        log_dir = Path(os.environ["VERSUS_VAR_DIR"]) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"

    def start(self):
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "backend", "worker", "-Q", self.queues,
             "--concurrency", str(self.concurrency), "--loglevel", "INFO",
             "--hostname", f"{self.name}@%h", "--without-gossip", "--without-mingle",
             *self.extra_args],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, lines=60):
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, standins):
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_worker(connection.settings_dict)
    env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    env["PYTHONUNBUFFERED"] = "1"
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    else:
        shutil.rmtree(settings.BROKER_DIR, ignore_errors=True)
        for sub in ("out", "processed"):
            (settings.BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    return env


@pytest.fixture(scope="session")
def shared_worker(worker_env):
    handle = WorkerProcess(worker_env, "test-worker")
    yield handle
    handle.stop()


@pytest.fixture
def worker(shared_worker):
    """The session's worker, consuming the gpu and default queues; started on first use."""
    if not shared_worker.running:
        shared_worker.start()
    return shared_worker


@pytest.fixture
def start_worker(shared_worker, worker_env):
    """Stop the shared worker and return a factory for workers this test controls.

    The broker is emptied first, so no message of an earlier test reaches these workers.
    Every worker started here is killed at the end of the test.
    """
    shared_worker.stop()
    purge_broker(worker_env["CELERY_BROKER_URL"])
    started = []

    def start(name="fault-worker", queues="gpu,default", extra_args=(), **overrides):
        env = dict(worker_env)
        env.update({key: str(value) for key, value in overrides.items()})
        process = WorkerProcess(env, name, queues=queues, extra_args=extra_args).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)
    purge_broker(worker_env["CELERY_BROKER_URL"])


def purge_broker(url):
    if url.startswith("redis://"):
        import redis

        redis.Redis.from_url(url).flushdb()


def wait_for_job(url, headers, timeout=300, states=("succeeded", "failed", "cancelled"), worker=None):
    """Poll a job over HTTP until it reaches one of ``states``; return its JSON."""
    import requests

    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = requests.get(url, headers=headers, timeout=10).json()
        if job["state"] in states:
            return job
        time.sleep(0.3)
    log = worker.tail() if worker else ""
    raise AssertionError(f"job did not reach {states} in {timeout}s; last: {job}\nworker log:\n{log}")
