"""Rollups kept by database triggers, folded on read: the overview never scans runs.

Why triggers, not the recorder's batch writer: a status reaches the rows by five paths (the
batch statements, the per-event writer, services, reconcile, replays), and only the database
sees every one of them with the row's old and new values. A trigger that counts what a row
leaves and what it enters is right whatever the path and whatever the order or repetition of
the events (rules 1 and 2: a duplicate moves no row, so it counts nothing), and a run that
moves from one end to a stronger one (``failed`` then ``done``) moves its count with it.

Why a journal, not counters: the triggers only append to ``RollupDelta`` (on PostgreSQL once
per statement, from its transition tables), so concurrent writers never wait on a hot counter
row nor deadlock on two of them. :func:`fold` moves the journal into the rollup tables, one
folder at a time, in a single statement on PostgreSQL (``DELETE ... RETURNING`` feeding the
upserts) so a row committed meanwhile is never lost nor counted twice.

Triggers exist on PostgreSQL and SQLite; elsewhere the rollups stay empty.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from django_tasks_hub.models import (
    HISTOGRAM_BOUNDS,
    RUNTIME_COLUMNS,
    WAIT_COLUMNS,
    ErrorRollup,
    RollupDelta,
    RunRollup,
    Task,
    TaskCount,
    TaskRun,
)
from django_tasks_hub.states import RUN_OPEN_STATUSES, TaskStatus

#: Bucket widths kept, in seconds; 0 is "all time" (what the metrics' counters read).
SPANS: tuple[int, ...] = (0, 60, 3600)
#: Minute buckets older than this are dropped when folding (the overview shows one hour).
MINUTES_KEPT = datetime.timedelta(hours=3)
#: A PostgreSQL advisory lock key: one folder at a time ("th" + "fold").
_FOLD_LOCK = 0x7468_666F_6C64

_OPEN = ", ".join(f"'{status}'" for status in sorted(RUN_OPEN_STATUSES))


def _tables() -> dict[str, str]:
    return {
        "task": Task._meta.db_table,
        "run": TaskRun._meta.db_table,
        "delta": RollupDelta._meta.db_table,
    }


# -- the triggers ------------------------------------------------------------------------------


def _pg_trigger_sql() -> list[str]:
    t = _tables()
    delta = f'"{t["delta"]}" (kind, n, name, status, at, runtime, wait, error)'

    def run_rows(alias: str, sign: int) -> str:
        return (
            f"SELECT 'run', {sign}, {alias}.name, {alias}.status,"
            f" COALESCE({alias}.finished_at, now()), {alias}.runtime,"
            f" EXTRACT(EPOCH FROM ({alias}.started_at - {alias}.queued_at)),"
            f" left({alias}.error, 200)"
        )

    return [
        f"""
CREATE OR REPLACE FUNCTION th_rollup_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {delta} {run_rows("n", 1)} FROM new_rows n WHERE n.status NOT IN ({_OPEN});
  ELSE
    INSERT INTO {delta}
      {run_rows("o", -1)} FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.status IS DISTINCT FROM n.status AND o.status NOT IN ({_OPEN})
      UNION ALL
      {run_rows("n", 1)} FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.status IS DISTINCT FROM n.status AND n.status NOT IN ({_OPEN});
  END IF;
  RETURN NULL;
END $$""",
        f"""
CREATE OR REPLACE FUNCTION th_rollup_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {delta} SELECT 'task', count(*), name, status, NULL, NULL, NULL, ''
      FROM new_rows GROUP BY name, status;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO {delta} SELECT 'task', -count(*), name, status, NULL, NULL, NULL, ''
      FROM old_rows GROUP BY name, status;
  ELSE
    INSERT INTO {delta} SELECT 'task', sum(c), name, status, NULL, NULL, NULL, '' FROM (
        SELECT -1 AS c, o.name, o.status FROM old_rows o JOIN new_rows n ON n.id = o.id
          WHERE o.status IS DISTINCT FROM n.status
        UNION ALL
        SELECT 1, n.name, n.status FROM old_rows o JOIN new_rows n ON n.id = o.id
          WHERE o.status IS DISTINCT FROM n.status
      ) changes GROUP BY name, status HAVING sum(c) <> 0;
  END IF;
  RETURN NULL;
