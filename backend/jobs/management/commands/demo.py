"""``manage.py demo``: set up, start a web server and a worker, run one comparison over HTTP.

Everything it starts it stops again, also on Ctrl-C or failure.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from knox.models import AuthToken

from backend.jobs.cli import follow_progress, render_report

DEFAULT_MODELS = ["kosmos-2-patch14-224", "stable-diffusion-3.5-large"]


def free_port(preferred):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url, process, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError(f"web server exited with code {process.returncode} before it responded; see demo-web.log in the logs folder printed above")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise CommandError(f"web server at {url} did not respond within {timeout}s; see demo-web.log in the logs folder printed above")


def stop(process, name, write):
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    write(f"Stopped {name} (pid {process.pid}).")


class Command(BaseCommand):
    help = ("Run the quick-start demo: migrate, load the catalog and suites, build stand-in "
            "checkpoints, start a web server and one Celery worker, compare two models on the "
            "sample suite through the REST API, print scores, ranking and verdict, then stop.")

    def add_arguments(self, parser):
        parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="Catalog slugs to compare.")
        parser.add_argument("--suite", default="sample")
        parser.add_argument("--limit", type=int, default=None, help="Sample at most N items of each kind.")
        parser.add_argument("--port", type=int, default=8000, help="Web server port (a free one if taken).")
        parser.add_argument("--timeout", type=float, default=900, help="Seconds to wait for the job.")

    def handle(self, *args, **opts):
        write = self.stdout.write
        write("Setting up: database, catalog, suites, stand-in checkpoints...")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("load_catalog", verbosity=0)
        call_command("load_suites", verbosity=0)
        call_command("build_standins", verbosity=0)

        user, _ = get_user_model().objects.get_or_create(
            username="demo", defaults={"is_staff": True, "email": "demo@localhost"})
        token_row, token = AuthToken.objects.create(user)
        headers = {"Authorization": f"Token {token}"}

        port = free_port(opts["port"])
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        log_dir = settings.VAR_DIR / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)

        with ExitStack() as stack:
            stack.callback(token_row.delete)
            server_log = stack.enter_context(open(log_dir / "demo-web.log", "w"))
            worker_log = stack.enter_context(open(log_dir / "demo-worker.log", "w"))
            server = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                cwd=settings.BASE_DIR, env=env, stdout=server_log, stderr=subprocess.STDOUT)
            stack.callback(stop, server, "web server", write)
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "backend", "worker", "-Q", "gpu,default",
                 "--concurrency", "1", "--loglevel", "INFO", "--hostname", f"demo-{port}@%h",
                 "--beat", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")],
                cwd=settings.BASE_DIR, env=env, stdout=worker_log, stderr=subprocess.STDOUT)
            stack.callback(stop, worker, "worker", write)
            write(f"Started web server at {base} (pid {server.pid}) and worker (pid {worker.pid}); "
                  f"logs in {log_dir}.")
            wait_for_http(f"{base}/api/v1/models/", server, timeout=60)

            options = {"limit": opts["limit"]} if opts["limit"] else {}
            response = requests.post(f"{base}/api/v1/comparisons/", headers=headers, timeout=30,
                                     json={"models": opts["models"], "suite": opts["suite"],
                                           "options": options})
            if response.status_code != 201:
                raise CommandError(f"submitting the comparison failed ({response.status_code}): "
                                   f"{response.text}")
            job = response.json()
            write(f"Submitted comparison {' vs '.join(opts['models'])} on suite '{opts['suite']}': "
                  f"{job['url']}")

            def fetch():
                if worker.poll() is not None:
                    raise CommandError(f"worker exited with code {worker.returncode}; see "
                                       f"{log_dir / 'demo-worker.log'}")
                reply = requests.get(job["url"], headers=headers, timeout=30)
                reply.raise_for_status()
                return reply.json()

            final = follow_progress(fetch, timeout=opts["timeout"], stream=sys.stderr)
            rankings = requests.get(f"{base}/api/v1/rankings/", timeout=30).json()["results"]
            write("")
            render_report(final, rankings, final["verdicts"], write)
            write("")

        if final["state"] != "succeeded":
            raise CommandError(f"job {final['id']} ended {final['state']}: {final['error']}")
        write("Demo finished. To browse the results, run `make serve`, create a login with "
              "`.venv/bin/python manage.py createsuperuser` (the job belongs to the user 'demo', and "
              "staff see every job) and open the page URL above.")
