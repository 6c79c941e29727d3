"""Where the hub's recording time goes: pyinstrument and SQL counts in publisher and worker.

    .venv/bin/python bench/profile_receivers.py --tasks 2000

Runs the throughput scenario of ``throughput.py`` with profiling on (so its rates are lower
and not comparable), for the hub and for django-celery-results: a pyinstrument profile of
the publisher and of every worker pool child, and the SQL statements each made per task.
Profiles are kept in ``--out`` (default /tmp/hub-bench/profile) as pyinstrument sessions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    DEFAULT_BROKER,
    Worker,
    ensure_database,
    pg_connect,
    publish,
    reset,
    running,
    wait_ends,
)
from bench.profiling import report
from bench.throughput import DEFAULT_DB

TABLE_STATS = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd,
       (SELECT count(*) FROM pg_index i WHERE i.indrelid = s.relid)
FROM pg_stat_user_tables s WHERE relname = ANY(%s) ORDER BY relname"""
TABLES = ["django_tasks_hub_task", "django_tasks_hub_taskrun", "django_celery_results_taskresult"]


def table_stats(db_url: str) -> dict[str, tuple[int, ...]]:
    """Rows inserted, updated, updated in place (HOT) and the index count, by table."""
    time.sleep(1.0)  # Backends report their counters to the statistics at most once a second.
    with pg_connect(db_url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(TABLE_STATS, [TABLES]).fetchall()
    return {r[0]: tuple(int(x) for x in r[1:]) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--modes", default="hub,dcr")
    parser.add_argument("--db-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER))
    parser.add_argument("--db-reuse-max", type=int, default=0)
    parser.add_argument("--out", default="/tmp/hub-bench/profile")
    parser.add_argument("--timeout", type=float, default=300.0)
    opts = parser.parse_args()
    ensure_database(opts.db_url)
    for mode in opts.modes.split(","):
        out = Path(opts.out) / mode
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        env = {"BENCH_PROFILE_DIR": str(out)}
        if opts.db_reuse_max:
            env["BENCH_DB_REUSE_MAX"] = str(opts.db_reuse_max)
        reset(opts.db_url, opts.broker_url)
        publish(
            mode, opts.tasks, opts.db_url, opts.broker_url, env=env,
            profile=str(out),
        )  # fmt: skip
        worker = Worker(mode, opts.db_url, opts.broker_url, env=env)
        before = table_stats(opts.db_url)
        with running(worker):
            wait_ends(opts.broker_url, opts.tasks + 1, worker, opts.timeout)
        after = table_stats(opts.db_url)
        print(
            f"=== {mode}: worker writes per table (an update that is not HOT rewrites every index)"
        )
        for table, (ins, upd, hot, indexes) in after.items():
            b = before.get(table, (0, 0, 0, indexes))
            d_ins, d_upd, d_hot = ins - b[0], upd - b[1], hot - b[2]
            if d_ins or d_upd:
                print(
                    f"  {table:<34} inserted {d_ins:>6}  updated {d_upd:>6}  HOT {d_hot:>6}"
                    f"  ({indexes} indexes)"
                )
        print(f"=== {mode}: worker pool children ===")
        print(report(str(out), "worker-"))
        print(f"=== {mode}: publisher ===")
        print(report(str(out), "publisher-", tasks=opts.tasks))


if __name__ == "__main__":
    main()
