"""The workers' heartbeat and what reconcile does with it, with real workers that are killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Any

import pytest
from django.utils import timezone

from django_tasks_hub.models import Task, TaskRun, Worker
from django_tasks_hub.reconcile import reconcile
from django_tasks_hub.states import TaskStatus
from testproject import tasks
from tests.conftest import wait_for, wait_status
from tests.test_reliability import children, queue_name

pytestmark = pytest.mark.worker


def kill_whole(worker: Any) -> float:
    """SIGKILL a worker's main process and its pool at once, as a dead machine would."""
    for pid in [*children(worker.proc.pid), worker.proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.proc.wait(10)
    return time.monotonic()


def test_a_worker_writes_its_heartbeat_and_says_when_it_stops(subprocess_worker: Any) -> None:
    q = queue_name()
    w = subprocess_worker(
        "-Q", q, "-n", f"{q}@%h", "-P", "threads", "-c", "3",
        env={"TASKS_HUB_JSON": json.dumps({"WORKER_HEARTBEAT_SECONDS": 0.5})},
    )  # fmt: skip
    row = wait_for(lambda: Worker.objects.filter(hostname__startswith=f"{q}@").first())
    assert (row.pool, row.concurrency, row.queues) == ("threads", 3, [q])
    assert row.pid == w.proc.pid and row.stopped_at is None and row.software.startswith("celery")
    first = row.last_seen
    wait_for(lambda: Worker.objects.get(pk=row.pk).last_seen > first, what="a second beat")
    wait_status(tasks.add.apply_async((1, 2), queue=q).id, "done", timeout=30)
    wait_for(lambda: Worker.objects.get(pk=row.pk).processed >= 1, what="processed counted")
    w.stop()
    row.refresh_from_db()
    assert row.stopped_at is not None and row.acknowledged == []


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_reconcile_with_the_defaults_marks_a_killed_worker_lost_30s_after(
    subprocess_worker: Any, pool: str
) -> None:
    """Issue 14 item 5, with the package's defaults: 30 s after a prefork or threads worker is
    SIGKILLed, reconcile marks its run lost; a solo worker busy in a task longer than the grace
    (it cannot answer a ping) is left alone, and its task ends done."""
    q_dead, q_solo = queue_name(), queue_name()
    doomed = subprocess_worker("-Q", q_dead, "-n", f"{q_dead}@%h", "-P", pool, "-c", "2")
    subprocess_worker("-Q", q_solo, "-n", f"{q_solo}@%h", "-P", "solo")
    long_solo = tasks.long_running.apply_async((45, 1.0), queue=q_solo)
    on_doomed = tasks.long_running.apply_async((60, 0.5), queue=q_dead)
    wait_status(long_solo.id, "processing", timeout=60)
    wait_status(on_doomed.id, "processing", timeout=60)
    killed = kill_whole(doomed)

    # Soon after the kill the dead worker's last beat is still inside the grace: nothing moves.
    early = reconcile(timeout=1.0)
    assert early.lost == []
    assert Task.objects.get(pk=on_doomed.id).status == TaskStatus.PROCESSING

    time.sleep(max(0.0, killed + 30 - time.monotonic()))
    outcome = reconcile()
    assert [lost.broker_id for lost in outcome.lost] == [on_doomed.id]
    assert any(name.startswith(f"{q_dead}@") for name in outcome.workers_gone)
    assert any(name.startswith(f"{q_solo}@") for name in outcome.workers_alive)
    lost = Task.objects.get(pk=on_doomed.id)
    (run,) = TaskRun.objects.filter(task=lost)
    assert lost.status == run.status == TaskStatus.LOST and "last seen" in run.error

    # The solo worker's task had run longer than the grace, and was never touched.
    solo_run = TaskRun.objects.get(broker_id=long_solo.id)
    assert solo_run.status == TaskStatus.PROCESSING
    assert (timezone.now() - solo_run.started_at).total_seconds() > 20
    done = wait_status(long_solo.id, "done", timeout=60)
    assert done.result == 45 and TaskRun.objects.get(broker_id=long_solo.id).error == ""


def test_acknowledged_but_never_started_ends_lost_reserved_stays_pending(
    subprocess_worker: Any, tmp_path: Any
) -> None:
    """The worker acknowledges a message when its pool accepts the task; that message is never
    delivered again. One it only reserved (prefetched) still is. The main process's heartbeat
    tells them apart (``Worker.acknowledged``), and reconcile ends only the first as lost.

    The start of the accepted task is held in the pool process's write-behind buffer (a long
    flush interval), so it dies with the worker: the run was acknowledged and never started.
    The worker keeps its journal in a folder of its own, as on another host: reconcile here
    cannot replay it. (With a shared folder, reconcile would first write the journaled start,
    and then judge a started run on a silent worker: a race between the journal's append and
    the kill that made this test fail now and then.)
    """
    q = queue_name()
    settings = {
        "WRITE_BEHIND": True,
        "FLUSH_INTERVAL": 60,
        "WORKER_HEARTBEAT_SECONDS": 1,
        "JOURNAL_DIR": str(tmp_path / "another-host"),
    }
    w = subprocess_worker(
        "-Q", q, "-n", f"{q}@%h", "-P", "prefork", "-c", "1",
        env={"TASKS_HUB_JSON": json.dumps(settings)},
    )  # fmt: skip
    accepted = tasks.long_running.apply_async((60, 0.5), queue=q)
    reserved = tasks.add.apply_async((2, 2), queue=q)

    def listed() -> Any:
        row = Worker.objects.filter(hostname__startswith=f"{q}@").first()
        return row is not None and accepted.id in row.acknowledged

    wait_for(listed, timeout=60, what="the accepted message in the heartbeat")
    time.sleep(1.0)  # The second message reaches the worker's reserved list.
    assert reserved.id not in Worker.objects.get(hostname__startswith=f"{q}@").acknowledged
    kill_whole(w)
    assert TaskRun.objects.get(broker_id=accepted.id).status == TaskStatus.PENDING

    time.sleep(3)  # Past the grace of 2 s below.
    outcome = reconcile(grace=2, timeout=0.5)
    assert [lost.broker_id for lost in outcome.lost] == [accepted.id]
    task = Task.objects.get(pk=accepted.id)
    run = TaskRun.objects.get(broker_id=accepted.id)
    assert task.status == run.status == TaskStatus.LOST
    assert "acknowledged this message" in run.error
    # The reserved one will be delivered again by the broker: it stays pending.
    assert Task.objects.get(pk=reserved.id).status == TaskStatus.PENDING
