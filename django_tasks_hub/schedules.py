"""Periodic tasks: what should have run, what did, and what was missed."""

from __future__ import annotations

import datetime
import logging
import statistics
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from django.apps import apps
from django.db import connections, router, transaction
from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from django_tasks_hub.broker import beat_entries, beat_schedule, celery_timezone
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.events import MissedFire
from django_tasks_hub.models import Schedule, ScheduleFire, ScheduleSource, TaskRun
from django_tasks_hub.plugins.base import registry
from django_tasks_hub.states import TERMINAL_STATUSES, FireOutcome, TaskStatus
from django_tasks_hub.threads import start_thread

logger = logging.getLogger(__name__)

UTC = datetime.UTC
#: Longest grace by default: half the period, but never more than this.
MAX_DEFAULT_GRACE = 300.0
#: At most this many fire times of one schedule are decided per check; a schedule whose beat
#: was down for long catches up over the next checks.
MAX_FIRES_PER_CHECK = 1000
#: Statuses that count as a failed run on the schedules page and the overview.
FAILED_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.LOST, TaskStatus.REFUSED})
_CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


# -- schedules as data -------------------------------------------------------------------------


def spec_of(schedule: Any) -> dict[str, Any]:
    """A Celery schedule (a number of seconds, a timedelta, ``schedule``, ``crontab``, ``solar``,
    django-celery-beat's ``clocked``) as plain data that any process can read back."""
    from celery import schedules as cs

    if isinstance(schedule, int | float):
        return {"every": float(schedule)}
    if isinstance(schedule, datetime.timedelta):
        return {"every": schedule.total_seconds()}
    if isinstance(schedule, cs.crontab):
        spec: dict[str, Any] = {
            "crontab": {name: str(getattr(schedule, f"_orig_{name}")) for name in _CRON_FIELDS}
        }
        tz = getattr(schedule, "tz", None)
        if tz is not None and type(schedule) is not cs.crontab:
            spec["timezone"] = str(tz)  # django-celery-beat's crontabs carry their own zone.
        return spec
    if isinstance(schedule, cs.solar):
        return {"solar": schedule.event, "lat": schedule.lat, "lon": schedule.lon}
    if isinstance(schedule, cs.schedule):
        return {"every": cast(Any, schedule).run_every.total_seconds()}
    clocked = getattr(schedule, "clocked_time", None)
    if isinstance(clocked, datetime.datetime):
        return {"clocked": clocked.astimezone(UTC).isoformat()}
    return {"other": repr(schedule)}


def describe(spec: dict[str, Any]) -> str:
    """The schedule in words: "every 2 seconds", "crontab 0 3 * * * (Europe/Paris)"..."""
    if "every" in spec:
        return f"every {_seconds_in_words(float(spec['every']))}"
    if "crontab" in spec:
        c = spec["crontab"]
        # The order of a crontab line: minute hour day-of-month month day-of-week.
        line = " ".join(
            c[name] for name in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        )
        return f"crontab {line} ({spec.get('timezone') or celery_timezone()})"
    if "solar" in spec:
        return f"solar: {spec['solar']} at {spec['lat']}, {spec['lon']}"
    if "clocked" in spec:
        return f"once at {spec['clocked']}"
    return str(spec.get("other", "unknown"))


def _seconds_in_words(seconds: float) -> str:
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    shown = f"{int(seconds)}" if seconds == int(seconds) else f"{seconds:g}"
    return "1 second" if shown == "1" else f"{shown} seconds"


def _zone(spec: dict[str, Any]) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(spec.get("timezone") or celery_timezone())


def _cron_sets(spec: dict[str, Any]) -> dict[str, set[int]]:
    from celery.schedules import crontab

    c = crontab(**spec["crontab"])
    return {name: set(getattr(c, name)) for name in _CRON_FIELDS}


