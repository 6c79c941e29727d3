"""The rollups the triggers keep: counts, histograms and errors that match the rows."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from django_tasks_hub.insight import rollups
from django_tasks_hub.models import (
    RUNTIME_COLUMNS,
    WAIT_COLUMNS,
    ErrorRollup,
    RollupDelta,
    RunRollup,
    Task,
    TaskCount,
    TaskRun,
)


def counts() -> dict[tuple[str, str], int]:
    return {(c.name, c.status): c.count for c in TaskCount.objects.all() if c.count}


def test_task_counts_follow_inserts_moves_and_deletes(make_run: Callable[..., TaskRun]) -> None:
    make_run("a", "done")
    make_run("a", "failed", error="ValueError: bad")
    make_run("b", "pending")
    make_run("b", "processing")
    rollups.fold()
    assert counts() == {("a", "done"): 1, ("a", "failed"): 1, ("b", "pending"): 1,
                        ("b", "processing"): 1}  # fmt: skip
    Task.objects.filter(name="a", status="failed").delete()  # What prune does.
    Task.objects.filter(name="b", status="pending").update(status="canceled")
    assert rollups.fold() > 0
    assert counts() == {("a", "done"): 1, ("b", "canceled"): 1, ("b", "processing"): 1}
    assert not RollupDelta.objects.exists()


def test_run_rollups_count_ends_failures_and_histograms(make_run: Callable[..., TaskRun]) -> None:
    now = timezone.now()
    make_run("a", "done", runtime=0.2, wait=1.5, finished=now)
    make_run("a", "done", runtime=7.0, wait=0.003, finished=now)
    make_run("a", "failed", runtime=0.04, wait=20.0, finished=now, error="KeyError: 'x'")
    make_run("a", "processing")  # Not ended: not counted.
    rollups.fold()
    for span in rollups.SPANS:
        row = RunRollup.objects.get(span=span, name="a")
        assert (row.ended, row.failed, row.runtime_count, row.wait_count) == (3, 1, 3, 3)
        assert row.runtime_sum == pytest.approx(7.24)
        assert row.wait_sum == pytest.approx(21.503, abs=1e-3)
        runtimes = {c: getattr(row, c) for c in RUNTIME_COLUMNS if getattr(row, c)}
        assert runtimes == {"r3": 1, "r5": 1, "r10": 1}  # <=0.05, <=0.25, <=10
        waits = {c: getattr(row, c) for c in WAIT_COLUMNS if getattr(row, c)}
        assert waits == {"w0": 1, "w8": 1, "w11": 1}  # <=0.005, <=2.5, <=30
        assert row.last_failure_at is not None
    minute = RunRollup.objects.get(span=60, name="a")
    assert minute.start == now.replace(second=0, microsecond=0)
    hour = RunRollup.objects.get(span=3600, name="a")
    assert hour.start == now.replace(minute=0, second=0, microsecond=0)
    error = ErrorRollup.objects.get()
    assert (error.error, error.count) == ("KeyError: 'x'", 1)


def test_a_stronger_end_moves_the_count(make_run: Callable[..., TaskRun]) -> None:
    """failed, then done (a late report): the failure is taken back, the end counted once."""
    run = make_run("a", "failed", error="OSError: gone")
    rollups.fold()
    TaskRun.objects.filter(pk=run.pk).update(status="done", error="")
    TaskRun.objects.filter(pk=run.pk).update(status="done")  # A duplicate: no change.
    rollups.fold()
    row = RunRollup.objects.get(span=0, name="a")
    assert (row.ended, row.failed, row.runtime_count) == (1, 0, 1)
    assert ErrorRollup.objects.get().count == 0


def test_rollups_survive_prune(make_run: Callable[..., TaskRun]) -> None:
    make_run("a", "done", finished=timezone.now() - datetime.timedelta(minutes=5))
    rollups.fold()
    TaskRun.objects.all().delete()
    Task.objects.all().delete()
    rollups.fold()
    assert RunRollup.objects.get(span=0, name="a").ended == 1
    assert counts() == {}


def test_fold_is_cheap_when_nothing_happened(db: Any, django_assert_max_num_queries: Any) -> None:
    rollups.fold()
    with django_assert_max_num_queries(4):
        assert rollups.fold() == 0


def test_rebuild_counts_the_rows_again(make_run: Callable[..., TaskRun]) -> None:
    """A database filled without the triggers (a restore) gets its rollups from the rows."""
    make_run("a", "done")
    make_run("a", "failed", error="ValueError: v")
    rollups.fold()
    before = (counts(), list(RunRollup.objects.values("span", "name", "ended", "failed", "r10")))
    RunRollup.objects.all().delete()
    TaskCount.objects.all().delete()
    assert rollups.rebuild() > 0
    after = (counts(), list(RunRollup.objects.values("span", "name", "ended", "failed", "r10")))
    assert after == before
    assert ErrorRollup.objects.get().count == 1