END $$""",
        *(
            f'CREATE TRIGGER th_rollup_{table}_{op[:3].lower()} AFTER {op} ON "{t[table]}"'
            f" REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION th_rollup_{table}s()"
            for table, op, refs in (
                ("run", "INSERT", "NEW TABLE AS new_rows"),
                ("run", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                ("task", "INSERT", "NEW TABLE AS new_rows"),
                ("task", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                ("task", "DELETE", "OLD TABLE AS old_rows"),
            )
        ),
    ]


def _sqlite_trigger_sql() -> list[str]:
    t = _tables()
    delta = f'"{t["delta"]}" (kind, n, name, status, at, runtime, wait, error)'

    def run_row(alias: str, sign: int) -> str:
        return (
            f"SELECT 'run', {sign}, {alias}.name, {alias}.status,"
            f" COALESCE({alias}.finished_at, strftime('%Y-%m-%d %H:%M:%f', 'now')),"
            f" {alias}.runtime,"
            f" (julianday({alias}.started_at) - julianday({alias}.queued_at)) * 86400.0,"
            f" substr({alias}.error, 1, 200)"
        )

    def task_row(alias: str, sign: int) -> str:
        return f"SELECT 'task', {sign}, {alias}.name, {alias}.status, NULL, NULL, NULL, ''"

    run, task = f'"{t["run"]}"', f'"{t["task"]}"'
    return [
        f"CREATE TRIGGER th_rollup_run_ins AFTER INSERT ON {run}"
        f" WHEN NEW.status NOT IN ({_OPEN}) BEGIN INSERT INTO {delta} {run_row('NEW', 1)}; END",
        f"CREATE TRIGGER th_rollup_run_upd AFTER UPDATE OF status ON {run}"
        f" WHEN OLD.status IS NOT NEW.status BEGIN"
        f" INSERT INTO {delta} {run_row('OLD', -1)} WHERE OLD.status NOT IN ({_OPEN});"
        f" INSERT INTO {delta} {run_row('NEW', 1)} WHERE NEW.status NOT IN ({_OPEN}); END",
        f"CREATE TRIGGER th_rollup_task_ins AFTER INSERT ON {task}"
        f" BEGIN INSERT INTO {delta} {task_row('NEW', 1)}; END",
        f"CREATE TRIGGER th_rollup_task_upd AFTER UPDATE OF status ON {task}"
        f" WHEN OLD.status IS NOT NEW.status BEGIN"
        f" INSERT INTO {delta} {task_row('OLD', -1)};"
        f" INSERT INTO {delta} {task_row('NEW', 1)}; END",
        f"CREATE TRIGGER th_rollup_task_del AFTER DELETE ON {task}"
        f" BEGIN INSERT INTO {delta} {task_row('OLD', -1)}; END",
    ]


def install_triggers(connection: Any) -> None:
    """Create the triggers on ``connection``'s database and count the rows already there."""
    if connection.vendor == "postgresql":
        statements = _pg_trigger_sql()
    elif connection.vendor == "sqlite":
        statements = _sqlite_trigger_sql()
    else:
        return
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
        if connection.vendor == "postgresql":
            # The journal is a queue: rows come and go all day. Vacuumed after every few
            # thousand dead rows, not the default fifth of the table, so a fold of an empty
            # journal reads a few pages, not the dead space of the last million entries.
            cursor.execute(
                f'ALTER TABLE "{_tables()["delta"]}" SET (autovacuum_vacuum_scale_factor = 0,'
                " autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0)"
            )
    # What exists before the triggers: the tasks by status, and the runs of the last day.
    _backfill(connection, timezone.now() - datetime.timedelta(days=1))


def ensure_triggers(connection: Any) -> list[str]:
    """Create the SQLite triggers that are missing; return their names.

    SQLite has no ``ALTER TABLE`` for most changes: a migration that adds or alters a column
    of the task or run table rebuilds it, and a rebuilt table has lost its triggers. Run after
    every ``migrate`` (``post_migrate``); the rows a rebuild copied were counted already, so
    nothing is backfilled. PostgreSQL keeps its triggers through ``ALTER TABLE``.
    """
    if connection.vendor != "sqlite":
        return []
    tables = set(connection.introspection.table_names())
    if not set(_tables().values()) <= tables:
        return []  # Migrated backwards, or not yet as far as the rollups.
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        existing = {row[0] for row in cursor.fetchall()}
        created = []
        for sql in _sqlite_trigger_sql():
            name = sql.split()[2]
            if name not in existing:
                cursor.execute(sql)
                created.append(name)
    return created


