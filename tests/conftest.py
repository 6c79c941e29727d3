"""Shared fixtures: a real Celery worker against the real broker and database of the run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import signals
from celery.app import trace
from celery.contrib.testing.worker import start_worker
from celery.exceptions import Retry
from celery.utils.nodenames import anon_nodename
from celery.worker.request import Request
from django.conf import settings
from django.db import connection
from kombu import Message
from kombu.serialization import prepare_accept_content
from kombu.utils.json import dumps

from django_tasks_hub import conf, flush
from django_tasks_hub.background import background
from testproject.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent

# Tests in this process write each event in its signal by default: most of them read the rows
# in the same transaction right after the signal (the ``db`` fixture), which a writer thread on
# its own connection cannot join. The write-behind path runs where a test asks for it
# (``write_mode``, ``tests/test_write_behind.py``) and in every ``celery worker`` subprocess,
# which keeps the package's default. Set as the default, so ``override_settings(TASKS_HUB=...)``
# in a test does not turn it back on.
PACKAGE_DEFAULTS = dict(conf.DEFAULTS)
conf.DEFAULTS["WRITE_BEHIND"] = False  # The package's default too; kept explicit here.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pytest_report_header(config: Any) -> list[str]:
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return [f"tasks-hub: database {engine}, broker {settings.CELERY_BROKER_URL}"]


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    # PostgreSQL-only tests (row locks under real concurrency) skip on SQLite runs; the CI run
    # on PostgreSQL runs them, and a CI run whose PostgreSQL is missing fails in ./dev test.
    if connection.vendor != "postgresql":
        skip = pytest.mark.skip(reason="needs PostgreSQL: run with DATABASE_URL=postgres://...")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def celery_session_app() -> Any:
    celery_app.conf.task_always_eager = False
    return celery_app


@pytest.fixture(scope="session")
def session_worker(
    celery_session_app: Any, django_db_setup: Any, django_db_blocker: Any
) -> Iterator[Any]:
    """One in-process worker for the whole run (threads pool, real broker, real database)."""
    hostname = anon_nodename()
    # What ``celery worker`` does at start: the tasks it runs then see its node name as their
    # ``request.hostname`` (without it, the bare host name).
    trace.setup_worker_optimizations(celery_session_app, hostname)
    with (
        django_db_blocker.unblock(),
        start_worker(
            celery_session_app,
            hostname=hostname,
            pool="threads",
            concurrency=4,
            perform_ping_check=False,
            shutdown_timeout=30,
            loglevel="WARNING",
        ) as worker,
    ):
        yield worker


@pytest.fixture(params=[False, True], ids=["in-signal", "write-behind"])
def write_mode(request: Any, settings: Any) -> bool:
    """Run the test twice: events written in the signal, and through the write-behind buffer."""
    settings.TASKS_HUB = {**settings.TASKS_HUB, "WRITE_BEHIND": request.param}
    return bool(request.param)


@pytest.fixture
def eager(db: Any) -> Iterator[None]:
    """Celery's ``task_always_eager``: tasks run in the test's thread, in its transaction."""
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False


@pytest.fixture
def worker(session_worker: Any, transactional_db: Any) -> Iterator[Any]:
    """A running worker, with the database committed so the worker sees the test's rows."""
    yield session_worker
    # Writes still queued (background thread, write-behind buffer) must land before the
    # tables are flushed.
    flush(timeout=10)


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def task_row(broker_id: str) -> Any:
    from django_tasks_hub.models import Task, TaskRun

    task = Task.objects.filter(broker_id=broker_id).first()
    if task is None:
        run = TaskRun.objects.filter(broker_id=broker_id).select_related("task").first()
        task = run.task if run else None
    return task


def wait_status(broker_id: str, *statuses: str, timeout: float = 20.0) -> Any:
    """Wait until the task of ``broker_id`` is in one of ``statuses``; return it."""

    def check() -> Any:
        task = task_row(broker_id)
        return task if task is not None and task.status in statuses else None

    return wait_for(check, timeout, what=f"task {broker_id} to be {statuses}")


