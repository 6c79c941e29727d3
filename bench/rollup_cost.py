"""What the rollup triggers add to the recorder's writes: batches with and without them.

    .venv/bin/python bench/rollup_cost.py --tasks 4000

In one process on PostgreSQL (``hub_bench_rollups``, made afresh), writes the publish, start
and success of ``--batch`` tasks as the write-behind thread does (``Recorder.write_batch``: a
batch of publishes, then a batch of starts and ends), round after round, alternately with the
triggers enabled and disabled (``ALTER TABLE ... DISABLE TRIGGER``), so the machine's load hits
both alike. Prints wall and CPU microseconds per task (p50 over rounds) and the ratio, then
the time of a fold of everything journaled.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEFAULT_BROKER, base_env, ensure_database, percentile
from bench.write_paths import events

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/hub_bench_rollups"
TABLES = ("django_tasks_hub_task", "django_tasks_hub_taskrun")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_ROLLUPS_DATABASE_URL", DEFAULT_DB)
    )
    opts = parser.parse_args()
    ensure_database(opts.db_url, fresh=True)
    os.environ.update(base_env("hub", opts.db_url, DEFAULT_BROKER))
    import django

    django.setup()
    from django.db import connection

    from bench.common import machine
    from django_tasks_hub.insight import rollups
    from django_tasks_hub.models import RunRollup
    from django_tasks_hub.plugins.db import TaskDbPlugin

    plugin = TaskDbPlugin()
    connection.ensure_connection()

    def triggers(on: bool) -> None:
        with connection.cursor() as cursor:
            for table in TABLES:
                cursor.execute(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER USER")

    per: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    rounds = max(1, opts.tasks // opts.batch // 2)
    for i in range(rounds * 2):
        on = i % 2 == 0
        triggers(on)
        lives = [events(str(uuid.uuid4())) for _ in range(opts.batch)]
        wall, cpu = time.perf_counter(), time.process_time()
        plugin.recorder.write_batch([q for q, _, _ in lives])
        plugin.recorder.write_batch([e for _, s, d in lives for e in (s, d)])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        per[on].append((wall * 1e6 / opts.batch, cpu * 1e6 / opts.batch))
    triggers(True)
    start = time.perf_counter()
    folded = rollups.fold()
    fold_ms = (time.perf_counter() - start) * 1000
    print(f"machine: {machine()}")
    print(f"rollup triggers: {rounds * opts.batch} tasks each way, batches of {opts.batch}")
    p = {
        on: (percentile([w for w, _ in v], 50), percentile([c for _, c in v], 50))
        for on, v in per.items()
    }
    for on in (False, True):
        label = "triggers on" if on else "triggers off"
        print(f"{label:<14} {p[on][0]:8.0f} us wall / {p[on][1]:6.0f} us CPU per task (p50)")
    print(f"on / off: wall {p[True][0] / p[False][0]:.2f}x (the CPU is the client's: unchanged)")
    rows = RunRollup.objects.span(0).get().ended
    print(f"fold of {folded:,} journal entries: {fold_ms:.1f} ms; all-time runs counted: {rows:,}")


if __name__ == "__main__":
    main()