def _backfill(connection: Any, since: datetime.datetime | None) -> None:
    """Journal the tasks there are, and the ends of the runs that ended since ``since``
    (every run with ``None``), as the triggers would have."""
    t = _tables()
    wait = (
        "EXTRACT(EPOCH FROM (started_at - queued_at))"
        if connection.vendor == "postgresql"
        else "(julianday(started_at) - julianday(queued_at)) * 86400.0"
    )
    at = "COALESCE(finished_at, started_at, queued_at)"
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{t["delta"]}" (kind, n, name, status, error)'
            f" SELECT 'task', count(*), name, status, '' FROM \"{t['task']}\""
            " GROUP BY name, status"
        )
        where, params = "", []
        if since is not None:
            where = " AND finished_at >= %s"
            params = [connection.ops.adapt_datetimefield_value(since)]
        cursor.execute(
            f'INSERT INTO "{t["delta"]}" (kind, n, name, status, at, runtime, wait, error)'
            f" SELECT 'run', 1, name, status, {at}, runtime, {wait}, substr(error, 1, 200)"
            f' FROM "{t["run"]}" WHERE status NOT IN ({_OPEN}) AND {at} IS NOT NULL{where}',
            params,
        )


def rebuild(using: str = "default", since: datetime.datetime | None = None) -> int:
    """Forget the rollups and count the rows again (the runs that ended since ``since``, or
    all of them); returns how many journal entries it folded. For a database filled without
    the triggers (a restore, a bulk load); the past of pruned runs is lost."""
    connection = connections[using]
    with transaction.atomic(using=using):
        for model in (RollupDelta, RunRollup, ErrorRollup, TaskCount):
            model.objects.using(using).all().delete()
        _backfill(connection, since)
    return fold(using)


def remove_triggers(connection: Any) -> None:
    """Drop what :func:`install_triggers` created."""
    t = _tables()
    names = {
        "run": ("th_rollup_run_ins", "th_rollup_run_upd"),
        "task": ("th_rollup_task_ins", "th_rollup_task_upd", "th_rollup_task_del"),
    }
    with connection.cursor() as cursor:
        for table, triggers in names.items():
            for name in triggers:
                if connection.vendor == "postgresql":
                    cursor.execute(f'DROP TRIGGER IF EXISTS {name} ON "{t[table]}"')
                elif connection.vendor == "sqlite":
                    cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
        if connection.vendor == "postgresql":
            cursor.execute("DROP FUNCTION IF EXISTS th_rollup_runs()")
            cursor.execute("DROP FUNCTION IF EXISTS th_rollup_tasks()")


# -- folding the journal -----------------------------------------------------------------------


def _bucket(vendor: str, span: int) -> str:
    """The SQL of the start of ``span``'s bucket holding a delta's ``d.at``."""
    if span == 0:
        epoch = "'1970-01-01 00:00:00"
        return f"{epoch}+00'::timestamptz" if vendor == "postgresql" else f"{epoch}'"
    if vendor == "postgresql":
        return f"date_trunc('{ {60: 'minute', 3600: 'hour'}[span] }', d.at)"
    pattern = {60: "%Y-%m-%d %H:%M:00", 3600: "%Y-%m-%d %H:00:00"}[span]
    return f"strftime('{pattern}', d.at)"


