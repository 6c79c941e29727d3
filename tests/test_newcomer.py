"""A newcomer's first hour: docs/quickstart.md followed word for word in a brand-new project.

The slow test builds the wheel, runs ``django-admin startproject mysite`` in a tmp dir, installs
the wheel into a fresh virtual environment, applies every block of the quickstart in order (the
``<!-- newcomer: ... -->`` comment before a block says what to do with it), starts a real worker
and the web server, sends the task and reads it back through the API with the page's own curl
command. It changes three things only, listed in ``SUBSTITUTIONS`` with the reason for each.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    "broker": "settings.py gets a filesystem broker in the tmp dir after the page's Redis URL, "
    "so the test needs no broker server (the SQLite pass has none)",
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
        if step.arg.endswith("/settings.py"):
            self.use_filesystem_broker(path)

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

    def use_filesystem_broker(self, settings_py: Path) -> None:
        # SUBSTITUTIONS["broker"]
        broker = self.tmp / "broker"
        folders = {sub: broker / sub for sub in ("queue", "control", "processed")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        options = {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "control_folder": str(folders["control"]),
            "processed_folder": str(folders["processed"]),
            "store_processed": False,
            "polling_interval": 0.1,
        }
        with settings_py.open("a") as f:
            f.write(
                "\n# tests/test_newcomer.py: a broker in a folder instead of Redis.\n"
                'CELERY_BROKER_URL = "filesystem://"\n'
                f"CELERY_BROKER_TRANSPORT_OPTIONS = {options!r}\n"
            )


@pytest.fixture
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newcomer]:
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
def test_a_newcomer_follows_the_quickstart_word_for_word(newcomer):
    wheel = _dist.build().wheel
    page = steps(QUICKSTART.read_text())
    assert page, "docs/quickstart.md has no <!-- newcomer: ... --> blocks"
    for step in page:
        newcomer.apply(step, wheel)
    # Each block ran; the last one read the finished task back through the API.
    assert page[-1].verb == "read"
