"""Shared plumbing of the benchmarks: services, resets, publisher and worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/hub_bench"
DEFAULT_BROKER = "redis://127.0.0.1:6379/5"
ENDS_KEY = "bench:ends"
TABLES = {
    "hub": ("django_tasks_hub_taskrun", "django_tasks_hub_task"),
    "dcr": ("django_celery_results_taskresult",),
}


def base_env(mode: str, db_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a bench process (publisher, worker, migrate) in ``mode``.

    ``hub@0.1`` is the ``hub`` mode with ``FLUSH_INTERVAL`` 0.1, to compare intervals in one
    run; ``hub+nocost`` the ``hub`` mode with ``MEASURE_COST`` off.
    """
    env = dict(os.environ)
    mode, _, flag = mode.partition("+")
    mode, _, interval = mode.partition("@")
    overrides: dict[str, Any] = {}
    if interval:
        overrides["FLUSH_INTERVAL"] = float(interval)
    if flag == "nocost":
        overrides["MEASURE_COST"] = False  # ``hub+nocost``: the per-attempt cost not measured.
    if overrides:
        env["TASKS_HUB_JSON"] = json.dumps(overrides)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        BENCH_MODE=mode,
        DATABASE_URL=db_url,
        CELERY_BROKER_URL=broker_url,
        TASKS_HUB_VAR_DIR=os.environ.get("TASKS_HUB_VAR_DIR", "/tmp/hub-bench"),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def pg_connect(db_url: str, dbname: str | None = None) -> Any:
    """A psycopg connection (autocommit) to the bench database, or to ``dbname``."""
    import psycopg

    url = urlparse(db_url)
    return psycopg.connect(
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or None,
        dbname=dbname or url.path.lstrip("/"),
        autocommit=True,
    )


def ensure_database(db_url: str, fresh: bool = False) -> None:
    """Create the database of ``db_url`` (dropping it first when ``fresh``) and migrate it."""
    name = urlparse(db_url).path.lstrip("/")
    with pg_connect(db_url, "postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and fresh:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=base_env("hub", db_url, DEFAULT_BROKER),
        check=True,
    )


def redis_client(broker_url: str) -> Any:
    import redis

    return redis.Redis.from_url(broker_url)


def reset(db_url: str, broker_url: str | None) -> None:
    """Empty the bench's queue database (unless ``None``) and the tables every mode writes."""
    if broker_url is not None:
        redis_client(broker_url).flushdb()
    with pg_connect(db_url) as conn:
        tables = ", ".join(t for group in TABLES.values() for t in group)
        conn.execute(f"TRUNCATE {tables} CASCADE")
        conn.execute("VACUUM ANALYZE")


def pg_stats(db_url: str) -> dict[str, int]:
    """Counters of the bench database: transactions, sessions opened, rows written."""
    name = urlparse(db_url).path.lstrip("/")
    with pg_connect(db_url, "postgres") as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, sessions, tup_inserted, tup_updated,"
            " tup_returned, tup_fetched FROM pg_stat_database WHERE datname = %s",
            [name],
        ).fetchone()
    keys = ("commits", "rollbacks", "sessions", "inserted", "updated", "returned", "fetched")
    return dict(zip(keys, map(int, row), strict=True))


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


def publish(mode: str, n: int, db_url: str, broker_url: str, **kw: Any) -> dict[str, Any]:
    """Run the publisher process; return what it measured."""
    env = base_env(mode, db_url, broker_url, **kw.pop("env", {}))
    args = [PYTHON, "-m", "bench.publish", "--n", str(n)]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"publisher failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Worker:
    """A ``celery worker`` process of the bench app, killed with its children on stop."""

    def __init__(
        self,
        mode: str,
        db_url: str,
        broker_url: str,
        pool: str = "prefork",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.mode = mode
        self.env = base_env(mode, db_url, broker_url, **(env or {}))
        self.args = [
            PYTHON, "-m", "celery", "-A", "bench.celery_app", "worker", "-l", "WARNING",
            "-P", pool, "-c", str(concurrency),
            "--without-heartbeat", "--without-gossip", "--without-mingle",
            "-n", f"bench-{mode.replace('@', '-')}-{os.getpid()}@%h",
        ]  # fmt: skip
        self.log = log or Path(self.env["TASKS_HUB_VAR_DIR"]) / f"worker-{mode}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("wb")
        # Own session: stop() ends the worker and its pool children by the group id.
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def wait_ends(broker_url: str, n: int, worker: Worker, timeout: float) -> None:
    """Wait until ``n`` tasks noted their end; fail with the worker's log on timeout."""
    client = redis_client(broker_url)
    deadline = time.monotonic() + timeout
    while client.hlen(ENDS_KEY) < n:
        if not worker.alive():
            raise RuntimeError(f"worker died:\n{worker.tail()}")
        if time.monotonic() > deadline:
            done = client.hlen(ENDS_KEY)
            raise RuntimeError(f"only {done}/{n} tasks ended in {timeout}s:\n{worker.tail()}")
        time.sleep(0.05)


def end_times(broker_url: str) -> dict[str, float]:
    raw = redis_client(broker_url).hgetall(ENDS_KEY)
    return {k.decode(): float(v) for k, v in raw.items()}


def tree_rss(pid: int) -> dict[int, int]:
    """RSS in bytes of ``pid`` and its children (from /proc), by pid."""
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[p] = int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (OSError, ValueError):
            continue
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` percentile (0-100) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    """One line about the machine and its load right now."""
    load = os.getloadavg()
    cpus = os.cpu_count()
    import platform

    import django
    from celery import __version__ as celery_version

    return (
        f"{cpus} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
        f"Python {platform.python_version()}, Django {django.__version__}, "
        f"Celery {celery_version}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