def next_fire(spec: dict[str, Any], after: datetime.datetime) -> datetime.datetime | None:
    """The first fire time of ``spec`` strictly after ``after`` (aware, UTC), or ``None`` when
    the hub cannot compute it (custom schedules, solar ones without ephem) or there is none
    (a past one-off).

    For an interval, ``after`` is the moment its last run was sent (beat counts from there). A
    crontab follows its zone (``CELERY_TIMEZONE`` unless it names one), daylight saving
    included: each wall-clock time fires once; one that a spring-forward skips fires at the
    same instant as the hour after it.
    """
    if "every" in spec:
        return after + datetime.timedelta(seconds=float(spec["every"]))
    if "clocked" in spec:
        at = datetime.datetime.fromisoformat(spec["clocked"])
        return at if at > after else None
    if "crontab" in spec:
        return _cron_next(_cron_sets(spec), after, _zone(spec))
    if "solar" in spec:
        return _solar_next(spec, after)
    return None


#: How many days a solar event is looked for: at high latitudes the sun does not rise for
#: weeks in winter (and some dawns do not happen in summer).
SOLAR_SEARCH_DAYS = 190


def _solar_next(spec: dict[str, Any], after: datetime.datetime) -> datetime.datetime | None:
    """The first time of the solar event after ``after``, as Celery's ``solar`` computes it
    (its observer, horizon and method, through :mod:`ephem`); ``None`` without :mod:`ephem`,
    which beat needs to run such a schedule at all."""
    from celery import schedules as cs

    try:
        # Its observer and method are attributes the type stubs do not declare.
        event: Any = cs.solar(spec["solar"], spec["lat"], spec["lon"])
    except ImportError:
        return None
    ephem, observer = event.ephem, event.cal
    sun = ephem.Sun()
    start = ephem.Date(after.astimezone(UTC).replace(tzinfo=None))
    options = {"use_center": True} if event.use_center else {}
    for _ in range(SOLAR_SEARCH_DAYS):
        try:
            found = getattr(observer, event.method)(sun, start=start, **options)
        except ephem.CircumpolarError:
            # Not on that day: look again from the next day, as Celery's solar does.
            start = observer.next_antitransit(sun, start=start)
            continue
        # Up to the whole second: ephem's search from another start differs in the last
        # digits, and a fire time is a key, the same at every check. Rounded up, it is after
        # the event itself, so a search from it finds the next one.
        moment = found.datetime().replace(tzinfo=UTC)
        whole = moment.replace(microsecond=0)
        return whole if whole == moment else whole + datetime.timedelta(seconds=1)
    return None


def _cron_next(
    sets: dict[str, set[int]], after: datetime.datetime, tz: zoneinfo.ZoneInfo
) -> datetime.datetime | None:
    after = after.astimezone(UTC)
    # Two hours before ``after`` in wall-clock time: a DST change can put the next fire time's
    # wall clock before ``after``'s.
    local = after.astimezone(tz).replace(tzinfo=None) - datetime.timedelta(hours=2)
    day = local.date()
    hours, minutes = sorted(sets["hour"]), sorted(sets["minute"])
    for _ in range(366 * 5):  # Leap days (29 February) can be four years apart.
        # Celery's crontab needs both the day of the month and the day of the week (0 = Sunday).
        if (
            day.month in sets["month_of_year"]
            and day.day in sets["day_of_month"]
            and (day.weekday() + 1) % 7 in sets["day_of_week"]
        ):
            for hour in hours:
                if day == local.date() and hour < local.hour:
                    continue
                for minute in minutes:
                    wall = datetime.datetime.combine(day, datetime.time(hour, minute))
                    at = wall.replace(tzinfo=tz).astimezone(UTC)
                    if at > after:
                        return at
        day += datetime.timedelta(days=1)
    return None


