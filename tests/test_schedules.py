"""Fire times of schedules: on time, late, missed (once each), the grace, and the time zone."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.schedules import crontab
from django.test import override_settings

from django_tasks_hub import broker, schedules
from django_tasks_hub.events import MissedFire
from django_tasks_hub.models import Schedule, ScheduleFire, Task, TaskRun
from django_tasks_hub.plugins.base import TaskHubPlugin
from django_tasks_hub.states import FireOutcome, ScheduleOrigin, TaskStatus
from testproject.celery import app as celery_app

UTC = datetime.UTC
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ONE_MINUTE = datetime.timedelta(minutes=1)
ONE_DAY = datetime.timedelta(days=1)


class MissedRecorder(TaskHubPlugin):
    """Keeps every ``on_missed`` call (the tests read it)."""

    name = "missed-recorder"
    calls: list[MissedFire] = []

    def on_missed(self, missed: MissedFire) -> None:
        MissedRecorder.calls.append(missed)


PLUGINS = {"PLUGINS": ["django_tasks_hub.plugins.db.TaskDbPlugin", MissedRecorder]}


@pytest.fixture
def recorder() -> Iterator[list[MissedFire]]:
    MissedRecorder.calls = []
    with override_settings(TASKS_HUB=PLUGINS):
        yield MissedRecorder.calls


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def make_schedule(name: str = "every-10s", spec: dict[str, Any] | None = None) -> Schedule:
    row = Schedule(name=name, task="demo.add", spec=spec or {"every": 10.0}, first_seen=T0)
    schedules._fresh(row, T0)
    row.save()
    return row


def sent(
    name: str, seconds: float, origin: str = ScheduleOrigin.BEAT, status: str = TaskStatus.DONE
) -> TaskRun:
    broker_id = str(uuid.uuid4())
    task = Task.objects.create(
        id=broker_id, name="demo.add", broker_id=broker_id, schedule=name, status=status
    )
    return TaskRun.objects.create(
        task=task,
        name="demo.add",
        broker_id=broker_id,
        schedule=name,
        schedule_origin=origin,
        status=status,
        queued_at=at(seconds),
        runtime=0.5,
    )


def outcomes(row: Schedule) -> list[tuple[float, str]]:
    fires = ScheduleFire.objects.filter(schedule=row).order_by("fire_at")
    return [((f.fire_at - T0).total_seconds(), f.outcome) for f in fires]


pytestmark = pytest.mark.django_db(transaction=True)


def test_on_time_missed_and_one_late_catch_up(recorder: list[MissedFire]) -> None:
    row = make_schedule()
    for seconds in (10.05, 20.1, 57, 67.02):  # Beat down from 25 s to 55 s; 57 s: catch-up.
        sent(row.name, seconds)
    result = schedules.check(now=at(80), sync_first=False)
    assert outcomes(row) == [
        (10, FireOutcome.ON_TIME),
        (20.05, FireOutcome.ON_TIME),  # An interval counts from the last send.
        (30.1, FireOutcome.MISSED),
        (40.1, FireOutcome.MISSED),
        (50.1, FireOutcome.LATE),  # The catch-up at 57 s serves one missed fire time, late.
        (67.0, FireOutcome.ON_TIME),  # The next counts from the catch-up.
    ]
    assert (result.on_time, result.late, len(result.missed)) == (3, 1, 2)
    assert [(m.fire_at - T0).total_seconds() for m in recorder] == [30.1, 40.1]
    assert {m.schedule for m in recorder} == {"every-10s"}
    row.refresh_from_db()
    assert row.next_fire_at == at(77.02)

    # Checked again: nothing is decided twice, nothing emitted twice.
    again = schedules.check(now=at(80), sync_first=False)
    assert (again.on_time, again.late, again.missed) == (0, 0, [])
    assert len(recorder) == 2
    # Beat stays down: the next fire time is missed once its grace (5 s) has passed.
    schedules.check(now=at(84), sync_first=False)
    assert outcomes(row)[-1] == (77.02, FireOutcome.MISSED)
    assert len(recorder) == 3


def test_a_catch_up_after_a_check_turns_the_last_miss_late(recorder: list[MissedFire]) -> None:
    row = make_schedule()
    sent(row.name, 10.0)
    schedules.check(now=at(36), sync_first=False)  # During the outage: 20 and 30 missed.
    assert outcomes(row) == [
        (10, FireOutcome.ON_TIME),
        (20, FireOutcome.MISSED),
        (30, FireOutcome.MISSED),
    ]
    sent(row.name, 37.0)  # Beat is back: its catch-up run.
    schedules.check(now=at(53), sync_first=False)
    assert outcomes(row) == [
        (10, FireOutcome.ON_TIME),
        (20, FireOutcome.MISSED),
        (30, FireOutcome.LATE),
        (47, FireOutcome.MISSED),
    ]
    fire = ScheduleFire.objects.get(schedule=row, fire_at=at(30))
    assert fire.published_at == at(37) and fire.run_id is not None
    assert len(recorder) == 3  # 20, 30 (before its catch-up came), 47


def test_run_now_and_hand_sent_runs_serve_no_fire_time(recorder: list[MissedFire]) -> None:
    row = make_schedule()
    sent(row.name, 10.0, origin=ScheduleOrigin.RUN_NOW)
    sent("", 10.0, origin=ScheduleOrigin.NONE)
    schedules.check(now=at(16), sync_first=False)
    assert outcomes(row) == [(10, FireOutcome.MISSED)]


@override_settings(TASKS_HUB={"SCHEDULE_GRACES": {"every-10s": 1.0}})
def test_grace_per_schedule() -> None:
    row = make_schedule()
    sent(row.name, 12.0)  # 2 s after its fire time: outside a 1 s grace, so late.
    schedules.check(now=at(15), sync_first=False)
    assert outcomes(row)[0] == (10, FireOutcome.LATE)
    with override_settings(TASKS_HUB={"SCHEDULE_GRACES": {"every-10s": 3.0}}):
        sent(row.name, 24.0)  # 12 s after the last send: inside a 3 s grace.
        schedules.check(now=at(30), sync_first=False)
    assert outcomes(row)[1] == (22, FireOutcome.ON_TIME)


def test_default_grace_is_half_the_period_at_most_five_minutes() -> None:
    assert schedules.grace_seconds("x", {"every": 10.0}, T0) == 5.0
    assert schedules.grace_seconds("x", {"every": 3600.0}, T0) == 300.0
    daily = schedules.spec_of(crontab(minute=0, hour=3))
    assert schedules.grace_seconds("x", daily, T0) == 300.0
    with override_settings(TASKS_HUB={"SCHEDULE_GRACE_SECONDS": 42}):
        assert schedules.grace_seconds("x", {"every": 10.0}, T0) == 42.0


@pytest.fixture
def paris() -> Iterator[None]:
    before = celery_app.conf.timezone
    celery_app.conf.timezone = "Europe/Paris"
    try:
        yield
    finally:
        celery_app.conf.timezone = before


def test_crontab_follows_celery_timezone_across_daylight_saving(paris: None) -> None:
    spec = schedules.spec_of(crontab(minute=0, hour=3))
    assert "timezone" not in spec  # CELERY_TIMEZONE, read when the fire time is computed.
    day = datetime.timedelta(days=1)
    # 3:00 in Paris: 02:00 UTC in winter; after the change of 29 March 2026, 01:00 UTC.
    first = schedules.next_fire(spec, datetime.datetime(2026, 3, 27, 12, tzinfo=UTC))
    assert first == datetime.datetime(2026, 3, 28, 2, tzinfo=UTC)
    second = schedules.next_fire(spec, first)
    assert second == datetime.datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert second - first == day - datetime.timedelta(hours=1)
    # And back on 25 October: 01:00 UTC, then 02:00 UTC, a day of 25 hours.
    autumn = schedules.next_fire(spec, datetime.datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert autumn == datetime.datetime(2026, 10, 25, 2, tzinfo=UTC)
    before = schedules.next_fire(spec, datetime.datetime(2026, 10, 23, 12, tzinfo=UTC))
    assert before == datetime.datetime(2026, 10, 24, 1, tzinfo=UTC)


def test_crontab_wall_times_that_daylight_saving_skips_or_repeats_fire_once(paris: None) -> None:
    spec = schedules.spec_of(crontab(minute=30, hour=2))
    # 29 March: 02:30 does not exist in Paris; it fires at the instant 03:30 CEST.
    skipped = schedules.next_fire(spec, datetime.datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert skipped == datetime.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    # 25 October: 02:30 happens twice; it fires the first time only.
    repeated = schedules.next_fire(spec, datetime.datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert repeated == datetime.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    following = schedules.next_fire(spec, repeated)
    assert following == datetime.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_next_run_at_of_a_crontab_in_celery_timezone(paris: None) -> None:
    row = make_schedule("nightly", schedules.spec_of(crontab(minute=0, hour=3)))
    assert row.next_fire_at == datetime.datetime(2026, 3, 2, 2, tzinfo=UTC)  # 03:00 CET
    assert row.description == ""  # Written by sync(); set directly here.
    assert schedules.describe(row.spec) == "crontab 0 3 * * * (Europe/Paris)"


def test_schedules_in_words() -> None:
    assert schedules.describe({"every": 2.0}) == "every 2 seconds"
    assert schedules.describe({"every": 60.0}) == "every 1 minute"
    assert schedules.describe({"every": 7200.0}) == "every 2 hours"
    assert schedules.describe({"every": 1.5}) == "every 1.5 seconds"


def test_schedule_of_tells_beat_sends_from_run_now_and_hand_sends() -> None:
    assert broker.schedule_of({}) == ("", "")
    # django-celery-beat's admin "run now": its header without the beat mark.
    assert broker.schedule_of({"periodic_task_name": "nightly"}) == ("nightly", "run_now")
    token = broker._beat_entry.set("nightly")
    try:
        headers: dict[str, Any] = {"periodic_task_name": "nightly"}
        assert broker.schedule_of(headers) == ("nightly", "beat")
        assert headers[broker.SCHEDULE_HEADER] == "nightly"  # The worker reads the same.
    finally:
        broker._beat_entry.reset(token)


def test_sync_registers_changes_and_disables_removed() -> None:
    definitions = schedules.beat_schedule_definitions(
        {
            "a": {"task": "demo.add", "schedule": 5.0},
            "b": {"task": "demo.add", "schedule": crontab(minute="*/5")},
        }
    )
    schedules.sync(definitions, complete=["beat_schedule"], now=T0)
    a = Schedule.objects.get(name="a")
    assert (a.description, a.next_fire_at) == ("every 5 seconds", at(5))
    assert Schedule.objects.get(name="b").next_fire_at == at(300)
    del definitions["b"]
    schedules.sync(definitions, complete=["beat_schedule"], now=at(1))
    b = Schedule.objects.get(name="b")
    assert not b.enabled and b.next_fire_at is None
    # Unchanged: the cursor stays where the check left it.
    assert Schedule.objects.get(name="a").cursor == T0


def test_summaries_sort_the_schedules_needing_attention_first() -> None:
    ok, failing = make_schedule("a-ok"), make_schedule("b-fail")
    make_schedule("c-miss")
    sent(ok.name, 10.0)
    sent(ok.name, 20.0, status=TaskStatus.FAILED)
    sent(ok.name, 30.0)
    sent(failing.name, 10.0)
    sent(failing.name, 20.0, status=TaskStatus.FAILED)
    schedules.check(now=at(25), sync_first=False)
    found = schedules.summaries(now=at(25))
    assert [s.name for s in found] == ["b-fail", "c-miss", "a-ok"]
    a = found[2]
    assert a.last_status == TaskStatus.DONE and a.last_run_at == at(30)
    assert a.success_rate == pytest.approx(2 / 3) and a.median_runtime == 0.5
    assert found[1].missed == 2 and found[1].last_run_at is None
    attention = schedules.needing_attention(now=at(25))
    assert [s.name for s in attention] == ["b-fail", "c-miss"]


LONDON = {"solar": "sunrise", "lat": 51.5074, "lon": -0.1278}


def test_a_solar_schedule_fires_at_its_event() -> None:
    # Sunrise in London on the longest day is at 04:43 BST (03:43 UTC), a day later 14 s later.
    midsummer = datetime.datetime(2026, 6, 21, tzinfo=UTC)
    first = schedules.next_fire(LONDON, midsummer)
    assert first is not None and abs(first - midsummer.replace(hour=3, minute=43)) < ONE_MINUTE
    following = schedules.next_fire(LONDON, first)
    assert following is not None and following - first - ONE_DAY < ONE_MINUTE
    # From a moment later the same day, the same fire time: it is a key of its record.
    assert schedules.next_fire(LONDON, midsummer + datetime.timedelta(hours=1)) == first
    assert first.microsecond == 0
    # No sunrise in the polar night: the next one is when the sun comes back (mid-February).
    svalbard = {"solar": "sunrise", "lat": 78.22, "lon": 15.65}
    back = schedules.next_fire(svalbard, datetime.datetime(2026, 12, 1, tzinfo=UTC))
    assert back is not None and (back.month, 10 <= back.day <= 20) == (2, True)


def test_a_sunrise_nothing_served_is_missed_and_one_served_is_on_time(
    recorder: list[MissedFire],
) -> None:
    start = datetime.datetime(2026, 6, 20, 12, tzinfo=UTC)
    row = Schedule(name="at-sunrise", task="demo.add", spec=LONDON, first_seen=start)
    schedules._fresh(row, start)
    row.save()
    sunrise = schedules.next_fire(LONDON, start)
    assert sunrise is not None and row.next_fire_at == sunrise
    # Served the first day (a send 2 s after the sunrise), nothing the day after.
    served = sent(row.name, (sunrise - T0).total_seconds() + 2)
    next_day = schedules.next_fire(LONDON, sunrise)
    assert next_day is not None
    schedules.check(now=next_day + datetime.timedelta(minutes=10), sync_first=False)
    fires = list(ScheduleFire.objects.filter(schedule=row).order_by("fire_at"))
    assert [(f.fire_at, f.outcome, f.run_id) for f in fires] == [
        (sunrise, FireOutcome.ON_TIME, served.pk),
        (next_day, FireOutcome.MISSED, None),
    ]
    assert [fire.fire_at for fire in recorder] == [next_day]