class SubprocessWorker:
    """A ``celery worker`` in its own process, against the test database and broker."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        # Under the run's own folder (TASKS_HUB_VAR_DIR), so parallel runs keep theirs apart.
        folder = Path(settings.VAR_DIR) / "workers"
        self.log = folder / f"worker-{os.getpid()}-{time.monotonic_ns()}.log"

    def env(self) -> dict[str, str]:
        db = connection.settings_dict
        env = dict(os.environ)
        if connection.vendor == "postgresql":
            env["DATABASE_URL"] = (
                f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            )
        else:
            env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
        env["TASKS_HUB_BROKER_DIR"] = str(settings.BROKER_DIR)
        env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
        env.update(self.extra_env)
        return env

    def start(self, ready_timeout: float = 60.0) -> SubprocessWorker:
        self.log.parent.mkdir(exist_ok=True)
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "testproject", "worker", "-l", "INFO",
             "--without-heartbeat", "--without-gossip", "--without-mingle", *self.args],
            cwd=ROOT,
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(
            lambda: b"ready." in self.log.read_bytes() or self._died(),
            ready_timeout,
            0.2,
            "worker start",
        )
        if self._died():
            pytest.fail(f"worker exited at start:\n{self.log.read_text()[-4000:]}")
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, sig: int | None = None) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig is not None:
            self.proc.send_signal(sig)
        else:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def subprocess_worker(transactional_db: Any) -> Iterator[Callable[..., SubprocessWorker]]:
    """Start ``celery worker`` processes with the given arguments; all stopped at the end."""
    started: list[SubprocessWorker] = []

    def start(*args: str, env: dict[str, str] | None = None) -> SubprocessWorker:
        w = SubprocessWorker(*args, env=env).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
    flush(timeout=10)


# -- the lifecycle signals of one task, sent as a publisher and a worker send them ----------

HOST = "lifecycle@test"


def _einfo(exc: BaseException) -> ExceptionInfo:
    try:
        raise exc
    except BaseException:
        return ExceptionInfo(sys.exc_info())


class Lifecycle:
    """Sends the signals of one task's lifecycle, as the publisher and the worker would."""

    def __init__(self, task: Any, broker_id: str | None = None, args: tuple = (2, 3)) -> None:
        self.task = task
        self.id = broker_id or str(uuid.uuid4())
        self.args = args

    def message(self, retries: int) -> tuple[dict, dict, Any]:
        # A retry is published from inside the attempt before it: Celery then names the task
        # itself as the parent (``app.send_task`` takes the current task as parent).
        parent = self.id if retries else None
        headers, properties, body, _ = celery_app.amqp.as_task_v2(
            self.id,
            self.task.name,
            args=self.args,
            kwargs={},
            retries=retries,
            root_id=self.id,
            parent_id=parent,
        )
        return headers, properties, body

    def request(self, retries: int) -> Any:
        """The request context a worker builds from the message (``Request._context``)."""
        headers, properties, body = self.message(retries)
        message = Message(
            body=dumps(body),
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            properties=properties,
            delivery_info={"exchange": "", "routing_key": "celery", "redelivered": False},
            accept=prepare_accept_content(["json"]),
        )
        return Request(message, app=celery_app, task=self.task, hostname=HOST)._context

    def publish(self, retries: int = 0) -> None:
        headers, properties, body = self.message(retries)
        signals.before_task_publish.send(
            sender=self.task.name,
            body=body,
            exchange="",
            routing_key="celery",
            headers=headers,
            properties=properties,
            declare=[],
            retry_policy=None,
        )

    def _in_task(self, retries: int, send: Callable[[Any], None]) -> None:
        # The worker pushes the request on the task's stack around the signals it sends from
        # the task's process, so ``task.request`` is the running attempt.
        context = self.request(retries)
        self.task.request_stack.push(context)
        try:
            send(context)
        finally:
            self.task.request_stack.pop()

    def start(self, retries: int = 0) -> None:
        self._in_task(
            retries,
            lambda ctx: signals.task_prerun.send(
                sender=self.task, task_id=self.id, task=self.task, args=ctx.args, kwargs=ctx.kwargs
            ),
        )

    def succeed(self, retries: int = 0, result: Any = 5) -> None:
        self._in_task(
            retries, lambda ctx: signals.task_success.send(sender=self.task, result=result)
        )

    def retry(self, retries: int = 0) -> None:
        exc = RuntimeError(f"attempt {retries} failed")
        einfo = _einfo(exc)
        self._in_task(
            retries,
            lambda ctx: signals.task_retry.send(
                sender=self.task, request=ctx, reason=Retry(exc=exc), einfo=einfo
            ),
        )

    def fail(self, retries: int = 0, exc: BaseException | None = None) -> None:
        exc = exc or ValueError("boom")
        einfo = _einfo(exc)
        self._in_task(
            retries,
            lambda ctx: signals.task_failure.send(
                sender=self.task,
                task_id=self.id,
                exception=exc,
                args=ctx.args,
                kwargs=ctx.kwargs,
                traceback=einfo.tb,
                einfo=einfo,
            ),
        )

    def lose(self, retries: int = 0) -> None:
        """The pool child died: the worker's main process reports a WorkerLostError failure."""
        self.fail(retries, WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL)."))
        background.flush()

    def revoke(self, retries: int = 0) -> None:
        """The worker's main process discards a revoked message."""
        signals.task_revoked.send(
            sender=self.task,
            request=self.request(retries),
            terminated=False,
            signum=None,
            expired=False,
        )
        background.flush()
