"""Reconcile: end the runs whose worker died or forgot them, so nothing stays processing."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import router
from django.utils import timezone

from django_tasks_hub import transitions
from django_tasks_hub.broker import active_by_worker, get_celery_app
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.locking import write_transaction
from django_tasks_hub.models import Task, TaskRun, Worker
from django_tasks_hub.recorder.journal import replay_dead_journals

logger = logging.getLogger(__name__)

#: Why a run was marked lost, by what reconcile found out about its worker.
GONE_MESSAGE = "Worker {worker} did not answer; reconcile marked this attempt lost."
SILENT_MESSAGE = (
    "Worker {worker} was last seen {seconds:.0f} s ago and did not answer; reconcile marked "
    "this attempt lost."
)
FORGOTTEN_MESSAGE = (
    "Worker {worker} answers but no longer runs this attempt, and its end was never "
    "recorded; reconcile marked it lost."
)
UNSTARTED_MESSAGE = (
    "Worker {worker} had acknowledged this message, then stopped before the task started; "
    "no broker delivers it again, so reconcile marked it lost."
)


@dataclass
class LostRun:
    """One run reconcile ended (or, in a dry run, would end)."""

    run_id: int
    task_id: Any
    name: str
    broker_id: str
    worker: str
    reason: str
    task_marked: bool = False
    unstarted: bool = False


@dataclass
class ReconcileResult:
    """What one reconcile pass saw and did."""

    checked: int = 0
    workers_alive: list[str] = field(default_factory=list)
    workers_gone: list[str] = field(default_factory=list)
    lost: list[LostRun] = field(default_factory=list)
    dry_run: bool = False
    #: Events replayed from dead processes' journals on this host before judging.
    replayed: int = 0


@dataclass
class _Liveness:
    """What reconcile knows of one worker: its last heartbeat, and its answer, if any."""

    heartbeat: Worker | None
    answered: bool
    active: set[str]
    fresh: bool

    @property
    def alive(self) -> bool:
        # A worker that answers is alive; one whose heartbeat is fresh is too, even if it
        # cannot answer now (a solo worker runs its task in the loop that would answer).
        return self.answered or self.fresh


def reconcile(
    *,
    grace: float | None = None,
    timeout: float = 2.0,
    attempts: int = 2,
    dry_run: bool = False,
    app: Any = None,
    now: datetime.datetime | None = None,
) -> ReconcileResult:
    """Mark ``lost`` the runs whose worker is gone or no longer runs them.

    A worker is gone when it is silent: its heartbeat (``Worker.last_seen``, written every
    ``TASKS_HUB["WORKER_HEARTBEAT_SECONDS"]`` by its main process) is older than ``grace``
    seconds (default ``TASKS_HUB["RECONCILE_GRACE_SECONDS"]``) and it does not answer within
    ``timeout`` seconds (asked ``attempts`` times). The grace counts from when the worker was
    last seen, not from the run's start: a SIGKILLed worker's runs end ``lost`` soon after the
    kill, and a long task on a live worker, which keeps beating, is never touched. A worker
    with no heartbeat row (heartbeat off) counts from the run's start instead.

    A live worker that answers but no longer runs a run that started more than ``grace`` ago
    (or before the worker itself started: a restart under the same name) forgot it. A gone
    worker's acknowledged messages (``Worker.acknowledged``) that never started end ``lost``
    too; the messages it had only reserved stay ``pending``: the broker delivers them again.

    Each run is closed with a conditional UPDATE (``transitions``), and its task only if that
    run is still the task's current attempt and the task has no other open run, so a late event
    or a redelivery that already moved on wins.
    """
    grace = hub_settings.RECONCILE_GRACE_SECONDS if grace is None else grace
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(seconds=grace)
    result = ReconcileResult(dry_run=dry_run)
    # What a process killed on this host saw but did not write is written first: a run whose
    # end sits in a dead journal ended, and must not be judged lost. A dry run changes nothing.
    if not dry_run:
        result.replayed = replay_dead_journals()
    candidates = list(
        TaskRun.objects.processing().values_list(
            "pk", "task_id", "name", "broker_id", "worker", "started_at"
        )
    )
    silent = list(Worker.objects.silent_since(cutoff).with_acknowledged())
    result.checked = len(candidates)
    if not candidates and not silent:
        return result
    names = {worker for *_, worker, _ in candidates if worker} | {w.hostname for w in silent}
    workers = _liveness(sorted(names), cutoff, timeout, attempts, app)
    result.workers_alive = sorted(name for name, w in workers.items() if w.alive)
    result.workers_gone = sorted(name for name, w in workers.items() if not w.alive)
    for run_id, task_id, name, broker_id, worker, started_at in candidates:
        if not worker:
            # No worker name (an eager run): nobody to ask, so nothing proves it is gone.
            continue
        reason = _judge(workers[worker], worker, broker_id, started_at, cutoff, now)
        if reason is None:
            continue
        lost = LostRun(run_id, task_id, name, broker_id, worker, reason)
        if dry_run or _mark_lost(lost, now):
            result.lost.append(lost)
    for heartbeat in silent:
        if workers[heartbeat.hostname].alive:
            continue
        reason = UNSTARTED_MESSAGE.format(worker=heartbeat.hostname)
        unstarted = TaskRun.objects.pending().filter(broker_id__in=heartbeat.acknowledged)
        for run_id, task_id, name, broker_id in unstarted.values_list(
            "pk", "task_id", "name", "broker_id"
        ):
            lost = LostRun(run_id, task_id, name, broker_id, heartbeat.hostname, reason)
            lost.unstarted = True
            if dry_run or _mark_lost(lost, now):
                result.lost.append(lost)
        if not dry_run:
            # Judged once: the next pass need not look at them again.
            Worker.objects.filter(pk=heartbeat.pk, last_seen=heartbeat.last_seen).update(
                acknowledged=[]
            )
    if result.lost and not dry_run:
        logger.warning(
            "tasks-hub reconcile marked %d run(s) lost; workers gone: %s",
            len(result.lost),
            ", ".join(result.workers_gone) or "none",
        )
    return result


def _liveness(
    names: list[str], cutoff: datetime.datetime, timeout: float, attempts: int, app: Any
) -> dict[str, _Liveness]:
    """Each worker's heartbeat, and its answer to one ``active`` broadcast (asked again,
    ``attempts`` in all, of the ones that did not answer)."""
    beats = {w.hostname: w for w in Worker.objects.filter(hostname__in=names)}
    app = app or get_celery_app()
    active: dict[str, set[str]] = {}
    missing = list(names)
    for _ in range(max(attempts, 1)):
        if not missing:
            break
        active.update(active_by_worker(app, missing, timeout))
        missing = [w for w in names if w not in active]
    return {
        name: _Liveness(
            heartbeat=beats.get(name),
            answered=name in active,
            active=active.get(name, set()),
            fresh=name in beats and beats[name].is_fresh(cutoff),
        )
        for name in names
    }


def _judge(
    worker: _Liveness,
    name: str,
    broker_id: str,
    started_at: datetime.datetime | None,
    cutoff: datetime.datetime,
    now: datetime.datetime,
) -> str | None:
    """Why the processing run ``broker_id`` on ``name`` is lost, or ``None`` to leave it."""
    beat = worker.heartbeat
    if worker.answered:
        if broker_id in worker.active:
            return None
        restarted = beat is not None and started_at is not None and started_at < beat.started_at
        # A run that just ended may not have its end written yet: it gets the grace.
        if restarted or (started_at is not None and started_at < cutoff):
            return FORGOTTEN_MESSAGE.format(worker=name)
        return None
    if worker.fresh:
        return None  # Alive and busy (a solo worker in a long task): not ours to judge.
    if beat is not None:
        seconds = (now - beat.last_seen).total_seconds()
        return SILENT_MESSAGE.format(worker=name, seconds=seconds)
    # No heartbeat at all (turned off): the grace counts from the run's start.
    if started_at is None or started_at < cutoff:
        return GONE_MESSAGE.format(worker=name)
    return None


def _mark_lost(lost: LostRun, now: datetime.datetime) -> bool:
    """End one run as lost, and its task when that run is still the task's current attempt.

    The task row is locked first, then the run: the order the receivers and ``services``
    use, so reconcile and a worker's write never wait on each other in a cycle. Under the lock,
    a redelivery that opened a new run at the same moment is either seen here, or comes after
    and finds this run lost.
    """
    db = router.db_for_write(TaskRun)
    with write_transaction(db):
        list(Task.objects.using(db).select_for_update().filter(pk=lost.task_id).values("pk"))
        runs = TaskRun.objects.using(db)
        lose = transitions.lose_unstarted_run if lost.unstarted else transitions.lose_run
        closed = lose(runs.filter(pk=lost.run_id), finished_at=now, error=lost.reason)
        if not closed:
            return False  # Its end, or a redelivery, was recorded meanwhile: that wins.
        run = runs.values("broker_id", "retries").get(pk=lost.run_id)
        tasks = Task.objects.using(db).filter(
            pk=lost.task_id, broker_id=run["broker_id"], retries=run["retries"]
        )
        lost.task_marked = bool(
            transitions.lose_task(
                tasks, runs, finished_at=now, updated_at=now, error=lost.reason, traceback=""
            )
        )
    return True


def describe(lost: Iterable[LostRun]) -> list[str]:
    """One line per lost run, for the command's output and logs."""
    return [
        f"{run.name} [{run.broker_id}] run {run.run_id} on {run.worker}: {run.reason}"
        + ("" if run.task_marked else " (task already moved on)")
        for run in lost
    ]
