"""The cost of one task's records, write path by write path, without Celery in the way.

    .venv/bin/python bench/write_paths.py --tasks 2000

In one process with one kept connection to PostgreSQL (``hub_bench_writes``, made afresh),
records the publish, start and success of K tasks through:

* ``in-signal``: ``TaskDbPlugin``'s per-event writes (``WRITE_BEHIND: False``, and the
  write-behind path's fallback);
* ``batched``: ``Recorder.write_batch`` as the write-behind thread calls it, a batch of
  ``--batch`` tasks' publishes, then a batch of their starts and ends;
* ``dcr``: django-celery-results' ``store_result`` for the success (its only write);

and times opening a database connection, which Celery's Django fixup does before and after
every task unless ``CELERY_DB_REUSE_MAX`` is set (the write-behind thread keeps its own).
Prints wall and CPU microseconds per task, p50 over rounds, and the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEFAULT_BROKER, base_env, ensure_database, percentile, reset

DEFAULT_WRITES_DB = "postgres://postgres@127.0.0.1:5432/hub_bench_writes"


def events(broker_id: str) -> tuple[Any, Any, Any]:
    from django.utils import timezone

    from django_tasks_hub.events import TaskEvent

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


Clock = dict[str, dict[str, list[tuple[float, float]]]]


def timed(per: Clock, variant: str, step: str, tasks: int, fn: Callable[[], Any]) -> None:
    """Run ``fn``; add its wall and CPU microseconds per task to ``per``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    per.setdefault(variant, {}).setdefault(step, []).append((wall * 1e6 / tasks, cpu * 1e6 / tasks))


def measure(rounds: int, batch: int, per: Clock) -> None:
    """``rounds`` times ``batch`` tasks each way, interleaved, into ``per``."""
    from django.db import connection
    from django_celery_results.backends.database import DatabaseBackend

    from bench.celery_app import app
    from django_tasks_hub.models import Task
    from django_tasks_hub.plugins.db import TaskDbPlugin

    plugin = TaskDbPlugin()
    backend = DatabaseBackend(app=app)
    connection.ensure_connection()
    for _ in range(rounds):
        # Interleaved, so load from the other processes of the machine hits all alike.
        lives = [events(str(uuid.uuid4())) for _ in range(batch)]

        def one_by_one(step: int, lives: list[Any] = lives) -> None:
            for life in lives:
                plugin.recorder.record(life[step])

        timed(per, "in-signal", "publish", batch, lambda f=one_by_one: f(0))
        timed(per, "in-signal", "run", batch, lambda f=one_by_one: (f(1), f(2)))

        lives = [events(str(uuid.uuid4())) for _ in range(batch)]
        queued = [q for q, _, _ in lives]
        ran = [e for _, s, d in lives for e in (s, d)]
        timed(per, "batched", "publish", batch, lambda q=queued: plugin.recorder.write_batch(q))
        timed(per, "batched", "run", batch, lambda r=ran: plugin.recorder.write_batch(r))

        ids = [str(uuid.uuid4()) for _ in range(batch)]
        timed(
            per, "dcr", "run", batch,
            lambda ids=ids: [backend.store_result(t, None, "SUCCESS") for t in ids],
        )  # fmt: skip

        def reconnect() -> None:
            connection.close()
            connection.ensure_connection()

        timed(per, "connect", "run", 1, reconnect)
    done = Task.objects.filter(status="done").count()
    assert done == 2 * rounds * batch, f"expected {2 * rounds * batch} done tasks, found {done}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50, help="tasks per write-behind batch")
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_WRITES_DATABASE_URL", DEFAULT_WRITES_DB)
    )
    opts = parser.parse_args()
    ensure_database(opts.db_url, fresh=True)
    os.environ.update(base_env("hub", opts.db_url, DEFAULT_BROKER))
    import django

    django.setup()
    from bench.common import machine

    print(f"machine: {machine()}")
    print(
        f"write paths: {opts.tasks} tasks, batches of {opts.batch}, one process, "
        "one kept connection (autocommit)"
    )
    reset(opts.db_url, None)  # No broker here: leave the bench's Redis database alone.
    per: Clock = {}
    measure(max(1, opts.tasks // opts.batch), opts.batch, per)
    print(f"{'variant':<11}{'publish':>16}{'start+end':>16}{'all':>16}   us per task, wall / CPU")
    totals: dict[str, tuple[float, float]] = {}
    for variant, steps in per.items():
        p = {
            step: (percentile([w for w, _ in v], 50), percentile([c for _, c in v], 50))
            for step, v in steps.items()
        }
        total = (sum(w for w, _ in p.values()), sum(c for _, c in p.values()))
        totals[variant] = total
        cells = "".join(
            f"{p[s][0]:>9.0f} /{p[s][1]:>5.0f}" if s in p else f"{'-':>16}"
            for s in ("publish", "run")
        )
        print(f"{variant:<11}{cells}{total[0]:>9.0f} /{total[1]:>5.0f}")
    hub, batched, dcr = totals["in-signal"], totals["batched"], totals["dcr"]
    print(
        f"batched / in-signal: wall {batched[0] / hub[0]:.2f}x, CPU {batched[1] / hub[1]:.2f}x; "
        f"batched / dcr: wall {batched[0] / dcr[0]:.2f}x, CPU {batched[1] / dcr[1]:.2f}x; "
        f"a new connection: {totals['connect'][0]:.0f} us"
    )


if __name__ == "__main__":
    main()
