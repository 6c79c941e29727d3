"""Set-based writes of a batch of events: the common lifecycle in a few statements per batch."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connections
from django.db.models import JSONField

from django_tasks_hub import transitions
from django_tasks_hub.events import TaskEvent
from django_tasks_hub.locking import write_transaction
from django_tasks_hub.recorder.columns import move_values, publish_values, run_values, task_pk_for
from django_tasks_hub.states import TaskStatus

if TYPE_CHECKING:
    from django_tasks_hub.recorder.rows import EventWriter

logger = logging.getLogger(__name__)


#: Kinds a batch writes set-based, in the order a lifecycle has them.
BULK_KINDS: tuple[str, ...] = ("queued", "started", "succeeded", "failed")


class _Mismatch(Exception):
    """A set-based statement did not move exactly one row per event: undo, go one by one."""


def bulk_eligible(event: TaskEvent) -> bool:
    """Whether ``event`` can take the set-based path (a first publish, a start, an end).

    Everything else (retries' publishes, retry reports, cancels, losses, refusals, progress,
    forgets) takes the per-event path, in arrival order.
    """
    if event.kind == "queued":
        return event.retries == 0
    return event.kind in BULK_KINDS[1:] and event.retries is not None


@dataclass(frozen=True)
class _Move:
    """One conditional move of a task and its run: the WHERE of ``where``'s allowed statuses,
    the SET of ``status`` and the fields."""

    broker_id: str
    retries: int
    where: str
    status: str
    updated_at: Any
    task_fields: dict[str, Any]
    run_fields: dict[str, Any]
    #: The event that creates the rows when they are not there yet (rule 2): the first one.
    event: TaskEvent


Group = list[tuple[int, TaskEvent]]


@functools.cache
def _unprepared_cursor_class() -> type:
    import psycopg  # Only on PostgreSQL, where it is the driver.

    class UnpreparedCursor(psycopg.Cursor):
        """Binds on the server, never as a named prepared statement: a pooler in
        transaction mode (PgBouncer) may hand the next statement to another session."""

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, **{**kwargs, "prepare": False})

    return UnpreparedCursor


class BatchWriter:
    """Writes a batch with the rules of :class:`EventWriter`, a group of events per statement.

    A batch is cut into segments of consecutive bulk-eligible events; any other event is
    written on its own, in order, between them. Within a segment the first publishes are one
    INSERT per table; a start and an end of the same attempt become one move; the other starts
    and ends one executemany UPDATE per table and kind. Rule 1 makes the rows the same whatever
    order a segment's events are applied in (``tests/test_ordering.py`` checks it), so grouping
    them changes nothing. A group whose statements do not find exactly the rows they expect (a
    worker's event came before the publish, a duplicate, a redelivery) is rolled back and
    written event by event, by the same code as without the buffer.

    Each group is its own short transaction, rows in broker id order, task rows before runs:
    two processes writing batches that share tasks (a publisher and a worker) lock rows in the
    same order and never wait on each other in a cycle.
    """

    def __init__(self, rows: EventWriter) -> None:
        self.rows = rows
        self.db = rows.db
        self.connection = connections[self.db]
        self.tasks = rows.task_model
        self.runs = rows.run_model
        #: How many events from the start are written; a caller that catches an error writes
        #: the rest again one by one.
        self.written = 0
        self._preparers: dict[tuple[Any, str], Callable[[Any], Any]] = {}
        self._casts: dict[Any, str] = {}
        #: PostgreSQL takes a batch's rows as one array per column (``unnest``).
        self.unnest = self.connection.vendor == "postgresql"

    def write(self, events: Sequence[TaskEvent]) -> None:
        """Write ``events``; on an error, ``written`` says how many were written before it."""
        segment: list[TaskEvent] = []
        for index, event in enumerate(events):
            if bulk_eligible(event):
                segment.append(event)
                continue
            self._write_segment(segment)
            self.written, segment = index, []
            self.rows.write(event)
            self.written = index + 1
        self._write_segment(segment)
        self.written = len(events)

    # -- a segment -----------------------------------------------------------------------------

    def _write_segment(self, segment: list[TaskEvent]) -> None:
        if not segment:
            return
        queued: Group = []
        starts: dict[tuple[str, int], Group] = {}
        ends: dict[tuple[str, int], Group] = {}
        for index, event in enumerate(segment):
            if event.kind == "queued":
                queued.append((index, event))
            else:
                key = (event.broker_id, event.retries or 0)
                (starts if event.kind == "started" else ends).setdefault(key, []).append(
                    (index, event)
                )
        # The start and the end of one attempt in one segment (a short task): one move.
        ran: list[tuple[Group, _Move]] = []
        singles: dict[str, list[tuple[Group, _Move]]] = {kind: [] for kind in BULK_KINDS[1:]}
        for key, started in starts.items():
            ended = ends.get(key, [])
            if len(started) == 1 and len(ended) == 1:
                ran.append((started + ended, self._ran(started[0][1], ended.pop()[1])))
                continue
            singles["started"] += [([pair], self._single(pair[1])) for pair in started]
        for pairs in ends.values():
            for pair in pairs:
                singles[pair[1].kind].append(([pair], self._single(pair[1])))
        one_by_one: Group = []
        known: Group = []
        if queued:
            try:
                with write_transaction(self.db):
                    known, rest = self._insert_queued(queued)
                    one_by_one += rest
            except IntegrityError:
                one_by_one += queued
        if known:
            try:
                with write_transaction(self.db):
                    self._fill_known(known)
            except _Mismatch:
                one_by_one += known
        for moves in (ran, *singles.values()):
            if not moves:
                continue
            try:
                with write_transaction(self.db):
                    self._move([move for _, move in moves])
            except _Mismatch:
                try:
                    # Usually the publisher has not written these tasks yet (its batch comes
                    # later, or it is not recorded): create them from the worker's events.
                    with write_transaction(self.db):
                        self._create([move.event for _, move in moves])
                        self._move([move for _, move in moves])
                except (_Mismatch, IntegrityError):
                    one_by_one += [pair for group, _ in moves for pair in group]
        for _, event in sorted(one_by_one, key=lambda pair: pair[0]):
            self.rows.write(event)

    # -- first publishes -----------------------------------------------------------------------

    def _insert_queued(self, group: Group) -> tuple[Group, Group]:
        """INSERT the tasks and first runs of publishes no row knows yet. Returns the
        publishes whose task was there already (for :meth:`_fill_known`) and the rest, for the
        per-event path."""
        if self.tasks._meta.parents:
            return [], group  # One INSERT cannot fill a multi-table inherited model.
        rest: Group = []
        new: dict[str, tuple[int, TaskEvent]] = {}
        for pair in group:
            if pair[1].broker_id in new:
                rest.append(pair)  # A second publish of one in this batch.
            else:
                new[pair[1].broker_id] = pair
        inserted = self._create([pair[1] for pair in new.values()])
        # A task row is there already (a worker's event came first; a restart's publish): what
        # the publish knows is filled in, set-based where the rows are the ones a first attempt
        # makes, else event by event (see _fill_known).
        known = [pair for broker_id, pair in sorted(new.items()) if broker_id not in inserted]
        return known, rest

    def _create(self, events: list[TaskEvent]) -> set[str]:
        """Create the task and first run of each first attempt no task row knows (rule 2,
        ``INSERT ... ON CONFLICT DO NOTHING``); the broker ids whose rows it created."""
        if self.tasks._meta.parents:
            return set()  # One INSERT cannot fill a multi-table inherited model.
        first = {e.broker_id: e for e in reversed(events) if e.retries == 0}
        task_rows = [self.rows.task_values(first[b]) for b in sorted(first)]  # Lock order.
        inserted = self._insert(self.tasks, task_rows, returning="broker_id")
        run_rows = [run_values(first[b], task_pk_for(b), attempt=1) for b in sorted(inserted)]
        self._insert(self.runs, run_rows)
        return inserted

    def _fill_known(self, group: Group) -> None:
        """What a first publish knows best, on rows a worker's event created first (the
        publisher's batch came later): what ``EventWriter.record_queued`` does then, for the
        whole group. Every task and run must be there, or the group goes one by one."""
        qn = self.connection.ops.quote_name
        task_rows, run_rows = [], []
        for _, event in group:  # In broker id order: the lock order.
            published = self._prepare(self.tasks, "created_at")(event.timestamp)
            task_rows.append(
                [
                    *self._values(self.tasks, publish_values(event)),
                    published,
                    published,
                    event.user_id,
                    event.broker_id,
                    self._prepare(self.tasks, "id")(task_pk_for(event.broker_id)),
                ]
            )
            at = self._prepare(self.runs, "queued_at")(event.timestamp)
            run_rows.append([at, at, event.user_id, event.broker_id])
        created = qn("created_at")
        task_sql = (
            f"UPDATE {qn(self.tasks._meta.db_table)} SET {qn('args')} = %s,"
            f" {qn('kwargs')} = %s, {qn('options')} = %s,"
            f" {created} = CASE WHEN {created} < %s THEN {created} ELSE %s END,"
            f" {qn('created_by_id')} = COALESCE({qn('created_by_id')}, %s)",
            f"WHERE {qn('broker_id')} = %s AND {qn('id')} = %s",
        )
        # The SET's parameters, then the WHERE's.
        task_params = ("args", "kwargs", "options", "created_at", "created_at", "created_by",
                       "broker_id", "id")  # fmt: skip
        queued = qn("queued_at")
        run_sql = (
            f"UPDATE {qn(self.runs._meta.db_table)} SET"
            f" {queued} = CASE WHEN {queued} IS NULL OR {queued} > %s THEN %s ELSE {queued} END,"
            f" {qn('triggered_by_id')} = COALESCE(%s, {qn('triggered_by_id')})",
            f"WHERE {qn('broker_id')} = %s AND {qn('retries')} = 0 AND {qn('delivery')} = 0",
        )
        run_params = ("queued_at", "queued_at", "triggered_by", "broker_id")
        self._execute(self.tasks, task_sql, task_params, [(r[-2], r) for r in task_rows])
        self._execute(self.runs, run_sql, run_params, [(r[-1], r) for r in run_rows])

    def _insert(
        self, model: Any, rows: list[dict[str, Any]], returning: str | None = None
    ) -> set[str]:
        """Multi-row INSERTs of ``rows`` (attribute names to values; the other columns get
        their field's default), without building model instances. With ``returning`` (a
        column), a row that clashes with a unique key is skipped, and the column's values of
        the rows inserted are returned."""
        if not rows:
            return set()
        qn = self.connection.ops.quote_name
        fields = [
            f for f in model._meta.concrete_fields if not f.primary_key or f.attname in rows[0]
        ]
        defaults = {f.attname: f.get_default() for f in fields if f.attname not in rows[0]}
        columns = ", ".join(qn(f.column) for f in fields)
        prep = [(f.attname, self._prepare(model, f.name)) for f in fields]
        params = [
            [save(row[name] if name in row else defaults[name]) for name, save in prep]
            for row in rows
        ]
        tail = f" ON CONFLICT DO NOTHING RETURNING {qn(returning)}" if returning else ""
        done: set[str] = set()
        with self._cursor() as cursor:
            for sql, values in self._insert_statements(model, fields, columns, params, tail):
                cursor.execute(sql, values)
                if returning:
                    done.update(str(value) for (value,) in cursor.fetchall())
        return done

    def _insert_statements(
        self, model: Any, fields: list[Any], columns: str, params: list[list[Any]], tail: str
    ) -> Iterator[tuple[str, list[Any]]]:
        head = f"INSERT INTO {self.connection.ops.quote_name(model._meta.db_table)} ({columns})"
        if self.unnest:
            # One statement of one array per column: its text, and its parsing, do not grow
            # with the batch.
            columns_of_rows = [list(column) for column in zip(*params, strict=True)]
            refs, once, source, arrays = self._unnest(fields, columns_of_rows)
            yield (
                f"{head} SELECT {', '.join(refs)} FROM {source}{tail}",
                [*once.values(), *arrays],  # The SELECT's values come before the FROM's.
            )
            return
        # Several rows per statement, so the database parses and plans once per chunk, but
        # statements short enough for the driver to cache their parsing.
        one = "(" + ", ".join(["%s"] * len(fields)) + ")"
        size = max(1, (4000 - len(head)) // (len(one) + 2))
        for start in range(0, len(params), size):
            chunk = params[start : start + size]
            yield (
                f"{head} VALUES {', '.join([one] * len(chunk))}{tail}",
                [v for row in chunk for v in row],
            )

    def _preparer(self, field: Any) -> Callable[[Any], Any]:
        """``field``'s conversion of a value for the driver, skipped where it changes nothing.

        A value that the driver takes as it is (text, numbers, and on PostgreSQL times and
        UUIDs) is passed on: ``get_db_prep_save`` on every column of every row was most of
        the writer's time. JSON columns are always encoded (a string is JSON too).
        """
        connection = self.connection
        save = field.get_db_prep_save
        if isinstance(field, JSONField):
            if self.unnest:
                # JSON text, cast to jsonb by the statement: what Django's adapter would have
                # the driver encode, encoded here once, and comparable, so that a value every
                # row shares (empty kwargs, no tags) is bound once.
                dumps = functools.partial(json.dumps, cls=field.encoder)
                return lambda value: None if value is None else dumps(value)
            return lambda value: save(value, connection)
        plain: tuple[type, ...] = (str, int, float)
        if connection.vendor == "postgresql":
            plain = (str, int, float, datetime.datetime, uuid.UUID)

        def prepare(value: Any) -> Any:
            if value is None or type(value) in plain:
                return value
            return save(value, connection)

        return prepare

    # -- starts and ends -----------------------------------------------------------------------

    def _single(self, event: TaskEvent) -> _Move:
        run_fields, task_fields = move_values(event)
        return _Move(
            event.broker_id,
            event.retries or 0,
            event.status,
            event.status,
            event.timestamp,
            task_fields,
            run_fields,
            event,
        )

    def _ran(self, start: TaskEvent, end: TaskEvent) -> _Move:
        """A start then an end of one attempt as one move: what the end sets over what the
        start sets, from where the start may move (so both would have moved in turn)."""
        start_run, start_task = move_values(start)
        end_run, end_task = move_values(end)
        return _Move(
            start.broker_id,
            start.retries or 0,
            TaskStatus.PROCESSING,
            end.status,
            end.timestamp,
            {**start_task, **end_task},
            {**start_run, **end_run},
            start,
        )

    def _move(self, moves: list[_Move]) -> None:
        """Move each task and run (rule 1 in the WHERE); every one must move, or none does."""
        task_groups: dict[tuple[Any, ...], list[tuple[str, list[Any]]]] = {}
        run_groups: dict[tuple[Any, ...], list[tuple[str, list[Any]]]] = {}
        for move in moves:
            task_fields = {
                "status": move.status,
                "retries": move.retries,
                "updated_at": move.updated_at,
                **move.task_fields,
            }
            where = [move.broker_id, move.retries, move.retries]
            task_groups.setdefault((move.where, *task_fields), []).append(
                (move.broker_id, [*self._values(self.tasks, task_fields), *where])
            )
            run_fields = {"status": move.status, **move.run_fields}
            run_groups.setdefault((move.where, *run_fields), []).append(
                (move.broker_id, [*self._values(self.runs, run_fields), *where[:2]])
            )
        # The task rows first, then the runs, each in broker id order: the lock order.
        for (where, *columns), rows in task_groups.items():
            params = (*columns, "broker_id", "retries", "retries")
            self._execute(self.tasks, self._task_sql(columns, where), params, rows)
        for (where, *columns), rows in run_groups.items():
            params = (*columns, "broker_id", "retries")
            self._execute(self.runs, self._run_sql(columns, where), params, rows)

    def _execute(
        self,
        model: Any,
        sql: tuple[str, str],
        params: Sequence[str],
        rows: list[tuple[str, list[Any]]],
    ) -> None:
        """Run the UPDATE ``sql`` (its SET part, its WHERE part) for every row of parameters
        (``params`` names the field each is a value of); each row must move exactly one row.

        On PostgreSQL, one statement for all the rows: they are joined as arrays (``UPDATE
        ... FROM unnest(...)``), so the statement's text, and its parsing on both sides, do not
        grow with the number of rows; a value every row shares is bound once, not as an array.
        Elsewhere, one statement per row (executemany).
        """
        head, tail = sql
        rows = sorted(rows, key=lambda r: r[0])
        with self._cursor() as cursor:
            if self.unnest:
                columns = [list(c) for c in zip(*(values for _, values in rows), strict=True)]
                fields = [model._meta.get_field(name) for name in params]
                refs, once, source, arrays = self._unnest(fields, columns)
                # The parameters in the order the statement names them: SET, FROM, WHERE.
                in_head = head.count("%s")
                it = iter(refs)
                head, tail = (re.sub("%s", lambda _: next(it), part) for part in (head, tail))
                # The rows by their broker ids too, as an array the index takes: joined to the
                # arrays alone, a table whose statistics are behind (a new one, one filling
                # fast) is read whole, for a plan made for a few hundred rows.
                qn = self.connection.ops.quote_name
                key = model._meta.get_field("broker_id")
                keys = f"{qn(model._meta.db_table)}.{qn(key.column)} = ANY(%b::{self._cast(key)}[])"
                cursor.execute(
                    f"{head} FROM {source} {tail} AND {keys}",
                    [
                        *(v for i, v in once.items() if i < in_head),
                        *arrays,
                        *(v for i, v in once.items() if i >= in_head),
                        columns[params.index("broker_id")],
                    ],
                )
            else:
                cursor.executemany(f"{head} {tail}", [values for _, values in rows])
            # Each row of parameters moves at most one row (a unique broker id; the newest
            # delivery of one attempt), so the total says whether every event moved its row.
            if cursor.rowcount != len(rows):
                raise _Mismatch

    def _unnest(
        self, fields: Sequence[Any], columns: list[list[Any]]
    ) -> tuple[list[str], dict[int, Any], str, list[list[Any]]]:
        """How a statement names a batch's ``columns`` (one list of values per field).

        Returns each column's reference (in ``fields``' order), the values bound once by
        column index, the ``unnest(...) AS v(...)`` source and its arrays. A column whose
        value every row shares, of the same type (``1`` and ``True``, equal in Python, are
        not the same value to bind), is bound once as ``%b::type``; the others are columns
        ``v.pN`` of the arrays. A batch of one row keeps arrays of one: the usual statement.
        """
        shared = [
            len(column) > 1
            and all(
                v is column[0] or (type(v) is type(column[0]) and v == column[0]) for v in column
            )
            for column in columns
        ]
        if all(shared):
            shared[0] = False  # unnest() needs an array, and identical rows are still rows.
        refs: list[str] = []
        once: dict[int, Any] = {}
        casts: list[str] = []
        arrays: list[list[Any]] = []
        for i, (field, column) in enumerate(zip(fields, columns, strict=True)):
            if shared[i]:
                refs.append(f"%b::{self._cast(field)}")
                once[i] = column[0]
            else:
                refs.append(f"v.p{len(arrays)}")
                casts.append(f"%b::{self._cast(field)}[]")
                arrays.append(column)
        aliases = ", ".join(f"p{n}" for n in range(len(arrays)))
        return refs, once, f"unnest({', '.join(casts)}) AS v({aliases})", arrays

    def _cursor(self) -> Any:
        """A cursor for the batch's statements; on PostgreSQL one that binds on the server.

        Django's psycopg cursors bind on the client: every element of every array would be
        quoted into the statement's text. Bound on the server, the arrays travel in binary
        (``%b``). Wrapped as Django wraps its own, so errors and query logging are the same.
        """
        if not self.unnest:
            return self.connection.cursor()
        self.connection.ensure_connection()
        raw = _unprepared_cursor_class()(self.connection.connection)
        if self.connection.queries_logged:
            return self.connection.make_debug_cursor(raw)
        return self.connection.make_cursor(raw)

    def _cast(self, field: Any) -> str:
        if field not in self._casts:
            self._casts[field] = str(field.cast_db_type(self.connection))
        return self._casts[field]

    def _values(self, model: Any, fields: dict[str, Any]) -> list[Any]:
        return [self._prepare(model, name)(value) for name, value in fields.items()]

    def _prepare(self, model: Any, name: str) -> Callable[[Any], Any]:
        key = (model, name)
        if key not in self._preparers:
            self._preparers[key] = self._preparer(model._meta.get_field(name))
        return self._preparers[key]

    def _set(self, model: Any, columns: Iterable[str]) -> str:
        qn = self.connection.ops.quote_name
        opts = model._meta
        return ", ".join(f"{qn(opts.get_field(name).column)} = %s" for name in columns)

    def _task_sql(self, columns: Iterable[str], where: str) -> tuple[str, str]:
        qn = self.connection.ops.quote_name
        rule = transitions.task_condition_sql(where, "", qn("status"), qn("retries"), "%s")
        return (
            f"UPDATE {qn(self.tasks._meta.db_table)} SET {self._set(self.tasks, columns)}",
            f"WHERE {qn('broker_id')} = %s AND {rule}",
        )

    def _run_sql(self, columns: Iterable[str], where: str) -> tuple[str, str]:
        qn = self.connection.ops.quote_name
        table = qn(self.runs._meta.db_table)
        rule = transitions.run_condition_sql(where, f"{table}.{qn('status')}")
        # ``lost`` is left to the per-event path: only the current delivery may leave it.
        return (
            f"UPDATE {table} SET {self._set(self.runs, columns)}",
            f"WHERE {table}.{qn('broker_id')} = %s AND {table}.{qn('retries')} = %s"
            f" AND {rule}"
            f" AND {table}.{qn('delivery')} = (SELECT MAX(r.{qn('delivery')}) FROM {table} r"
            f" WHERE r.{qn('broker_id')} = {table}.{qn('broker_id')}"
            f" AND r.{qn('retries')} = {table}.{qn('retries')})",
        )


def link_events(rows: EventWriter, events: Sequence[TaskEvent]) -> None:
    """Link the publishes among ``events`` to their business objects (``related``), once their
    task rows are written; a link never fails the recording (``write_links`` logs and skips)."""
    if any(event.related for event in events):
        from django_tasks_hub.insight.relations import write_links
        from django_tasks_hub.models import TaskRelation

        write_links(events, rows.task_model, TaskRelation, rows.db)


def write_events(rows: EventWriter, events: Sequence[TaskEvent]) -> list[TaskEvent]:
    """Write ``events`` as a batch; return those that could not be written (none: all are in).

    If the batch fails, the events from there on are written one by one, so one bad event
    never costs the others; if the first of them fails on its own too, the database is taken
    to be out of reach and the rest are returned unwritten, without a try each.
    """
    writer = BatchWriter(rows)
    try:
        writer.write(events)
        link_events(rows, events)
        return []
    except Exception as exc:
        drop_broken_connection(rows.db)
        link_events(rows, events[: writer.written])
        logger.warning(
            "tasks-hub could not write %d of a batch of %d events (%s: %s); "
            "writing them one by one",
            len(events) - writer.written,
            len(events),
            type(exc).__name__,
            exc,
        )
    rest = list(events[writer.written :])
    unwritten: list[TaskEvent] = []
    for index, event in enumerate(rest):
        try:
            BatchWriter(rows).write([event])
            link_events(rows, [event])
        except Exception as exc:
            drop_broken_connection(rows.db)
            unwritten.append(event)
            if index == 0:
                # Not one of them could be written: the database, not an event, is the fault.
                logger.warning(
                    "tasks-hub could not write %d events (%s: %s); they are kept",
                    len(rest),
                    type(exc).__name__,
                    exc,
                )
                return rest
            logger.exception(
                "tasks-hub could not write %s of %s[%s]", event.kind, event.name, event.broker_id
            )
    return unwritten


def drop_broken_connection(db: str) -> None:
    # A connection that failed (closed under us, server restarted) stays failed until it
    # is closed; Django opens a new one on next use. Inside the caller's transaction the
    # connection is theirs: the savepoint was rolled back and they carry on.
    conn = connections[db]
    if conn.in_atomic_block or (conn.connection is not None and not conn.get_autocommit()):
        return
    try:
        conn.close()
    except Exception:
        logger.debug("tasks-hub could not close a failed connection", exc_info=True)
