"""Throughput and recording latency: bare Celery, django-celery-results and django-tasks-hub.

    .venv/bin/python bench/throughput.py --tasks 5000

For each mode, in one run and on the same PostgreSQL + Redis: publish N no-op tasks from a
publisher process (its own, so the hub's publish receiver runs there as in a project), then
start a real ``celery worker`` (prefork, 2 children, the same settings in every mode) and let
it drain the queue. Reports publish rate, worker rate (first to last task end) and the
combined rate N / (publish time + drain time), with ratios against bare Celery and
django-celery-results measured in the same run (``--modes`` also takes ``hubsync``: the hub
writing each event in its signal, ``WRITE_BEHIND: False``; and ``hub@0.1``: the hub with a
``FLUSH_INTERVAL`` of 0.1 s). Then, for the hub, the recording latency:
tasks published at a steady pace while a poller watches for each task's row to show ``done``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    DEFAULT_BROKER,
    PYTHON,
    ROOT,
    Worker,
    base_env,
    end_times,
    ensure_database,
    median,
    percentile,
    pg_connect,
    pg_stats,
    publish,
    reset,
    running,
    stats_delta,
    wait_ends,
)
from bench.journal_cost import journal_line

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/hub_bench"
MODES = ("bare", "dcr", "hub")


def count_recorded(mode: str, db_url: str) -> int:
    """How many tasks the mode's tables show as finished successfully."""
    if mode == "bare":
        return -1
    with pg_connect(db_url) as conn:
        if mode.startswith("hub"):
            sql = "SELECT count(*) FROM django_tasks_hub_task WHERE status = 'done'"
        else:
            sql = "SELECT count(*) FROM django_celery_results_taskresult WHERE status = 'SUCCESS'"
        return int(conn.execute(sql).fetchone()[0])


def run_mode(mode: str, opts: argparse.Namespace, extra_env: dict[str, str]) -> dict[str, Any]:
    """Publish then drain ``opts.tasks`` tasks in ``mode``; return the figures."""
    n = opts.tasks
    reset(opts.db_url, opts.broker_url)
    time.sleep(1.0)  # Let PostgreSQL flush the reset's statistics before the first snapshot.
    s0 = pg_stats(opts.db_url)
    pub = publish(mode, n, opts.db_url, opts.broker_url, env=extra_env)
    time.sleep(1.0)
    s1 = pg_stats(opts.db_url)
    worker = Worker(mode, opts.db_url, opts.broker_url, opts.pool, opts.concurrency, env=extra_env)
    with running(worker):
        # n tasks plus the publisher's warm-up task.
        wait_ends(opts.broker_url, n + 1, worker, opts.timeout)
        last_end_seen = time.time()
        recorded = count_recorded(mode, opts.db_url)
        deadline = time.monotonic() + 60
        while mode != "bare" and recorded < n + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            recorded = count_recorded(mode, opts.db_url)
        settle = time.time() - last_end_seen
    time.sleep(1.5)  # Sessions are counted when they end; the worker has just stopped.
    s2 = pg_stats(opts.db_url)
    ends = [t for k, t in end_times(opts.broker_url).items() if not k.startswith("warmup")]
    drain_s = max(ends) - min(ends)
    publish_s = pub["publish_s"]
    worker_db = stats_delta(s1, s2)
    return {
        "mode": mode,
        "n": n,
        "publish_s": publish_s,
        "drain_s": drain_s,
        "publish_rate": n / publish_s,
        "worker_rate": (n - 1) / drain_s,
        "combined_rate": n / (publish_s + drain_s),
        "recorded": recorded,
        "settle_s": settle,
        "publish_db": {k: v / n for k, v in stats_delta(s0, s1).items()},
        "worker_db": {k: v / n for k, v in worker_db.items()},
    }


