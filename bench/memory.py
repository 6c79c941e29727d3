"""Worker memory over 50,000 tasks, with the hub's receivers and without.

    .venv/bin/python bench/memory.py --tasks 50000

For each mode (bare Celery, then the hub) a real ``celery worker`` (prefork, 2 children)
runs N no-op tasks while a publisher process sends them; the RSS of the worker's main process
and of each pool child is sampled from /proc every half second. Reports the peak, the RSS
once 10% of the tasks are done (warm) and at the end, and the growth between the two: a
leak shows as growth that keeps rising with N; a bounded cache as a fixed step.
"""

from __future__ import annotations

import argparse
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
    ensure_database,
    redis_client,
    reset,
    running,
    tree_rss,
)
from bench.throughput import DEFAULT_DB

MB = 1024 * 1024


def run(mode: str, opts: argparse.Namespace) -> dict[str, Any]:
    n = opts.tasks
    reset(opts.db_url, opts.broker_url)
    client = redis_client(opts.broker_url)
    extra = {"BENCH_DB_REUSE_MAX": str(opts.db_reuse_max)} if opts.db_reuse_max else {}
    worker = Worker(mode, opts.db_url, opts.broker_url, opts.pool, opts.concurrency, env=extra)
    samples: list[tuple[float, int, dict[int, int]]] = []
    start = time.monotonic()
    with running(worker):
        parent = worker.pid
        time.sleep(3)  # Let the worker start its children before the first sample.
        env = base_env(mode, opts.db_url, opts.broker_url, **extra)
        args = [PYTHON, "-m", "bench.publish", "--n", str(n)]
        pub = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + opts.timeout
            while True:
                done = client.hlen("bench:ends")
                samples.append((time.monotonic() - start, done, tree_rss(worker.pid)))
                if done >= n + 1:
                    break
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"stopped at {done}/{n}:\n{worker.tail()}")
                time.sleep(opts.interval)
        finally:
            pub.wait(60)
    return summarize(mode, n, samples, parent)


def summarize(
    mode: str, n: int, samples: list[tuple[float, int, dict[int, int]]], parent: int
) -> dict[str, Any]:
    def children(rss: dict[int, int]) -> int:
        return sum(v for pid, v in rss.items() if pid != parent)

    def at(fraction: float) -> dict[int, int]:
        for _, done, rss in samples:
            if done >= fraction * n:
                return rss
        return samples[-1][2]

    warm, end = at(0.1), samples[-1][2]
    peak_total = max(sum(rss.values()) for _, _, rss in samples)
    peak_child = max(
        (v for _, _, rss in samples for pid, v in rss.items() if pid != parent), default=0
    )
    return {
        "mode": mode,
        "n": n,
        "seconds": samples[-1][0],
        "peak_total_mb": peak_total / MB,
        "peak_child_mb": peak_child / MB,
        "parent_warm_mb": warm.get(parent, 0) / MB,
        "parent_end_mb": end.get(parent, 0) / MB,
        "children_warm_mb": children(warm) / MB,
        "children_mid_mb": children(at(0.5)) / MB,
        "children_end_mb": children(end) / MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--modes", default="bare,hub")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--db-reuse-max",
        type=int,
        default=0,
        help="set CELERY_DB_REUSE_MAX (faster, so 50,000 hub tasks fit in minutes)",
    )
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--db-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER))
    parser.add_argument("--timeout", type=float, default=900.0)
    opts = parser.parse_args()
    from bench.common import machine

    print(f"machine: {machine()}")
    print(
        f"memory: {opts.tasks:,} no-op tasks, pool {opts.pool} x{opts.concurrency}, RSS from /proc,"
        f" CELERY_DB_REUSE_MAX={opts.db_reuse_max or 'unset'}"
    )
    ensure_database(opts.db_url)
    results = []
    for mode in opts.modes.split(","):
        r = run(mode, opts)
        results.append(r)
        print(
            f"  {mode:<4}: {r['seconds']:.0f}s, peak total {r['peak_total_mb']:.1f} MB, "
            f"peak child {r['peak_child_mb']:.1f} MB, children {r['children_warm_mb']:.1f} MB "
            f"at 10% -> {r['children_mid_mb']:.1f} at 50% -> {r['children_end_mb']:.1f} at 100%, "
            f"main {r['parent_warm_mb']:.1f} -> {r['parent_end_mb']:.1f} MB",
            flush=True,
        )
    if len(results) > 1:
        base = results[0]
        growth_header = "children growth 10%->100%"
        print(f"\n{'mode':<5} {'peak total':>11} {'x ' + base['mode']:>8} {growth_header:>27}")
        for r in results:
            growth = r["children_end_mb"] - r["children_warm_mb"]
            ratio = r["peak_total_mb"] / base["peak_total_mb"]
            print(
                f"{r['mode']:<5} {r['peak_total_mb']:>8.1f} MB {ratio:>7.2f}x {growth:>+24.1f} MB"
            )


if __name__ == "__main__":
    main()
