"""Celery signal receivers: each turns one signal into one TaskEvent for the plugins.

They are thin: what an event carries is read here, what it writes is the plugins' business
(the database plugin's recorder), and none of them lets an exception reach Celery (rule 5).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from billiard.exceptions import WorkerLostError
from celery import signals
from celery.utils.dispatch import Signal
from django.utils import timezone

from django_tasks_hub.broker import (
    PERIODIC_TASK_HEADER,
    RECORDED_HEADER,
    SCHEDULE_HEADER,
    SCHEDULE_ORIGIN_HEADER,
    USER_HEADER,
    get_celery_app,
    mark_beat_sends,
    schedule_of,
)
from django_tasks_hub.conf import current_release, hub_settings
from django_tasks_hub.events import TaskEvent
from django_tasks_hub.insight import cost, transactions
from django_tasks_hub.insight.relations import RELATED_HEADER, publish_keys
from django_tasks_hub.models import TaskRun
from django_tasks_hub.plugins.base import registry
from django_tasks_hub.recorder import heartbeat
from django_tasks_hub.recorder.background import background
from django_tasks_hub.recorder.buffer import EXIT_FLUSH_SECONDS, flush_all
from django_tasks_hub.recorder.columns import describe

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., None])


def _guarded(receiver: F) -> F:
    """``receiver``, logging instead of raising: whatever a task's values or exception do,
    recording never breaks the task (rule 5)."""

    @functools.wraps(receiver)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            receiver(*args, **kwargs)
        except Exception:
            logger.exception("tasks-hub could not record %s", receiver.__name__)

    return guarded  # type: ignore[return-value]


# Start times by (broker id, retries), to give each run its runtime. Bounded: entries of
# attempts that never report an end (a killed child) must not pile up.
_started: OrderedDict[tuple[str, int], float] = OrderedDict()
_STARTED_MAX = 10_000


def _app() -> Any:
    return get_celery_app()


def _skipped(task: Any) -> bool:
    tags = getattr(task, "tags", None) or ()
    return hub_settings.SKIP_DB_TAG in tags


def _tags(task: Any) -> tuple[str, ...]:
    return tuple(str(tag) for tag in (getattr(task, "tags", None) or ()))


def _emit(event: TaskEvent) -> None:
    registry.emit(event)


def _emit_later(event: TaskEvent) -> None:
    # Signals handled in the worker's main process: writing there would hold up the loop
    # that receives messages and heartbeats, so the plugins run on the background thread.
    background.submit(lambda: registry.emit(event))


def _header(request: Any, name: str) -> Any:
    value = getattr(request, name, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(name)
    return value


def _runtime(broker_id: str, retries: int | None) -> float | None:
    started = _started.pop((broker_id, retries or 0), None)
    return None if started is None else time.monotonic() - started


@_guarded
def on_before_task_publish(
    sender: str | None = None,
    body: Any = None,
    exchange: str | None = None,
    routing_key: str | None = None,
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    """Publish (in the publishing process): the task and its run appear as pending."""
    if headers is None:
        return
    broker_id = headers.get("id")
    name = headers.get("task") or sender
    if not broker_id or not name:
        return  # Protocol 1 messages carry no headers; the worker's events record them.
    task = _app().tasks.get(name)
    if task is not None and _skipped(task):
        return
    schedule, origin = schedule_of(headers)
    if task is None:
        # Published by name: only the worker knows the task's tags. Say that a row was
        # written, so a worker that finds the task tagged ``skip_db`` removes it.
        headers[RECORDED_HEADER] = True
    args, kwargs = (
        (body[0], body[1]) if isinstance(body, list | tuple) and len(body) >= 2 else ((), {})
    )
    # A retry's publish is the worker's own, from inside the body: not the caller's mistake.
    alias = "" if headers.get("retries") else transactions.publishing_alias()
    if alias:
        # Sent from inside atomic(): the worker marks its start, the commit says whether the
        # start came first, and a rollback is seen discarding the commit callback.
        headers[transactions.TRANSACTION_HEADER] = alias
        transactions.watch(str(broker_id), alias)
    options = {
        "exchange": exchange or "",
        "routing_key": routing_key or "",
        "priority": (properties or {}).get("priority"),
        "eta": headers.get("eta"),
        "expires": headers.get("expires"),
    }
    _emit(
        TaskEvent(
            kind="queued",
            broker_id=str(broker_id),
            name=str(name),
            timestamp=timezone.now(),
            retries=int(headers.get("retries") or 0),
            args=args,
            kwargs=kwargs,
            options={k: v for k, v in options.items() if v not in (None, "")},
            parent_id=headers.get("parent_id"),
            root_id=headers.get("root_id"),
            tags=_tags(task),
            user_id=headers.get(USER_HEADER),
            schedule=schedule,
            schedule_origin=origin,
            related=publish_keys(task, args, kwargs, headers),
        )
    )


def _request_event(kind: str, task: Any, request: Any, **fields: Any) -> TaskEvent:
    """The event ``kind`` of the attempt ``request`` (a Celery request context) describes.

    Every event carries what is needed to create the rows, since any of them may be the first
    one the database sees (rule 2).
    """
    retries = getattr(request, "retries", None)
    delivery_info = getattr(request, "delivery_info", None) or {}
    schedule, origin = schedule_of(
        {
            name: value
            for name in (SCHEDULE_HEADER, SCHEDULE_ORIGIN_HEADER, PERIODIC_TASK_HEADER)
            if (value := _header(request, name))
        }
    )
    values: dict[str, Any] = {
        "kind": kind,
        "broker_id": str(request.id),
        "name": task.name,
        "timestamp": timezone.now(),
        "retries": int(retries or 0),
        "args": getattr(request, "args", None),
        "kwargs": getattr(request, "kwargs", None),
        "parent_id": getattr(request, "parent_id", None),
        "root_id": getattr(request, "root_id", None),
        "tags": _tags(task),
        "worker": getattr(request, "hostname", None) or "",
        "eager": bool(getattr(request, "is_eager", False)),
        "user_id": _header(request, USER_HEADER),
        "redelivered": bool(delivery_info.get("redelivered")),
        "schedule": schedule,
        "schedule_origin": origin,
        "release": current_release(),
    }
    values.update(fields)
    return TaskEvent(**values)


@_guarded
def on_task_prerun(
    sender: Any = None, task_id: str | None = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    """Start (in the process running the task)."""
    if sender is None or task_id is None:
        return
    request = sender.request
    if _skipped(sender):
        if _header(request, RECORDED_HEADER):
            _emit(_request_event("skipped", sender, request))
        return
    alias = _header(request, transactions.TRANSACTION_HEADER)
    if alias and not request.is_eager:
        transactions.mark_start(str(task_id), str(alias), timezone.now())
    retries = int(request.retries or 0)
    _started[(task_id, retries)] = time.monotonic()
    while len(_started) > _STARTED_MAX:
        _started.popitem(last=False)
    # An eager call publishes nothing: its start links the task to its objects instead.
    related = (
        publish_keys(sender, args, kwargs, {RELATED_HEADER: _header(request, RELATED_HEADER)})
        if request.is_eager
        else ()
    )
    _emit(_request_event("started", sender, request, args=args, kwargs=kwargs, related=related))
    # Last: what the body costs is measured from here, not the hub's own start.
    cost.start()


def _cost_fields() -> dict[str, Any]:
    """The cost of the body that just ended in this thread, as event fields (none: empty)."""
    measured = cost.stop()
    if measured is None:
        return {}
    return {
        "db_queries": measured.queries,
        "db_time": measured.seconds,
        "memory_growth": measured.memory_growth,
    }


@_guarded
def on_task_postrun(**_: Any) -> None:
    """After every body, whatever its end: stop measuring (already done by the end signals)."""
    cost.stop()


@_guarded
def on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    """Success (in the process running the task)."""
    if sender is None or _skipped(sender):
        return
    measured = _cost_fields()
    request = sender.request
    runtime = _runtime(request.id, request.retries)
    _emit(
        _request_event(
            "succeeded",
            sender,
            request,
            result=result,
            runtime=runtime,
            redelivered=False,
            **measured,
        )
    )


@_guarded
def on_task_retry(
    sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any
) -> None:
    """Retry asked (in the process running the task; the next attempt is already published)."""
    if sender is None or request is None or _skipped(sender):
        return
    measured = _cost_fields()
    _emit(
        _request_event(
            "retried",
            sender,
            request,
            error=describe(getattr(reason, "exc", None) or reason),
            traceback=str(getattr(einfo, "traceback", "") or ""),
            runtime=_runtime(request.id, request.retries),
            redelivered=False,
            **measured,
        )
    )


@_guarded
def on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    """Failure: in the task's process, or in the main process when the pool child died."""
    if sender is None or task_id is None or _skipped(sender):
        return
    request = sender.request
    lost = isinstance(exception, WorkerLostError)
    event = _request_event(
        "lost" if lost else "failed",
        sender,
        request,
        error=describe(exception),
        traceback=str(getattr(einfo, "traceback", "") or ""),
        runtime=None if lost else _runtime(task_id, request.retries),
        redelivered=False,
        **({} if lost else _cost_fields()),
    )
    if request.id != task_id:
        # Celery before 5.5 sends a lost child's failure with no request of the task: the
        # event then ends whichever attempt of the task is still open.
        event = replace(event, broker_id=str(task_id), retries=None)
    (_emit_later if lost else _emit)(event)