def grace_seconds(name: str, spec: dict[str, Any], fire_at: datetime.datetime) -> float:
    """How long after ``fire_at`` a run still serves it: ``SCHEDULE_GRACES[name]``, else
    ``SCHEDULE_GRACE_SECONDS``, else half the period to the next fire time, at most 5 min."""
    graces = hub_settings.SCHEDULE_GRACES or {}
    if name in graces:
        return float(graces[name])
    if hub_settings.SCHEDULE_GRACE_SECONDS is not None:
        return float(hub_settings.SCHEDULE_GRACE_SECONDS)
    if "every" in spec:
        period = float(spec["every"])  # What next_fire() would say, without the datetimes.
    else:
        following = next_fire(spec, fire_at)
        period = (following - fire_at).total_seconds() if following else 2 * MAX_DEFAULT_GRACE
    return min(period / 2, MAX_DEFAULT_GRACE)


def _early(spec: dict[str, Any], grace: float) -> datetime.timedelta:
    # A run sent a moment before its computed fire time still serves it: the interval's anchor
    # is when the hub saw the last send, a little after beat counted it.
    period = float(spec.get("every") or 60.0)
    return datetime.timedelta(seconds=min(grace, period / 10, 1.0))


# -- where schedules are defined ------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """A schedule as its source defines it."""

    name: str
    task: str
    spec: dict[str, Any]
    source: str
    enabled: bool = True


def beat_schedule_definitions(entries: dict[str, Any] | None = None) -> dict[str, Definition]:
    """The entries of ``CELERY_BEAT_SCHEDULE`` (or ``entries``, the same shape)."""
    found = {}
    for name, entry in (beat_schedule() if entries is None else entries).items():
        if not isinstance(entry, dict) or "task" not in entry or "schedule" not in entry:
            continue
        found[name] = Definition(
            name, str(entry["task"]), spec_of(entry["schedule"]), ScheduleSource.BEAT_SCHEDULE
        )
    return found


def django_celery_beat_installed() -> bool:
    """Whether django-celery-beat is in ``INSTALLED_APPS`` (it is optional: ``[beat]``)."""
    return apps.is_installed("django_celery_beat")


def periodic_task_definitions() -> dict[str, Definition]:
    """django-celery-beat's ``PeriodicTask`` rows, when that app is installed."""
    if not django_celery_beat_installed():
        return {}
    from django_celery_beat.models import PeriodicTask

    found = {}
    related = ("interval", "crontab", "solar", "clocked")
    for pt in PeriodicTask.objects.select_related(*related):
        found[pt.name] = Definition(
            pt.name,
            pt.task,
            _periodic_spec(pt),
            ScheduleSource.DJANGO_CELERY_BEAT,
            enabled=bool(pt.enabled),
        )
    return found


def _periodic_spec(pt: Any) -> dict[str, Any]:
    if pt.interval_id:
        seconds = {"days": 86_400, "hours": 3600, "minutes": 60, "seconds": 1}
        return {"every": float(pt.interval.every * seconds.get(pt.interval.period, 1e-6))}
    if pt.crontab_id:
        c = pt.crontab
        return {
            "crontab": {name: str(getattr(c, name)) for name in _CRON_FIELDS},
            "timezone": str(c.timezone),
        }
    if pt.solar_id:
        return {
            "solar": pt.solar.event,
            "lat": float(pt.solar.latitude),
            "lon": float(pt.solar.longitude),
        }
    if pt.clocked_id:
        return {"clocked": pt.clocked.clocked_time.astimezone(UTC).isoformat()}
    return {"other": "no schedule"}


def _entry_definitions(scheduler: Any) -> dict[str, Definition]:
    found = {}
    for name, entry in beat_entries(scheduler).items():
        model = getattr(entry, "model", None)  # django-celery-beat's ModelEntry.
        source = (
            ScheduleSource.DJANGO_CELERY_BEAT if model is not None else ScheduleSource.BEAT_SCHEDULE
        )
        enabled = bool(getattr(model, "enabled", True))
        found[name] = Definition(name, str(entry.task), spec_of(entry.schedule), source, enabled)
    return found


def _fresh(row: Any, now: datetime.datetime) -> None:
    """Start checking ``row`` from ``now``: what was due before is not counted."""
    row.cursor = now
    row.pending_miss_at = None
    _plan(row)


