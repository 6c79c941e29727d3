"""The Celery edge: the app, bounded broker connections, the hub's headers, inspect and control.

Only this module talks to Celery's app, its remote control and its broker connections; the
rest of the package asks it. Every call is bounded in time, so a broker that is down or hung
answers quickly with an error instead of hanging a request, a command or a receiver.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from django_tasks_hub.conf import hub_settings

__all__ = [
    "RECORDED_HEADER",
    "SCHEDULE_HEADER",
    "SCHEDULE_ORIGIN_HEADER",
    "USER_HEADER",
    "acknowledged_requests",
    "active_by_worker",
    "add_consumer",
    "beat_entries",
    "beat_schedule",
    "cancel_consumer",
    "celery_timezone",
    "configured_queues",
    "connect",
    "consumed_queues",
    "describe_worker",
    "get_celery_app",
    "inspect_workers",
    "mark_beat_sends",
    "oldest_message_ids",
    "pool_resize",
    "queue_depths",
    "registered",
    "revoke",
    "schedule_of",
    "send",
    "shutdown",
    "skip_queues",
    "workers_up",
]

#: Seconds a metrics scrape waits for the workers' answers to a ping.
PING_TIMEOUT = 0.25

#: Header carrying the id of the user who submitted a task (see ``services.submit``).
USER_HEADER = "tasks_hub_user"
#: Header set when the publisher recorded a task it did not know (published by name).
RECORDED_HEADER = "tasks_hub_recorded"
#: Headers naming the periodic schedule that sent a task, and how (``ScheduleOrigin``).
SCHEDULE_HEADER = "tasks_hub_schedule"
SCHEDULE_ORIGIN_HEADER = "tasks_hub_schedule_origin"
#: The header django-celery-beat sets, on its scheduled sends and its admin's "run now" alike.
PERIODIC_TASK_HEADER = "periodic_task_name"

# The beat entry whose send is under way in this thread: beat's scheduler publishes from its
# own loop, so the publish signal it triggers runs inside the wrapped call below.
_beat_entry: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tasks_hub_beat_entry", default=None
)

logger = logging.getLogger(__name__)


def get_celery_app() -> Any:
    """Return the Celery app named by ``TASKS_HUB["CELERY_APP"]``, else Celery's current app."""
    app = hub_settings.CELERY_APP
    if app is not None:
        return app
    from celery import current_app

    return cast(Any, current_app)._get_current_object()


def registered(app: Any, name: str) -> Any:
    """The Celery task registered as ``name``, or ``None``.

    Celery's autodiscovery is lazy: a web process that never imported the tasks modules has
    none of them registered, so they are imported once before a name is called unknown.
    """
    task = app.tasks.get(name)
    if task is None:
        app.loader.import_default_modules()
        task = app.tasks.get(name)
    return task


def connect(app: Any) -> Any:
    """A broker connection, established with bounded retries so a dead broker fails fast.

    Without the bounds kombu retries a refused connection forever, and a broker that accepts
    the connection but never answers blocks a socket read forever: either would hang the
    request (and, for cancel, keep the task row locked) for as long as the broker is down.
    The caller releases it.
    """
    policy = hub_settings.PUBLISH_RETRY_POLICY
    seconds = float(hub_settings.BROKER_TIMEOUT)
    conn = app.connection_for_write(connect_timeout=seconds)
    if conn.transport_cls in ("redis", "rediss", "sentinel"):
        # The Redis transport ignores connect_timeout: its socket timeouts are options.
        conn.transport_options = {
            **conn.transport_options,
            "socket_connect_timeout": seconds,
            "socket_timeout": seconds,
        }
    try:
        conn.ensure_connection(
            max_retries=policy.get("max_retries", 2),
            interval_start=policy.get("interval_start", 0),
            interval_step=policy.get("interval_step", 0.2),
            interval_max=policy.get("interval_max", 0.5),
            timeout=seconds,
        )
    except BaseException:
        conn.release()
        raise
    return conn


def send(
    sender: Any, args: Any, kwargs: Any, *, task_id: str, headers: dict[str, Any], **options: Any
) -> Any:
    """Publish ``sender`` (a Celery task) with the hub's bounded retries; raises when the broker
    cannot be reached."""
    # A bounded connection first: the publish below uses the app's pooled connections, whose
    # timeouts are the app's own (unbounded by default for Redis).
    connect(sender.app).release()
    return sender.apply_async(
        args=args,
        kwargs=kwargs,
        task_id=task_id,
        headers=headers,
        retry=True,
        retry_policy=hub_settings.PUBLISH_RETRY_POLICY,
        **options,
    )


