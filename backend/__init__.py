"""Versus: Django project for head-to-head evaluation of generative models."""

from .celery import app as celery_app

__all__ = ["celery_app"]