def _plan(row: Any) -> None:
    """Set the row's next fire time and the moment its grace ends from its cursor."""
    fire = next_fire(row.spec, row.cursor) if row.enabled else None
    row.next_fire_at = fire
    row.decide_at = (
        None
        if fire is None
        else fire + datetime.timedelta(seconds=grace_seconds(row.name, row.spec, fire))
    )


def sync(
    definitions: dict[str, Definition],
    *,
    complete: Iterable[str] = (),
    now: datetime.datetime | None = None,
) -> int:
    """Bring the Schedule rows in step with ``definitions``; returns how many rows changed.

    A new, changed or re-enabled schedule is checked from ``now`` on. Rows of a source listed
    in ``complete`` that ``definitions`` lacks are disabled (their definition was removed).
    """
    now = now or timezone.now()
    # The definitions as stored, compared without building a model per row: a check every
    # minute compares them all, and they rarely change.
    stored = {
        name: (task, source, spec, enabled)
        for name, task, source, spec, enabled in Schedule.objects.values_list(
            "name", "task", "source", "spec", "enabled"
        )
    }
    changed = {
        name
        for name, d in definitions.items()
        if name in stored and stored[name] != (d.task, d.source, d.spec, d.enabled)
    }
    removed = {
        name
        for name, (_task, source, _spec, enabled) in stored.items()
        if enabled and source in set(complete) and name not in definitions
    }
    rows = {row.name: row for row in Schedule.objects.filter(name__in=changed | removed)}
    create, update = [], []
    for name, d in definitions.items():
        if name in stored and name not in changed:
            continue
        row = rows.get(name)
        if row is None:
            row = Schedule(
                name=name,
                task=d.task,
                source=d.source,
                spec=d.spec,
                description=describe(d.spec)[:255],
                enabled=d.enabled,
                first_seen=now,
            )
            _fresh(row, now)
            create.append(row)
            continue
        restart = row.spec != d.spec or (d.enabled and not row.enabled)
        row.task, row.source, row.spec, row.enabled = d.task, d.source, d.spec, d.enabled
        row.description = describe(d.spec)[:255]
        if restart:
            _fresh(row, now)
        else:
            _plan(row)
        update.append(row)
    for name in removed:
        row = rows[name]
        row.enabled = False
        _plan(row)
        update.append(row)
    if create:
        Schedule.objects.bulk_create(create, ignore_conflicts=True)
    if update:
        fields = ["task", "source", "spec", "description", "enabled", "cursor", "next_fire_at",
                  "decide_at", "pending_miss_at"]  # fmt: skip
        Schedule.objects.bulk_update(update, fields)
    return len(create) + len(update)


def set_enabled(row: Schedule, enabled: bool) -> Schedule:
    """Record that ``row`` was enabled or disabled; enabled again, it is checked from now."""
    if row.enabled == enabled:
        return row
    row.enabled = enabled
    if enabled:
        _fresh(row, timezone.now())
    else:
        _plan(row)
    row.save(update_fields=["enabled", "cursor", "next_fire_at", "decide_at", "pending_miss_at"])
    return row


def register_beat(scheduler: Any) -> None:
    """At beat's start: register the schedules its scheduler runs, as it sees them."""
    definitions = _entry_definitions(scheduler)
    db_scheduler = hasattr(scheduler, "Model")  # django-celery-beat's DatabaseScheduler.
    complete = [ScheduleSource.DJANGO_CELERY_BEAT if db_scheduler else ScheduleSource.BEAT_SCHEDULE]
    sync(definitions, complete=complete)
    logger.info("tasks-hub registered %d beat schedule(s)", len(definitions))
    seconds = hub_settings.SCHEDULE_CHECK_IN_BEAT_SECONDS
    if seconds:
        _start_check_thread(float(seconds))


def _start_check_thread(seconds: float) -> None:
    import threading

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            try:
                check()
            except Exception:
                logger.exception("tasks-hub could not check the schedules' fire times")

    start_thread(loop, "tasks-hub-schedule-check")


