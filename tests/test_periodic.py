"""A real ``celery beat`` drives a real worker: its runs are recorded with their schedule, and
the fire times it misses while it is stopped are reported once each (core beat and
django-celery-beat's database scheduler)."""

from __future__ import annotations

import collections
import datetime
import io
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from django_tasks_hub.models import Schedule, ScheduleFire, TaskRun
from django_tasks_hub.states import FireOutcome, ScheduleOrigin, TaskStatus
from tests.conftest import IN_CI, ROOT, SubprocessWorker, wait_for
from tests.test_schedules import PLUGINS, MissedRecorder

QUEUE = "tasks-hub-periodic"
PERIOD = 2.0
DOWN = 10.0


class SubprocessBeat(SubprocessWorker):
    """A ``celery beat`` process against the test database and broker."""

    def start(self, ready_timeout: float = 60.0) -> SubprocessBeat:
        self.log.parent.mkdir(exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "testproject", "beat", "-l", "INFO",
             *self.args],
            cwd=ROOT,
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(
            lambda: b"beat: Starting" in self.log.read_bytes() or self._died(),
            ready_timeout,
            0.2,
            "beat start",
        )
        if self._died():
            pytest.fail(f"beat exited at start:\n{self.output()[-4000:]}")
        return self


@pytest.fixture
def beat(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., SubprocessBeat]]:
    """Start ``celery beat`` processes (one schedule file per test); all stopped at the end."""
    started: list[SubprocessBeat] = []

    def start(*args: str, env: dict[str, str] | None = None) -> SubprocessBeat:
        b = SubprocessBeat(
            "-s", str(tmp_path / "celerybeat-schedule"), "--pidfile", "", *args, env=env
        ).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def scheduled_runs(name: str, since: datetime.datetime | None = None) -> Any:
    runs = TaskRun.objects.filter(schedule=name, schedule_origin=ScheduleOrigin.BEAT)
    return runs if since is None else runs.filter(queued_at__gt=since)


def drive(start_beat: Callable[[], SubprocessBeat], name: str) -> dict[str, Any]:
    """Beat runs, stops for DOWN seconds, runs again; then the check runs (twice)."""
    first = start_beat()
    wait_for(lambda: scheduled_runs(name).filter(status=TaskStatus.DONE).count() >= 3, 40)
    stopped = timezone.now()
    first.stop()
    time.sleep(DOWN)
    restarted = timezone.now()
    second = start_beat()
    wait_for(lambda: scheduled_runs(name, restarted).count() >= 3, 40)
    MissedRecorder.calls = []
    with override_settings(TASKS_HUB=PLUGINS):
        out = io.StringIO()
        call_command("tasks_hub", "reconcile", "--timeout", "0.5", stdout=out)
        calls = list(MissedRecorder.calls)
        call_command("tasks_hub", "reconcile", "--timeout", "0.5", stdout=io.StringIO())
        again = list(MissedRecorder.calls)
    second.stop()
    return {
        "stopped": stopped,
        "restarted": restarted,
        "calls": calls,
        "again": again,
        "output": out.getvalue(),
    }


def assert_missed_once_each(name: str, seen: dict[str, Any]) -> None:
    fires = list(ScheduleFire.objects.filter(schedule__name=name).order_by("fire_at"))
    missed = [f for f in fires if f.outcome == FireOutcome.MISSED]
    late = [f for f in fires if f.outcome == FireOutcome.LATE]
    on_time = [f for f in fires if f.outcome == FireOutcome.ON_TIME]
    summary = [(f.fire_at.time().isoformat(), f.outcome) for f in fires]
    # DOWN seconds without beat: about DOWN / PERIOD fire times, one of them served late by
    # the catch-up run beat sends when it starts again.
    assert len(missed) >= 3, summary
    # Missed: from the stop to the first send of the restarted beat (it takes a moment to start).
    back = scheduled_runs(name, seen["restarted"]).order_by("queued_at").first()
    assert back is not None
    assert all(seen["stopped"] < f.fire_at < back.queued_at for f in missed), summary
    # Beat's first send after the restart serves the fire time it comes in the grace of, or,
    # when it comes between two windows, the last missed one, late: never more than one.
    assert len(late) <= 1, summary
    assert all(f.published_at is not None and f.published_at > seen["restarted"] for f in late)
    assert len(on_time) >= 3, summary
    assert all(f.run_id is not None for f in on_time + late)
    # on_missed: once for each missed fire time, and not again on the second check.
    called = collections.Counter((m.schedule, m.fire_at) for m in seen["calls"])
    assert called == collections.Counter((name, f.fire_at) for f in missed)
    assert seen["again"] == seen["calls"]
    assert f"{len(missed)} missed" in seen["output"]


