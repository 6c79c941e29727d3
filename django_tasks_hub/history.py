"""HistoryQuery, HistoryPage and get_history(): keyset pagination over runs, newest first."""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django_tasks_hub.conf import hub_settings

if TYPE_CHECKING:
    from django_tasks_hub.models import TaskRun, TaskRunQuerySet


class InvalidCursor(ValueError):
    """The cursor was not made by :func:`get_history` (edited, truncated or from elsewhere)."""


@dataclass(frozen=True)
class HistoryQuery:
    """What to fetch: every field narrows the runs; ``cursor`` continues a previous page."""

    task: str | None = None
    status: str | Sequence[str] | None = None
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    tag: str | None = None
    task_id: Any = None
    limit: int | None = None
    cursor: str = ""


@dataclass
class HistoryPage:
    """One page of runs, the seed's ``TaskRunHistoryPage``: ``cursor`` is ``""`` on the last."""

    data: list[TaskRun] = field(default_factory=list)
    cursor: str = ""


def encode_cursor(run_id: int) -> str:
    """An opaque cursor that continues after the run ``run_id``."""
    return base64.urlsafe_b64encode(f"r{run_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The run id a cursor points after; :class:`InvalidCursor` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("r"):
            raise ValueError(raw)
        value = int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor(
            "Invalid cursor: pass back the 'cursor' value of the previous page unchanged."
        ) from exc
    if value < 0:
        raise InvalidCursor("Invalid cursor: it points before the first run.")
    return value


def clamp_limit(limit: int | None) -> int:
    """The page size to use: the default when unset, never above ``HISTORY_MAX_LIMIT``."""
    if limit is None:
        return int(hub_settings.HISTORY_DEFAULT_LIMIT)
    return max(1, min(int(limit), int(hub_settings.HISTORY_MAX_LIMIT)))


def filter_runs(query: HistoryQuery, runs: TaskRunQuerySet) -> TaskRunQuerySet:
    """Apply every filter of ``query`` except the cursor."""
    if query.task:
        runs = runs.by_name(query.task)
    if query.status:
        statuses = [query.status] if isinstance(query.status, str) else list(query.status)
        runs = runs.filter(status__in=statuses)
    if query.start is not None:
        runs = runs.filter(queued_at__gte=query.start)
    if query.end is not None:
        runs = runs.filter(queued_at__lt=query.end)
    if query.task_id is not None:
        runs = runs.filter(task_id=query.task_id)
    if query.tag:
        runs = runs.tagged(query.tag)
    return runs


def get_history(query: HistoryQuery, runs: TaskRunQuerySet | None = None) -> HistoryPage:
    """Return the page of runs ``query`` asks for, newest first.

    Pages are keyed on the run id (``id < cursor``), so a page never repeats or skips a run
    while new runs arrive: new runs get larger ids and land before the first page.
    """
    if runs is None:
        from django_tasks_hub.models import TaskRun

        runs = TaskRun.objects.all()
    limit = clamp_limit(query.limit)
    runs = filter_runs(query, runs)
    if query.cursor:
        runs = runs.filter(id__lt=decode_cursor(query.cursor))
    rows = list(runs.newest_first()[: limit + 1])
    if len(rows) > limit:
        rows = rows[:limit]
        return HistoryPage(data=rows, cursor=encode_cursor(rows[-1].pk))
    return HistoryPage(data=rows, cursor="")
