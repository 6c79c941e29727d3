"""The bench's Celery app: the test project's configuration, the bench settings and tasks."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django
from celery import Celery

django.setup()

from django.conf import settings  # noqa: E402

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("bench.tasks",)

if settings.BENCH_MODE not in ("hub", "hubsync"):
    # Off means off: no receiver runs, not even one that finds no plugin.
    from django_tasks_hub.receivers import disconnect

    disconnect()

if os.environ.get("BENCH_PROFILE_DIR"):
    from bench import profiling

    profiling.install(os.environ["BENCH_PROFILE_DIR"])