def assert_shown(name: str, description: str) -> None:
    user = User.objects.create_superuser("periodic-admin", password="pw")
    client = Client()
    client.force_login(user)
    answer = client.get("/api/schedules/")
    assert answer.status_code == 200, answer.content
    item = next(s for s in answer.json() if s["name"] == name)
    assert item["task"] == "demo.add" and item["enabled"] is True
    assert item["last_status"] == TaskStatus.DONE and item["last_run_at"]
    assert item["next_run_at"] and item["missed"] >= 3
    page = client.get(reverse("admin:django_tasks_hub_schedules"))
    assert page.status_code == 200
    html = page.content.decode()
    assert name in html and description in html


@pytest.mark.timeout(240)
def test_core_beat_schedule(
    subprocess_worker: Callable[..., Any], beat: Callable[..., SubprocessBeat]
) -> None:
    subprocess_worker("-Q", QUEUE, "-n", f"{QUEUE}@%h", "-P", "solo")
    env = {"TASKS_HUB_TEST_BEAT_EVERY": str(PERIOD)}
    seen = drive(lambda: beat(env=env), "every-2s")
    row = Schedule.objects.get(name="every-2s")
    assert (row.source, row.task, row.description) == (
        "beat_schedule",
        "demo.add",
        "every 2 seconds",
    )
    assert_missed_once_each("every-2s", seen)
    # A run of the schedule carries it on its task row too; a hand-sent task has none.
    run = scheduled_runs("every-2s").filter(status=TaskStatus.DONE).first()
    assert run is not None and run.task.schedule == "every-2s" and run.task.result == 3
    assert_shown("every-2s", "every 2 seconds")


@pytest.fixture
def celery_beat_models() -> Any:
    try:
        from django_celery_beat import models
    except ImportError:
        if IN_CI:
            pytest.fail("django-celery-beat (the [beat] extra) is missing: CI installs it")
        pytest.skip("django-celery-beat (the [beat] extra) is not installed")
    return models


@pytest.mark.timeout(240)
def test_django_celery_beat_database_scheduler(
    subprocess_worker: Callable[..., Any],
    beat: Callable[..., SubprocessBeat],
    celery_beat_models: Any,
) -> None:
    every = celery_beat_models.IntervalSchedule.objects.create(
        every=2, period=celery_beat_models.IntervalSchedule.SECONDS
    )
    celery_beat_models.PeriodicTask.objects.create(
        name="db-every-2s", task="demo.add", interval=every, args="[1, 2]", queue=QUEUE
    )
    subprocess_worker("-Q", QUEUE, "-n", f"{QUEUE}@%h", "-P", "solo")
    scheduler = ("-S", "django_celery_beat.schedulers:DatabaseScheduler")
    seen = drive(lambda: beat(*scheduler), "db-every-2s")
    row = Schedule.objects.get(name="db-every-2s")
    assert (row.source, row.description) == ("django_celery_beat", "every 2 seconds")
    assert_missed_once_each("db-every-2s", seen)
    assert_shown("db-every-2s", "every 2 seconds")


@pytest.mark.timeout(120)
def test_the_check_can_run_inside_beat(
    subprocess_worker: Callable[..., Any], beat: Callable[..., SubprocessBeat]
) -> None:
    subprocess_worker("-Q", QUEUE, "-n", f"{QUEUE}@%h", "-P", "solo")
    env = {
        "TASKS_HUB_TEST_BEAT_EVERY": str(PERIOD),
        "TASKS_HUB_JSON": '{"SCHEDULE_CHECK_IN_BEAT_SECONDS": 1}',
    }
    running = beat(env=env)
    # Nothing in this process runs the check: beat's own thread decides the fire times.
    wait_for(
        lambda: (
            ScheduleFire.objects.filter(
                schedule__name="every-2s", outcome=FireOutcome.ON_TIME
            ).count()
            >= 2
        ),
        40,
        what="beat's check to record fire times",
    )
    running.stop()
    assert "could not check" not in running.output()
