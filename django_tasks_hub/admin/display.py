"""How the admin shows values: badges, JSON, durations, times, the shared columns."""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_tasks_hub.models import TaskRun
from django_tasks_hub.states import TaskStatus

#: Longest JSON text shown on a page, in characters.
JSON_SHOWN = 50_000

EMPTY = "-"


def status_badge(status: str) -> SafeString:
    """A coloured badge for a task or run status."""
    try:
        label: Any = TaskStatus(status).label
    except ValueError:
        label = status
    return format_html('<span class="th-badge th-badge--{}">{}</span>', status, label)


def pretty_json(value: Any) -> SafeString | str:
    """``value`` as indented JSON in a ``<pre>``, cut at ``JSON_SHOWN`` characters."""
    if value is None:
        return EMPTY
    text = json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder)
    if len(text) > JSON_SHOWN:
        text = (
            text[:JSON_SHOWN]
            + "\n… "
            + gettext("(cut: %(size)s characters in all)") % {"size": f"{len(text):,}"}
        )
    return format_html('<pre class="th-pre th-json">{}</pre>', text)


def preformatted(text: str, css: str) -> SafeString | str:
    """``text`` in a ``<pre>`` with the class ``css``; a dash when there is none."""
    if not text:
        return EMPTY
    return format_html('<pre class="th-pre {}">{}</pre>', css, text)


def duration(seconds: float | None) -> str:
    """A duration for people: ``850 ms``, ``12.4 s``, ``3 min 20 s``, ``2 h 5 min``,
    ``3 d 4 h``."""
    if seconds is None:
        return EMPTY
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    # Up to two days in hours ("36 h 10 min" reads better than "1 d 12 h"), then in days: a
    # task stuck for weeks reads "400 d 3 h", not "9603 h 14 min".
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


#: A run shorter than this shows its times to the millisecond (its start and end would
#: otherwise read the same).
SHORT_RUN_SECONDS = 1.0


def full_time(value: datetime.datetime | None, *, precise: bool = False) -> SafeString | str:
    """A timestamp to the second (``2026-12-01 19:28:03``), to the millisecond when
    ``precise``; the ISO form is in the tooltip."""
    if value is None:
        return EMPTY
    local = timezone.localtime(value)
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    if precise:
        text += f".{local.microsecond // 1000:03d}"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', local.isoformat(), local.isoformat(), text
    )


def short_time(value: datetime.datetime | None) -> SafeString | str:
    """A timestamp that fits a column, to the second: the time today, the day and time this
    year, else the date and time; the full timestamp is in the tooltip."""
    if value is None:
        return EMPTY
    local = timezone.localtime(value)
    today = timezone.localdate()
    clock = local.strftime("%H:%M:%S")
    full = local.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if local.date() == today:
        return format_html(
            '<time datetime="{}" title="{}">{}</time>', local.isoformat(), full, clock
        )
    day = formats.date_format(local, "M j," if local.year == today.year else "Y-m-d")
    # The day and the time may go on two lines (each whole): a column of "Dec 2, 23:59:59"
    # kept on one line is what pushed a list's last column out of its box at 1400 px.
    return format_html(
        '<time datetime="{}" title="{}"><span class="th-nowrap">{}</span> '
        '<span class="th-nowrap">{}</span></time>',
        local.isoformat(),
        full,
        day,
        clock,
    )


def warning_badges(warnings: list[dict[str, str]]) -> SafeString | str:
    """The ``warnings`` of a task or run, each a badge with its message."""
    if not warnings:
        return EMPTY
    return format_html_join(
        " ",
        '<span class="th-warning" title="{}">{}</span><br><span class="th-muted">{}</span>',
        ((w["message"], w["code"], w["message"]) for w in warnings),
    )


def byte_size(value: int | None) -> str:
    """Bytes for people: ``0 B``, ``512 KiB``, ``3.2 MiB``."""
    if value is None:
        return EMPTY
    size, unit = float(value), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def error_line(error: str | None, limit: int = 120) -> SafeString | str:
    """The first line of an error (its type and message), cut at ``limit`` characters; the
    whole error in the tooltip."""
    text = (error or "").strip()
    if not text:
        return EMPTY
    first = text.splitlines()[0]
    if len(first) > limit:
        first = first[: limit - 1] + "…"
    return format_html('<span class="th-error-line" title="{}">{}</span>', text[:2000], first)