@_guarded
def on_task_revoked(
    sender: Any = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **_: Any,
) -> None:
    """Revoked (in the worker's main process)."""
    if sender is None or request is None or _skipped(sender):
        return
    if expired:
        reason = "The task expired before a worker could run it."
    elif terminated:
        reason = f"Revoked and terminated (signal {signum})."
    else:
        reason = "Revoked before it ran."
    _emit_later(_request_event("canceled", sender, request, error=reason, redelivered=False))


def _message_event(
    consumer: Any, message: Any, reason: str, name: str | None = None, task_id: str | None = None
) -> TaskEvent | None:
    """A ``refused`` event for a message the worker would not run, from its headers alone."""
    headers = getattr(message, "headers", None) or {}
    broker_id = task_id or headers.get("id")
    name = name or headers.get("task")
    if not broker_id or not name:
        return None  # Not a task message at all: there is nothing to record it under.
    task = _app().tasks.get(name)
    if task is not None and _skipped(task):
        return None
    return TaskEvent(
        kind="refused",
        broker_id=str(broker_id),
        name=str(name),
        timestamp=timezone.now(),
        retries=int(headers.get("retries") or 0),
        error=reason,
        parent_id=headers.get("parent_id"),
        root_id=headers.get("root_id"),
        tags=_tags(task),
        worker=str(getattr(consumer, "hostname", "") or ""),
    )