def revoke(app: Any, broker_id: str) -> None:
    """Tell every worker to drop ``broker_id`` and to send ``TASKS_HUB["CANCEL_SIGNAL"]`` to the
    process running it, if one does; raises when the broker cannot be reached."""
    conn = connect(app)
    try:
        # terminate even when the row says pending: a worker may have just started it, and a
        # task that is not running is only added to the revoked set.
        app.control.revoke(
            broker_id, terminate=True, signal=hub_settings.CANCEL_SIGNAL, connection=conn
        )
    finally:
        conn.release()


def active_by_worker(app: Any, workers: list[str], timeout: float) -> dict[str, set[str]]:
    """Ask ``workers`` what they are running; a worker missing from the answer did not answer.

    One broadcast to the named workers only (``destination``); each answer lists the broker ids
    its pool runs right now. A worker that is busy answers too: prefork, threads and gevent
    workers reply from their main loop, not from the pool.
    """
    conn = connect(app)
    try:
        inspect = app.control.inspect(destination=workers, timeout=timeout, connection=conn)
        replies = inspect.active() or {}
    finally:
        conn.release()
    return {
        name: {str(request.get("id")) for request in (requests or [])}
        for name, requests in replies.items()
    }


# -- workers and queues: what the workers and queues pages ask (``django_tasks_hub.control``) --

#: The inspect calls the workers page needs, asked at once (each waits ``timeout`` for answers).
INSPECT_METHODS = ("stats", "active_queues", "active", "reserved")


def _inspect_one(app: Any, method: str, timeout: float, destination: list[str] | None) -> Any:
    conn = connect(app)
    try:
        inspect = app.control.inspect(destination=destination, timeout=timeout, connection=conn)
        return getattr(inspect, method)() or {}
    finally:
        conn.release()


