"""A date hierarchy for the admin lists that asks the index, never scans the table."""

from __future__ import annotations

import calendar
import datetime
from typing import Any

from django import template
from django.conf import settings
from django.db import models
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

register = template.Library()


def _bounds(field: Any, start: datetime.date, end: datetime.date) -> tuple[Any, Any]:
    if not isinstance(field, models.DateTimeField):
        return start, end
    low = datetime.datetime.combine(start, datetime.time.min)
    high = datetime.datetime.combine(end, datetime.time.min)
    if settings.USE_TZ:
        # The same bounds as the list's own filter: midnight in the current time zone.
        low, high = timezone.make_aware(low), timezone.make_aware(high)
    return low, high


def _has_rows(qs: Any, name: str, field: Any, start: datetime.date, end: datetime.date) -> bool:
    low, high = _bounds(field, start, end)
    return bool(qs.filter(**{f"{name}__gte": low, f"{name}__lt": high}).exists())


def _date(value: datetime.date | datetime.datetime) -> datetime.date:
    return value.date() if isinstance(value, datetime.datetime) else value


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@register.inclusion_tag("admin/date_hierarchy.html")
def tasks_hub_date_hierarchy(cl: Any) -> dict[str, Any]:
    """Django's date drill-down, built from one MIN/MAX and one index probe per link.

    Django's own tag lists the years, months or days with ``SELECT DISTINCT`` over the rows
    in view: a scan of the whole table on a large list. Here each link is an ``EXISTS`` over
    its date range, which the date index answers at once.
    """
    name = cl.date_hierarchy
    if not name:
        return {"show": False}
    field = cl.model._meta.get_field(name)
    year = _int(cl.params.get(f"{name}__year"))
    month = _int(cl.params.get(f"{name}__month"))
    day = _int(cl.params.get(f"{name}__day"))
    qs = cl.queryset

    def link(filters: dict[str, Any]) -> str:
        return str(cl.get_query_string(filters, [f"{name}__"]))

    # Without a date chosen, the first and last dates bound the links to probe.
    low: datetime.date | None = None
    high: datetime.date | None = None
    if year is None:
        span = qs.aggregate(first=models.Min(name), last=models.Max(name))
        first, last = span["first"], span["last"]
        if first is None or last is None:
            return {"show": True, "back": None, "choices": []}
        if isinstance(first, datetime.datetime) and timezone.is_aware(first):
            first, last = timezone.localtime(first), timezone.localtime(last)
        low, high = _date(first), _date(last)
        if first.year == last.year:
            year = first.year
            if first.month == last.month:
                month = first.month
        else:
            years = [
                y
                for y in range(first.year, last.year + 1)
                if _has_rows(qs, name, field, datetime.date(y, 1, 1), datetime.date(y + 1, 1, 1))
            ]
            return {
                "show": True,
                "back": None,
                "choices": [{"link": link({f"{name}__year": y}), "title": str(y)} for y in years],
            }

    if month is not None and day is not None:
        shown = datetime.date(year, month, day)
        return {
            "show": True,
            "back": {
                "link": link({f"{name}__year": year, f"{name}__month": month}),
                "title": capfirst(formats.date_format(shown, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(shown, "MONTH_DAY_FORMAT"))}],
        }
    if month is not None:
        days = range(1, calendar.monthrange(year, month)[1] + 1)
        if low and high:
            days = range(low.day, high.day + 1)
        choices = []
        for d in days:
            date = datetime.date(year, month, d)
            if _has_rows(qs, name, field, date, date + datetime.timedelta(days=1)):
                choices.append(
                    {
                        "link": link(
                            {f"{name}__year": year, f"{name}__month": month, f"{name}__day": d}
                        ),
                        "title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT")),
                    }
                )
        return {
            "show": True,
            "back": {"link": link({f"{name}__year": year}), "title": str(year)},
            "choices": choices,
        }
    months = range(low.month, high.month + 1) if low and high else range(1, 13)
    choices = []
    for m in months:
        start = datetime.date(year, m, 1)
        end = datetime.date(year + 1, 1, 1) if m == 12 else datetime.date(year, m + 1, 1)
        if _has_rows(qs, name, field, start, end):
            choices.append(
                {
                    "link": link({f"{name}__year": year, f"{name}__month": m}),
                    "title": capfirst(formats.date_format(start, "YEAR_MONTH_FORMAT")),
                }
            )
    return {"show": True, "back": {"link": link({}), "title": _("All dates")}, "choices": choices}


@register.simple_tag
def th_short_time(value: datetime.datetime | None) -> Any:
    """A timestamp that fits a column (see ``admin.display.short_time``)."""
    from django_tasks_hub.admin.display import short_time

    return short_time(value)


@register.simple_tag
def th_status_badge(status: str | None) -> Any:
    """A coloured status badge (see ``admin.display.status_badge``)."""
    from django_tasks_hub.admin.display import status_badge

    return status_badge(status) if status else ""


@register.simple_tag
def th_duration(seconds: float | None) -> str:
    """A duration for people (see ``admin.display.duration``)."""
    from django_tasks_hub.admin.display import duration

    return duration(seconds)


@register.filter
def th_break_dots(value: str) -> Any:
    """``value`` with a line-break opportunity after each dot (dotted task names)."""
    from django.utils.html import escape
    from django.utils.safestring import mark_safe

    # Escaped first: only the <wbr> added here is markup.
    return mark_safe(escape(value).replace(".", ".<wbr>"))
