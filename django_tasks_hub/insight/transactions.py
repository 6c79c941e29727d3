"""Transaction mistakes: a task sent from inside ``atomic()`` that started before the commit, or
whose transaction rolled back.

At publish the receiver asks :func:`publishing_alias`; when the caller is inside ``atomic()``
the message carries the alias (:data:`TRANSACTION_HEADER`) and :func:`watch` registers an
``on_commit`` callback. Django has no rollback hook, but a rollback discards that callback:
a finalizer sees it go without being called. The worker marks its start on the row before the
task body runs (:func:`mark_start`) and the commit records whether a start was there already,
so ``started_before_commit`` is decided by which write came first, whatever the hosts' clocks
say. Every write here is outside the caller's transaction: after its commit, after its
rollback (on the background thread) or in the worker.
"""

from __future__ import annotations

import datetime
import logging
import weakref

from django.db import IntegrityError, connections, router, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.locking import in_callers_atomic
from django_tasks_hub.models import TaskTransaction, TransactionOutcome
from django_tasks_hub.recorder.background import background

logger = logging.getLogger(__name__)

#: The message header naming the alias whose ``atomic()`` block published the task.
TRANSACTION_HEADER = "tasks_hub_tx"


def publishing_alias() -> str:
    """The alias of the first database this thread is inside ``atomic()`` on, or ``""``.

    Blocks opened by a ``TestCase`` do not count: they never commit, so Django runs no
    ``on_commit`` callback under them either.
    """
    if not hub_settings.TRANSACTION_CHECKS:
        return ""
    for conn in connections.all(initialized_only=True):
        if in_callers_atomic(conn):
            return str(conn.alias)
    return ""


class _Outcome:
    """What the watch of one publish knows: whether its ``on_commit`` callback ran."""

    __slots__ = ("alias", "broker_id", "committed")

    def __init__(self, broker_id: str, alias: str) -> None:
        self.broker_id = broker_id
        self.alias = alias
        self.committed = False


class _OnCommit:
    """The ``on_commit`` callback; its finalizer runs when Django drops it, called or not."""

    __slots__ = ("__weakref__", "outcome")

    def __init__(self, outcome: _Outcome) -> None:
        self.outcome = outcome

    def __call__(self) -> None:
        self.outcome.committed = True
        try:
            record_outcome(self.outcome.broker_id, self.outcome.alias, TransactionOutcome.COMMITTED)
        except Exception:
            logger.exception("tasks-hub could not record the commit of %s", self.outcome.broker_id)


def _dropped(outcome: _Outcome) -> None:
    if outcome.committed:
        return
    # Discarded uncalled: the transaction (or the savepoint around the publish) rolled back.
    # This runs inside Django's rollback, so the write waits for the background thread.
    when = timezone.now()
    background.submit(
        lambda: record_outcome(
            outcome.broker_id, outcome.alias, TransactionOutcome.ROLLED_BACK, when
        )
    )


def watch(broker_id: str, alias: str) -> None:
    """Record how the transaction on ``alias`` that is publishing ``broker_id`` ends."""
    outcome = _Outcome(broker_id, alias)
    callback = _OnCommit(outcome)
    weakref.finalize(callback, _dropped, outcome)
    transaction.on_commit(callback, using=alias)


def _rows(broker_id: str) -> tuple[str, object]:
    db = router.db_for_write(TaskTransaction)
    return db, TaskTransaction.objects.using(db).filter(broker_id=broker_id)


def _insert(db: str, **fields: object) -> bool:
    try:
        with transaction.atomic(using=db):
            TaskTransaction.objects.using(db).create(**fields)
    except IntegrityError:
        return False
    return True


def record_outcome(
    broker_id: str, alias: str, outcome: str, when: datetime.datetime | None = None
) -> None:
    """Record that the publishing transaction of ``broker_id`` committed or rolled back.

    A commit is flagged ``started_before_commit`` when a worker's start is on the row already.
    """
    when = when or timezone.now()
    db, rows = _rows(broker_id)
    fields = {"outcome": outcome, "ended_at": when}
    if outcome == TransactionOutcome.COMMITTED:
        early = Case(When(first_started_at__isnull=False, then=Value(True)), default=Value(False))
        fields["started_before_commit"] = early
    for _ in range(2):
        if rows.update(**fields):  # type: ignore[attr-defined]
            return
        plain = {k: v for k, v in fields.items() if k != "started_before_commit"}
        if _insert(db, broker_id=broker_id, alias=alias, **plain):
            return
        # A worker's start inserted the row in between: update it, once more.


def mark_start(broker_id: str, alias: str, when: datetime.datetime) -> None:
    """Record, before the task body runs, that a worker started ``broker_id`` (first start).

    Never raises: a failed mark is logged, and the start itself is still recorded.
    """
    try:
        _mark_start(broker_id, alias, when)
    except Exception:
        logger.exception("tasks-hub could not mark the start of %s", broker_id)


def _mark_start(broker_id: str, alias: str, when: datetime.datetime) -> None:
    db, rows = _rows(broker_id)
    if rows.filter(first_started_at__isnull=True).update(first_started_at=when):  # type: ignore[attr-defined]
        return
    if not _insert(db, broker_id=broker_id, alias=alias, first_started_at=when):
        rows.filter(first_started_at__isnull=True).update(first_started_at=when)  # type: ignore[attr-defined]
