"""What an event writes: its values as the columns store them, whatever the task produced.

Everything here is pure (no database): the per-event writes and the batches both build their
rows from these functions, so a value is encoded the same way on every path. Nothing a task's
arguments, result or exception do can make them raise (rule 5 of the design): a value that
cannot be shown is stored as a placeholder that says so.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.events import TaskEvent
from django_tasks_hub.states import RunTrigger, TaskStatus

# Namespace for task ids derived from broker ids that are not UUIDs.
_ID_NAMESPACE = uuid.UUID("0b7bd6f2-2d52-4d0e-9a0b-5f5c7d9a4c11")

_CONTAINERS = (list, tuple, dict)
#: How deep :func:`to_json` goes into containers item by item before it shows the rest as text.
_MAX_DEPTH = 20


def task_pk_for(broker_id: str) -> uuid.UUID:
    """The primary key a task gets when its first event names ``broker_id``.

    It equals the Celery id when that is a UUID, so ``Task.objects.get(pk=result.id)`` works
    for a task's first run; later runs (restarts) get new broker ids and keep this key.
    """
    try:
        return uuid.UUID(str(broker_id))
    except ValueError:
        return uuid.uuid5(_ID_NAMESPACE, str(broker_id))


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a placeholder naming its type when ``repr`` itself fails."""
    try:
        text = repr(value)
        if isinstance(text, str):
            return text
    except Exception:
        pass
    return f"<{_type_name(value)} object: its repr() raised>"


def _type_name(value: Any) -> str:
    try:
        return str(type(value).__qualname__)
    except Exception:
        return "unknown"


def to_json(value: Any) -> Any:
    """``value`` as the JSON columns can store it: a result never fails a write.

    Celery's JSON serializer carries datetimes, dates, UUIDs and decimals; the columns store
    them as Django's encoder writes them (ISO 8601, text). What no JSON can hold (an object,
    ``NaN``, which PostgreSQL's ``jsonb`` refuses) is stored as its ``repr``, and a value whose
    ``repr`` raises as a placeholder; in a list or a dict, only the items that need it.
    """
    if type(value) is str:
        # PostgreSQL stores no NUL character, in text or in jsonb.
        return value.replace("\x00", "\\x00") if "\x00" in value else value
    if value is None or type(value) in (int, bool) or (type(value) in _CONTAINERS and not value):
        return value  # Most calls' args and results: nothing to encode to find out.
    if type(value) is float and math.isfinite(value):
        return value
    return _encode(value, set())


def _encode(value: Any, seen: set[int]) -> Any:
    try:
        # The C encoder, strict: what it accepts, every JSON column accepts as it is.
        text = json.dumps(value, allow_nan=False)
    except Exception:
        try:
            text = json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
            value = json.loads(text)
        except Exception:
            return _each(value, seen)
    if "\\u0000" in text:
        return _each(value, seen)
    return value


def _each(value: Any, seen: set[int]) -> Any:
    """A container whose whole cannot be stored, item by item: only what cannot be shown
    becomes a placeholder (a container met again inside itself is shown as its ``repr``)."""
    if type(value) not in _CONTAINERS or id(value) in seen or len(seen) > _MAX_DEPTH:
        return to_json(safe_repr(value))
    seen = seen | {id(value)}
    try:
        if type(value) is dict:
            return {_key(key): _item(item, seen) for key, item in list(value.items())}
        return [_item(item, seen) for item in list(value)]
    except Exception:
        return to_json(safe_repr(value))


def _item(value: Any, seen: set[int]) -> Any:
    if type(value) is str or value is None or type(value) in (int, bool):
        return to_json(value)
    return _encode(value, seen)


def _key(key: Any) -> str:
    if type(key) is str:
        return to_json(key)
    if key is None or type(key) in (int, float, bool):
        return json.dumps(key)
    return to_json(safe_repr(key))


