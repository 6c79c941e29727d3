"""History at depth: the first page and a page half a million runs deep, cursor against offset.

    .venv/bin/python bench/history_depth.py

Fills a PostgreSQL database (default ``hub_bench_big``) with one million tasks and runs (once;
kept for later runs, ``--rebuild`` fills it again), then times fetching 50 runs, newest first,
through ``django_tasks_hub.history.get_history`` (keyset cursor) and through offset
pagination on the same QuerySet, at the top and 500,000 runs deep, unfiltered and filtered.
Goal: the deep cursor page within 1.5x of the first page.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bigdata import DEFAULT_BIG_DB, ensure_big_database, timed
from bench.common import base_env, percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_BIG_DATABASE_URL", DEFAULT_BIG_DB)
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print the deep pages' plans")
    opts = parser.parse_args()
    ensure_big_database(opts.db_url, opts.rows, opts.rebuild)
    os.environ.update(base_env("hub", opts.db_url, "redis://127.0.0.1:6379/5"))

    import django

    django.setup()
    from django.db import connection

    from bench.common import machine
    from django_tasks_hub.history import HistoryQuery, encode_cursor, get_history
    from django_tasks_hub.models import TaskRun

    print(f"machine: {machine()}")
    print(f"history at depth: {opts.rows:,} runs, pages of {opts.limit}, p50/p90 of {opts.repeat}")
    limit = opts.limit
    cases: list[tuple[str, dict[str, Any]]] = [
        ("all runs", {}),
        ("name=bench.task_07", {"task": "bench.task_07"}),
        ("status=failed", {"status": "failed"}),
        ("tag=reports", {"tag": "reports"}),
    ]
    header = (
        f"{'query':<20} {'depth':>8} {'cursor p50':>11} {'p90':>7} {'offset p50':>11} {'p90':>7}"
    )
    print(header)
    summary: dict[str, dict[str, float]] = {}
    for label, filters in cases:
        total = get_count(TaskRun, filters, HistoryQuery)
        deep = total // 2
        # The run after which the deep page starts: the cursor a client holds after paging
        # through ``deep`` runs.
        from django_tasks_hub.history import filter_runs

        base = filter_runs(HistoryQuery(**filters), TaskRun.objects.all()).newest_first()
        pivot = base.values_list("id", flat=True)[deep - 1 : deep][0]
        cursor = encode_cursor(pivot)
        row: dict[str, float] = {}
        for depth_label, depth, cur in (("first", 0, ""), ("deep", deep, cursor)):
            query = HistoryQuery(**filters, limit=limit, cursor=cur)
            c = timed(lambda query=query: get_history(query), opts.repeat)
            o = timed(lambda qs=base, depth=depth: list(qs[depth : depth + limit]), opts.repeat)
            page = get_history(HistoryQuery(**filters, limit=limit, cursor=cur)).data
            assert [r.pk for r in page] == [r.pk for r in base[depth : depth + limit]], label
            row[f"cursor_{depth_label}"] = percentile(c, 50)
            row[f"offset_{depth_label}"] = percentile(o, 50)
            print(
                f"{label:<20} {depth:>8,} {percentile(c, 50):>9.2f}ms {percentile(c, 90):>5.2f}ms"
                f" {percentile(o, 50):>9.2f}ms {percentile(o, 90):>5.2f}ms",
                flush=True,
            )
        summary[label] = row
        if opts.explain:
            with connection.cursor() as cur:
                qs_deep = (
                    filter_runs(HistoryQuery(**filters), TaskRun.objects.all())
                    .filter(id__lt=pivot)
                    .newest_first()[:limit]
                )
                sql, params = qs_deep.query.sql_with_params()
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                print("\n".join("    " + r[0] for r in cur.fetchall()))
    # The worst case of a filter the indexes do not serve: a tag no task carries makes the
    # page walk every run (and look up its task) before it can answer "no runs".
    empty = timed(lambda: get_history(HistoryQuery(tag="absent", limit=limit)), 3)
    print(f"{'tag=absent (0 runs)':<20} {0:>8} {percentile(empty, 50):>9.2f}ms (walks every run)")
    print(
        f"\n{'query':<20} {'cursor deep/first':>18} {'offset deep/first':>18}  goal: cursor <= 1.5"
    )
    for label, r in summary.items():
        c = r["cursor_deep"] / r["cursor_first"]
        o = r["offset_deep"] / r["offset_first"]
        print(f"{label:<20} {c:>17.2f}x {o:>17.2f}x  {'met' if c <= 1.5 else 'MISSED'}")


def get_count(model: Any, filters: dict[str, Any], query_cls: Any) -> int:
    from django_tasks_hub.history import filter_runs

    return filter_runs(query_cls(**filters), model.objects.all()).count()


if __name__ == "__main__":
    main()
