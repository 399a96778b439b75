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
