"""Celery application.

Two queues: ``gpu`` carries model batches and fine-tune steps, one worker per GPU with
prefetch 1; ``default`` carries light work (planning, aggregation, rankings, webhooks).
"""

import os

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

app = Celery("versus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("gpu"))
app.conf.task_routes = {
    "tasks.comparison.run_batch": {"queue": "gpu"},
    "tasks.finetune.*": {"queue": "gpu"},
}
app.conf.include = ["tasks.comparison", "tasks.finetune", "tasks.webhooks", "tasks.maintenance"]

# Periodic work for `celery -A backend beat`: resume batches whose broker message or worker was
# lost, and send webhook deliveries whose next attempt is due (retry times live in the database).
app.conf.beat_schedule = {
    "sweep-stalled-jobs": {
        "task": "tasks.maintenance.sweep_stalled_jobs",
        "schedule": float(os.environ.get("VERSUS_SWEEP_INTERVAL", "60")),
    },
    "dispatch-due-webhooks": {"task": "tasks.webhooks.dispatch_due", "schedule": 10.0},
}


@worker_process_init.connect
def preload_model_runtime(**kwargs):
    """Import torch, transformers and diffusers when a worker process starts.

    The imports take seconds; paying them here keeps them out of the first batch's time
    limit. Set VERSUS_PRELOAD_RUNTIME=0 on workers that only consume the default queue.
    """
    if os.environ.get("VERSUS_PRELOAD_RUNTIME", "1") != "0":
        import gpu_workers.runner  # noqa: F401
