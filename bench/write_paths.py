"""The cost of one task's records, write path by write path, without Celery in the way.

    .venv/bin/python bench/write_paths.py --tasks 2000

In one process with one kept connection to PostgreSQL (``hub_bench``), records K tasks'
publish, start and success through:

* ``hub``: ``TaskDbPlugin`` as it is (the code the receivers call);
* ``one-statement``: the same rows and rule-1 conditions written as one SQL statement per
  event in autocommit (a data-modifying CTE: the run and the task in one round trip, no
  BEGIN/COMMIT, no savepoints) -- a proposal, measured here, not the package's code;
* ``dcr``: django-celery-results' ``store_result`` for the success (its only write);

and times opening a database connection, which Celery's Django fixup does before and after
every task unless ``CELERY_DB_REUSE_MAX`` is set. Prints microseconds per task and ratios.
Then drops the indexes that no query needs (the ``_like`` twin of the broker id's unique
index, single-column foreign-key indexes that a composite index or no query covers) and
measures again: every status change rewrites every index of the row (no HOT update is
possible while ``status`` is indexed), so each index costs on every event. Uses its own
database (``hub_bench_writes``), made afresh each run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEFAULT_BROKER, base_env, ensure_database, percentile, reset

DEFAULT_WRITES_DB = "postgres://postgres@127.0.0.1:5432/hub_bench_writes"

# Indexes no hub query uses, by the column they cover: a status change has to write them all.
REDUNDANT = """
SELECT indexname, indexdef FROM pg_indexes
WHERE tablename IN ('django_tasks_hub_task', 'django_tasks_hub_taskrun')
  AND (indexdef LIKE '%%varchar_pattern_ops%%'
       OR indexdef ~ 'btree \\((created_by_id|canceled_by_id|triggered_by_id|task_id)\\)$')
