"""The schedules page: what it shows, and run now, enable and disable behind their permissions."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from django_tasks_hub import schedules
from django_tasks_hub.models import Schedule, Task
from django_tasks_hub.states import ScheduleOrigin
from tests.admin.conftest import ADMIN_TEST_QUEUE, _staff, messages_of
from tests.conftest import IN_CI

PAGE = "admin:django_tasks_hub_schedules"


@pytest.fixture
def beat_models(db: Any) -> Any:
    try:
        from django_celery_beat import models
    except ImportError:
        if IN_CI:
            pytest.fail("django-celery-beat (the [beat] extra) is missing: CI installs it")
        pytest.skip("django-celery-beat (the [beat] extra) is not installed")
    return models


@pytest.fixture
def nightly(beat_models: Any) -> Schedule:
    """A django-celery-beat schedule, as the hub registers it."""
    every = beat_models.IntervalSchedule.objects.create(
        every=1, period=beat_models.IntervalSchedule.DAYS
    )
    beat_models.PeriodicTask.objects.create(
        name="nightly", task="demo.add", interval=every, args="[2, 3]", queue=ADMIN_TEST_QUEUE
    )
    schedules.sync(schedules.periodic_task_definitions())
    return Schedule.objects.get(name="nightly")


def control_url(schedule: Schedule, control: str) -> str:
    return reverse(f"admin:django_tasks_hub_schedule_{control}", args=[schedule.pk])


def staff(name: str, *codenames: str) -> User:
    return _staff(name, "view_schedule", *codenames)


def test_page_lists_the_schedules_with_their_controls(
    client: Any, superuser: User, nightly: Schedule
) -> None:
    schedules.sync(
        schedules.beat_schedule_definitions({"every-5m": {"task": "demo.add", "schedule": 300}})
    )
    client.force_login(superuser)
    page = client.get(reverse(PAGE))
    assert page.status_code == 200
    html = page.content.decode()
    assert "nightly" in html and "every 1 day" in html and "every 5 minutes" in html
    for control in ("run_now", "disable"):
        assert control_url(nightly, control) in html
    # A schedule of the settings has no controls: it is changed in the settings.
    settings_row = Schedule.objects.get(name="every-5m")
    assert control_url(settings_row, "run_now") not in html


def test_page_needs_the_view_permission(client: Any, nightly: Schedule) -> None:
    client.force_login(_staff("nobody"))
    assert client.get(reverse(PAGE)).status_code == 403
    client.force_login(staff("viewer"))
    page = client.get(reverse(PAGE))
    assert page.status_code == 200 and b"nightly" in page.content
    # Seen, but no control offered without its permission.
    assert control_url(nightly, "run_now").encode() not in page.content
    assert control_url(nightly, "disable").encode() not in page.content


@pytest.mark.parametrize("control", ["run_now", "enable", "disable"])
def test_each_control_needs_its_permission(client: Any, nightly: Schedule, control: str) -> None:
    others = {"run_now": "run_schedule", "enable": "enable_schedule", "disable": "disable_schedule"}
    granted = [codename for name, codename in others.items() if name != control]
    client.force_login(staff("partial", *granted))
    assert client.post(control_url(nightly, control)).status_code == 403
    assert not Task.objects.filter(schedule="nightly").exists()
    nightly.refresh_from_db()
    assert nightly.enabled


def test_run_now_sends_a_run_that_serves_no_fire_time(client: Any, nightly: Schedule) -> None:
    client.force_login(staff("runner", "run_schedule"))
    assert client.get(control_url(nightly, "run_now")).status_code == 405
    answer = client.post(control_url(nightly, "run_now"))
    assert answer.status_code == 302
    assert messages_of(client.get(reverse(PAGE))) == ["Sent nightly now."]
    task = Task.objects.get(schedule="nightly")
    run = task.runs.get()
    assert (task.name, task.args) == ("demo.add", [2, 3])
    assert (run.schedule, run.schedule_origin) == ("nightly", ScheduleOrigin.RUN_NOW)
    assert task.created_by is not None


def test_disable_then_enable(client: Any, nightly: Schedule, beat_models: Any) -> None:
    client.force_login(staff("switcher", "enable_schedule", "disable_schedule"))
    assert client.post(control_url(nightly, "disable")).status_code == 302
    assert not beat_models.PeriodicTask.objects.get(name="nightly").enabled
    nightly.refresh_from_db()
    assert not nightly.enabled and nightly.next_fire_at is None
    page = client.get(reverse(PAGE)).content.decode()
    assert control_url(nightly, "enable") in page and "Disabled nightly." in page
    before = nightly.cursor
    assert client.post(control_url(nightly, "enable")).status_code == 302
    nightly.refresh_from_db()
    assert nightly.enabled and beat_models.PeriodicTask.objects.get(name="nightly").enabled
    # Checked from now on: the fire times it skipped while disabled are not missed.
    assert nightly.cursor > before and nightly.next_fire_at is not None


def test_settings_schedules_cannot_be_controlled(client: Any, superuser: User) -> None:
    schedules.sync(
        schedules.beat_schedule_definitions({"every-5m": {"task": "demo.add", "schedule": 300}})
    )
    row = Schedule.objects.get(name="every-5m")
    client.force_login(superuser)
    client.post(control_url(row, "run_now"))
    [message] = messages_of(client.get(reverse(PAGE)))
    assert "CELERY_BEAT_SCHEDULE" in message
    assert not Task.objects.filter(schedule="every-5m").exists()


def test_task_page_links_to_its_schedule(
    client: Any, superuser: User, nightly: Schedule, make_task: Any
) -> None:
    task = make_task("demo.add", "done", schedule="nightly")
    client.force_login(superuser)
    page = client.get(reverse("admin:django_tasks_hub_task_change", args=[task.pk]))
    assert f'{reverse(PAGE)}#schedule-{nightly.pk}"'.encode() in page.content


def test_django_celery_beats_own_run_now_is_told_from_its_scheduled_sends(
    client: Any, superuser: User, nightly: Schedule, beat_models: Any
) -> None:
    # django-celery-beat's admin action sets the same periodic_task_name header as its
    # scheduler does; without the beat mark the run is a run now, which serves no fire time.
    periodic = beat_models.PeriodicTask.objects.get(name="nightly")
    client.force_login(superuser)
    answer = client.post(
        reverse("admin:django_celery_beat_periodictask_changelist"),
        {"action": "run_tasks", "_selected_action": [periodic.pk]},
    )
    assert answer.status_code == 302
    run = Task.objects.get(schedule="nightly").runs.get()
    assert (run.schedule, run.schedule_origin) == ("nightly", ScheduleOrigin.RUN_NOW)
