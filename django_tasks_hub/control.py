"""The workers and queues: what their pages and API show, pool controls, queue pause/resume."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from django_tasks_hub import broker
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.exceptions import (
    BrokerUnavailable,
    PoolNotResizable,
    QueueAlreadyPaused,
    QueueNotFound,
    QueueNotPaused,
    WorkerNotAnswering,
)
from django_tasks_hub.models import QueuePause, Task, TaskRun, Worker
from django_tasks_hub.states import TaskStatus

logger = logging.getLogger(__name__)

#: How long a worker whose heartbeats stopped stays on the workers page, flagged.
SILENT_SHOWN_FOR = timedelta(days=1)
#: The pools Celery can grow and shrink, and why the others cannot.
RESIZABLE_POOLS = frozenset({"prefork", "gevent", "eventlet"})
NOT_RESIZABLE_WHY = {
    "threads": "Celery's threads pool is a fixed ThreadPoolExecutor: it cannot grow or shrink. "
    "Restart the worker with another --concurrency.",
    "solo": "The solo pool runs one task at a time in the worker's own process: there is "
    "nothing to grow or shrink.",
}


def _app(app: Any = None) -> Any:
    return app if app is not None else broker.get_celery_app()


def _unreachable(exc: BaseException, what: str) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"The broker could not be reached, so {what}: {str(exc).rstrip('.')}. "
        "Check that the broker is running, then try again."
    )


def pool_kind(stats: dict[str, Any] | None) -> str:
    """``prefork``, ``threads``, ``solo``, ``gevent``, ``eventlet`` (or the class's module) from
    a worker's ``stats`` answer."""
    implementation = str(((stats or {}).get("pool") or {}).get("implementation") or "")
    module = implementation.partition(":")[0].rpartition(".")[2]
    return {"thread": "threads"}.get(module, module)


def _concurrency(stats: dict[str, Any] | None) -> int | None:
    pool = (stats or {}).get("pool") or {}
    # prefork and solo list their processes: after a shrink that list is what runs, while
    # ``max-concurrency`` keeps the number the worker started with.
    if isinstance(pool.get("processes"), list):
        return len(pool["processes"])
    value = pool.get("max-concurrency")
    return int(value) if isinstance(value, int) else None


@dataclass
class WorkerSummary:
    """One worker as the workers page and ``GET workers/`` show it."""

    hostname: str
    answering: bool
    pool: str = ""
    concurrency: int | None = None
    queues: list[str] = field(default_factory=list)
    #: Broker ids running now.
    active: list[str] = field(default_factory=list)
    #: What runs now: ``broker_id``, ``name`` and the hub's ``task_id`` (``None`` if unknown).
    running: list[dict[str, Any]] = field(default_factory=list)
    #: Tasks prefetched and waiting in the worker.
    reserved: int = 0
    processed: int | None = None
    #: When the hub last heard from it: now for a worker that answers, else its heartbeat.
    last_seen: datetime | None = None
    #: Its last heartbeat (``Worker.last_seen``), when its heartbeats are recorded.
    heartbeat: datetime | None = None
    #: Open runs that name this worker (only counted for a worker that does not answer).
    open_runs: int = 0
    resizable: bool = False
    not_resizable_why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _answers(app: Any, destination: list[str] | None = None) -> dict[str, dict[str, Any]]:
    try:
        return broker.inspect_workers(
            app, float(hub_settings.INSPECT_TIMEOUT), destination=destination
        )
    except Exception as exc:
        raise _unreachable(exc, "the workers could not be asked") from exc


def workers(app: Any = None) -> list[WorkerSummary]:
    """Every worker that answers, then the workers named in open runs (or with a heartbeat row)
    that no longer answer, flagged ``answering=False``. Raises :class:`BrokerUnavailable`."""
    answers = _answers(_app(app))
    # A worker that died a day ago is history, not a worker to look at.
    recent = Worker.objects.seen_since(timezone.now() - SILENT_SHOWN_FOR)
    rows = {w.hostname: w for w in recent}
    running_ids = {
        str(r.get("id")) for a in answers.values() for r in (a.get("active") or []) if r.get("id")
    }
    task_ids = dict(
        TaskRun.objects.filter(broker_id__in=running_ids).values_list("broker_id", "task_id")
    )
    found: list[WorkerSummary] = []
    for hostname in sorted(answers):
        answer = answers[hostname]
        stats = answer.get("stats") or {}
        kind = pool_kind(stats) or (rows[hostname].pool if hostname in rows else "")
        autoscale = bool(stats.get("autoscaler"))
        why = NOT_RESIZABLE_WHY.get(kind, "")
        if autoscale:
            why = "The worker autoscales: change its --autoscale range instead."
        elif not why and kind not in RESIZABLE_POOLS:
            why = f"Celery cannot resize a {kind or 'unknown'} pool."
        running = [
            {
                "broker_id": str(r.get("id")),
                "name": str(r.get("name") or r.get("type") or ""),
                "task_id": str(task_ids[str(r.get("id"))])
                if str(r.get("id")) in task_ids
                else None,
            }
            for r in (answer.get("active") or [])
        ]
        total = stats.get("total")
        row = rows.get(hostname)
        found.append(
            WorkerSummary(
                hostname=hostname,
                answering=True,
                pool=kind,
                concurrency=_concurrency(stats),
                queues=sorted(str(q.get("name")) for q in (answer.get("active_queues") or [])),
                active=[str(r["broker_id"]) for r in running],
                running=running,
                reserved=len(answer.get("reserved") or []),
                processed=sum(total.values()) if isinstance(total, dict) else None,
                last_seen=timezone.now(),
                heartbeat=row.last_seen if row is not None else None,
                resizable=not why,
                not_resizable_why=why,
            )
        )
    silent = {
        name: count
        for name, count in _open_runs_by_worker().items()
        if name and name not in answers
    }
    for hostname in sorted(set(silent) | {h for h, r in rows.items() if not r.stopped_at}):
        if hostname in answers:
            continue
        row = rows.get(hostname)
        found.append(
            WorkerSummary(
                hostname=hostname,
                answering=False,
                pool=row.pool if row else "",
                concurrency=row.concurrency if row else None,
                queues=list(row.queues) if row else [],
                processed=row.processed if row else None,
                last_seen=row.last_seen if row else None,
                heartbeat=row.last_seen if row else None,
                open_runs=silent.get(hostname, 0),
            )
        )
    return found


def _open_runs_by_worker() -> dict[str, int]:
    return dict(
        TaskRun.objects.filter(status=TaskStatus.PROCESSING)
        .exclude(worker="")
        .values_list("worker")
        .annotate(n=Count("id"))
        .values_list("worker", "n")
    )


def _one_answer(app: Any, hostname: str) -> dict[str, Any]:
    answer = _answers(app, [hostname]).get(hostname)
    if answer is None:
        raise WorkerNotAnswering(
            f"The worker {hostname!r} did not answer. Check its name on the workers page; "
            "a worker that stopped cannot be controlled."
        )
    return answer


def resize_pool(hostname: str, n: int, app: Any = None) -> dict[str, Any]:
    """Grow (``n`` > 0) or shrink (``n`` < 0) the pool of ``hostname``; returns its reply.

    Raises :class:`WorkerNotAnswering`, :class:`PoolNotResizable` (threads, solo, autoscale,
    or a shrink that would leave no process) or :class:`BrokerUnavailable`."""
    app = _app(app)
    if not n:
        raise PoolNotResizable("Give a number of processes other than 0 to grow or shrink by.")
    stats = _one_answer(app, hostname).get("stats") or {}
    kind = pool_kind(stats)
    if stats.get("autoscaler"):
        raise PoolNotResizable(
            f"The worker {hostname!r} autoscales: change its --autoscale range instead."
        )
    if kind not in RESIZABLE_POOLS:
        raise PoolNotResizable(
            NOT_RESIZABLE_WHY.get(kind, f"Celery cannot resize a {kind or 'unknown'} pool.")
        )
    size = _concurrency(stats)
    if n < 0 and size is not None and size + n < 1:
        raise PoolNotResizable(
            f"The pool of {hostname!r} has {size} process(es): it cannot shrink by {-n}. "
            "Shut the worker down instead."
        )
    try:
        reply = broker.pool_resize(app, hostname, n)
    except Exception as exc:
        raise _unreachable(exc, "the pool was not resized") from exc
    if "error" in reply:
        raise PoolNotResizable(f"The worker {hostname!r} refused: {reply['error']}")
    logger.info("pool of %s resized by %d", hostname, n)
    return reply


def shutdown_worker(hostname: str, app: Any = None) -> None:
    """Ask ``hostname`` to shut down warmly. Raises :class:`WorkerNotAnswering` or
    :class:`BrokerUnavailable`."""
    app = _app(app)
    _one_answer(app, hostname)
    try:
        broker.shutdown(app, hostname)
    except Exception as exc:
        raise _unreachable(exc, "the worker was not asked to shut down") from exc
    logger.info("asked %s to shut down", hostname)


# -- queues ---------------------------------------------------------------------------------


@dataclass
class QueueSummary:
    """One queue as the queues page and ``GET queues/`` show it."""

    name: str
    #: Messages waiting in the broker (``None``: the broker does not have the queue).
    depth: int | None
    #: Seconds the oldest waiting message has waited (``None``: nothing waits, or unknown).
    oldest_age: float | None
    #: Where ``oldest_age`` comes from: ``"broker"`` (the message itself) or ``"hub"``.
    oldest_age_source: str | None
    #: Workers consuming it now (from their own answers).
    consumers: list[str]
    paused: bool
    paused_at: datetime | None = None
    #: Workers that consumed it when it was paused: resume gives it back to them.
    paused_workers: list[str] = field(default_factory=list)
    #: Tasks prefetched from it that still start (counted at the pause; ``None``: unknown).
    prefetched: int | None = None
    #: Tasks the hub has pending on it.
    pending: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_queue(options: dict[str, Any] | None) -> str:
    """The queue a task was sent to, from its recorded publish options."""
    options = options or {}
    return str(options.get("queue") or options.get("routing_key") or "")


def _pending_runs(name: str) -> Any:
    return TaskRun.objects.filter(
        status=TaskStatus.PENDING, task__options__routing_key=name, started_at__isnull=True
    )


def _oldest_ages(names: list[str], app: Any) -> dict[str, tuple[float, str]]:
    now = timezone.now()
    ages: dict[str, tuple[float, str]] = {}
    try:
        oldest = broker.oldest_message_ids(names)
    except Exception:  # The depth already answered; the hub's record is the fallback.
        logger.debug("could not read the oldest messages", exc_info=True)
        oldest = {}
    queued = dict(
        TaskRun.objects.filter(broker_id__in=list(oldest.values()))
        .exclude(queued_at=None)
        .values_list("broker_id", "queued_at")
    )
    for name in names:
        moment = queued.get(oldest.get(name, ""))
        if moment is not None:
            ages[name] = ((now - moment).total_seconds(), "broker")
            continue
        # AMQP gives counts only, and Celery sets no message timestamp: the hub's own oldest
        # pending run on the queue stands in, so the age is never blank while tasks wait.
        run = _pending_runs(name).exclude(queued_at=None).order_by("queued_at").first()
        if run is not None and run.queued_at is not None:
            ages[name] = ((now - run.queued_at).total_seconds(), "hub")
    return ages


def queues(app: Any = None) -> list[QueueSummary]:
    """Every queue known from Celery's configuration, the workers' consumers, the pauses and
    the broker, with depth, oldest age and consumers. Raises :class:`BrokerUnavailable`."""
    app = _app(app)
    answers = _answers(app)
    consumers: dict[str, list[str]] = {}
    for hostname, answer in answers.items():
        for queue in answer.get("active_queues") or []:
            consumers.setdefault(str(queue.get("name")), []).append(hostname)
    pauses = {p.queue: p for p in QueuePause.objects.all()}
    names = sorted(set(broker.configured_queues(app)) | set(consumers) | set(pauses))
    try:
        depths = broker.queue_depths(names)
    except Exception as exc:
        raise _unreachable(exc, "the queue depths could not be read") from exc
    ages = _oldest_ages([n for n in names if depths.get(n)], app)
    _remember_consumers(consumers)
    found = []
    for name in names:
        pause = pauses.get(name)
        age = ages.get(name)
        found.append(
            QueueSummary(
                name=name,
                depth=depths.get(name),
                oldest_age=round(age[0], 1) if age else None,
                oldest_age_source=age[1] if age else None,
                consumers=sorted(consumers.get(name, [])),
                paused=pause is not None,
                paused_at=pause.paused_at if pause else None,
                paused_workers=list(pause.workers) if pause else [],
                prefetched=pause.prefetched if pause else None,
                pending=_pending_runs(name).count() if depths.get(name) else 0,
            )
        )
    return found


def _queue_names(app: Any, answers: dict[str, dict[str, Any]]) -> set[str]:
    names = set(broker.configured_queues(app))
    for answer in answers.values():
        names.update(str(q.get("name")) for q in answer.get("active_queues") or [])
    return names


def pause_queue(name: str, user: Any = None, app: Any = None) -> QueuePause:
    """Stop every worker consuming ``name`` and remember it, so a worker that starts later
    skips it too. Tasks already prefetched still start: their number is kept on the pause.

    Raises :class:`QueueNotFound`, :class:`QueueAlreadyPaused` or :class:`BrokerUnavailable`
    (then nothing is paused)."""
    app = _app(app)
    if QueuePause.objects.filter(queue=name).exists():
        raise QueueAlreadyPaused(f"The queue {name!r} is paused already. Resume it first.")
    answers = _answers(app)
    if name not in _queue_names(app, answers):
        raise QueueNotFound(
            f"No queue named {name!r} is configured or consumed. Use a name from the queues page."
        )
    holders = sorted(
        h
        for h, a in answers.items()
        if name in {q.get("name") for q in a.get("active_queues") or []}
    )
    with transaction.atomic():
        pause, created = QueuePause.objects.get_or_create(
            queue=name,
            defaults={"workers": holders, "paused_by": user if _is_user(user) else None},
        )
        if not created:
            raise QueueAlreadyPaused(f"The queue {name!r} is paused already. Resume it first.")
    try:
        broker.cancel_consumer(app, name, holders)
        # What the workers had prefetched from it before the cancel still starts.
        after = (
            broker.inspect_workers(app, float(hub_settings.INSPECT_TIMEOUT), destination=holders)
            if holders
            else {}
        )
    except Exception as exc:
        pause.delete()
        raise _unreachable(exc, f"the queue {name!r} was not paused") from exc
    pause.prefetched = sum(
        1
        for h in holders
        for r in (after.get(h, {}).get("reserved") or [])
        if (r.get("delivery_info") or {}).get("routing_key") == name
    )
    pause.save(update_fields=["prefetched"])
    forget_consumed()
    logger.info("queue %s paused on %s", name, holders)
    return pause


def resume_queue(name: str, app: Any = None) -> list[str]:
    """Give ``name`` back to each worker that consumed it when it was paused (and to those that
    skipped it at their start) and forget the pause; returns those workers.

    Raises :class:`QueueNotPaused` or :class:`BrokerUnavailable` (then it stays paused)."""
    app = _app(app)
    pause = QueuePause.objects.filter(queue=name).first()
    if pause is None:
        raise QueueNotPaused(f"The queue {name!r} is not paused.")
    holders = sorted(set(pause.workers))
    try:
        answering = set(_answers(app, holders or None)) if holders else set()
        alive = [h for h in holders if h in answering]
        broker.add_consumer(app, name, alive)
    except BrokerUnavailable:
        raise
    except Exception as exc:
        raise _unreachable(exc, f"the queue {name!r} was not resumed") from exc
    pause.delete()
    forget_consumed()
    logger.info("queue %s resumed on %s", name, alive)
    return alive


def _is_user(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False))


