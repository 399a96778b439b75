"""Celery tasks of Versus; each module contains the tasks of one kind of work."""
