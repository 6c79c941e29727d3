"""The test project: runs django-tasks-hub with a real worker, admin and browsable API."""

from testproject.celery import app as celery_app

__all__ = ["celery_app"]
