"""``./dev demo`` as the README runs it: worker and web server up, tasks sent, Ctrl-C ends both."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import _dist
from tests.conftest import ROOT, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _get(url: str) -> tuple[int, bytes]:
    auth = base64.b64encode(b"demo:demo").decode()
    request = urllib.request.Request(
        url, headers={"Authorization": f"Basic {auth}", "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(
    not _dist.on_sqlite_pass(),
    reason="runs in the SQLite pass only: ./dev demo brings its own SQLite database and broker "
    "folder, so this pass's PostgreSQL and Redis play no part",
)
def test_dev_demo_runs_and_ctrl_c_stops_worker_and_web_server(tmp_path: Path):
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        # The demo brings its own SQLite database and broker folder, as on a fresh machine.
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
        and not k.startswith(("TASKS_HUB_", "PYTEST"))
    }
    env.update(
        TASKS_HUB_VENV=sys.prefix,  # the environment running this test: no second install
        TASKS_HUB_VAR_DIR=str(tmp_path / "var"),
        TASKS_HUB_BROKER_DIR=str(tmp_path / "broker"),
        TASKS_HUB_DEMO_ADDR=f"127.0.0.1:{port}",
    )
    log = tmp_path / "demo.log"
    proc = subprocess.Popen(
        ["./dev", "demo"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal would give it
    )
    try:
        wait_for(
            lambda: b"Where to look:" in log.read_bytes() or proc.poll() is not None,
            timeout=300,
            interval=0.5,
            what="./dev demo to send its tasks",
        )
        wait_for(
            lambda: b"Ctrl-C stops the demo." in log.read_bytes() or proc.poll() is not None,
            timeout=60,
            interval=0.5,
            what="the closing banner",
        )
        output = log.read_text(errors="replace")
        assert proc.poll() is None, f"./dev demo exited early:\n{output[-4000:]}"
        assert "username 'demo', password 'demo'" in output
        # The closing banner says it all again, at the end where a person looks: which failures
        # are on purpose and why, where to look, the login.
        banner = output[output.index("Failures on purpose") :]
        for expected in ("demo.fail: ValueError", "WorkerLostError", "NotRegistered", "retries"):
            assert expected in banner, banner
        assert f"http://127.0.0.1:{port}/admin/django_tasks_hub/task/" in banner
        assert f"http://127.0.0.1:{port}/api/list" in banner
        assert "Log in as username 'demo', password 'demo'." in banner
        assert banner.rstrip().endswith("Ctrl-C stops the demo."), banner
        # Each process keeps its own log: the deliberate tracebacks are in the worker's, not
        # scrolling through this terminal; and kombu's hostname warning is gone everywhere.
        logs = tmp_path / "var" / "demo-logs"
        assert f"{logs}/worker.log" in banner
        assert "Traceback" not in output, output[-4000:]
        assert "No hostname was supplied" not in output
        wait_for(
            lambda: b"WorkerLostError" in (logs / "worker.log").read_bytes(),
            timeout=60,
            what="the crash in the worker's log",
        )
        worker_log = (logs / "worker.log").read_text(errors="replace")
        assert "ValueError" in worker_log and "No hostname was supplied" not in worker_log

        long_id = re.search(r"sent demo\.long \(([0-9a-f-]{36})\): processing", output)
        assert long_id, output[-4000:]
        status, body = _get(f"http://127.0.0.1:{port}/api/info?task_id={long_id.group(1)}")
        task = json.loads(body)
        assert status == 200 and task["status"] == "processing"
        assert task["progress"]["total"] == 600 and task["progress"]["current"] >= 1
        assert _get(f"http://127.0.0.1:{port}/admin/login/")[0] == 200

        # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            # The worker's warm shutdown waits for demo.long, then ./dev sends SIGQUIT, then
            # SIGKILL: 15 s at most on a quiet machine.
            proc.wait(120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"./dev demo did not stop:\n{log.read_text(errors='replace')[-4000:]}")
        wait_for(lambda: not _group_alive(proc.pid), timeout=30, what="every demo process to end")
        assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.5)