def configured_definitions() -> tuple[dict[str, Definition], list[str]]:
    """What this process knows of the schedules: ``CELERY_BEAT_SCHEDULE`` and django-celery-beat
    (which wins a name both define: its scheduler copies the settings' entries into its
    table); and the sources known completely."""
    definitions = beat_schedule_definitions()
    complete: list[str] = []
    if django_celery_beat_installed():
        definitions.update(periodic_task_definitions())
        complete.append(ScheduleSource.DJANGO_CELERY_BEAT)
    return definitions, complete


# -- the check -------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """What one check decided."""

    schedules: int = 0
    on_time: int = 0
    late: int = 0
    missed: list[MissedFire] = field(default_factory=list)


def check(*, now: datetime.datetime | None = None, sync_first: bool = True) -> CheckResult:
    """Decide every fire time whose grace has passed, record it, and emit ``on_missed`` for
    each missed one (once: a fire time is decided once, under its schedule's row lock).

    A fire time is served (on time) by the first run its schedule's scheduler sends from a
    moment before it to the end of its grace. A run sent after that, before the next fire
    time's window, is a catch-up: it serves the last missed fire time, late, and at most one.
    A handful of statements whatever the number of schedules.
    """
    now = now or timezone.now()
    if sync_first:
        definitions, complete = configured_definitions()
        sync(definitions, complete=complete, now=now)
    result = CheckResult()
    db = router.db_for_write(Schedule)
    with transaction.atomic(using=db):
        due = [
            _Position(*values)
            for values in Schedule.objects.using(db)
            .due(now)
            .select_for_update(skip_locked=True)
            .values_list("pk", "name", "task", "spec", "cursor", "pending_miss_at")
        ]
        result.schedules = len(due)
        if not due:
            return result
        since = min(row.cursor for row in due)
        runs: dict[str, list[tuple[int, datetime.datetime]]] = defaultdict(list)
        sent = (
            TaskRun.objects.using(db)
            .of_schedules([row.name for row in due])
            .sent_by_scheduler()
            .filter(queued_at__gt=since, queued_at__lte=now)
            .order_by("schedule", "queued_at")
            .values_list("schedule", "pk", "queued_at")
        )
        for name, pk, queued_at in sent:
            runs[name].append((pk, queued_at))
        fires: list[list[Any]] = []
        caught_up: list[tuple[int, datetime.datetime, int, datetime.datetime]] = []
        for row in due:
            _decide(row, runs.get(row.name, []), now, fires, caught_up)
        _insert_fires(fires, now, db)
        for schedule_pk, fire_at, run_pk, published in caught_up:
            ScheduleFire.objects.using(db).filter(
                schedule_id=schedule_pk, fire_at=fire_at, outcome=FireOutcome.MISSED
            ).update(outcome=FireOutcome.LATE, run_id=run_pk, published_at=published)
        _save_positions(due, db)
        by_pk = {row.pk: row for row in due}
        for schedule_pk, fire_at, outcome, _run, _published, grace in fires:
            if outcome == FireOutcome.MISSED:
                row = by_pk[schedule_pk]
                result.missed.append(MissedFire(row.name, row.task, fire_at, grace, now))
            elif outcome == FireOutcome.LATE:
                result.late += 1
            else:
                result.on_time += 1
        result.late += len(caught_up)
        transaction.on_commit(lambda: _emit(list(result.missed)), using=db)
    return result


@dataclass
class _Position:
    """Where the check of one schedule stands (a Schedule row's columns, without the model)."""

    pk: int
    name: str
    task: str
    spec: dict[str, Any]
    cursor: datetime.datetime
    pending_miss_at: datetime.datetime | None
    enabled: bool = True
    next_fire_at: datetime.datetime | None = None
    decide_at: datetime.datetime | None = None