def run_latency(opts: argparse.Namespace, extra_env: dict[str, str]) -> dict[str, Any]:
    """Hub only: tasks at a steady pace; time from each task's end to its row showing done."""
    n = opts.latency_tasks
    reset(opts.db_url, opts.broker_url)
    worker = Worker("hub", opts.db_url, opts.broker_url, opts.pool, opts.concurrency, env=extra_env)
    seen: dict[str, float] = {}
    with running(worker):
        args = [PYTHON, "-m", "bench.publish", "--n", str(n), "--rate", str(opts.latency_rate)]
        env = base_env("hub", opts.db_url, opts.broker_url, **extra_env)
        pub = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + opts.timeout
            with pg_connect(opts.db_url) as conn:
                while len(seen) < n + 1 and time.monotonic() < deadline:
                    ends = end_times(opts.broker_url)
                    pending = [k for k in ends if k not in seen]
                    if pending:
                        rows = conn.execute(
                            "SELECT broker_id FROM django_tasks_hub_task"
                            " WHERE broker_id = ANY(%s) AND status = 'done'",
                            [pending],
                        ).fetchall()
                        now = time.time()
                        for (broker_id,) in rows:
                            seen[broker_id] = now
                    if not worker.alive():
                        raise RuntimeError(f"worker died:\n{worker.tail()}")
                    time.sleep(0.002)
        finally:
            pub.wait(60)
    ends = end_times(opts.broker_url)
    lat = [(seen[k] - ends[k]) * 1000 for k in seen if k in ends and not k.startswith("warmup")]
    return {
        "n": n,
        "rate": opts.latency_rate,
        "seen": len(lat),
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median is reported")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--db-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER))
    parser.add_argument(
        "--db-reuse-max",
        type=int,
        default=0,
        help="set CELERY_DB_REUSE_MAX (Celery closes connections per task without)",
    )
    parser.add_argument("--latency-tasks", type=int, default=500, help="0 skips the latency run")
    parser.add_argument("--latency-rate", type=float, default=50.0, help="tasks/s while polling")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", default="", help="also write the figures to this file")
    opts = parser.parse_args()  # fmt: skip
    modes = [m.strip() for m in opts.modes.split(",") if m.strip()]
    extra_env = {"BENCH_DB_REUSE_MAX": str(opts.db_reuse_max)} if opts.db_reuse_max else {}

    from bench.common import machine

    print(f"machine: {machine()}")
    print(
        f"throughput: {opts.tasks} no-op tasks, pool {opts.pool} x{opts.concurrency}, "
        f"PostgreSQL {opts.db_url.rsplit('/', 1)[-1]} + Redis {opts.broker_url}, "
        f"CELERY_DB_REUSE_MAX={opts.db_reuse_max or 'unset'}, {opts.repeat} round(s)"
    )
    ensure_database(opts.db_url)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for round_ in range(opts.repeat):
        for mode in modes:
            result = run_mode(mode, opts, extra_env)
            runs[mode].append(result)
            print(
                f"  round {round_ + 1} {mode:<7}: publish {result['publish_rate']:7.0f}/s  "
                f"worker {result['worker_rate']:7.0f}/s  combined {result['combined_rate']:7.0f}/s"
                f"  recorded {result['recorded']}",
                flush=True,
            )
    summary = {
        m: {
            key: median([r[key] for r in rs])
            for key in ("publish_rate", "worker_rate", "combined_rate", "settle_s")
        }
        | {
            "publish_db": {
                k: median([r["publish_db"][k] for r in rs]) for k in rs[0]["publish_db"]
            },
            "worker_db": {k: median([r["worker_db"][k] for r in rs]) for k in rs[0]["worker_db"]},
        }
        for m, rs in runs.items()
    }
    print()
    header = f"{'mode':<7} {'publish/s':>10} {'worker/s':>9} {'combined/s':>11}"
    for base in ("bare", "dcr"):
        if base in summary:
            header += f" {'x ' + base + ' (pub/wrk/comb)':>24}"
    print(header)
    for mode, s in summary.items():
        line = (
            f"{mode:<7} {s['publish_rate']:>10.0f} {s['worker_rate']:>9.0f} "
            f"{s['combined_rate']:>11.0f}"
        )
        for base in ("bare", "dcr"):
            if base in summary:
                b = summary[base]
                line += (
                    f"   {s['publish_rate'] / b['publish_rate']:5.2f}/"
                    f"{s['worker_rate'] / b['worker_rate']:4.2f}/"
                    f"{s['combined_rate'] / b['combined_rate']:4.2f}       "
                )
        print(line)
    # The same ratio taken round by round (each mode against the baseline measured next to
    # it, seconds apart) and its median: steadier than the ratio of medians on a machine
    # whose speed drifts from minute to minute.
    for base in ("bare", "dcr", "hub+nocost"):
        if base not in runs or len(runs) < 2:
            continue
        print(f"\ncombined x {base}, round by round -> median:")
        for mode, rs in runs.items():
            if mode == base:
                continue
            pairs = zip(rs, runs[base], strict=True)
            ratios = [r["combined_rate"] / b["combined_rate"] for r, b in pairs]
            rounds = " ".join(f"{x:.2f}" for x in ratios)
            print(f"  {mode:<7} {rounds} -> {median(ratios):.2f}")
    print("\nPostgreSQL work per task (pg_stat_database deltas / N):")
    print(f"{'mode':<7} {'phase':<8} {'commits':>8} {'sessions':>9} {'inserted':>9} {'updated':>8}")
    for mode, s in summary.items():
        for phase in ("publish", "worker"):
            d = s[f"{phase}_db"]
            print(
                f"{mode:<7} {phase:<8} {d['commits']:>8.2f} {d['sessions']:>9.2f} "
                f"{d['inserted']:>9.2f} {d['updated']:>8.2f}"
            )
    if "hub" in modes:
        print(f"\n{journal_line()}")
    latency = None
    if "hub" in modes and opts.latency_tasks:
        latency = run_latency(opts, extra_env)
        print(
            f"\nrecording latency (hub, {latency['seen']} tasks at {latency['rate']:.0f}/s, "
            f"task end -> row shows done, polled every ~2 ms): p50 {latency['p50_ms']:.1f} ms, "
            f"p90 {latency['p90_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, "
            f"max {latency['max_ms']:.1f} ms"
        )
    if opts.json:
        Path(opts.json).write_text(
            json.dumps({"runs": runs, "summary": summary, "latency": latency}, indent=2)
        )


if __name__ == "__main__":
    main()
