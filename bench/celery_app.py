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

if settings.BENCH_MODE not in ("hub", "hubfast"):
    # Off means off: no receiver runs, not even one that finds no plugin.
    from django_tasks_hub.plugins.celery import disconnect

    disconnect()

prerun_last = os.environ.get("BENCH_HUB_PRERUN_LAST") == "1"
if settings.BENCH_MODE == "hubfast" or (settings.BENCH_MODE == "hub" and prerun_last):
    # Experiment for a proposal: let the hub's start receiver run after Celery's Django fixup
    # (which closes the connection at task_prerun), so a task opens one connection, not two.
    from celery import signals

    from django_tasks_hub.plugins.celery import on_task_prerun

    def _prerun_last(**_: object) -> None:
        uid = "tasks_hub.on_task_prerun"
        signals.task_prerun.disconnect(on_task_prerun, dispatch_uid=uid)
        signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid=uid)

    signals.worker_init.connect(_prerun_last, weak=False)

if os.environ.get("BENCH_PROFILE_DIR"):
    from bench import profiling

    profiling.install(os.environ["BENCH_PROFILE_DIR"])
