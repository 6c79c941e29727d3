"""A newcomer's first hour: docs/quickstart.md followed word for word in a brand-new project.

The slow test builds the wheel, runs ``django-admin startproject mysite`` in a tmp dir, installs
the wheel into a fresh virtual environment, applies every block of the quickstart in order (the
``<!-- newcomer: ... -->`` comment before a block says what to do with it), starts a real worker
and the web server, sends the task and reads it back through the API with the page's own curl
command. It uses the broker the page names, Redis at ``redis://127.0.0.1:6379/0``, and changes
two things only, listed in ``SUBSTITUTIONS`` with the reason for each. Redis DB 0 is the page's,
so no other test uses it: a host-wide file lock keeps two runs (two worktrees, two CI jobs on one
machine) from sharing it, and the test empties it before and after. Without a Redis the test
skips on a laptop and fails under ``CI=true``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import _dist

QUICKSTART = _dist.ROOT / "docs" / "quickstart.md"
README = _dist.ROOT / "README.md"

_BLOCK = re.compile(
    r"<!-- newcomer: (?P<verb>[\w-]+)(?: (?P<arg>[^>]*?))? -->\s*\n"
    r"```(?P<lang>\w*)\n(?P<body>.*?)\n```",
    re.DOTALL,
)
_SHARED = re.compile(r"<!-- quickstart:begin -->\n(.*?)<!-- quickstart:end -->", re.DOTALL)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: What the test changes in the page, and why; everything else runs as written.
SUBSTITUTIONS = {
    "install": "the wheel built from this checkout is installed, not the release on PyPI",
    "port": "the web server listens on a free port instead of 8000, which may be taken",
}


@dataclass(frozen=True)
class Step:
    verb: str
    arg: str
    lang: str
    body: str


def steps(text: str) -> list[Step]:
    """The quickstart's blocks, in order, with what to do with each."""
    return [
        Step(m["verb"], (m["arg"] or "").strip(), m["lang"], m["body"])
        for m in _BLOCK.finditer(text)
    ]


def test_readme_quickstart_is_the_docs_quickstart():
    # One quickstart: the README shows the same set-up blocks the tested page has.
    docs = _SHARED.findall(QUICKSTART.read_text())
    readme = _SHARED.findall(README.read_text())
    assert len(docs) == 1 and len(readme) == 1, "one quickstart:begin/end region in each file"
    assert readme[0] == docs[0]
    assert [s.verb for s in steps(docs[0])] == ["append", "append", "create", "append", "run"]


def test_quickstart_has_every_step_the_newcomer_test_follows():
    verbs = [(s.verb, s.arg) for s in steps(QUICKSTART.read_text())]
    for expected in [
        ("install", ""),
        ("append", "mysite/settings.py"),
        ("append", "mysite/urls.py"),
        ("create", "mysite/celery.py"),
        ("run", ""),
        ("background", "worker"),
        ("background", "web"),
        ("run", "task_id"),
        ("read", ""),
    ]:
        assert expected in verbs, f"docs/quickstart.md lost its {expected} block"


def test_the_page_tells_a_reader_which_file_each_block_goes_in():
    # The <!-- newcomer --> comments are invisible: the sentence before a block must say it.
    text = QUICKSTART.read_text()
    for match in _BLOCK.finditer(text):
        if match["verb"] in ("append", "create"):
            before = text[max(0, match.start() - 300) : match.start()]
            assert f"`{match['arg']}`" in before, f"say where the {match['arg']} block goes"


