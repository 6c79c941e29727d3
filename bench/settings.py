"""Bench-only settings: the test project plus django-celery-results, tuned like production.

``BENCH_MODE`` picks what records the tasks: ``bare`` (nothing), ``dcr`` (django-celery-results
as the result backend), ``hub`` (django-tasks-hub with its defaults: write-behind with the
journal) or ``hubsync`` (django-tasks-hub writing each event in its signal,
``WRITE_BEHIND: False``).
Every mode installs the same apps and runs the same worker settings; only the recording
differs.
"""

import json
import os

from testproject.settings import *  # noqa: F403
from testproject.settings import DATABASES, INSTALLED_APPS

BENCH_MODE = os.environ.get("BENCH_MODE", "hub")
if BENCH_MODE not in ("bare", "dcr", "hub", "hubsync"):
    raise ValueError(f"BENCH_MODE must be bare, dcr, hub or hubsync, not {BENCH_MODE!r}")

# DEBUG keeps every query in memory (connection.queries) and would skew speed and memory.
DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "django_celery_results"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_tasks_hub": {"handlers": ["console"], "level": "WARNING"}},
}

# Celery's defaults, the same for the three modes (the test project's prefetch of 1 suits
# long tests, not a throughput run).
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("BENCH_PREFETCH", "4"))
CELERY_TASK_ALWAYS_EAGER = False
CELERY_RESULT_BACKEND = "django-db" if BENCH_MODE == "dcr" else None
CELERY_TASK_IGNORE_RESULT = BENCH_MODE != "dcr"
# Celery's Django fixup closes every database connection before and after each task unless
# this is set; BENCH_DB_REUSE_MAX=N measures the difference.
if os.environ.get("BENCH_DB_REUSE_MAX"):
    CELERY_DB_REUSE_MAX = int(os.environ["BENCH_DB_REUSE_MAX"])
if os.environ.get("BENCH_CONN_HEALTH_CHECKS") == "0":
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False

# The hub's receivers are disconnected in bench.celery_app for bare and dcr; an empty plugin
# list makes sure nothing is recorded even where they are connected (a publisher's shell).
TASKS_HUB: dict = {"PLUGINS": []}
if BENCH_MODE == "hub":
    # TASKS_HUB_JSON='{"FLUSH_INTERVAL": 0.2}' measures other settings (testproject reads it).
    # The package's defaults: write-behind with the journal.
    TASKS_HUB = json.loads(os.environ.get("TASKS_HUB_JSON") or "{}")
elif BENCH_MODE == "hubsync":
    TASKS_HUB = {"WRITE_BEHIND": False}  # Each event written in its signal.
if os.environ.get("BENCH_SERVER_SIDE_BINDING") == "1":
    # psycopg's server-side binding (Django's OPTIONS["server_side_binding"]), every mode.
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