def _insert_fires(fires: list[list[Any]], now: datetime.datetime, db: str) -> None:
    if not fires:
        return
    connection = connections[db]
    if connection.vendor != "postgresql":
        ScheduleFire.objects.using(db).bulk_create(
            [
                ScheduleFire(
                    schedule_id=pk,
                    fire_at=at,
                    outcome=outcome,
                    run_id=run,
                    published_at=published,
                    decided_at=now,
                )
                for pk, at, outcome, run, published, _grace in fires
            ],
            ignore_conflicts=True,
        )
        return
    # One INSERT from the rows' arrays: bulk_create() spends its time building a VALUES
    # tuple per row in Python.
    table = connection.ops.quote_name(ScheduleFire._meta.db_table)
    columns = [_array(column) for column in zip(*(fire[:5] for fire in fires), strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (schedule_id, fire_at, outcome, run_id, published_at,"
            " decided_at) SELECT v.s, v.f, v.o, v.r, v.p, %s FROM unnest(%s::bigint[],"
            " %s::timestamptz[], %s::varchar[], %s::bigint[], %s::timestamptz[])"
            " AS v(s, f, o, r, p) ON CONFLICT DO NOTHING",
            [now, *columns],
        )


def _array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal of ids, timestamps or plain words (no quoting needed).

    Handing psycopg lists makes it quote every element in Python: most of the check's time
    at a thousand schedules, for values that never need quoting.
    """
    return "{" + ",".join("NULL" if v is None else _literal(v) for v in values) + "}"


def _literal(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return f'"{value.isoformat()}"'
    return str(value)


def _save_positions(rows: list[_Position], db: str) -> None:
    """Write where each row's check stands, in one statement on PostgreSQL.

    ``bulk_update()`` builds a CASE per column with a branch per row: seconds of Python for a
    thousand rows. One UPDATE joined to the rows' arrays costs a few milliseconds.
    """
    connection = connections[db]
    table = connection.ops.quote_name(Schedule._meta.db_table)
    values = [(r.pk, r.cursor, r.next_fire_at, r.decide_at, r.pending_miss_at) for r in rows]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            columns = [_array(column) for column in zip(*values, strict=True)]
            cursor.execute(
                f"UPDATE {table} AS s SET cursor = v.c, next_fire_at = v.n, decide_at = v.d,"
                " pending_miss_at = v.p FROM unnest(%s::bigint[], %s::timestamptz[],"
                " %s::timestamptz[], %s::timestamptz[], %s::timestamptz[]) AS v(id, c, n, d, p)"
                " WHERE s.id = v.id",
                columns,
            )
            return
        cursor.executemany(
            f"UPDATE {table} SET cursor = %s, next_fire_at = %s, decide_at = %s,"
            " pending_miss_at = %s WHERE id = %s",
            [
                [connection.ops.adapt_datetimefield_value(v) for v in (c, n, d, p)] + [pk]
                for pk, c, n, d, p in values
            ],
        )


def _emit(missed: list[MissedFire]) -> None:
    for fire in missed:
        registry.emit_missed(fire)


def _decide(
    row: _Position,
    runs: list[tuple[int, datetime.datetime]],
    now: datetime.datetime,
    fires: list[list[Any]],
    caught_up: list[tuple[int, datetime.datetime, int, datetime.datetime]],
) -> None:
    """Walk ``row``'s fire times from its cursor up to ``now``, matching ``runs`` (its
    scheduler's sends after the cursor, oldest first); appends the decided fire times as
    ``[schedule pk, fire time, outcome, run pk, sent at, grace]``."""
    spec, interval = row.spec, "every" in row.spec
    anchor, pending = row.cursor, row.pending_miss_at
    pending_fire: list[Any] | None = None  # The pending miss, when decided in this check.
    i = 0
    for _ in range(MAX_FIRES_PER_CHECK):
        fire = next_fire(spec, anchor)
        if fire is None or fire <= anchor:
            break  # None computed, or one that does not move on: never the same fire twice.
        grace = grace_seconds(row.name, spec, fire)
        start = fire - _early(spec, grace)
        restarted = False
        while i < len(runs) and runs[i][1] < start:
            pk, published = runs[i]
            i += 1
            if pending is not None and published > pending:
                # A catch-up: it serves the last missed fire time, late.
                if pending_fire is not None:
                    pending_fire[2:5] = [FireOutcome.LATE, pk, published]
                else:
                    caught_up.append((row.pk, pending, pk, published))
                pending, pending_fire = None, None
            if interval:
                # Beat counts an interval from its last send, whatever that send was.
                anchor, restarted = published, True
                break
        if restarted:
            continue
        end = fire + datetime.timedelta(seconds=grace)
        if end > now:
            break
        if i < len(runs) and runs[i][1] <= end:
            pk, published = runs[i]
            i += 1
            fires.append([row.pk, fire, FireOutcome.ON_TIME, pk, published, grace])
            anchor = published if interval else max(fire, published)
            pending, pending_fire = None, None
        else:
            pending_fire = [row.pk, fire, FireOutcome.MISSED, None, None, grace]
            fires.append(pending_fire)
            anchor, pending = fire, fire
    row.cursor, row.pending_miss_at = anchor, pending
    _plan(row)


# -- what the pages show ---------------------------------------------------------------------


@dataclass
class ScheduleSummary:
    """One schedule as the schedules page and ``GET schedules/`` show it."""

    schedule: Schedule
    last_run_at: datetime.datetime | None = None
    last_status: str | None = None
    last_task_id: Any = None
    missed: int = 0
    runs: int = 0
    success_rate: float | None = None
    median_runtime: float | None = None

    @property
    def name(self) -> str:
        return self.schedule.name

    @property
    def next_run_at(self) -> datetime.datetime | None:
        return self.schedule.next_fire_at

    @property
    def needs_attention(self) -> bool:
        """Missed a fire time lately, or its last run failed."""
        return self.schedule.enabled and (self.missed > 0 or self.last_status in FAILED_STATUSES)


def summaries(
    schedules: Iterable[Schedule] | None = None, *, now: datetime.datetime | None = None
) -> list[ScheduleSummary]:
    """The schedules with their last run, recent success rate, median runtime and missed fire
    times; those needing attention first, then by name. Three queries, whatever the count."""
    now = now or timezone.now()
    rows = list(Schedule.objects.all() if schedules is None else schedules)
    found = {row.name: ScheduleSummary(row) for row in rows}
    if not found:
        return []
    recent = (
        TaskRun.objects.of_schedules(list(found))
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("schedule")], order_by=F("queued_at").desc())
        )
        .filter(rank__lte=max(int(hub_settings.SCHEDULE_RECENT_RUNS), 1))
        .values_list("schedule", "rank", "queued_at", "status", "runtime", "task_id")
    )
    ended: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
    for name, rank, queued_at, status, runtime, task_id in recent:
        summary = found[name]
        summary.runs += 1
        if rank == 1:
            summary.last_run_at, summary.last_status, summary.last_task_id = (
                queued_at,
                status,
                task_id,
            )
        if status in TERMINAL_STATUSES:
            ended[name].append((status, runtime))
    for name, outcomes in ended.items():
        done = [runtime for status, runtime in outcomes if status == TaskStatus.DONE]
        found[name].success_rate = len(done) / len(outcomes)
        times = [t for t in done if t is not None]
        found[name].median_runtime = statistics.median(times) if times else None
    since = now - datetime.timedelta(seconds=float(hub_settings.SCHEDULE_MISSED_WINDOW_SECONDS))
    missed = (
        ScheduleFire.objects.filter(
            schedule__in=rows, outcome=FireOutcome.MISSED, fire_at__gte=since
        )
        .values_list("schedule__name")
        .annotate(n=Count("pk"))
    )
    for name, n in missed:
        found[name].missed = n
    return sorted(found.values(), key=lambda s: (not s.needs_attention, s.name))


def needing_attention(*, now: datetime.datetime | None = None) -> list[ScheduleSummary]:
    """The schedules that missed a fire time lately or failed their last run (the overview)."""
    now = now or timezone.now()
    since = now - datetime.timedelta(seconds=float(hub_settings.SCHEDULE_MISSED_WINDOW_SECONDS))
    return summaries(Schedule.objects.needing_attention(since), now=now)
