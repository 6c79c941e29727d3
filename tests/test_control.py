"""Workers and queues against real brokers (Redis, RabbitMQ, the folder broker) and real
``celery worker`` processes: depth, pause and resume, a pause kept for a worker that starts
later, pool resizing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from django_tasks_hub import control
from django_tasks_hub.exceptions import PoolNotResizable, QueueNotPaused, WorkerNotAnswering
from django_tasks_hub.models import QueuePause, Task
from django_tasks_hub.states import TaskStatus
from tests.conftest import wait_for, wait_status

pytestmark = pytest.mark.worker


def summary(name: str) -> control.QueueSummary:
    found = {q.name: q for q in control.queues()}
    assert name in found, f"{name} not among {sorted(found)}"
    return found[name]


def test_depth_oldest_age_and_consumers(hub: Any) -> None:
    worker = hub.start()
    control.pause_queue(hub.queue)
    ids = hub.send(3)
    q = wait_for(lambda: (s := summary(hub.queue)).depth == 3 and s, 15, 0.2, "depth 3")
    assert q.paused
    assert q.consumers == []  # Paused: nobody consumes it now.
    assert q.oldest_age is not None and q.oldest_age >= 0
    if hub.kind == "redis":
        assert q.oldest_age_source == "broker"
    else:  # AMQP and the folder give counts only: the hub's oldest pending run stands in.
        assert q.oldest_age_source == "hub"
    assert q.pending == 3
    control.resume_queue(hub.queue)
    for broker_id in ids:
        wait_status(broker_id, TaskStatus.DONE)
    q = summary(hub.queue)
    assert q.depth == 0
    assert q.consumers == [worker.hostname]
    assert not q.paused


def test_pause_stops_tasks_from_starting_and_resume_starts_them(hub: Any) -> None:
    worker = hub.start()
    [first] = hub.send()
    wait_status(first, TaskStatus.DONE)
    pause = control.pause_queue(hub.queue)
    assert pause.workers == [worker.hostname]
    assert pause.prefetched == 0
    ids = hub.send(2)
    wait_for(lambda: summary(hub.queue).depth == 2, 15, 0.2, "two messages waiting")
    time.sleep(2)  # Long enough for a consuming worker to have taken them.
    assert set(Task.objects.filter(broker_id__in=ids).values_list("status", flat=True)) == {
        TaskStatus.PENDING
    }
    assert control.resume_queue(hub.queue) == [worker.hostname]
    for broker_id in ids:
        wait_status(broker_id, TaskStatus.DONE)
    assert not QueuePause.objects.exists()
    with pytest.raises(QueueNotPaused):
        control.resume_queue(hub.queue)


def test_a_worker_started_later_does_not_consume_a_paused_queue(hub: Any) -> None:
    first = hub.start()
    control.pause_queue(hub.queue)
    first.stop()
    later = hub.start()
    assert "does not consume the paused queue" in later.output()
    [waiting] = hub.send()
    wait_for(lambda: summary(hub.queue).depth == 1, 15, 0.2, "one message waiting")
    assert summary(hub.queue).consumers == []
    assert Task.objects.get(broker_id=waiting).status == TaskStatus.PENDING
    # Resume gives the queue to the worker that skipped it at its start.
    assert control.resume_queue(hub.queue) == [later.hostname]
    wait_status(waiting, TaskStatus.DONE)


@pytest.mark.parametrize("hub", ["redis", "rabbitmq"], indirect=True)
def test_workers_show_pool_queues_and_what_runs(hub: Any) -> None:
    worker = hub.start("-c", "2", pool="prefork")
    [running] = hub.send(steps=40, delay=0.25)
    wait_status(running, TaskStatus.PROCESSING)

    def mine() -> Any:
        found = [w for w in control.workers() if w.hostname == worker.hostname]
        return found[0] if found and found[0].active else None

    w = wait_for(mine, 15, 0.2, "the worker to run the task")
    assert w.answering and w.pool == "prefork" and w.concurrency == 2
    assert w.queues == [hub.queue]
    assert w.active == [running]
    assert w.running[0]["task_id"] == str(Task.objects.get(broker_id=running).pk)
    assert w.resizable
    control.resize_pool(worker.hostname, -1)
    wait_for(
        lambda: (
            next(x for x in control.workers() if x.hostname == worker.hostname).concurrency == 1
        ),
        20,
        0.3,
        "the pool to shrink",
    )
    with pytest.raises(PoolNotResizable):
        control.resize_pool(worker.hostname, -1)  # It would leave no process.
    control.resize_pool(worker.hostname, 1)
    wait_for(
        lambda: (
            next(x for x in control.workers() if x.hostname == worker.hostname).concurrency == 2
        ),
        20,
        0.3,
        "the pool to grow",
    )


@pytest.mark.parametrize("hub", ["redis"], indirect=True)  # The same on every broker.
def test_threads_pool_says_why_it_cannot_resize(hub: Any) -> None:
    worker = hub.start()
    w = next(x for x in control.workers() if x.hostname == worker.hostname)
    assert w.pool == "threads" and not w.resizable
    assert "ThreadPoolExecutor" in w.not_resizable_why
    with pytest.raises(PoolNotResizable, match="threads pool"):
        control.resize_pool(worker.hostname, 1)


@pytest.mark.parametrize("hub", ["redis"], indirect=True)  # The same on every broker.
def test_a_worker_whose_heartbeats_stopped_is_flagged_for_a_day(hub: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from django_tasks_hub.models import Worker

    hub.start()
    now = timezone.now()
    Worker.objects.create(hostname="gone@host", pool="prefork", last_seen=now - timedelta(hours=1))
    Worker.objects.create(hostname="old@host", last_seen=now - timedelta(days=2))
    Worker.objects.create(hostname="stopped@host", last_seen=now, stopped_at=now)
    shown = {w.hostname: w for w in control.workers()}
    assert not shown["gone@host"].answering and shown["gone@host"].pool == "prefork"
    assert "old@host" not in shown and "stopped@host" not in shown


@pytest.mark.parametrize("hub", ["redis", "rabbitmq"], indirect=True)
def test_shutdown_and_a_worker_that_no_longer_answers_is_flagged(hub: Any) -> None:
    worker = hub.start()
    [running] = hub.send(steps=200, delay=0.1)
    wait_status(running, TaskStatus.PROCESSING)
    worker.stop(9)  # Killed: its run stays open.
    silent = wait_for(
        lambda: [w for w in control.workers() if w.hostname == worker.hostname], 10, 0.3
    )
    assert not silent[0].answering and silent[0].open_runs == 1
    with pytest.raises(WorkerNotAnswering):
        control.shutdown_worker(worker.hostname)
    other = hub.start()
    control.shutdown_worker(other.hostname)
    assert other.proc is not None
    other.proc.wait(30)
    assert other.proc.returncode == 0


@pytest.mark.parametrize("hub", ["redis"], indirect=True)  # The same on every broker.
def test_unconsumed_queue_flags_a_waiting_task(hub: Any) -> None:
    hub.start(queues=f"{hub.queue}-other")
    [waiting] = hub.send()
    task = Task.objects.get(broker_id=waiting)
    consumed = control.consumed_queues()
    assert consumed is not None and f"{hub.queue}-other" in consumed
    assert control.unconsumed_queue(task, consumed) == hub.queue


@pytest.mark.parametrize("hub", ["redis", "rabbitmq"], indirect=True)
def test_prefetched_tasks_still_start_after_a_pause_and_are_counted(hub: Any) -> None:
    # One thread and a prefetch of four: one task runs, three wait inside the worker.
    hub.start("-c", "1", "--prefetch-multiplier", "4")
    running, *prefetched = hub.send(4, steps=10, delay=0.3)
    wait_status(running, TaskStatus.PROCESSING)
    wait_for(
        lambda: next(w for w in control.workers() if w.queues == [hub.queue]).reserved == 3,
        15,
        0.3,
        "three tasks prefetched",
    )
    pause = control.pause_queue(hub.queue)
    assert pause.prefetched == 3
    assert summary(hub.queue).prefetched == 3
    [after] = hub.send()
    # What the worker had taken before the pause runs all the same; what came after waits.
    for broker_id in prefetched:
        wait_status(broker_id, TaskStatus.DONE, timeout=30)
    assert Task.objects.get(broker_id=after).status == TaskStatus.PENDING
    control.resume_queue(hub.queue)
    wait_status(after, TaskStatus.DONE)


def test_configured_queues_come_from_the_default_the_queues_and_the_routes() -> None:
    from celery import Celery
    from kombu import Queue

    from django_tasks_hub import broker

    app = Celery("tasks-hub-queues-config", set_as_current=False)
    app.conf.task_default_queue = "default"
    app.conf.task_queues = [Queue("reports"), Queue("mail")]
    app.conf.task_routes = {"billing.*": {"queue": "billing"}, "x.y": {"routing_key": "z"}}
    assert broker.configured_queues(app) == ["billing", "default", "mail", "reports"]


def test_pool_kind_and_size_from_the_stats_answer() -> None:
    prefork = {"pool": {"implementation": "celery.concurrency.prefork:TaskPool",
                        "max-concurrency": 4, "processes": [1, 2, 3]}}  # fmt: skip
    threads = {"pool": {"implementation": "celery.concurrency.thread:TaskPool",
                        "max-concurrency": 8}}  # fmt: skip
    assert control.pool_kind(prefork) == "prefork"
    assert control.pool_kind(threads) == "threads"
    assert control.pool_kind({"pool": {"implementation": "celery.concurrency.solo:TaskPool"}}) == (
        "solo"
    )
    assert control.pool_kind(None) == ""
