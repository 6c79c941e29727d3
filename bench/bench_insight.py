"""The overview, the stats API and a metrics scrape at a million tasks and a million runs.

    .venv/bin/python bench/bench_insight.py [--rows 1000000] [--repeat 30]

Fills (once, kept) a PostgreSQL database of its own with ``bench.bigdata``'s million tasks and
runs (bulk SQL, a month of work over 20 task names), rebuilds the rollups from all the runs
(the one-off cost a restore would pay, printed), then times through Django's test client, as
a logged-in superuser (server time, no network), p50 / p90 of ``--repeat`` requests:
the admin overview, ``GET /api/stats/``, ``GET /api/metrics`` (which asks the broker too: a
ping that waits its 0.25 s timeout), and the scrape's database part alone. Then the cost of
a fold after 1,000 runs ended since the last read (what a scrape every 15 s pays). The
baseline, measured in the same run: ``count(*)`` of the tasks grouped by status, what an
overview without rollups would run. Goal: under 100 ms p50 for the overview, the stats and
the scrape's database part.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bigdata import ensure_big_database, timed
from bench.common import base_env, percentile

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/hub_bench_insight"
BROKER = "redis://127.0.0.1:6379/4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_INSIGHT_DATABASE_URL", DEFAULT_DB)
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true", help="fill the rows again")
    parser.add_argument(
        "--keep-rollups", action="store_true", help="skip the rebuild of the rollups (kept)"
    )
    opts = parser.parse_args()
    ensure_big_database(opts.db_url, opts.rows, opts.rebuild)
    os.environ.update(base_env("hub", opts.db_url, BROKER))

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from bench.common import machine
    from django_tasks_hub.insight import metrics, rollups
    from django_tasks_hub.models import RunRollup, Task, TaskRun

    start = time.perf_counter()
    folded = 0 if opts.keep_rollups else rollups.rebuild()
    rebuild_s = time.perf_counter() - start
    # What autovacuum does soon after (the journal's thresholds are low, see rollups.py): the
    # million journal entries just folded are dead rows until then.
    with connection.cursor() as cursor:
        for table in ("rollupdelta", "runrollup", "errorrollup", "taskcount"):
            cursor.execute(f"VACUUM ANALYZE django_tasks_hub_{table}")
    user_model = get_user_model()
    user = user_model.objects.filter(username="bench").first()
    if user is None:
        user = user_model.objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)

    def get(url: str) -> None:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.content[:300])

    def baseline() -> None:
        list(Task.objects.values("status").annotate(n=django.db.models.Count("id")))

    rows = {
        "overview (admin)": lambda: get("/admin/django_tasks_hub/task/overview/"),
        "GET /api/stats/": lambda: get("/api/stats/"),
        "GET /api/metrics (with broker)": lambda: get("/api/metrics"),
        "metrics, database part": lambda: metrics.exposition(ask_broker=False),
        "baseline: tasks by status": baseline,
    }
    results = {label: timed(fn, opts.repeat) for label, fn in rows.items()}

    # Runs ending between two reads: 1,000 ends journaled, then one overview folds and reads.
    fold_ms = []
    for _ in range(5):
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE django_tasks_hub_taskrun SET status = 'done', finished_at = now()"
                " WHERE id IN (SELECT id FROM django_tasks_hub_taskrun"
                " WHERE status IN ('pending', 'processing') ORDER BY id DESC LIMIT 1000)"
            )
            moved = cursor.rowcount
        begin = time.perf_counter()
        get("/api/stats/")
        fold_ms.append((time.perf_counter() - begin) * 1000)
    print(machine())
    print(
        f"insight: {Task.objects.count():,} tasks, {TaskRun.objects.count():,} runs,"
        f" {RunRollup.objects.count():,} rollup rows; rebuild from all runs:"
        f" {folded:,} journal entries folded in {rebuild_s:.1f} s"
    )
    print(f"{'what':34} {'p50':>8} {'p90':>8}  goal (<100 ms p50)")
    for label, ms in results.items():
        p50, p90 = percentile(ms, 50), percentile(ms, 90)
        goal = (
            ""
            if label.startswith(("baseline", "GET /api/metrics"))
            else ("met" if p50 < 100 else "MISSED")
        )
        print(f"{label:34} {p50:8.1f} {p90:8.1f}  {goal}")
    ratio = percentile(results["baseline: tasks by status"], 50) / max(
        percentile(results["overview (admin)"], 50), 0.001
    )
    print(f"baseline / overview p50: {ratio:.1f}x")
    print(
        f"stats after ~{moved:,} runs ended since the last read (fold + read), 5 rounds:"
        f" p50 {percentile(fold_ms, 50):.1f} ms, max {max(fold_ms):.1f} ms"
    )


if __name__ == "__main__":
    main()
