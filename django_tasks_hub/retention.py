"""Retention: delete old runs and finished tasks in batches, keeping each kept task's latest run."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from django.db import router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.models import Task, TaskRun

logger = logging.getLogger(__name__)


@dataclass
class PruneResult:
    """What one prune deleted (or, in a dry run, would delete)."""

    cutoff: datetime.datetime
    tasks: int = 0
    runs: int = 0
    batches: int = 0
    dry_run: bool = False


def _delete_in_batches(qs: QuerySet, batch_size: int, result: PruneResult) -> int:
    """Delete the rows of ``qs`` ``batch_size`` at a time; return how many rows went.

    Each batch is its own short transaction on a list of primary keys, so a large backlog never
    holds locks on the whole table, and a prune interrupted half-way keeps what it did.
    """
    model = qs.model
    db = router.db_for_write(model)
    deleted = 0
    while True:
        pks = list(qs.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not pks:
            return deleted
        with transaction.atomic(using=db):
            _, per_model = model._default_manager.using(db).filter(pk__in=pks).delete()
        deleted += per_model.get(model._meta.label, 0)
        result.runs += per_model.get(TaskRun._meta.label, 0) if model is not TaskRun else 0
        result.batches += 1
        if len(pks) < batch_size:
            return deleted


def prune(
    *,
    older_than_days: float | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    now: datetime.datetime | None = None,
) -> PruneResult:
    """Delete what ended more than ``older_than_days`` ago and return the counts.

    First the finished tasks (their runs go with them), then the older runs of the tasks that
    stay, always keeping each task's latest run so its status keeps its history. Active tasks
    and open runs are never touched. Defaults: ``TASKS_HUB["RETENTION_DAYS"]`` and
    ``TASKS_HUB["PRUNE_BATCH_SIZE"]``.
    """
    days = hub_settings.RETENTION_DAYS if older_than_days is None else older_than_days
    size = int(batch_size or hub_settings.PRUNE_BATCH_SIZE)
    if days < 0:
        raise ValueError(f"older_than_days must be 0 or more, not {days}.")
    if size < 1:
        raise ValueError(f"batch_size must be 1 or more, not {size}.")
    cutoff = (now or timezone.now()) - datetime.timedelta(days=days)
    result = PruneResult(cutoff=cutoff, dry_run=dry_run)
    tasks = Task.objects.finished_before(cutoff)
    if dry_run:
        result.tasks = tasks.count()
        result.runs = (
            TaskRun.objects.filter(task__in=tasks).count()
            + TaskRun.objects.prunable(cutoff).exclude(task__in=tasks).count()
        )
        return result
    result.tasks = _delete_in_batches(tasks, size, result)
    result.runs += _delete_in_batches(TaskRun.objects.prunable(cutoff), size, result)
    logger.info(
        "tasks-hub prune deleted %d task(s) and %d run(s) that ended before %s",
        result.tasks,
        result.runs,
        cutoff.isoformat(),
    )
    return result
