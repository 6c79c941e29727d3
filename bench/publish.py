"""Publisher process of the benchmarks: sends N no-op tasks and prints what it measured.

Run by the bench scripts with ``BENCH_MODE`` set, so the hub's publish receiver runs (or not)
exactly as in a project: ``python -m bench.publish --n 5000``.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="tasks/s; 0 = as fast as possible")
    parser.add_argument(
        "--profile", default="", help="write a pyinstrument profile and SQL counts into this folder"
    )
    opts = parser.parse_args()

    from bench.celery_app import app  # noqa: F401  (configures Django and Celery)
    from bench.tasks import noop
    from django_tasks_hub import flush

    # One warm-up publish outside the timing: the connection to the broker and the database.
    noop.apply_async(task_id=f"warmup-{uuid.uuid4()}")
    sent_at: dict[str, float] = {}
    if opts.profile:
        from bench import profiling

        profiling.start("publisher-")
    start = time.perf_counter()
    for i in range(opts.n):
        if opts.rate:
            due = start + i / opts.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        task_id = str(uuid.uuid4())
        sent_at[task_id] = time.time()
        noop.apply_async(task_id=task_id)
    # Counted in the publish time: the hub's write-behind buffer holds the last batch until
    # it is written (no-op in the other modes).
    flush(timeout=60)
    elapsed = time.perf_counter() - start
    if opts.profile:
        profiling.stop(opts.profile)
    print(json.dumps({"n": opts.n, "publish_s": elapsed, "first_sent": min(sent_at.values())}))


if __name__ == "__main__":
    main()