def inspect_workers(
    app: Any, timeout: float, destination: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Ask every worker (or ``destination``) for its stats, the queues it consumes, what it
    runs and what it has prefetched: ``{hostname: {"stats": ..., "active_queues": [...],
    "active": [...], "reserved": [...]}}``. A worker missing from the answer did not answer.

    The four broadcasts go out together, each on its own bounded connection: each one waits
    the whole ``timeout`` for late answers, so one after the other would wait four times as
    long (the folder broker excepted). Raises when the broker cannot be reached.
    """
    conn = app.connection_for_write()
    try:
        driver = conn.transport.driver_type
    finally:
        conn.release()
    if driver == "filesystem":
        # kombu's folder broker creates an exchange's file with no lock against a reader, so
        # the first broadcasts of a process, sent at once, can read each other's half-written
        # file: one after the other there (it is a development broker).
        answers = {m: _inspect_one(app, m, timeout, destination) for m in INSPECT_METHODS}
    else:
        with ThreadPoolExecutor(max_workers=len(INSPECT_METHODS)) as pool:
            futures = {
                method: pool.submit(_inspect_one, app, method, timeout, destination)
                for method in INSPECT_METHODS
            }
            answers = {method: future.result() for method, future in futures.items()}
    workers: dict[str, dict[str, Any]] = {}
    for method, replies in answers.items():
        for hostname, value in replies.items():
            workers.setdefault(hostname, {m: None for m in INSPECT_METHODS})[method] = value
    return workers


def consumed_queues(app: Any, timeout: float) -> dict[str, list[str]]:
    """The queues each answering worker consumes: ``{hostname: [queue names]}`` (one
    ``active_queues`` broadcast). Raises when the broker cannot be reached."""
    replies = _inspect_one(app, "active_queues", timeout, None)
    return {
        hostname: [str(q.get("name")) for q in (queues or [])]
        for hostname, queues in replies.items()
    }


def _control(app: Any, command: str, destination: list[str], **kwargs: Any) -> dict[str, Any]:
    """Broadcast ``command`` to ``destination`` and return ``{hostname: reply}``."""
    conn = connect(app)
    try:
        replies = app.control.broadcast(
            command,
            arguments=kwargs,
            destination=destination,
            reply=True,
            timeout=float(hub_settings.INSPECT_TIMEOUT),
            connection=conn,
        )
    finally:
        conn.release()
    merged: dict[str, Any] = {}
    for reply in replies or []:
        merged.update(reply)
    return merged


def pool_resize(app: Any, hostname: str, n: int) -> dict[str, Any]:
    """Grow (``n`` > 0) or shrink (``n`` < 0) the pool of ``hostname`` by ``abs(n)`` processes.

    Returns the worker's reply (``{"ok": ...}`` or ``{"error": ...}``); an empty dict when it
    did not answer. Raises when the broker cannot be reached.
    """
    command = "pool_grow" if n > 0 else "pool_shrink"
    return dict(_control(app, command, [hostname], n=abs(n)).get(hostname) or {})


def shutdown(app: Any, hostname: str) -> None:
    """Ask ``hostname`` to shut down warmly (it finishes what it runs); no reply is awaited."""
    conn = connect(app)
    try:
        app.control.broadcast("shutdown", destination=[hostname], connection=conn)
    finally:
        conn.release()


def cancel_consumer(app: Any, queue: str, destination: list[str]) -> dict[str, Any]:
    """Tell the workers of ``destination`` to stop consuming ``queue``: ``{hostname: reply}``.

    Only the workers' memory changes: a worker that starts later consumes its queues again,
    which is why the pause is also kept in the database (``QueuePause``) and applied at start.
    """
    if not destination:
        return {}
    return _control(app, "cancel_consumer", destination, queue=queue)


def add_consumer(app: Any, queue: str, destination: list[str]) -> dict[str, Any]:
    """Tell the workers of ``destination`` to consume ``queue`` again: ``{hostname: reply}``."""
    if not destination:
        return {}
    return _control(app, "add_consumer", destination, queue=queue)


def skip_queues(worker: Any, names: set[str]) -> list[str]:
    """In a worker that is starting (``celeryd_after_setup``): stop it from consuming ``names``
    before its consumer starts, as ``celery worker -X`` would; returns the queues it skipped.

    Done before the consumer connects, so not one message of a paused queue is fetched.
    """
    queues = worker.app.amqp.queues
    skipped = sorted(name for name in names if name in queues.consume_from)
    if skipped:
        queues.deselect(skipped)
    return skipped


def configured_queues(app: Any | None = None) -> list[str]:
    """The queue names Celery's configuration knows: ``task_queues``, the routes' queues and
    the default queue."""
    app = app or get_celery_app()
    names = {str(app.conf.task_default_queue)}
    for queue in app.conf.task_queues or []:
        names.add(str(getattr(queue, "name", queue)))
    routes = app.conf.task_routes
    if isinstance(routes, dict):
        for route in routes.values():
            if isinstance(route, dict) and route.get("queue"):
                names.add(str(getattr(route["queue"], "name", route["queue"])))
    return sorted(names)


def queue_depths(names: list[str]) -> dict[str, int | None]:
    """How many messages wait in each queue of ``names``, as the broker says: ``None`` for a
    queue an AMQP broker does not have (never declared).

    One passive declare per queue, which Redis, RabbitMQ and kombu's filesystem transport all
    answer with a message count. A passive declare of a missing queue closes the AMQP channel,
    so each queue gets a channel of its own. Raises when the broker cannot be reached.
    """
    from kombu.transport import virtual

    app = get_celery_app()
    conn = connect(app)
    depths: dict[str, int | None] = {}
    try:
        # kombu's virtual transports (Redis, the folder) keep a queue only while it holds
        # messages: one they do not have is empty, not unknown.
        missing = 0 if isinstance(conn.transport, virtual.Transport) else None
        for name in names:
            channel = conn.channel()
            try:
                _, count, _ = channel.queue_declare(queue=name, passive=True)
                depths[name] = int(count)
            except conn.channel_errors:
                depths[name] = missing
            finally:
                try:
                    channel.close()
                except Exception:  # A channel the broker closed already.
                    logger.debug("channel of queue %s already closed", name)
    finally:
        conn.release()
    return depths


def oldest_message_ids(names: list[str]) -> dict[str, str]:
    """For a Redis broker: the task id of the oldest message waiting in each queue of
    ``names`` (read without taking it); empty for other brokers, which cannot be read so."""
    app = get_celery_app()
    conn = connect(app)
    found: dict[str, str] = {}
    try:
        if conn.transport_cls not in ("redis", "rediss", "sentinel"):
            return found
        client = conn.default_channel.client
        for name in names:
            # kombu pushes on the left and pops on the right: the oldest is the last element.
            raw = client.lindex(name, -1)
            if raw is None:
                continue
            try:
                task_id = json.loads(raw).get("headers", {}).get("id")
            except (ValueError, AttributeError):
                continue
            if task_id:
                found[name] = str(task_id)
    finally:
        conn.release()
    return found


def beat_schedule(app: Any = None) -> dict[str, Any]:
    """The app's ``beat_schedule`` (``CELERY_BEAT_SCHEDULE``), by entry name."""
    return dict((app or get_celery_app()).conf.beat_schedule or {})


def celery_timezone(app: Any = None) -> str:
    """The zone crontab schedules follow: ``CELERY_TIMEZONE``, else UTC."""
    return str((app or get_celery_app()).conf.timezone or "UTC")


def mark_beat_sends(service: Any) -> Any:
    """Wrap the scheduler of ``service`` (a ``celery.beat.Service``, at ``beat_init``) so that
    every task it sends at a fire time carries the name of its entry; returns the scheduler.

    Core beat marks nothing on what it sends, and django-celery-beat sets the same header on
    its scheduled sends and on its admin's "run now": this mark is what tells them apart.
    """
    scheduler = service.scheduler
    if getattr(scheduler, "_tasks_hub_marked", False):
        return scheduler
    original: Callable[..., Any] = scheduler.apply_async

    @functools.wraps(original)
    def apply_async(entry: Any, *args: Any, **kwargs: Any) -> Any:
        token = _beat_entry.set(str(entry.name))
        try:
            return original(entry, *args, **kwargs)
        finally:
            _beat_entry.reset(token)

    scheduler.apply_async = apply_async
    scheduler._tasks_hub_marked = True
    return scheduler


def beat_entries(scheduler: Any) -> dict[str, Any]:
    """The entries of a beat scheduler, by name (``celery.beat.ScheduleEntry`` or a subclass)."""
    return dict(scheduler.schedule)


def schedule_of(headers: dict[str, Any]) -> tuple[str, str]:
    """The schedule that sent a message and how, from its headers: ``(name, origin)``, or
    ``("", "")`` for a task sent by hand.

    In the publishing process (``before_task_publish``) a send of beat's wrapped scheduler is
    marked here, so the worker reads the same headers.
    """
    entry = _beat_entry.get()
    if entry is not None and SCHEDULE_HEADER not in headers:
        headers[SCHEDULE_HEADER] = entry
        headers[SCHEDULE_ORIGIN_HEADER] = "beat"
    name = headers.get(SCHEDULE_HEADER)
    if name:
        return str(name), str(headers.get(SCHEDULE_ORIGIN_HEADER) or "beat")
    periodic = headers.get(PERIODIC_TASK_HEADER)
    if periodic:
        # django-celery-beat's header without the beat mark: its admin's "run now".
        return str(periodic), "run_now"
    return "", ""


def workers_up() -> int:
    """How many workers answer a ping within :data:`PING_TIMEOUT` seconds; raises when the
    broker cannot be reached."""
    app = get_celery_app()
    conn = connect(app)
    try:
        return len(app.control.ping(timeout=PING_TIMEOUT, connection=conn) or [])
    finally:
        conn.release()


def describe_worker(consumer: Any) -> dict[str, Any]:
    """What a worker says of itself, read from the consumer ``worker_ready`` sends: its node
    name, pool, concurrency, the queues it consumes and Celery's version."""
    import celery

    controller = getattr(consumer, "controller", None)
    pool_cls = getattr(controller, "pool_cls", None)
    module = str(getattr(pool_cls, "__module__", "") or "")
    pool = module.rsplit(".", 1)[-1] if module.startswith("celery.concurrency") else module
    try:
        queues = sorted(consumer.app.amqp.queues.consume_from)
    except Exception:
        queues = []
    concurrency = getattr(controller, "concurrency", None)
    return {
        "hostname": str(getattr(consumer, "hostname", "") or ""),
        "pool": {"thread": "threads"}.get(pool, pool)[:32],
        "concurrency": concurrency if isinstance(concurrency, int) else None,
        "queues": queues,
        "software": f"celery {celery.__version__}"[:64],
    }


def acknowledged_requests() -> tuple[list[str], int]:
    """In a worker's main process: the broker ids of the messages its pool runs and that were
    already acknowledged, and how many tasks the pool has accepted since the worker started.

    Celery acknowledges a message (without ``acks_late``) when the pool accepts the task, and
    keeps it in ``active_requests`` until it ends; a message still only reserved (prefetched)
    or run with ``acks_late`` is not acknowledged, and the broker delivers it again if the
    worker dies. The ids listed here are the ones no broker will deliver again.
    """
    from celery.worker import state

    # list() of a set is one C call under the GIL: safe while the main thread changes it.
    active = list(state.active_requests)
    ids = sorted(str(request.id) for request in active if request.acknowledged)
    return ids, int(sum(state.total_count.values()))
