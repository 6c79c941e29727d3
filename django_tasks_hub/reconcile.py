"""Reconcile: end the runs whose worker died or forgot them, so nothing stays processing."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import router, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.states import ACTIVE_STATUSES, RUN_OPEN_STATUSES, TaskStatus

logger = logging.getLogger(__name__)

#: Why a run was marked lost, by what reconcile found out about its worker.
GONE_MESSAGE = "Worker {worker} did not answer; reconcile marked this attempt lost."
FORGOTTEN_MESSAGE = (
    "Worker {worker} answers but no longer runs this attempt, and its end was never "
    "recorded; reconcile marked it lost."
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


@dataclass
class ReconcileResult:
    """What one reconcile pass saw and did."""

    checked: int = 0
    workers_alive: list[str] = field(default_factory=list)
    workers_gone: list[str] = field(default_factory=list)
    lost: list[LostRun] = field(default_factory=list)
    dry_run: bool = False


def _active_by_worker(app: Any, workers: list[str], timeout: float) -> dict[str, set[str]]:
    """Ask ``workers`` what they are running; a worker missing from the answer is gone.

    One broadcast to the named workers only (``destination``); each answer lists the broker
    ids its pool runs right now. A worker that is busy answers too: prefork, threads and
    gevent workers reply from their main loop, not from the pool.
    """
    from django_tasks_hub.services import _connect

    # A bounded connection, as restart and cancel use: a broker that is down or hung makes
    # reconcile fail quickly instead of waiting forever.
    conn = _connect(app)
    try:
        inspect = app.control.inspect(destination=workers, timeout=timeout, connection=conn)
        replies = inspect.active() or {}
    finally:
        conn.release()
    return {
        name: {str(request.get("id")) for request in (requests or [])}
        for name, requests in replies.items()
    }


def reconcile(
    *,
    grace: float | None = None,
    timeout: float = 2.0,
    attempts: int = 2,
    dry_run: bool = False,
    app: Any = None,
    now: datetime.datetime | None = None,
) -> ReconcileResult:
    """Mark ``lost`` the processing runs whose worker is gone or no longer runs them.

    Only runs started more than ``grace`` seconds ago (default
    ``TASKS_HUB["RECONCILE_GRACE_SECONDS"]``) are looked at: a run that just started may be
    on a worker that has not answered yet, or its end may still be on its way to the database.
    A worker that does not answer within ``timeout`` seconds is asked again (``attempts`` in
    all) before it counts as gone. Each run is closed with a conditional UPDATE (only from
    ``processing``), and its task only if that run is still the task's current attempt and the
    task has no other open run, so a late event or a redelivery that already moved on wins.
    """
    from django_tasks_hub.services import get_celery_app

    grace = hub_settings.RECONCILE_GRACE_SECONDS if grace is None else grace
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(seconds=grace)
    result = ReconcileResult(dry_run=dry_run)
    candidates = list(
        TaskRun.objects.stale_processing(cutoff).values_list(
            "pk", "task_id", "name", "broker_id", "worker"
        )
    )
    result.checked = len(candidates)
    if not candidates:
        return result
    workers = sorted({worker for *_, worker in candidates if worker})
    app = app or get_celery_app()
    active: dict[str, set[str]] = {}
    missing = list(workers)
    for _ in range(max(attempts, 1)):
        if not missing:
            break
        active.update(_active_by_worker(app, missing, timeout))
        missing = [w for w in workers if w not in active]
    result.workers_alive = sorted(active)
    result.workers_gone = missing
    for run_id, task_id, name, broker_id, worker in candidates:
        if not worker:
            # No worker name (an eager run): nobody to ask, so nothing proves it is gone.
            continue
        if worker in active:
            if broker_id in active[worker]:
                continue
            reason = FORGOTTEN_MESSAGE.format(worker=worker)
        else:
            reason = GONE_MESSAGE.format(worker=worker)
        lost = LostRun(run_id, task_id, name, broker_id, worker, reason)
        if dry_run or _mark_lost(lost, now):
            result.lost.append(lost)
    if result.lost and not dry_run:
        logger.warning(
            "tasks-hub reconcile marked %d run(s) lost; workers gone: %s",
            len(result.lost),
            ", ".join(result.workers_gone) or "none",
        )
    return result


def _mark_lost(lost: LostRun, now: datetime.datetime) -> bool:
    """End one run as lost, and its task when that run is still the task's current attempt.

    The task row is locked first, then the run: the order the receivers and ``services``
    use, so reconcile and a worker's write never wait on each other in a cycle. Under the lock,
    a redelivery that opened a new run at the same moment is either seen here, or comes after
    and finds this run lost.
    """
    db = router.db_for_write(TaskRun)
    with transaction.atomic(using=db):
        list(Task.objects.using(db).select_for_update().filter(pk=lost.task_id).values("pk"))
        closed = (
            TaskRun.objects.using(db)
            .filter(pk=lost.run_id, status=TaskStatus.PROCESSING)
            .update(status=TaskStatus.LOST, finished_at=now, error=lost.reason)
        )
        if not closed:
            return False  # Its end, or a redelivery, was recorded meanwhile: that wins.
        run = TaskRun.objects.using(db).values("broker_id", "retries").get(pk=lost.run_id)
        other_open = TaskRun.objects.using(db).filter(
            task_id=OuterRef("pk"), status__in=RUN_OPEN_STATUSES
        )
        lost.task_marked = bool(
            Task.objects.using(db)
            .filter(
                pk=lost.task_id,
                broker_id=run["broker_id"],
                retries=run["retries"],
                status__in=ACTIVE_STATUSES,
            )
            .exclude(Exists(other_open))
            .update(
                status=TaskStatus.LOST,
                finished_at=now,
                updated_at=now,
                error=lost.reason,
                traceback="",
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
