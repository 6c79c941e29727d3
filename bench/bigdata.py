"""A million tasks and a million runs in PostgreSQL, made with generate_series in seconds.

Used by ``history_depth.py`` and ``task_list.py``. The rows look like a month of work: 20 task
names, most tasks done, some failed, a few still active, one run per task, ids growing with
time. Columns the generator does not know (added by a later migration) get their type's zero,
so the fill keeps working while the schema grows.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any
from urllib.parse import urlparse

from bench.common import DEFAULT_BROKER, PYTHON, ROOT, base_env, pg_connect

DEFAULT_BIG_DB = "postgres://postgres@127.0.0.1:5432/hub_bench_big"
NAMES = 20

# Status of row i: mostly done; failed, active and other ends in fixed proportions.
STATUS_SQL = """CASE
    WHEN i % 100 < 84 THEN 'done'
    WHEN i % 100 < 92 THEN 'failed'
    WHEN i % 100 < 95 THEN 'pending'
    WHEN i % 100 < 97 THEN 'processing'
    WHEN i % 100 < 98 THEN 'retrying'
    WHEN i % 100 < 99 THEN 'canceled'
    ELSE 'lost' END"""
CREATED_SQL = "(now() - interval '30 days' + (i * interval '30 days') / {n})"
# Task name of row i: one of NAMES names, spread evenly.
NAME_SQL = f"'bench.task_' || lpad((i % {NAMES})::text, 2, '0')"

TASK_COLUMNS = {
    "id": "md5('bench' || i)::uuid",
    "name": NAME_SQL,
    "args": "jsonb_build_array(i)",
    "kwargs": "'{{}}'::jsonb",
    "options": "'{{}}'::jsonb",
    "status": STATUS_SQL,
    "broker_id": "md5('bench' || i)::uuid::text",
    "retries": "0",
    "tags": "CASE WHEN i % 10 = 0 THEN '[\"reports\"]'::jsonb ELSE '[]'::jsonb END",
    "result": "CASE WHEN i % 100 < 84 THEN to_jsonb(i) END",
    "error": "CASE WHEN i % 100 BETWEEN 84 AND 91 THEN 'ValueError: boom' ELSE '' END",
    "traceback": "''",
    "attempts": "1",
    "created_at": CREATED_SQL,
    "updated_at": CREATED_SQL + " + interval '2 seconds'",
    "started_at": CREATED_SQL + " + interval '1 second'",
    "finished_at": CREATED_SQL + " + interval '2 seconds'",
    "worker": "'celery@bench'",
}
RUN_COLUMNS = {
    "id": "i",
    "task_id": "md5('bench' || i)::uuid",
    "name": NAME_SQL,
    "attempt": "1",
    "broker_id": "md5('bench' || i)::uuid::text",
    "retries": "0",
    "delivery": "0",
    "trigger": "'initial'",
    "status": STATUS_SQL,
    "queued_at": CREATED_SQL,
    "started_at": CREATED_SQL + " + interval '1 second'",
    "finished_at": CREATED_SQL + " + interval '2 seconds'",
    "runtime": "1.0",
    "worker": "'celery@bench'",
    "result": "CASE WHEN i % 100 < 84 THEN to_jsonb(i) END",
    "error": "CASE WHEN i % 100 BETWEEN 84 AND 91 THEN 'ValueError: boom' ELSE '' END",
    "traceback": "''",
}
ZERO = {
    "integer": "0",
    "smallint": "0",
    "bigint": "0",
    "double precision": "0",
    "boolean": "false",
    "jsonb": "'{{}}'::jsonb",
    "timestamp with time zone": "now()",
    "uuid": "md5('bench' || i)::uuid",
}


def insert_sql(
    conn: Any, table: str, known: dict[str, str], n: int, zero: dict[str, str] | None = None
) -> str:
    """``INSERT ... SELECT ... FROM generate_series(1, n)`` for every column ``table`` needs.

    ``known`` gives the expression of named columns; any other NOT NULL column without a
    default gets the value ``zero`` (default :data:`ZERO`) has for its type.
    """
    zero = ZERO if zero is None else zero
    cols = conn.execute(
        "SELECT column_name, data_type, is_nullable, column_default, is_identity"
        " FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
        [table],
    ).fetchall()
    names, exprs = [], []
    for name, data_type, nullable, default, identity in cols:
        if name in known:
            expr = known[name]
        elif nullable == "YES" or default is not None or identity == "YES":
            continue
        else:
            expr = zero.get(data_type, "''")
        names.append(f'"{name}"')
        exprs.append(expr.format(n=n))
    return (
        f"INSERT INTO {table} ({', '.join(names)}) "
        f"SELECT {', '.join(exprs)} FROM generate_series(1, {n}) AS i"
    )


def ensure_big_database(db_url: str, n: int, rebuild: bool = False) -> float:
    """Make sure ``db_url`` holds ``n`` tasks and runs; return the seconds spent filling."""
    name = urlparse(db_url).path.lstrip("/")
    with pg_connect(db_url, "postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=base_env("hub", db_url, DEFAULT_BROKER),
        check=True,
    )
    with pg_connect(db_url) as conn:
        have = conn.execute("SELECT count(*) FROM django_tasks_hub_taskrun").fetchone()[0]
        tasks = conn.execute("SELECT count(*) FROM django_tasks_hub_task").fetchone()[0]
        if have == n and tasks == n and not rebuild:
            return 0.0
        start = time.perf_counter()
        print(f"filling {name} with {n:,} tasks and {n:,} runs ...", flush=True)
        conn.execute("TRUNCATE django_tasks_hub_taskrun, django_tasks_hub_task CASCADE")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(insert_sql(conn, "django_tasks_hub_task", TASK_COLUMNS, n))
        conn.execute(insert_sql(conn, "django_tasks_hub_taskrun", RUN_COLUMNS, n))
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('django_tasks_hub_taskrun', 'id'), %s)", [n]
        )
        conn.execute("VACUUM ANALYZE django_tasks_hub_task")
        conn.execute("VACUUM ANALYZE django_tasks_hub_taskrun")
        elapsed = time.perf_counter() - start
        print(f"filled in {elapsed:.0f}s", flush=True)
        return elapsed


def timed(fn: Any, repeat: int) -> list[float]:
    """Milliseconds of ``repeat`` calls of ``fn`` after one warm-up call."""
    fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out
