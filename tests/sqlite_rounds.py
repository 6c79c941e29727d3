"""The web side of the SQLite rounds (issue 14 item 7), run as its own process.

Each round cancels a running task through the API (the worker terminates it), then at once
restarts a failed task through the API, as a user clicking in two tabs would. It prints one
JSON line: every answer's status and time, and how each round's runs ended.

Run by ``tests/test_sqlite_rounds.py`` with the database and broker of the run in the
environment (``DATABASE_URL``, ``CELERY_BROKER_URL``, ``TASKS_HUB_BROKER_DIR``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from django_tasks_hub.models import Task, TaskRun  # noqa: E402
from testproject import tasks  # noqa: E402

QUEUE = os.environ["ROUNDS_QUEUE"]


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(json.dumps({"timeout": what}))


def wait_status(broker_id: str, status: str, what: str) -> None:
    wait(lambda: status_of(broker_id) == status, 60, what)


def status_of(broker_id: str) -> str | None:
    run = TaskRun.objects.filter(broker_id=broker_id).only("status").first()
    return run.status if run else None


def main(rounds: int) -> None:
    user, _ = get_user_model().objects.get_or_create(
        username="rounds", defaults={"is_superuser": True, "is_staff": True}
    )
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    failed = tasks.fail.apply_async(("round",), queue=QUEUE)
    wait_status(failed.id, "failed", "the first failure")
    failed_pk = Task.objects.get(broker_id=failed.id).pk
    answers: list[dict[str, Any]] = []
    ends: list[dict[str, Any]] = []
    for number in range(rounds):
        running = tasks.long_running.apply_async((600, 0.1), queue=QUEUE)
        wait_status(running.id, "processing", f"round {number} start")
        pk = Task.objects.get(broker_id=running.id).pk
        started = time.monotonic()
        cancel = client.post(f"/api/tasks/{pk}/cancel/")
        after_cancel = time.monotonic()
        restart = client.post(f"/api/tasks/{failed_pk}/restart/")
        done = time.monotonic()
        answers.append(
            {
                "round": number,
                "cancel": cancel.status_code,
                "cancel_seconds": round(after_cancel - started, 3),
                "restart": restart.status_code,
                "restart_seconds": round(done - after_cancel, 3),
                "body": restart.content.decode()[:300] if restart.status_code != 200 else "",
            }
        )
        if restart.status_code == 200:
            new_id = Task.objects.get(pk=failed_pk).broker_id
            wait_status(new_id, "failed", f"round {number} restart's end")
        wait_status(running.id, "canceled", f"round {number} cancel's end")
        ends.append({"round": number, "canceled": status_of(running.id)})
    open_runs = TaskRun.objects.filter(status__in=["pending", "processing"]).count()
    print(json.dumps({"answers": answers, "ends": ends, "open_runs": open_runs}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