def clip(text: str) -> str:
    """``text`` as a text column keeps it: no NUL character, at most ``MAX_TRACEBACK_LENGTH``."""
    limit = hub_settings.MAX_TRACEBACK_LENGTH
    text = text.replace("\x00", "\\x00")  # PostgreSQL stores no NUL character.
    return text if len(text) <= limit else text[: limit - 15] + "\n...[truncated]"


def describe(exc: Any) -> str:
    """``Type: message`` for an exception (or ``str()`` of anything else), whatever it does.

    An exception whose ``__str__`` raises, or returns something that is not text, still
    describes itself by its type: the failure it reports must be written.
    """
    if exc is None:
        return ""
    try:
        if isinstance(exc, BaseException):
            return f"{type(exc).__name__}: {exc}"
        text = str(exc)
        if isinstance(text, str):
            return text
    except Exception:
        pass
    return f"{_type_name(exc)}: <its message could not be read: str() raised>"


def event_args(event: TaskEvent) -> Any:
    """The positional arguments as the ``args`` column keeps them (a list)."""
    args = list(event.args) if isinstance(event.args, tuple) else event.args
    return to_json(args) or []


def publish_values(event: TaskEvent) -> dict[str, Any]:
    """The task columns the first publish knows best: the call and its options."""
    return {
        "args": event_args(event),
        "kwargs": to_json(event.kwargs) or {},
        "options": to_json(event.options) or {},
    }


def task_values(event: TaskEvent, parent_pk: Any) -> dict[str, Any]:
    """The columns of the task row ``event`` creates, by attribute name."""
    retries = event.retries or 0
    return {
        "id": task_pk_for(event.broker_id),
        "name": event.name,
        **publish_values(event),
        "status": TaskStatus.RETRYING if retries else TaskStatus.PENDING,
        "broker_id": event.broker_id,
        "retries": retries,
        "parent_id": parent_pk,
        "tags": list(event.tags),
        "attempts": 1 + retries,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
        "created_by_id": event.user_id,
        # From the message's headers, which the worker's events carry too.
        "schedule": event.schedule,
    }


def run_values(event: TaskEvent, task_pk: Any, attempt: int) -> dict[str, Any]:
    """The columns of the run ``event`` creates for the task ``task_pk``."""
    retries = event.retries or 0
    return {
        "task_id": task_pk,
        "name": event.name,
        "attempt": attempt,
        "broker_id": event.broker_id,
        "retries": retries,
        "trigger": RunTrigger.RETRY if retries else RunTrigger.INITIAL,
        "triggered_by_id": event.user_id,
        "status": TaskStatus.PENDING,
        "queued_at": event.timestamp,
        "schedule": event.schedule,
        "schedule_origin": event.schedule_origin,
    }


#: End kinds reported by the process that ran the body: they carry its cost and release.
_MEASURED = frozenset({"succeeded", "failed", "retried"})


def move_values(event: TaskEvent) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns ``event`` sets on the run and on the task when it moves them.

    An end sets every end column, even to empty, so that when a stronger end replaces a
    weaker one (a late success after ``lost``) nothing of the weaker one is left behind.
    """
    kind, ts = event.kind, event.timestamp
    worker = {"worker": event.worker} if event.worker else {}
    if kind == "started":
        run = {"started_at": ts, "worker": event.worker}
        return {**run, "release": event.release}, {**run, "finished_at": None}
    error, traceback = clip(event.error), clip(event.traceback)
    result = to_json(event.result) if kind == "succeeded" else None
    run = {
        "finished_at": ts,
        "runtime": event.runtime,
        "result": result,
        "error": error,
        "traceback": traceback,
        **worker,
    }
    if kind in _MEASURED:
        run.update(
            db_queries=event.db_queries,
            db_time=event.db_time,
            memory_growth=event.memory_growth,
            release=event.release,
        )
    if kind == "retried":
        return run, {"error": error, "traceback": traceback}
    task = {"finished_at": ts, "result": result, "error": error, "traceback": traceback}
    return run, {**task, **worker}
