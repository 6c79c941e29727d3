"""Truth under kills, with the journal: what really ended is recorded as it ended.

A ledger outside the hub (``testproject/ledger.py``: a line per task end, written after the
hub's receivers had the end) is compared with the rows once the dead processes' journals
are replayed.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from django_tasks_hub import flush
from django_tasks_hub.models import Task
from django_tasks_hub.recorder.journal import replay_dead_journals
from testproject import ledger, tasks
from tests.conftest import wait_for
from tests.test_reliability import children

pytestmark = pytest.mark.worker


@pytest.fixture
def journal_dir(settings: Any, tmp_path: Path) -> Path:
    """The workers' journal folder, also this process's (so it can replay it too)."""
    folder = tmp_path / "journals"
    settings.TASKS_HUB = {**settings.TASKS_HUB, "JOURNAL_DIR": str(folder)}
    return folder


def worker_env(journal_dir: Path, ledger_path: Path, **hub: Any) -> dict[str, str]:
    return {
        "TASKS_HUB_TEST_LEDGER": str(ledger_path),
        "TASKS_HUB_JSON": json.dumps({"JOURNAL_DIR": str(journal_dir), **hub}),
    }


def assert_ledger_true(entries: dict[str, str]) -> None:
    """Every task the ledger says ended is recorded with its true outcome."""
    want = {"SUCCESS": "done", "FAILURE": "failed"}
    got = dict(Task.objects.filter(broker_id__in=entries).values_list("broker_id", "status"))
    wrong = {i: (state, got.get(i)) for i, state in entries.items() if got.get(i) != want[state]}
    assert not wrong, f"{len(wrong)} of {len(entries)} ended tasks recorded wrongly: {wrong}"


def test_a_worker_killed_mid_burst_loses_no_end(
    subprocess_worker: Any, journal_dir: Path, tmp_path: Path
) -> None:
    """The whole worker (main process and pool) SIGKILLed while a burst runs. Its last
    second of events (``FLUSH_INTERVAL: 1``: a wide window) were only in its journal."""
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "ledger"
    doomed = subprocess_worker(
        "-P", "prefork", "-c", "2", "-Q", queue,
        env=worker_env(journal_dir, path, FLUSH_INTERVAL=1.0),
    )  # fmt: skip
    total = 300
    for i in range(total):
        tasks.short.apply_async((0.005, i % 10 == 0), queue=queue)
    wait_for(lambda: len(ledger.read(str(path))) >= 100, 60, 0.02, "100 tasks to end")
    assert doomed.proc is not None
    for pid in [doomed.proc.pid, *children(doomed.proc.pid)]:
        os.kill(pid, signal.SIGKILL)
    doomed.proc.wait(10)
    at_kill = ledger.read(str(path))
    # The next worker on the host replays the dead processes' journals when it first records.
    subprocess_worker("-P", "prefork", "-c", "2", "-Q", queue, env=worker_env(journal_dir, path))

    def drained() -> bool:
        before = len(ledger.read(str(path)))
        time.sleep(2)
        return len(ledger.read(str(path))) == before and before >= total - 30

    wait_for(drained, 120, 0.1, "the queue to drain")
    # What reconcile does first (and any journal the second worker had not got to yet).
    replay_dead_journals()
    assert flush(timeout=30)
    entries = ledger.read(str(path))
    assert len(at_kill) >= 100 and len(entries) >= total - 30
    assert_ledger_true(entries)


def test_os_exit_in_a_task_loses_no_end_of_the_tasks_before(
    subprocess_worker: Any, journal_dir: Path, tmp_path: Path
) -> None:
    """A task ends its pool process with ``os._exit`` (no exit hook runs). The ends of the
    tasks that process ran just before were only in its journal (``FLUSH_INTERVAL: 30``)."""
    queue = f"exit-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "ledger"
    subprocess_worker(
        "-P", "prefork", "-c", "1", "-Q", queue,
        env=worker_env(journal_dir, path, FLUSH_INTERVAL=30),
    )  # fmt: skip
    ids = [tasks.short.apply_async((0.0,), queue=queue).id for _ in range(10)]
    wait_for(lambda: len(ledger.read(str(path))) == 10, 60, 0.05, "10 tasks to end")
    tasks.crash.apply_async(queue=queue)
    # The worker's main process, recording the lost task, replays the dead child's journal.
    wait_for(
        lambda: Task.objects.filter(broker_id__in=ids, status="done").count() == 10,
        40,
        0.2,
        "the 10 ends replayed",
    )
    assert_ledger_true(ledger.read(str(path)))
