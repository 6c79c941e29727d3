"""``GET schedules/``: each schedule with its last run, next fire time and missed fire times."""

from __future__ import annotations

import datetime
from typing import Any

from django.test import Client
from django.utils import timezone

from django_tasks_hub import schedules
from django_tasks_hub.models import Schedule, ScheduleFire, Task
from django_tasks_hub.states import FireOutcome, ScheduleOrigin


def test_schedules_list(reader_client: Client, make_task: Any) -> None:
    now = timezone.now()
    schedules.sync(
        schedules.beat_schedule_definitions(
            {
                "every-minute": {"task": "demo.add", "schedule": 60},
                "hourly": {"task": "demo.fail", "schedule": 3600},
            }
        ),
        now=now - datetime.timedelta(minutes=10),
    )
    task = make_task("done", "demo.add")
    Task.objects.filter(pk=task.pk).update(schedule="every-minute")
    task.runs.update(schedule="every-minute", schedule_origin=ScheduleOrigin.BEAT, runtime=2.0)
    hourly = Schedule.objects.get(name="hourly")
    ScheduleFire.objects.create(
        schedule=hourly, fire_at=now - datetime.timedelta(minutes=5), outcome=FireOutcome.MISSED
    )
    answer = reader_client.get("/api/schedules/")
    assert answer.status_code == 200
    body = answer.json()
    assert [item["name"] for item in body] == ["hourly", "every-minute"]  # attention first
    missing, fine = body
    assert missing["missed"] == 1 and missing["needs_attention"] is True
    assert missing["last_run_at"] is None and missing["last_status"] is None
    assert fine["task"] == "demo.add" and fine["enabled"] is True
    assert fine["schedule"] == "every 1 minute" and fine["defined_in"] == "beat_schedule"
    assert fine["last_status"] == "done" and fine["last_task_id"] == str(task.pk)
    assert fine["success_rate"] == 1.0 and fine["median_runtime"] == 2.0
    assert fine["next_run_at"] and fine["missed"] == 0
    # The task and its runs carry their schedule.
    detail = reader_client.get(f"/api/tasks/{task.pk}/").json()
    assert detail["schedule"] == "every-minute"
    runs = reader_client.get(f"/api/tasks/{task.pk}/runs/").json()
    assert runs["data"][0]["schedule_origin"] == "beat"


def test_schedules_list_needs_a_login(db: Any) -> None:
    answer = Client().get("/api/schedules/")
    assert answer.status_code == 403
    assert "detail" in answer.json()