def skip_paused_queues(worker: Any, hostname: str) -> list[str]:
    """At a worker's start: do not consume the paused queues, and note the worker on each
    pause it skipped, so resume gives the queue to it too. Returns the queues skipped."""
    pauses = {p.queue: p for p in QueuePause.objects.all()}
    skipped = broker.skip_queues(worker, set(pauses))
    for name in skipped:
        pause = pauses[name]
        if hostname not in pause.workers:
            pause.workers = sorted({*pause.workers, hostname})
            pause.save(update_fields=["workers"])
    if skipped:
        logger.warning("%s does not consume the paused queue(s) %s", hostname, skipped)
    return skipped


# -- "waiting on a queue no worker consumes" ------------------------------------------------

_consumed_cache: tuple[float, frozenset[str] | None] | None = None
#: How long the consumed queues are kept between two pages (the task list asks on every page).
CONSUMED_CACHE_SECONDS = 10.0


def consumed_queues(app: Any = None) -> frozenset[str] | None:
    """The queues some worker consumes now (not paused), asked at most every
    ``CONSUMED_CACHE_SECONDS``; ``None`` when the workers cannot be asked."""
    global _consumed_cache
    now = time.monotonic()
    if _consumed_cache is not None and now - _consumed_cache[0] < CONSUMED_CACHE_SECONDS:
        return _consumed_cache[1]
    try:
        answers = broker.consumed_queues(_app(app), float(hub_settings.INSPECT_TIMEOUT))
    except Exception:
        # Kept too: a broker that is down must not slow every page by its timeout.
        logger.debug("could not ask the workers for their queues", exc_info=True)
        _consumed_cache = (now, None)
        return None
    names = frozenset(name for queues in answers.values() for name in queues)
    _consumed_cache = (now, names)
    return names


def _remember_consumers(consumers: dict[str, list[str]]) -> None:
    global _consumed_cache
    _consumed_cache = (time.monotonic(), frozenset(consumers))


def forget_consumed() -> None:
    """Drop the cached consumed queues (after a pause or resume, and in tests)."""
    global _consumed_cache
    _consumed_cache = None


def unconsumed_queue(task: Task, consumed: frozenset[str] | None) -> str | None:
    """The queue ``task`` waits on when it is pending and no worker consumes that queue."""
    if consumed is None or task.status != TaskStatus.PENDING:
        return None
    name = task_queue(task.options)
    return name if name and name not in consumed else None
