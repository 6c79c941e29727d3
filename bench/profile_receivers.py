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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    DEFAULT_BROKER,
    Worker,
    ensure_database,
    publish,
    reset,
    running,
    wait_ends,
)
from bench.profiling import report  # noqa: E402
from bench.throughput import DEFAULT_DB  # noqa: E402


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
        with running(worker):
            wait_ends(opts.broker_url, opts.tasks + 1, worker, opts.timeout)
        print(f"=== {mode}: worker pool children ===")
        print(report(str(out), "worker-"))
        print(f"=== {mode}: publisher ===")
        print(report(str(out), "publisher-", tasks=opts.tasks))


if __name__ == "__main__":
    main()
