"""Database cost per attempt: queries and time on every database, memory growth, the switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.test import Client

from django_tasks_hub import flush
from django_tasks_hub.models import TaskRun
from testproject import tasks
from tests.conftest import ROOT, wait_status

pytestmark = pytest.mark.worker


def run_of(broker_id: str) -> TaskRun:
    flush(timeout=10)
    return TaskRun.objects.get(broker_id=broker_id)


def test_a_task_making_three_queries_records_three(worker, write_mode):
    result = tasks.three_queries.delay()
    wait_status(result.id, "done")
    run = run_of(result.id)
    assert run.db_queries == 3
    assert run.db_time is not None and 0 < run.db_time < run.runtime
    assert run.memory_growth is not None and run.memory_growth >= 0
    client = Client()
    client.force_login(User.objects.create_user("reader"))
    body = client.get(f"/api/task-history/{run.pk}/").json()
    assert body["db_queries"] == 3
    assert body["db_time"] == pytest.approx(run.db_time)
    assert body["memory_growth"] == run.memory_growth


def test_savepoints_and_the_hubs_own_writes_are_not_counted(worker):
    result = tasks.savepoints_and_progress.delay()
    wait_status(result.id, "done")
    assert run_of(result.id).db_queries == 1


def test_a_failure_and_a_retry_record_their_cost_too(worker):
    failed = tasks.fail.delay("no queries")
    wait_status(failed.id, "failed")
    assert run_of(failed.id).db_queries == 0
    flaky = tasks.flaky.delay(fail_times=1, countdown=0.1)
    wait_status(flaky.id, "done")
    flush(timeout=10)
    runs = TaskRun.objects.filter(broker_id=flaky.id).order_by("retries")
    assert [(r.status, r.db_queries) for r in runs] == [("retrying", 0), ("done", 0)]


def test_the_setting_turns_it_off(worker, settings):
    settings.TASKS_HUB = {**settings.TASKS_HUB, "MEASURE_COST": False}
    result = tasks.three_queries.delay()
    wait_status(result.id, "done")
    run = run_of(result.id)
    assert (run.db_queries, run.db_time, run.memory_growth) == (None, None, None)


#: Run in a process of its own, with a ballast above the peak it starts with: the suite's own
#: peak (after its 2,000-task tests) is far above any fixed ballast, and then the measured
#: growth is rightly 0.
MEMORY_PROBE = """
import django, json, os, resource
django.setup()
from django_tasks_hub.insight import cost
# Linux keeps a process's peak across the exec that started it (the forking test process's),
# so the ballast goes 64 MB above that peak, whatever it is.
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with open("/proc/self/statm") as statm:
    now = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
cost.start()
ballast = bytearray(max(peak - now, 0) + 64 * 1024 * 1024)
ballast[::4096] = b"x" * len(ballast[::4096])
first = cost.stop()
del ballast
cost.start()
again = cost.stop()
print(json.dumps([first.memory_growth, again.memory_growth, cost.stop() is None]))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_memory_growth_is_how_far_the_run_raised_the_peak():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    first, again, ended = json.loads(probe.stdout.strip().splitlines()[-1])
    assert first >= 32 * 1024 * 1024
    assert again < 8 * 1024 * 1024  # Nothing new: the peak is where the last run left it.
    assert ended  # Stopped twice: the second stop has nothing to measure.
