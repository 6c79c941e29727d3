"""Shared fixtures: a real Celery worker against the real broker and database of the run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import Celery, signals
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
from django_tasks_hub.recorder.background import background
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
#: The RabbitMQ of the run, for the tests that need it (``rabbitmq_url``).
AMQP_URL = os.environ.get("TASKS_HUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def no_dead_journal_from_an_earlier_test() -> Iterator[None]:
    """A worker an earlier test killed leaves its journal behind, and this process replays the
    dead journals it finds (as every recording process does) into whatever test runs then:
    each test starts without them. Tests of the replay make their own dead journals."""
    from django_tasks_hub.recorder import journal

    directory = journal.journal_directory()
    if directory.is_dir():
        for path in list(directory.iterdir()):
            for _ in journal._owned(path):  # Only a dead owner's file: its lock is free.
                path.unlink(missing_ok=True)
    yield


@pytest.fixture(autouse=True)
def nothing_left_on_the_background_thread() -> Iterator[None]:
    """The background thread is process-wide: a job a test queued and did not wait for (a
    rollback's outcome, a revoke) would run during the next test, or fail there once the
    database is closed to it. Each test waits for its own jobs at its end."""
    from django_tasks_hub.recorder.background import background

    yield
    background.flush(timeout=30)


@pytest.fixture(autouse=True)
def rollups_match_the_rows(request: Any) -> None:
    """The rollups start each test as the rows are: the flush that ends a transactional test
    deletes the tasks after it emptied the rollups' journal, and the delete trigger journals
    those deletes, which the next test would count as negative tasks."""
    if not {"db", "transactional_db", "live_server"} & set(request.fixturenames):
        return
    request.getfixturevalue("transactional_db" if "transactional_db" in request.fixturenames
                            else "db")  # fmt: skip
    from django_tasks_hub.insight import rollups

    rollups.rebuild()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """RabbitMQ's URL; without a RabbitMQ the test skips on a laptop and fails under CI=true."""
    from urllib.parse import urlsplit

    parts = urlsplit(AMQP_URL)
    if not _reachable(parts.hostname or "127.0.0.1", parts.port or 5672):
        message = f"needs RabbitMQ at {AMQP_URL} (TASKS_HUB_TEST_AMQP_URL)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return AMQP_URL


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


STATUS_WRITERS_DIR = Path(settings.VAR_DIR) / "status-writers" / str(os.getpid())


@pytest.fixture(scope="session", autouse=True)
def only_the_rule_writes_statuses(django_db_setup: Any) -> Iterator[None]:
    """Every statement the suite sends that sets a task's or a run's status, in this process and
    in the workers it starts, comes from ``transitions`` or the recorder's batch statements
    (``testproject/status_writers.py``). Reported at the end of the run."""
    from testproject import status_writers

    STATUS_WRITERS_DIR.mkdir(parents=True, exist_ok=True)
    status_writers.install()
    yield
    offenders = [f"{f}:{line} in {fn}: {sql[:200]}" for f, line, fn, sql in status_writers.found]
    for log in STATUS_WRITERS_DIR.glob("*.log"):
        offenders += log.read_text().splitlines()
    assert not offenders, "status written outside transitions:\n" + "\n".join(offenders)


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
        env["TASKS_HUB_STATUS_WRITERS_LOG"] = str(STATUS_WRITERS_DIR / f"{self.log.stem}.log")
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


@contextmanager
def bulk_jobs_routed_to(queue: str) -> Iterator[str]:
    """Send the hub's bulk task to ``queue``, as a project's ``task_routes`` would; empty the
    queue at the end.

    The in-process session worker reads ``celery`` for the whole run: a job sent there by a
    test that does not wait for it would run during a later test, after its row was flushed.
    The app builds its router once and keeps it, so the route goes in that router's table and
    the table it had is put back after.
    """
    from celery.app.routes import MapRoute

    from django_tasks_hub.services import BULK_TASK_NAME

    router = celery_app.amqp.router
    before = router.routes
    router.routes = (MapRoute({BULK_TASK_NAME: {"queue": queue}}), *before)
    try:
        yield queue
    finally:
        router.routes = before
        purge_queue(queue)


def purge_queue(name: str) -> None:
    """Empty queue ``name``, declaring it first (RabbitMQ refuses to purge a missing queue)."""
    from kombu import Queue

    with celery_app.connection_for_write() as conn:
        queue = Queue(name).bind(conn.default_channel)
        queue.declare()
        queue.purge()


#: A queue no worker reads: the bulk jobs a test sends but does not run wait there.
PARKED_BULK_QUEUE = "tasks-hub-bulk-parked"


@pytest.fixture
def parked_bulk_jobs() -> Iterator[str]:
    """Bulk jobs sent in the background stay in a queue no worker reads, emptied after."""
    with bulk_jobs_routed_to(PARKED_BULK_QUEUE) as queue:
        yield queue


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


# -- workers and queues: a broker of each kind, a fresh queue, workers on it ------------------

#: Redis DB of these tests when the run's own broker is not Redis.
REDIS_URL = os.environ.get("TASKS_HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")

BROKERS = ["redis", "rabbitmq", "folder"]


def _redis_url() -> str:
    url = settings.CELERY_BROKER_URL
    url = url if url.startswith("redis") else REDIS_URL
    if not _reachable("127.0.0.1", 6379):
        if IN_CI:
            pytest.fail(f"needs Redis at {url}")
        pytest.skip(f"needs Redis at {url}")
    return url


def make_app(url: str) -> Celery:
    """The test project's Celery configuration, on the broker at ``url``."""
    app = Celery(f"tasks-hub-control-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    if not url.startswith("filesystem"):
        # The environment's CELERY_BROKER_URL would win over ``broker_url``: these win over it.
        app.conf.broker_write_url = app.conf.broker_read_url = url
        app.conf.broker_transport = None
        app.conf.broker_transport_options = {}
    else:
        # The run's own broker may be another: the folder broker is set up as the test
        # project sets it up, in the folder its workers get (``TASKS_HUB_BROKER_DIR``).
        folders = {
            key: Path(settings.BROKER_DIR) / sub
            for key, sub in (
                ("data_folder_in", "queue"),
                ("data_folder_out", "queue"),
                ("control_folder", "control"),
                ("processed_folder", "processed"),
            )
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        app.conf.broker_write_url = app.conf.broker_read_url = url
        app.conf.broker_transport = "testproject.fstransport:Transport"
        app.conf.broker_transport_options = {
            **{key: str(folder) for key, folder in folders.items()},
            "store_processed": False,
            "polling_interval": 0.1,
        }
    app.conf.broker_connection_retry_on_startup = False
    return app


@pytest.fixture(params=BROKERS)
def hub(request: Any, settings: Any, subprocess_worker: Any) -> Iterator[Any]:
    """A broker of each kind, the hub pointed at it, a fresh queue, and a way to start workers
    on that broker consuming it."""
    from django_tasks_hub import control
    from django_tasks_hub.models import QueuePause

    kind = request.param
    if kind == "redis":
        url = _redis_url()
    elif kind == "rabbitmq":
        url = request.getfixturevalue("rabbitmq_url")
    else:
        url = "filesystem://"
    app = make_app(url)
    settings.TASKS_HUB = {**settings.TASKS_HUB, "CELERY_APP": app, "INSPECT_TIMEOUT": 1.0}
    control.forget_consumed()
    queue = f"th-control-{uuid.uuid4().hex[:8]}"

    class Hub:
        pass

    h: Any = Hub()
    h.kind, h.url, h.app, h.queue = kind, url, app, queue

    def start(*args: str, queues: str | None = None, pool: str = "threads") -> Any:
        name = f"th-{kind}-{uuid.uuid4().hex[:6]}@test"
        w = subprocess_worker(
            "-n", name, "-P", pool, "-Q", queues or queue, *args,
            env={"CELERY_BROKER_URL": url},
        )  # fmt: skip
        w.hostname = name
        return w

    def send(n: int = 1, **kwargs: Any) -> list[str]:
        ids = []
        for _ in range(n):
            result = app.send_task(
                "demo.long", kwargs=kwargs or {"steps": 1, "delay": 0.01}, queue=queue
            )
            ids.append(result.id)
        return ids

    h.start, h.send = start, send
    yield h
    QueuePause.objects.all().delete()
    control.forget_consumed()
    try:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)
            if kind == "rabbitmq":
                conn.default_channel.queue_delete(queue)
    except Exception:  # A queue never declared: nothing to clean.
        pass
