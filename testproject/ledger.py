"""A ledger outside the hub: each task's end appended to a file (``TASKS_HUB_TEST_LEDGER``).

Written at ``task_postrun``, which Celery sends after ``task_success``/``task_failure`` (whose
receivers journal the end): a line in the ledger means the task really ended, and its end
was handed to the hub before. The kill tests (tests/test_kills.py) compare the hub to it.
"""

import os
from typing import Any

from celery import signals


def _append(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    path = os.environ.get("TASKS_HUB_TEST_LEDGER")
    if path and task_id:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{task_id} {state}\n".encode())  # One write: whole lines only.
        finally:
            os.close(fd)


def read(path: str) -> dict[str, str]:
    """Broker id -> Celery state (``SUCCESS``, ``FAILURE``) of every task the ledger has."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return dict(line.split() for line in f if line.endswith("\n"))


if os.environ.get("TASKS_HUB_TEST_LEDGER"):
    signals.task_postrun.connect(_append, weak=False, dispatch_uid="tasks_hub_test_ledger")
