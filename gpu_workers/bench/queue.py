"""Queue overhead with Redis: submit to task start, and task end to the result seen by the caller."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from .timing import percentile, summarize

logger = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 60
RESULT_TIMEOUT_S = 10
REPO_ROOT = Path(__file__).resolve().parents[2]


def measure_queue(tasks: int, warmup: int = 5) -> dict:
    """Send ``tasks`` no-op tasks one after another to a fresh worker and time each hop.

    ``submit_to_start`` is the worker's clock at task start minus the caller's clock just
    before ``delay()``. ``end_to_result`` is the caller's clock when ``get()`` returns minus
    the worker's clock at task end. Both clocks are the same machine's. Returns
    ``{"skipped": reason}`` when Redis does not answer on 127.0.0.1.
    """
    import redis

    from .queue_app import BROKER_URL, QUEUE, app, noop

    try:
        redis.Redis.from_url(BROKER_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return {"skipped": f"Redis at {BROKER_URL} is not reachable ({exc}); start redis-server to measure"}

    app.control.purge()
    worker = _start_worker(QUEUE)
    try:
        noop.delay().get(timeout=WORKER_START_TIMEOUT_S)
        for _ in range(warmup):
            noop.delay().get(timeout=RESULT_TIMEOUT_S)

        to_start, to_result, round_trip = [], [], []
        for _ in range(tasks):
            submitted = time.time()
            stamps = noop.delay().get(timeout=RESULT_TIMEOUT_S)
            received = time.time()
            to_start.append(stamps["started"] - submitted)
            to_result.append(received - stamps["finished"])
            round_trip.append(received - submitted)
    finally:
        _stop_worker(worker)

    overhead = [start + end for start, end in zip(to_start, to_result)]
    return {
        "broker": BROKER_URL,
        "tasks": tasks,
        "submit_to_start_s": dict(summarize(to_start), p95=percentile(to_start, 0.95)),
        "end_to_result_s": dict(summarize(to_result), p95=percentile(to_result, 0.95)),
        "overhead_per_batch_s": dict(summarize(overhead), p95=percentile(overhead, 0.95)),
        "round_trip_s": dict(summarize(round_trip), p95=percentile(round_trip, 0.95)),
    }


def _start_worker(queue: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "gpu_workers.bench.queue_app", "worker", "--pool=solo",
               "--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "--loglevel=WARNING", "-Q", queue, "-n", f"versus-bench-{os.getpid()}@%h"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    logger.info("starting bench worker: %s", " ".join(command))
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop_worker(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    if worker.returncode not in (0, -15):
        logger.warning("bench worker exited with %s: %s", worker.returncode, worker.stderr.read().decode()[-2000:])