@_guarded
def on_task_rejected(sender: Any = None, message: Any = None, exc: Any = None, **_: Any) -> None:
    """The worker rejected a message it could not accept (main process)."""
    reason = f"Rejected by the worker: {describe(exc) or 'not a valid task message'}"
    event = _message_event(sender, message, reason)
    if event is not None:
        _emit_later(event)


@_guarded
def on_task_unknown(
    sender: Any = None,
    message: Any = None,
    exc: Any = None,
    name: str | None = None,
    id: str | None = None,
    **_: Any,
) -> None:
    """The worker does not know the task name (main process)."""
    reason = f"Task {name!r} is not registered on the worker."
    event = _message_event(sender, message, reason, name, id)
    if event is not None:
        _emit_later(event)


@_guarded
def on_worker_init(sender: Any = None, **_: Any) -> None:
    """Load cancelled runs that never started into Celery's revoked set (rule 4 of the design).

    A worker started after a cancel never got the broadcast revoke; without this it would run
    the cancelled task when it finds the message in the queue.
    """
    _start_after_connection_close()
    # Build the plugins (and import their modules) now, before the pool forks: a pool process
    # forked while the background thread does it for the first time could inherit it half-done.
    try:
        plugins = registry.plugins
        logger.debug("tasks-hub plugins: %s", ", ".join(p.name for p in plugins))
    except Exception:
        logger.exception("tasks-hub could not load its plugins at worker start")
    try:
        from celery.worker import state

        ids = TaskRun.objects.canceled_unstarted().values_list("broker_id", flat=True)
        count = 0
        for broker_id in ids.iterator():
            state.revoked.add(broker_id)
            count += 1
        if count:
            logger.info("tasks-hub loaded %d cancelled task ids into the revoked set", count)
    except Exception:
        logger.exception("tasks-hub could not load cancelled task ids at worker start")


