"""A Celery app with one no-op task, for timing the broker round trip without Django or models.

The bench starts a worker for it as a subprocess (``celery -A gpu_workers.bench.queue_app
worker``); the broker and result backend are Redis database 14 on 127.0.0.1.
"""

import os
import time

from celery import Celery

BROKER_URL = os.environ.get("VERSUS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
QUEUE = "versus-bench"

app = Celery("versus_bench", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="versus_bench.noop")
def noop() -> dict:
    """Return the worker's wall-clock time at the start and at the end of the task."""
    started = time.time()
    return {"started": started, "finished": time.time()}
