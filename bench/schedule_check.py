"""The fire-time check at 1,000 schedules: under 50 ms, so it can run every minute.

    .venv/bin/python bench/schedule_check.py [--schedules 1000] [--db-url postgres://...]

Creates a PostgreSQL database afresh (default ``hub_bench_schedules``), registers N interval
schedules (every minute) from a ``CELERY_BEAT_SCHEDULE`` of N entries, gives each one run sent
on time, and times ``schedules.check()``: with nothing due (the common case of a check every
minute against schedules slower than that), and with every schedule due (each decides one fire
time, on time, against its run; rolled back after each repetition). Baseline of the same run:
loading the N Schedule rows, the least any check must do.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, pg_connect

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/hub_bench_schedules"


class Rollback(Exception):
    pass


CPU: dict[str, float] = {}


def timed(fn: Any, repeat: int) -> float:
    """The median wall time of ``fn()`` in milliseconds (the median CPU time of this process,
    which leaves out the waits for PostgreSQL, goes to ``CPU[fn.__name__]``)."""
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    CPU[getattr(fn, "__name__", "?")] = statistics.median(cpu)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_SCHEDULES_DATABASE_URL", DEFAULT_DB)
    )
    args = parser.parse_args()
    name = args.db_url.rsplit("/", 1)[1]
    with pg_connect(args.db_url, "postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    os.environ.update(DATABASE_URL=args.db_url, DJANGO_SETTINGS_MODULE="testproject.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from django_tasks_hub import schedules
    from django_tasks_hub.models import Schedule, Task, TaskRun
    from testproject.celery import app

    call_command("migrate", verbosity=0)
    n = args.schedules
    app.conf.beat_schedule = {
        f"schedule-{i:05d}": {"task": "demo.add", "schedule": 60.0} for i in range(n)
    }
    t0 = datetime.datetime(2026, 3, 1, 12, tzinfo=datetime.UTC)
    definitions, complete = schedules.configured_definitions()
    schedules.sync(definitions, complete=complete, now=t0)
    tasks, runs = [], []
    for row in Schedule.objects.all():
        broker_id = str(uuid.uuid4())
        tasks.append(
            Task(
                id=broker_id, name="demo.add", broker_id=broker_id, schedule=row.name, status="done"
            )
        )
        runs.append(
            TaskRun(
                task_id=broker_id,
                name="demo.add",
                broker_id=broker_id,
                schedule=row.name,
                schedule_origin="beat",
                status="done",
                queued_at=t0 + datetime.timedelta(seconds=60.2),
                runtime=0.1,
            )
        )
    Task.objects.bulk_create(tasks)
    TaskRun.objects.bulk_create(runs)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    def load() -> None:
        list(Schedule.objects.all())

    def idle() -> None:
        schedules.check(now=t0 + datetime.timedelta(seconds=30), sync_first=False)

    def idle_sync() -> None:
        schedules.check(now=t0 + datetime.timedelta(seconds=30))

    decided: list[int] = []

    def all_due() -> None:
        try:
            with transaction.atomic():
                result = schedules.check(now=t0 + datetime.timedelta(seconds=90), sync_first=False)
                decided.append(result.on_time)
                raise Rollback
        except Rollback:
            pass

    figures = {fn.__name__: timed(fn, args.repeat) for fn in (load, idle, idle_sync, all_due)}
    assert decided and all(d == n for d in decided), decided
    baseline = figures["load"]
    print(f"# {machine()}")
    print(f"# {n} schedules, median of {args.repeat}; the machine is shared and loaded")
    print(f"{'case':<46} {'wall ms':>8} {'x baseline':>11} {'CPU ms':>8}")
    for key, label in (
        ("load", "baseline: load the Schedule rows"),
        ("idle", "check, nothing due"),
        ("idle_sync", "check, nothing due, with sync of the settings"),
        ("all_due", f"check, all due ({n} fire times decided)"),
    ):
        ms = figures[key]
        print(f"{label:<46} {ms:8.1f} {ms / baseline:11.2f} {CPU[key]:8.1f}")


if __name__ == "__main__":
    main()
