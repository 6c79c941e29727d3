"""The overview's figures from the rollups: statuses now, ends over time, task names, errors.

Read by the admin's overview and ``GET stats/``: one source, so the page and the API agree.
Every query reads the small rollup tables (folded first), never the runs.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from django.db.models import Max, Sum
from django.utils import timezone

from django_tasks_hub.insight import rollups
from django_tasks_hub.models import (
    HISTOGRAM_BOUNDS,
    RUNTIME_COLUMNS,
    WAIT_COLUMNS,
    ErrorRollup,
    RunRollup,
    TaskCount,
)
from django_tasks_hub.states import TaskStatus

#: Errors listed in the overview.
TOP_ERRORS = 10
DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)
MINUTE = datetime.timedelta(minutes=1)


def quantile(q: float, counts: Sequence[int]) -> float | None:
    """The ``q`` quantile (0..1) of a histogram of :data:`HISTOGRAM_BOUNDS` buckets (counts
    per bucket, not cumulative), interpolated within its bucket as Prometheus'
    ``histogram_quantile`` does; ``None`` when it is empty. A quantile in the last, open
    bucket is its lower bound: all that is known."""
    total = sum(max(c, 0) for c in counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    low = 0.0
    for count, high in zip(counts, HISTOGRAM_BOUNDS, strict=True):
        count = max(count, 0)
        if count and seen + count >= rank:
            if high == float("inf"):
                return low
            return low + (high - low) * (rank - seen) / count
        seen += count
        low = high
    return low


def _series(span: int, start: datetime.datetime, points: int, using: str) -> list[dict[str, Any]]:
    step = datetime.timedelta(seconds=span)
    rows = (
        RunRollup.objects.using(using)
        .span(span)
        .since(start)
        .values("start")
        .annotate(ended=Sum("ended"), failed=Sum("failed"))
    )
    by_start = {row["start"]: row for row in rows}
    series = []
    for i in range(points):
        at = start + i * step
        row = by_start.get(at, {})
        series.append(
            {
                "start": at,
                "end": at + step,
                "ended": int(row.get("ended") or 0),
                "failed": int(row.get("failed") or 0),
            }
        )
    return series


def _names(since: datetime.datetime, using: str) -> list[dict[str, Any]]:
    columns = (*RUNTIME_COLUMNS, *WAIT_COLUMNS)
    rows = (
        RunRollup.objects.using(using)
        .span(3600)
        .since(since)
        .values("name")
        .annotate(
            runs=Sum("ended"),
            fails=Sum("failed"),
            last_failure=Max("last_failure_at"),
            **{f"sum_{c}": Sum(c) for c in columns},
        )
        .order_by("-runs", "name")
    )
    names = []
    for row in rows:
        runtimes = [int(row[f"sum_{c}"] or 0) for c in RUNTIME_COLUMNS]
        waits = [int(row[f"sum_{c}"] or 0) for c in WAIT_COLUMNS]
        runs, failed = int(row["runs"] or 0), int(row["fails"] or 0)
        if runs <= 0 and failed <= 0:
            continue
        names.append(
            {
                "name": row["name"],
                "runs": runs,
                "failed": failed,
                "failure_rate": failed / runs if runs > 0 else None,
                "p50_runtime": quantile(0.5, runtimes),
                "p95_runtime": quantile(0.95, runtimes),
                "p95_wait": quantile(0.95, waits),
                "last_failure_at": row["last_failure"],
            }
        )
    return names


def _errors(since: datetime.datetime, using: str) -> list[dict[str, Any]]:
    rows = (
        ErrorRollup.objects.using(using)
        .filter(start__gte=since)
        .values("error")
        .annotate(total=Sum("count"), last=Max("last_seen"))
        .filter(total__gt=0)
        .order_by("-total", "error")[:TOP_ERRORS]
    )
    errors = []
    for row in rows:
        kind, _, message = row["error"].partition(": ")
        errors.append(
            {
                "error": row["error"],
                "type": kind if message else "",
                "message": message if message else row["error"],
                "count": int(row["total"]),
                "last_seen": row["last"],
            }
        )
    return errors


def status_counts(using: str = "default") -> dict[str, int]:
    """How many tasks are in each status now (every status, zeros included)."""
    counts = {status.value: 0 for status in TaskStatus}
    rows = TaskCount.objects.using(using).values("status").annotate(total=Sum("count"))
    for row in rows:
        counts[row["status"]] = int(row["total"] or 0)
    return counts


def overview(using: str = "default", now: datetime.datetime | None = None) -> dict[str, Any]:
    """Every figure of the overview, as plain data (times are aware datetimes).

    ``statuses``: tasks per status now; ``per_minute``: runs ended and failed in each of the
    last 60 minutes (the current one last); ``per_hour``: the same for the last 24 hours;
    ``names``: per task name over the last 24 hours (by the hour: up to 25 buckets), runs,
    failures, failure rate, p50 and p95 runtime, p95 queue wait, last failure; ``errors``:
    the most frequent errors of the last 24 hours with their count and last time seen.
    """
    rollups.fold(using)
    now = now or timezone.now()
    minute = now.replace(second=0, microsecond=0)
    hour = minute.replace(minute=0)
    day_start = hour - 23 * HOUR
    return {
        "generated_at": now,
        "since": day_start,
        "statuses": status_counts(using),
        "per_minute": _series(60, minute - 59 * MINUTE, 60, using),
        "per_hour": _series(3600, day_start, 24, using),
        "names": _names(day_start, using),
        "errors": _errors(day_start, using),
    }