@_guarded
def on_worker_after_setup(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """A worker that starts does not consume a paused queue (``QueuePause``).

    ``celeryd_after_setup`` runs after the worker chose its queues and before its consumer
    connects, so not one message of a paused queue is fetched; ``worker_ready`` would come
    after the first prefetch.
    """
    from django_tasks_hub import control

    if instance is not None:
        control.skip_paused_queues(instance, str(sender or instance.hostname))


def on_beat_init(sender: Any = None, **_: Any) -> None:
    """Beat starts: mark what its scheduler sends, and register its schedules."""
    if sender is None:
        return
    scheduler = mark_beat_sends(sender)
    from django_tasks_hub import schedules

    schedules.register_beat(scheduler)


@_guarded
def on_worker_process_init(**_: Any) -> None:
    """In each prefork pool process: keep the start receiver after Celery's connection close."""
    _start_after_connection_close()


def _start_after_connection_close() -> None:
    # Celery's Django fixup connects, at worker start, a task_prerun receiver that closes the
    # database connection. Receivers run in the order they were connected and ours came first
    # (at ``ready()``), so the start was written on a connection the fixup then closed, and the
    # task's end had to open a new one: two connections per task. Connected again now, after
    # the fixup's, the start opens the one connection the rest of the task reuses.
    if not _connected:
        return
    uid = f"tasks_hub.{on_task_prerun.__name__}"
    signals.task_prerun.disconnect(on_task_prerun, dispatch_uid=uid)
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid=uid)


@_guarded
def on_worker_ready(sender: Any = None, **_: Any) -> None:
    """The worker consumes (main process): its heartbeat starts (``recorder.heartbeat``)."""
    heartbeat.start(sender)


@_guarded
def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    """Give pending background and buffered writes a moment before the process exits."""
    heartbeat.stop()
    background.flush(timeout=5.0)
    flush_all(timeout=EXIT_FLUSH_SECONDS)


@_guarded
def on_worker_process_shutdown(**_: Any) -> None:
    """A prefork pool process exits without running ``atexit``: write what it buffered."""
    flush_all(timeout=EXIT_FLUSH_SECONDS)


_RECEIVERS: list[tuple[Signal, Callable[..., None]]] = [
    (signals.before_task_publish, on_before_task_publish),
    (signals.task_prerun, on_task_prerun),
    (signals.task_postrun, on_task_postrun),
    (signals.task_success, on_task_success),
    (signals.task_retry, on_task_retry),
    (signals.task_failure, on_task_failure),
    (signals.task_revoked, on_task_revoked),
    (signals.task_rejected, on_task_rejected),
    (signals.task_unknown, on_task_unknown),
    (signals.worker_init, on_worker_init),
    (signals.celeryd_after_setup, on_worker_after_setup),
    (signals.beat_init, on_beat_init),
    (signals.worker_ready, on_worker_ready),
    (signals.worker_process_init, on_worker_process_init),
    (signals.worker_shutdown, on_worker_shutdown),
    (signals.worker_process_shutdown, on_worker_process_shutdown),
]
_connected = False


def connect() -> None:
    """Connect every receiver; safe to call more than once."""
    global _connected
    _connected = True
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, weak=False, dispatch_uid=f"tasks_hub.{receiver.__name__}")


def disconnect() -> None:
    """Disconnect every receiver (tests, or a project that records differently)."""
    global _connected
    _connected = False
    for signal, receiver in _RECEIVERS:
        signal.disconnect(receiver, dispatch_uid=f"tasks_hub.{receiver.__name__}")
