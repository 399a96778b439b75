"""Fine-tune settings, read from Django settings at call time so tests can override them.

| setting | default | meaning |
| --- | --- | --- |
| ``VERSUS_FINETUNE_QUEUE`` | ``"gpu"`` | Celery queue that fine-tune tasks are sent to |
| ``VERSUS_FINETUNE_LEASE_SECONDS`` | ``300`` | a running fine-tune whose worker sent no heartbeat for this long may be taken over |
| ``VERSUS_FINETUNE_MAX_ATTEMPTS`` | ``5`` | worker starts of one fine-tune before it fails |
| ``VERSUS_FINETUNE_TIME_LIMIT`` | ``86400`` | seconds one fine-tune task may run (the soft limit is 60 s less) |
| ``VERSUS_FINETUNE_EVALUATION_LIMIT`` | ``4`` | items per kind in the comparison queued by ``evaluate_after`` |
| ``VERSUS_FINETUNE_VALIDATION_ITEMS`` | ``2`` | items held out to score checkpoints with ``evaluate_after`` |
"""

from django.conf import settings

DEFAULTS = {
    "VERSUS_FINETUNE_QUEUE": "gpu",
    "VERSUS_FINETUNE_LEASE_SECONDS": 300,
    "VERSUS_FINETUNE_MAX_ATTEMPTS": 5,
    "VERSUS_FINETUNE_TIME_LIMIT": 24 * 3600,
    "VERSUS_FINETUNE_EVALUATION_LIMIT": 4,
    "VERSUS_FINETUNE_VALIDATION_ITEMS": 2,
}


def setting(name):
    """Return Django setting ``name``, or its default from DEFAULTS when unset."""
    return getattr(settings, name, DEFAULTS[name])