def test_readme_shows_the_two_commands_in_code_blocks():
    text = README.read_text()
    blocks = re.findall(r"```\w*\n(.*?)\n```", text, re.DOTALL)
    assert "./dev demo" in blocks
    assert "./dev test" in blocks
    assert "docs/img/admin-task-list.png" in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Newcomer:
    """A fresh virtual environment and a brand-new project, driven through a shell."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.venv = tmp / "venv"
        self.project = tmp / "mysite"
        self.port = _free_port()
        self.task_id = ""
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []
        env = {
            k: v
            for k, v in os.environ.items()
            # Nothing of the test run may leak in: the new project has its own settings.
            if not k.startswith(("DJANGO_", "TASKS_HUB_", "CELERY_", "PYTEST", "DATABASE_URL"))
            and k not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        self.env = env

    def sh(self, command: str, cwd: Path | None = None, timeout: float = 600) -> str:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=cwd or self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, (
            f"`{command}` exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        return proc.stdout

    def start(self, name: str, command: str) -> Path:
        log = self.tmp / f"{name}.log"
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.project,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the dev server's autoreloader forks: stop the whole group
        )
        self.background.append((proc, log))
        return log

    def wait(self, what: str, ready: object, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            for proc, log in self.background:
                if proc.poll() is not None:
                    pytest.fail(f"{log.stem} exited while waiting for {what}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                logs = "\n".join(log.read_text()[-2000:] for _, log in self.background)
                pytest.fail(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.2)

    def stop(self) -> None:
        for proc, _log in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _log in self.background:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def port_open(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    # -- the page's blocks ---------------------------------------------------------------------

    def apply(self, step: Step, wheel: Path) -> None:
        getattr(self, f"do_{step.verb}")(step, wheel)

    def do_install(self, step: Step, wheel: Path) -> None:
        assert step.body == "pip install django-tasks-hub", step.body
        # SUBSTITUTIONS["install"]
        self.sh(step.body.replace("django-tasks-hub", shlex.quote(str(wheel))), cwd=self.tmp)
        self.sh("django-admin startproject mysite", cwd=self.tmp)

    def do_append(self, step: Step, wheel: Path) -> None:
        path = self.project / step.arg
        assert path.exists(), (
            f"the quickstart appends to {step.arg}, which startproject did not make"
        )
        with path.open("a") as f:
            f.write("\n\n" + step.body + "\n")

    def do_create(self, step: Step, wheel: Path) -> None:
        path = self.project / step.arg
        assert not path.exists(), f"the quickstart creates {step.arg}, which already exists"
        path.write_text(step.body + "\n")

    def do_run(self, step: Step, wheel: Path) -> None:
        out = self.sh(step.body)
        if step.arg == "task_id":
            ids = _UUID.findall(out)
            assert ids, f"no task id in the output of `{step.body}`:\n{out}"
            self.task_id = ids[-1]

    def do_background(self, step: Step, wheel: Path) -> None:
        if step.arg == "worker":
            log = self.start("worker", step.body)
            self.wait("the worker", lambda: b" ready." in log.read_bytes())
        elif step.arg == "web":
            assert step.body == "python manage.py runserver", step.body
            # SUBSTITUTIONS["port"]
            self.start("web", f"{step.body} 127.0.0.1:{self.port}")
            self.wait("the web server", self.port_open)
        else:
            raise AssertionError(f"unknown background process {step.arg!r}")

    def do_read(self, step: Step, wheel: Path) -> None:
        assert self.task_id, "the quickstart reads a task before it sends one"
        assert "127.0.0.1:8000" in step.body and "TASK_ID" in step.body, step.body
        command = step.body.replace("TASK_ID", self.task_id).replace(
            "127.0.0.1:8000", f"127.0.0.1:{self.port}"
        )
        # The page promises a finished task: ask until the worker has run it.
        answers: list[object] = []

        def done() -> bool:
            answer = json.loads(self.sh(f"{command} --silent --show-error --fail-with-body"))
            answers.append(answer)
            return isinstance(answer, dict) and answer.get("status") == "done"

        self.wait("the task to be done, through the API", done, timeout=60)
        task = answers[-1]
        assert isinstance(task, dict)
        assert task["result"] == "Hello, newcomer!"
        assert task["name"] == "mysite.celery.hello"
        assert task["worker"] and task["started_at"] and task["finished_at"]


#: The broker the README and docs/quickstart.md name; the test uses it as written.
REDIS_URL = "redis://127.0.0.1:6379/0"
#: One lock per machine: every checkout's test run takes it before touching Redis DB 0.
REDIS_LOCK = Path(tempfile.gettempdir()) / "django-tasks-hub-redis-db0.lock"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _redis_db0() -> Any:
    """A client of the page's Redis DB 0; skips (fails under CI=true) when no Redis answers."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"the quickstart names Redis at {REDIS_URL}, which does not answer: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: Redis is required)")
        pytest.skip(message)
    return client


@pytest.fixture
def redis_db0() -> Iterator[Any]:
    """Redis DB 0, held by this run alone and empty at the start and at the end."""
    client = _redis_db0()
    with REDIS_LOCK.open("a") as lock:
        # Blocks until another run on this machine is done with DB 0.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client.flushdb()
            yield client
        finally:
            client.flushdb()
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def newcomer(tmp_path_factory: pytest.TempPathFactory, redis_db0: Any) -> Iterator[Newcomer]:
    tmp = tmp_path_factory.mktemp("newcomer")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=300)
    person = Newcomer(tmp)
    try:
        yield person
    finally:
        person.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not _dist.on_sqlite_pass(), reason=_dist.SQLITE_ONLY_REASON)
def test_a_newcomer_follows_the_quickstart_word_for_word(newcomer, redis_db0):
    wheel = _dist.build().wheel
    page = steps(QUICKSTART.read_text())
    assert page, "docs/quickstart.md has no <!-- newcomer: ... --> blocks"
    settings_block = next(s for s in page if s.arg == "mysite/settings.py")
    assert f'CELERY_BROKER_URL = "{REDIS_URL}"' in settings_block.body, settings_block.body
    for step in page:
        newcomer.apply(step, wheel)
    # Each block ran; the last one read the finished task back through the API.
    assert page[-1].verb == "read"
    # And the task went through the page's Redis, not some other broker.
    assert redis_db0.exists("_kombu.binding.celery"), sorted(redis_db0.keys())[:20]
