"""SQLite under concurrent writers (issue 14 item 7): cancel a running task, restart a failed one
at once, round after round, with a prefork worker (``-c 2``), on Django's default SQLite
settings and on the test project's, with the folder broker, Redis and RabbitMQ.

Each case runs in processes of its own on a fresh database file: ``manage.py migrate``, a
``celery worker``, and ``tests/sqlite_rounds.py`` as the web side (through the API). Every
answer must be a 200 within the broker timeout, every run must reach its end, and the worker
must log no lock error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.conftest import IN_CI, REDIS_URL, ROOT, SubprocessWorker, _reachable

# Each case makes its own SQLite file, whatever database the run is on: the SQLite pass runs
# them all (Redis from TASKS_HUB_TEST_REDIS_URL), and the PostgreSQL pass, which would run the
# very same processes again, leaves them to it.
pytestmark = [
    pytest.mark.worker,
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
        reason="runs its own SQLite databases: done once, in the SQLite pass",
    ),
]

#: Seconds one answer may take: the broker timeout, plus the busy time of a loaded machine.
ANSWER_SECONDS = 5.0


def redis_url() -> str:
    if settings.CELERY_BROKER_URL.startswith("redis"):
        return str(settings.CELERY_BROKER_URL)
    url = REDIS_URL
    if not _reachable("127.0.0.1", 6379):
        message = f"needs Redis at {url} (TASKS_HUB_TEST_REDIS_URL)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


def broker_env(broker: str, tmp_path: Path, request: Any) -> dict[str, str]:
    if broker == "folder":
        folder = tmp_path / "broker"
        for sub in ("queue", "control", "processed"):
            (folder / sub).mkdir(parents=True)
        return {"CELERY_BROKER_URL": "filesystem://", "TASKS_HUB_BROKER_DIR": str(folder)}
    if broker == "redis":
        return {"CELERY_BROKER_URL": redis_url()}
    return {"CELERY_BROKER_URL": request.getfixturevalue("rabbitmq_url")}


def run_rounds(
    tmp_path: Path, request: Any, *, broker: str, defaults: bool, rounds: int
) -> tuple[dict[str, Any], str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TASKS_HUB_SQLITE_DEFAULTS": "1" if defaults else "0",
        "ROUNDS_QUEUE": f"rounds-{uuid.uuid4().hex[:8]}",
        "TASKS_HUB_VAR_DIR": str(tmp_path / "var"),
        **broker_env(broker, tmp_path, request),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    worker = SubprocessWorker(
        "-Q", env["ROUNDS_QUEUE"], "-n", f"{env['ROUNDS_QUEUE']}@%h", "-P", "prefork", "-c", "2",
        env=env,
    ).start()  # fmt: skip
    try:
        driver = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "sqlite_rounds.py"), str(rounds)],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60 + rounds * 20,
        )
    finally:
        worker.stop()
    log = worker.output()
    said = driver.stdout[-3000:] + driver.stderr[-3000:]
    assert driver.returncode == 0, f"{said}\n--- the worker's log ---\n{log[-8000:]}"
    return json.loads(driver.stdout.strip().splitlines()[-1]), log


def check(outcome: dict[str, Any], log: str, rounds: int) -> None:
    answers = outcome["answers"]
    assert len(answers) == rounds
    bad = [a for a in answers if a["cancel"] != 200 or a["restart"] != 200]
    assert not bad, bad
    slow = [a for a in answers if max(a["cancel_seconds"], a["restart_seconds"]) > ANSWER_SECONDS]
    assert not slow, slow
    assert all(end["canceled"] == "canceled" for end in outcome["ends"]), outcome["ends"]
    assert outcome["open_runs"] == 0
    assert "database is locked" not in log, log[-4000:]
    assert "could not record" not in log, log[-4000:]


CASES = [
    pytest.param(broker, defaults, id=f"{broker}-{'startproject' if defaults else 'testproject'}")
    for broker in ("folder", "redis", "rabbitmq")
    for defaults in (True, False)
]


@pytest.mark.parametrize(("broker", "defaults"), CASES)
def test_cancel_then_restart_rounds(
    tmp_path: Path, request: Any, broker: str, defaults: bool
) -> None:
    outcome, log = run_rounds(tmp_path, request, broker=broker, defaults=defaults, rounds=8)
    check(outcome, log, 8)


@pytest.mark.slow
@pytest.mark.parametrize(("broker", "defaults"), CASES)
def test_cancel_then_restart_50_rounds(
    tmp_path: Path, request: Any, broker: str, defaults: bool
) -> None:
    outcome, log = run_rounds(tmp_path, request, broker=broker, defaults=defaults, rounds=50)
    check(outcome, log, 50)
