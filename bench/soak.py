"""Soak: thousands of tasks with failures, retries and slow ones while a worker is SIGKILLed.

    .venv/bin/python bench/soak.py                 # 5,000 tasks on PostgreSQL + Redis
    .venv/bin/python bench/soak.py --tasks 20000 --workers 3 --concurrency 6

It starts ``--workers`` Celery workers, publishes the tasks, kills one worker (its main
process and its pool, as when a machine dies) once enough tasks have ended and it is running
some, starts a new worker, waits for Redis to hand out again the messages the dead worker had
not acknowledged, runs reconcile, and prints the counts. It fails (exit 1) unless every task
is terminal, none is processing, the number of runs equals the number of attempts, and every
task that a ledger outside the hub (each task's end, appended by the workers) says ended is
recorded with that outcome, after the dead worker's journal is replayed.

Workers run with ``task_acks_late`` and ``task_reject_on_worker_lost`` (the settings
docs/operations.md recommends), so the attempts the dead worker was running come back as
``redelivered`` runs. ``--acks-early`` uses Celery's default instead: those attempts are then
gone, reconcile marks them ``lost``, and a message the dead worker had acknowledged but not
started yet is gone without a trace, which leaves its task ``pending`` (see "Known limits").
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/tasks_hub_soak"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"
#: Seconds after which Redis hands out again a message whose worker died before running it.
VISIBILITY_TIMEOUT = 8
#: The mix of task kinds: weight, and what the task does.
KINDS = {"ok": 60, "slow": 10, "fail": 10, "retry": 15, "retry_out": 5}


def _setup_django(database_url: str, broker_url: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    os.environ["DATABASE_URL"] = database_url
    os.environ["CELERY_BROKER_URL"] = broker_url
    import django

    django.setup()


def _register_tasks() -> Any:
    """The soak's one task, registered on the test project's Celery app."""
    from celery import shared_task

    @shared_task(name="soak.job", bind=True, max_retries=2)
    def job(self: Any, kind: str, duration: float) -> str:
        if duration:
            time.sleep(duration)
        if kind == "fail":
            raise ValueError("soak: this task always fails")
        if kind == "retry" and self.request.retries < 2:
            raise self.retry(exc=RuntimeError("soak: not yet"), countdown=0.2)
        if kind == "retry_out":
            raise self.retry(exc=RuntimeError("soak: never works"), countdown=0.1)
        return kind

    return job


# -- the worker side ----------------------------------------------------------------------------


def worker_main(argv: list[str]) -> None:
    """``soak.py worker``: a Celery worker with Redis options that make lost messages return."""
    _setup_django(os.environ["DATABASE_URL"], os.environ["CELERY_BROKER_URL"])
    from testproject.celery import app

    app.conf.task_acks_late = app.conf.task_reject_on_worker_lost = (
        os.environ.get("TASKS_HUB_SOAK_ACKS_EARLY") != "1"
    )
    app.conf.broker_transport_options = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
    _register_tasks()
    app.worker_main(["worker", "-l", "WARNING", "--without-gossip", "--without-mingle", *argv])


# -- the driver side ----------------------------------------------------------------------------


class Worker:
    """One ``soak.py worker`` process."""

    def __init__(self, name: str, queue: str, concurrency: int, env: dict[str, str], log: Path):
        self.name = name
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "worker", "-Q", queue, "-n", name, "-c", str(concurrency)],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def pool(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(entry))
        return pids

    def kill(self) -> None:
        """SIGKILL the main process and its pool at once: no handler runs anywhere."""
        for pid in [*self.pool(), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def counts() -> dict[str, int]:
    """Every figure the soak checks, from the database."""
    from django.db.models import Count, Sum

    from django_tasks_hub.models import Task, TaskRun
    from django_tasks_hub.states import TERMINAL_STATUSES

    by_status = collections.Counter(
        dict(Task.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    )
    run_status = collections.Counter(
        dict(
            TaskRun.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
        )
    )
    total = sum(by_status.values())
    return {
        "tasks": total,
        **{status: by_status.get(status, 0) for status in ("done", "failed", "lost", "canceled")},
        "not_terminal": total - sum(by_status[s] for s in TERMINAL_STATUSES),
        "processing": by_status.get("processing", 0),
        "runs": sum(run_status.values()),
        "runs_open": run_status.get("pending", 0) + run_status.get("processing", 0),
        "runs_lost": run_status.get("lost", 0),
        "runs_redelivered": TaskRun.objects.filter(trigger="redelivered").count(),
        "attempts": Task.objects.aggregate(n=Sum("attempts"))["n"] or 0,
    }


def _check_ledger(path: Path, out: IO[str]) -> tuple[int, int]:
    """How many tasks the ledger says ended, and how many of them the hub records wrongly
    (a success not ``done``, a last failure not ``failed``)."""
    from django_tasks_hub.models import Task
    from testproject import ledger

    want = {"SUCCESS": "done", "FAILURE": "failed"}
    entries = {i: s for i, s in ledger.read(str(path)).items() if s in want}
    got = dict(Task.objects.filter(broker_id__in=entries).values_list("broker_id", "status"))
    wrong = [i for i, state in entries.items() if got.get(i) != want[state]]
    for broker_id in wrong[:10]:
        out.write(f"ledger: {broker_id} {entries[broker_id]}, hub: {got.get(broker_id)}\n")
    return len(entries), len(wrong)


def _wait(
    what: str,
    check: Any,
    timeout: float,
    out: IO[str],
    interval: float = 0.5,
    stall: float | None = None,
) -> dict[str, int]:
    """Poll :func:`counts` until ``check`` passes, ``timeout`` passes, or (with ``stall``)
    nothing has changed for ``stall`` seconds."""
    deadline = time.monotonic() + timeout
    last, changed = None, time.monotonic()
    while True:
        now = counts()
        if check(now):
            return now
        if now != last:
            last, changed = now, time.monotonic()
        stalled = stall is not None and time.monotonic() - changed > stall
        if time.monotonic() > deadline or stalled:
            from django_tasks_hub.models import Task
            from django_tasks_hub.states import ACTIVE_STATUSES

            why = (
                f"nothing changed for {stall:.0f}s"
                if stalled
                else f"timed out after {timeout:.0f}s"
            )
            out.write(f"{why} waiting for {what}: {now}\n")
            stuck = Task.objects.filter(status__in=ACTIVE_STATUSES).values_list(
                "pk", "status", "retries", "attempts", "worker"
            )
            for row in stuck[:10]:
                out.write(f"  still active: {row}\n")
            return now
        time.sleep(interval)


def run(
    *,
    tasks: int = 5000,
    database_url: str = DEFAULT_DB,
    broker_url: str = DEFAULT_BROKER,
    workers: int = 2,
    concurrency: int = 4,
    seed: int = 1,
    kill_after: float = 0.4,
    timeout: float = 900.0,
    reset: bool = True,
    acks_late: bool = True,
    log_dir: Path | None = None,
    out: IO[str] = sys.stdout,
) -> dict[str, int]:
    """Run the soak and return the final counts (see :func:`counts`)."""
    from django.conf import settings

    if not settings.configured:
        _setup_django(database_url, broker_url)
    from django.core.management import call_command

    from django_tasks_hub.models import Task
    from django_tasks_hub.reconcile import reconcile
    from django_tasks_hub.recorder.journal import replay_dead_journals
    from django_tasks_hub.states import ACTIVE_STATUSES
    from testproject.celery import app

    job = _register_tasks()
    if reset:
        call_command("migrate", verbosity=0)
        Task.objects.all().delete()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tasks-hub-soak-"))
    queue = f"soak-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url}
    env["TASKS_HUB_SOAK_ACKS_EARLY"] = "0" if acks_late else "1"
    # The ledger outside the hub: each task end, appended by the workers after the hub's
    # receivers had it (testproject/ledger.py).
    ledger_path = log_dir / "ledger"
    env["TASKS_HUB_TEST_LEDGER"] = str(ledger_path)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    started: list[Worker] = []

    def start(n: int) -> Worker:
        name = f"{queue}-{n}@%h"
        w = Worker(name, queue, concurrency, env, log_dir / f"worker-{n}.log")
        started.append(w)
        return w

    rng = random.Random(seed)
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=tasks)
    t0 = time.monotonic()
    try:
        pool = [start(n) for n in range(workers)]
        durations = [
            rng.uniform(0.3, 1.5) if kind == "slow" else rng.uniform(0, 0.02) for kind in kinds
        ]

        mode = "acks_late" if acks_late else "acks early"

        def publish() -> None:
            # In its own thread, so the kill below lands while tasks are still coming in.
            from django.db import connections

            publish_t0 = time.monotonic()
            try:
                for kind, duration in zip(kinds, durations, strict=True):
                    job.apply_async((kind, round(duration, 3)), queue=queue)
            finally:
                connections.close_all()
            publish_s = time.monotonic() - publish_t0
            out.write(
                f"published {tasks} tasks in {publish_s:.1f}s ({tasks / publish_s:.0f}/s) to "
                f"{workers} workers x {concurrency} ({mode})\n"
            )

        publisher = threading.Thread(target=publish, name="soak-publisher")
        publisher.start()
        doomed = pool[0]
        doomed_host = doomed.name.split("@")[0]

        def doomed_busy(c: dict[str, int]) -> bool:
            ended = c["tasks"] - c["not_terminal"]
            busy = Task.objects.filter(
                status="processing", worker__startswith=doomed_host + "@"
            ).exists()
            return ended >= tasks * kill_after and busy

        _wait("the worker to kill to be busy", doomed_busy, timeout, out, 0.05)
        doomed.kill()
        before = counts()
        out.write(
            f"killed worker 0 (SIGKILL, main process and pool) after "
            f"{time.monotonic() - t0:.1f}s with {before['tasks'] - before['not_terminal']} "
            "tasks ended\n"
        )
        start(workers)

        # Everything ends except the attempts that died with the worker; the messages it had
        # reserved but not started come back after the visibility timeout.
        def settled(c: dict[str, int]) -> bool:
            stuck = Task.objects.filter(status__in=ACTIVE_STATUSES).exclude(
                status="processing", worker__startswith=doomed_host + "@"
            )
            return c["tasks"] == tasks and not stuck.exists()

        publisher.join()
        # A message lost for good (see --acks-early) would keep this waiting: stop when nothing
        # has moved for well over the time Redis takes to hand out the dead worker's messages.
        _wait("the live workers to finish", settled, timeout, out, stall=VISIBILITY_TIMEOUT * 4)
        # The dead worker's journals (what reconcile will do first): the live workers replay
        # them when they start recording; this catches any they had not got to.
        replayed = replay_dead_journals()
        out.write(f"replayed {replayed} journaled events of dead processes\n")
        result = reconcile(grace=0, timeout=2.0, app=app)
        out.write(
            f"reconcile marked {len(result.lost)} run(s) lost; workers gone: "
            f"{', '.join(result.workers_gone) or 'none'}\n"
        )
        final = _wait("every task to end", lambda c: c["not_terminal"] == 0, 60, out)
        final["ledger_ended"], final["ledger_wrong"] = _check_ledger(ledger_path, out)
        final["seconds"] = round(time.monotonic() - t0)
    finally:
        for w in started:
            w.stop()
    width = max(len(k) for k in final)
    for key, value in final.items():
        out.write(f"{key:>{width}}: {value}\n")
    ok = (
        final["tasks"] == tasks
        and final["not_terminal"] == 0
        and final["processing"] == 0
        and final["runs"] == final["attempts"]
        and final["ledger_wrong"] == 0
    )
    out.write(("OK" if ok else "FAILED") + f": worker logs in {log_dir}\n")
    return final


def _ensure_database(url: str) -> None:
    """Create the soak's PostgreSQL database when it is missing."""
    from urllib.parse import urlparse

    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> int:
    if sys.argv[1:2] == ["worker"]:
        worker_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--broker-url", default=DEFAULT_BROKER)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--acks-early",
        action="store_true",
        help="Celery's default acknowledgement instead of acks_late + reject_on_worker_lost.",
    )
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        parser.error("the soak runs on PostgreSQL: pass --database-url postgres://...")
    _ensure_database(args.database_url)
    buffer = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, s: str) -> int:
            sys.stdout.write(s)
            sys.stdout.flush()
            return buffer.write(s)

    final = run(
        tasks=args.tasks,
        database_url=args.database_url,
        broker_url=args.broker_url,
        workers=args.workers,
        concurrency=args.concurrency,
        seed=args.seed,
        timeout=args.timeout,
        acks_late=not args.acks_early,
        out=Tee(),
    )
    ok = final["not_terminal"] == 0 and final["processing"] == 0
    return 0 if ok and final["runs"] == final["attempts"] else 1


if __name__ == "__main__":
    sys.exit(main())
