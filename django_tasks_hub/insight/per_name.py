"""Per task name: p50/p95 of each attempt's cost, and releases compared (the insights page).

Each figure is read from the newest ``window`` ended runs of one name, on the ``(name, -id)``
index (th_run_name_idx): a bounded read per name, never a scan of the history, whatever its
size. Percentiles are nearest-rank, computed here so SQLite and PostgreSQL agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django_tasks_hub.models import TaskRun, TaskRunQuerySet
from django_tasks_hub.states import TaskStatus

#: Newest ended runs read per task name.
WINDOW = 1000

_ENDED = (TaskStatus.DONE, TaskStatus.FAILED)


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank ``share`` percentile (0.5, 0.95) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(share * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass(frozen=True)
class CostStats:
    """p50 and p95 of the measured runs of one task name."""

    name: str
    runs: int
    queries: tuple[float | None, float | None]
    db_time: tuple[float | None, float | None]
    memory_growth: tuple[float | None, float | None]


@dataclass(frozen=True)
class ReleaseStats:
    """One release of one task name: how its ended runs went."""

    release: str
    runs: int
    failed: int
    runtime_p95: float | None
    queries_p95: float | None
    newest_id: int = field(default=0, compare=False)

    @property
    def failure_rate(self) -> float:
        """Failed runs over ended runs (done or failed), 0 to 1."""
        return self.failed / self.runs if self.runs else 0.0


def _newest(runs: TaskRunQuerySet, name: str, window: int) -> list[dict[str, Any]]:
    rows = runs.by_name(name).filter(status__in=_ENDED).newest_first()
    return list(
        rows.values("id", "status", "runtime", "db_queries", "db_time", "memory_growth", "release")[
            :window
        ]
    )


def _pair(values: list[float]) -> tuple[float | None, float | None]:
    return percentile(values, 0.5), percentile(values, 0.95)


def cost_by_name(
    names: Sequence[str], runs: TaskRunQuerySet | None = None, window: int = WINDOW
) -> list[CostStats]:
    """p50/p95 of queries, database time and memory growth for each of ``names``."""
    runs = runs if runs is not None else TaskRun.objects.all()
    found = []
    for name in names:
        rows = [row for row in _newest(runs, name, window) if row["db_queries"] is not None]
        found.append(
            CostStats(
                name=name,
                runs=len(rows),
                queries=_pair([row["db_queries"] for row in rows]),
                db_time=_pair([row["db_time"] for row in rows if row["db_time"] is not None]),
                memory_growth=_pair(
                    [row["memory_growth"] for row in rows if row["memory_growth"] is not None]
                ),
            )
        )
    return found


def by_release(
    name: str, runs: TaskRunQuerySet | None = None, window: int = WINDOW
) -> list[ReleaseStats]:
    """The releases of ``name``'s newest ended runs, newest release first: failure rate,
    p95 runtime and p95 queries of each, so a change between releases is one look."""
    runs = runs if runs is not None else TaskRun.objects.all()
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in _newest(runs, name, window):
        groups.setdefault(row["release"] or "", []).append(row)
    found = [
        ReleaseStats(
            release=release,
            runs=len(rows),
            failed=sum(row["status"] == TaskStatus.FAILED for row in rows),
            runtime_p95=percentile([r["runtime"] for r in rows if r["runtime"] is not None], 0.95),
            queries_p95=percentile(
                [r["db_queries"] for r in rows if r["db_queries"] is not None], 0.95
            ),
            newest_id=rows[0]["id"],
        )
        for release, rows in groups.items()
    ]
    return sorted(found, key=lambda stats: stats.newest_id, reverse=True)


@dataclass(frozen=True)
class DuplicateStats:
    """Duplicates of one task name: what breaks a task that is not idempotent."""

    name: str
    #: Runs of a broker id the broker delivered again after one had started (real redeliveries,
    #: never a replayed event: a replay writes the same run again).
    redelivered: int
    #: Argument sets that succeeded more than once within the window, and the extra successes.
    groups: int
    extra_successes: int
    #: A few task ids of the duplicated calls, to open.
    examples: tuple[str, ...] = ()


def args_hash(args: Any, kwargs: Any) -> str:
    """A stable hash of a call's arguments (JSON with sorted keys)."""
    import hashlib
    import json

    text = json.dumps([args or [], kwargs or {}], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def duplicates(
    name: str,
    window_seconds: float,
    runs: TaskRunQuerySet | None = None,
    window: int = WINDOW,
) -> DuplicateStats:
    """Redeliveries and repeated successes of ``name`` among its newest runs."""
    import datetime

    from django.utils import timezone

    runs = runs if runs is not None else TaskRun.objects.all()
    newest = runs.by_name(name).newest_first()
    redelivered = len(
        newest.filter(delivery__gt=0, started_at__isnull=False).values_list("id", flat=True)[
            :window
        ]
    )
    since = timezone.now() - datetime.timedelta(seconds=window_seconds)
    done = newest.filter(status=TaskStatus.DONE, finished_at__gte=since).values_list(
        "task_id", "task__args", "task__kwargs"
    )[:window]
    seen: dict[str, list[str]] = {}
    for task_id, args, kwargs in done:
        seen.setdefault(args_hash(args, kwargs), []).append(str(task_id))
    repeated = [ids for ids in seen.values() if len(ids) > 1]
    return DuplicateStats(
        name=name,
        redelivered=redelivered,
        groups=len(repeated),
        extra_successes=sum(len(ids) - 1 for ids in repeated),
        examples=tuple(ids[0] for ids in repeated[:3]),
    )
