"""Celery tasks of Versus; each module holds the tasks of one kind of work."""
