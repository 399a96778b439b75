"""Celery tasks that send webhook deliveries, on the default queue.

``deliver_event`` makes the first attempt right after the emitting transaction commits.
``dispatch_due`` runs from Celery beat about every 10 s and sends every delivery whose
``next_attempt_at`` has passed: retries, and first attempts whose task message was lost.
Both only carry ids; claims in the database keep a duplicate message from sending twice.
"""

from celery import shared_task

from backend.webhooks import delivery


@shared_task(name="tasks.webhooks.deliver_event", acks_late=True, ignore_result=True)
def deliver_event(event_id):
    """Attempt every due delivery of event ``event_id``; return the number of attempts."""
    return delivery.deliver_event(event_id)


@shared_task(name="tasks.webhooks.dispatch_due", acks_late=True, ignore_result=True)
def dispatch_due():
    """Attempt every due delivery, up to one batch per run; return the number of attempts."""
    return delivery.dispatch_due()