def _histogram(value: str, columns: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    low = None
    for column, high in zip(columns, HISTOGRAM_BOUNDS, strict=True):
        cond = [f"{value} IS NOT NULL"]
        if low is not None:
            cond.append(f"{value} > {low!r}")
        if high != float("inf"):
            cond.append(f"{value} <= {high!r}")
        out.append((column, f"SUM(CASE WHEN {' AND '.join(cond)} THEN d.n ELSE 0 END)"))
        low = high
    return out


def _run_upsert(vendor: str, span: int, source: str) -> str:
    failed = f"d.status = '{TaskStatus.FAILED}'"
    columns = [
        ("span", str(span)),
        ("start", _bucket(vendor, span)),
        ("name", "d.name"),
        ("ended", "SUM(d.n)"),
        ("failed", f"SUM(CASE WHEN {failed} THEN d.n ELSE 0 END)"),
        ("runtime_count", "SUM(CASE WHEN d.runtime IS NOT NULL THEN d.n ELSE 0 END)"),
        ("runtime_sum", "COALESCE(SUM(d.runtime * d.n), 0)"),
        ("wait_count", "SUM(CASE WHEN d.wait IS NOT NULL THEN d.n ELSE 0 END)"),
        ("wait_sum", "COALESCE(SUM(d.wait * d.n), 0)"),
        ("last_failure_at", f"MAX(CASE WHEN {failed} AND d.n > 0 THEN d.at END)"),
        *_histogram("d.runtime", RUNTIME_COLUMNS),
        *_histogram("d.wait", WAIT_COLUMNS),
    ]
    table = RunRollup._meta.db_table
    names = ", ".join(f'"{name}"' for name, _ in columns)
    adds = ", ".join(
        f'"{name}" = "{table}"."{name}" + excluded."{name}"'
        for name, _ in columns[3:]
        if name != "last_failure_at"
    )
    last = (
        f'"last_failure_at" = CASE WHEN "{table}".last_failure_at IS NULL'
        f' OR excluded.last_failure_at > "{table}".last_failure_at'
        f' THEN excluded.last_failure_at ELSE "{table}".last_failure_at END'
    )
    return (
        f'INSERT INTO "{table}" ({names})'
        f" SELECT {', '.join(expr for _, expr in columns)} FROM {source}"
        f" WHERE d.kind = 'run' GROUP BY 2, 3 ORDER BY 2, 3"
        f' ON CONFLICT ("span", "start", "name") DO UPDATE SET {adds}, {last}'
    )


def _error_upsert(vendor: str, source: str) -> str:
    table = ErrorRollup._meta.db_table
    return (
        f'INSERT INTO "{table}" ("start", "error", "count", "last_seen")'
        f" SELECT {_bucket(vendor, 3600)}, d.error, SUM(d.n),"
        f" MAX(CASE WHEN d.n > 0 THEN d.at END) FROM {source}"
        f" WHERE d.kind = 'run' AND d.status = '{TaskStatus.FAILED}' GROUP BY 1, 2 ORDER BY 1, 2"
        f' ON CONFLICT ("start", "error") DO UPDATE SET "count" = "{table}"."count"'
        f' + excluded."count", "last_seen" = CASE WHEN "{table}".last_seen IS NULL'
        f' OR excluded.last_seen > "{table}".last_seen THEN excluded.last_seen'
        f' ELSE "{table}".last_seen END'
    )


def _count_upsert(source: str) -> str:
    table = TaskCount._meta.db_table
    return (
        f'INSERT INTO "{table}" ("name", "status", "count")'
        f" SELECT d.name, d.status, SUM(d.n) FROM {source}"
        f" WHERE d.kind = 'task' GROUP BY 1, 2 ORDER BY 1, 2"
        f' ON CONFLICT ("name", "status") DO UPDATE SET "count" = "{table}"."count"'
        f' + excluded."count"'
    )


def fold(using: str = "default") -> int:
    """Move the journal of changes into the rollups; returns how many entries it folded.

    Cheap when little happened since the last fold (what the overview, the stats API and a
    metrics scrape call it for). On PostgreSQL a second folder at the same time returns 0 at
    once: the first one is folding the same rows.
    """
    connection = connections[using]
    vendor = connection.vendor
    delta = RollupDelta._meta.db_table
    old_minutes = timezone.now() - MINUTES_KEPT
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_FOLD_LOCK])
            if not cursor.fetchone()[0]:
                return 0
            # One statement, so the rows deleted are exactly the rows folded.
            ctes = [
                f'd AS (DELETE FROM "{delta}" RETURNING *)',
                *(f"s{span} AS ({_run_upsert(vendor, span, 'd')})" for span in SPANS),
                f"e AS ({_error_upsert(vendor, 'd')})",
                f"c AS ({_count_upsert('d')})",
            ]
            cursor.execute(f"WITH {', '.join(ctes)} SELECT count(*) FROM d")
            folded = int(cursor.fetchone()[0])
        elif vendor == "sqlite":
            # SQLite has one writer at a time: every row up to the highest id is committed.
            cursor.execute(f'SELECT MAX(id), COUNT(*) FROM "{delta}"')
            top, folded = cursor.fetchone()
            if not top:
                return 0
            source = f'(SELECT * FROM "{delta}" WHERE id <= {int(top)}) d'
            for span in SPANS:
                cursor.execute(_run_upsert(vendor, span, source))
            cursor.execute(_error_upsert(vendor, source))
            cursor.execute(_count_upsert(source))
            cursor.execute(f'DELETE FROM "{delta}" WHERE id <= %s', [top])
        else:
            return 0
        if folded:
            RunRollup.objects.using(using).filter(span=60, start__lt=old_minutes).delete()
        return folded