def clipped(text: str | None, css: str = "") -> SafeString | str:
    """``text`` cut to its column's width by the stylesheet, whole in the tooltip."""
    if not text:
        return EMPTY
    return format_html('<span class="th-clip {}" title="{}">{}</span>', css, text, text)


def run_status_badge(run: Any) -> SafeString:
    """A run's badge: an attempt that ended in a retry says so, not "Retrying" (the retry is a
    later attempt, with its own row)."""
    if run.status == TaskStatus.RETRYING and run.finished_at is not None:
        return format_html(
            '<span class="th-badge th-badge--retried" title="{}">{}</span>',
            gettext("This attempt failed and Celery retried the task; a later attempt followed."),
            gettext("Ended: retried"),
        )
    return status_badge(run.status)


def run_runtime(run: Any) -> float | None:
    """A run's runtime: the worker's measure, else the time between its start and its end (a
    cancelled or lost run has no measure of its own)."""
    if run.runtime is not None:
        return float(run.runtime)
    if run.started_at and run.finished_at:
        return max((run.finished_at - run.started_at).total_seconds(), 0.0)
    return None


def change_url(obj_or_model: Any, pk: Any) -> str:
    """The admin page of the row ``pk`` of ``obj_or_model``'s model."""
    opts = obj_or_model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])


def short_id(pk: Any) -> str:
    """The first eight characters of an id: enough to tell tasks apart in a message."""
    return str(pk)[:8]


class OutcomeDisplayMixin:
    """The fields a task and a run both show: the status badge, the result, error and traceback."""

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Any) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description=_("result"))
    def result_json(self, obj: Any) -> Any:
        return pretty_json(obj.result)

    @admin.display(description=_("error"))
    def error_text(self, obj: Any) -> Any:
        return preformatted(obj.error, "th-error")

    @admin.display(description=_("traceback"))
    def traceback_text(self, obj: Any) -> Any:
        return preformatted(obj.traceback, "th-traceback")

    @admin.display(description=_("warnings"))
    def warnings_display(self, obj: Any) -> Any:
        return warning_badges(obj.warnings)


class RunDisplayMixin(OutcomeDisplayMixin):
    """Columns shared by the run inline and the run admin."""

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Any) -> SafeString:
        return run_status_badge(obj)

    @admin.display(description=_("runtime"), ordering="runtime")
    def runtime_display(self, run: TaskRun) -> str:
        return duration(run_runtime(run))

    @admin.display(description=_("worker"), ordering="worker")
    def worker_display(self, run: Any) -> Any:
        return clipped(run.worker, "th-clip--worker")

    @admin.display(description=_("attempt"), ordering="attempt")
    def attempt_display(self, run: TaskRun) -> Any:
        # One column for the attempt, what sent it and who, and who cancelled it: four columns,
        # two of them empty on most rows, would take room from the ones that say something.
        parts = [format_html("#{} {}", run.attempt, run.get_trigger_display())]
        if run.triggered_by_id:
            parts.append(
                format_html(
                    '<span class="th-quiet">{}</span>',
                    gettext("by %(user)s") % {"user": run.triggered_by},
                )
            )
        if run.canceled_by_id:
            parts.append(
                format_html(
                    '<br><span class="th-quiet">{}</span>',
                    gettext("canceled by %(user)s") % {"user": run.canceled_by},
                )
            )
        return format_html_join(" ", "{}", ((p,) for p in parts))

    @admin.display(description=_("queued"), ordering="queued_at")
    def queued(self, run: TaskRun) -> Any:
        return short_time(run.queued_at)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, run: Any) -> Any:
        return short_time(run.started_at)

    @admin.display(description=_("finished"), ordering="finished_at")
    def finished(self, run: TaskRun) -> Any:
        return short_time(run.finished_at)

    @admin.display(description=_("database time"), ordering="db_time")
    def db_time_display(self, run: TaskRun) -> str:
        return duration(run.db_time)

    @admin.display(description=_("memory growth"), ordering="memory_growth")
    def memory_growth_display(self, run: TaskRun) -> str:
        return byte_size(run.memory_growth)

    @admin.display(description=_("outcome"))
    def outcome(self, run: TaskRun) -> Any:
        if run.error and run.error.strip():
            return error_line(run.error, limit=80)
        if run.status == TaskStatus.DONE:
            text = json.dumps(run.result, ensure_ascii=False, cls=DjangoJSONEncoder)
            short = text if len(text) <= 80 else text[:79] + "…"
            return format_html('<span class="th-outcome" title="{}">{}</span>', text[:2000], short)
        return EMPTY