"""


def events(broker_id: str) -> tuple[Any, Any, Any]:
    from django.utils import timezone

    from django_tasks_hub.plugins.base import TaskEvent

    now = timezone.now()
    common = {"broker_id": broker_id, "name": "bench.noop", "retries": 0}
    queued = TaskEvent(
        kind="queued", timestamp=now, args=(), kwargs={},
        options={"routing_key": "celery"}, **common,
    )  # fmt: skip
    started = TaskEvent(
        kind="started", timestamp=now + datetime.timedelta(milliseconds=5),
        worker="celery@bench", **common,
    )  # fmt: skip
    succeeded = TaskEvent(
        kind="succeeded", timestamp=now + datetime.timedelta(milliseconds=6), result=None,
        runtime=0.001, worker="celery@bench", **common,
    )  # fmt: skip
    return queued, started, succeeded


def measure(n: int, per: dict[str, dict[str, list[float]]]) -> None:
    """Record ``n`` tasks each way, interleaved, adding microseconds to ``per``."""
    from django.db import connection
    from django_celery_results.backends.database import DatabaseBackend

    from bench.celery_app import app
    from bench.one_statement import OneStatement
    from django_tasks_hub.models import Task
    from django_tasks_hub.plugins.db import TaskDbPlugin

    plugin = TaskDbPlugin()
    one = OneStatement()
    backend = DatabaseBackend(app=app)
    done_before = Task.objects.filter(status="done").count()

    def clock(variant: str, step: str, fn: Any, arg: Any) -> None:
        start = time.perf_counter()
        fn(arg)
        per.setdefault(variant, {}).setdefault(step, []).append((time.perf_counter() - start) * 1e6)

    connection.ensure_connection()
    for i in range(n):
        # Interleaved, so load from the other processes of the machine hits all alike.
        q, s, d = events(str(uuid.uuid4()))
        clock("hub", "publish", plugin.record_queued, q)
        clock("hub", "start", plugin.record_transition, s)
        clock("hub", "success", plugin.record_transition, d)
        q, s, d = events(str(uuid.uuid4()))
        clock("one-statement", "publish", one.queued_or_fail, q)
        clock("one-statement", "start", one.transition_or_fail, s)
        clock("one-statement", "success", one.transition_or_fail, d)
        clock("dcr", "success", lambda tid: backend.store_result(tid, None, "SUCCESS"),
              str(uuid.uuid4()))  # fmt: skip
        if i % 10 == 0:

            def reconnect(_: Any) -> None:
                connection.close()
                connection.ensure_connection()

            clock("connect", "open", reconnect, None)
    done = Task.objects.filter(status="done").count() - done_before
    assert done == 2 * n, f"expected {2 * n} more done tasks, found {done}"


def summarize(per: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Print p50 microseconds per step and variant; return the worker-side total of each."""
    steps = "".join(f"{k:>10}" for k in ("publish", "start", "success", "worker", "all"))
    print(f"{'variant':<14}{steps}  (p50 us)")
    totals: dict[str, float] = {}
    for variant, steps in per.items():
        p = {k: percentile(v, 50) for k, v in steps.items()}
        worker = p.get("start", 0) + p.get("success", 0) + p.get("open", 0)
        totals[variant] = worker
        cells = " ".join(
            f"{p[k]:>9.0f}" if k in p else f"{'-':>9}" for k in ("publish", "start", "success")
        )
        allv = sum(p.values())
        print(f"{variant:<14} {cells} {worker:>9.0f} {allv:>9.0f}")
    print(
        f"worker-side writes per task: one-statement / hub = "
        f"{totals['one-statement'] / totals['hub']:.2f}; hub / dcr = "
        f"{totals['hub'] / totals['dcr']:.2f}; one-statement / dcr = "
        f"{totals['one-statement'] / totals['dcr']:.2f}; a connection costs "
        f"{totals['connect']:.0f} us (Celery opens 1-2 per task without CELERY_DB_REUSE_MAX)"
    )
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_WRITES_DATABASE_URL", DEFAULT_WRITES_DB)
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the index sets")
    parser.add_argument("--keep-indexes", action="store_true", help="only the migrations' indexes")
    opts = parser.parse_args()
    ensure_database(opts.db_url, fresh=True)
    os.environ.update(base_env("hub", opts.db_url, DEFAULT_BROKER))
    import django

    django.setup()
    from bench.common import machine, pg_connect

    print(f"machine: {machine()}")
    print(f"write paths: {opts.tasks} tasks, one process, one kept connection (autocommit)")
    reset(opts.db_url, None)  # No broker here: leave the bench's Redis database alone.
    with pg_connect(opts.db_url) as conn:
        redundant = conn.execute(REDUNDANT).fetchall()
    full: dict[str, dict[str, list[float]]] = {}
    lean: dict[str, dict[str, list[float]]] = {}
    # Rounds alternate between the two index sets, so load from other processes hits both.
    rounds = 1 if opts.keep_indexes else max(1, opts.rounds)
    for _ in range(rounds):
        measure(opts.tasks // rounds, full)
        if opts.keep_indexes:
            break
        with pg_connect(opts.db_url) as conn:
            for name, _ in redundant:
                conn.execute(f'DROP INDEX "{name}"')
        measure(opts.tasks // rounds, lean)
        with pg_connect(opts.db_url) as conn:
            for _, definition in redundant:
                conn.execute(definition)
    print("\n-- with the indexes of the migrations")
    full_totals = summarize(full)
    if opts.keep_indexes:
        return
    print(f"\n-- without {len(redundant)} unused indexes: {', '.join(n for n, _ in redundant)}")
    lean_totals = summarize(lean)
    for variant in ("hub", "one-statement", "dcr"):
        note = " (control: its table keeps its indexes; this is the run's noise)"
        print(
            f"{variant}: worker-side writes without those indexes = "
            f"{lean_totals[variant] / full_totals[variant]:.2f}x the time with them"
            f"{note if variant == 'dcr' else ''}"
        )


if __name__ == "__main__":
    main()
