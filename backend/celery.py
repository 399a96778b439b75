"""Celery application.

Two queues: ``gpu`` carries model batches and fine-tune steps, one worker per GPU with
prefetch 1; ``default`` carries light work (planning, aggregation, rankings, webhooks).
"""

import os

from celery import Celery
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
    "sweep-stalled-jobs": {"task": "tasks.maintenance.sweep_stalled_jobs", "schedule": 60.0},
    "dispatch-due-webhooks": {"task": "tasks.webhooks.dispatch_due", "schedule": 10.0},
}
