"""Bar charts as inline SVG, drawn on the server: no script, no CDN, the admin's colours."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

WIDTH = 720
HEIGHT = 140
#: Room for the axis labels under the bars.
AXIS = 18


def bars(
    points: Sequence[dict[str, Any]],
    link: Callable[[dict[str, Any], bool], str],
    label: str,
    time_format: str = "%H:%M",
) -> SafeString:
    """A chart of ``points`` (each with ``start``, ``ended`` and ``failed``): a bar of the runs
    ended in each bucket with its failed part over it, each part a link (``link(point,
    failed)``) to the runs behind it, each bar titled with its figures.

    Built as text with every value escaped (84 bars a page: ``format_html`` per element was
    most of the page's time)."""
    top = max([p["ended"] for p in points] + [1])
    step = WIDTH / max(len(points), 1)
    width = f"{max(step - (1 if step > 4 else 0), 0.5):.1f}"
    room = HEIGHT - AXIS
    template = gettext("%(when)s: %(ended)d ended, %(failed)d failed")
    zone = timezone.get_current_timezone()
    whens = [p["start"].astimezone(zone).strftime(time_format) for p in points]
    parts = []
    for i, point in enumerate(points):
        x = f"{i * step:.1f}"
        title = escape(template % {"when": whens[i], **point})
        ended_h = room * point["ended"] / top
        parts.append(
            f'<a href="{escape(link(point, False))}" class="th-chart__bar"><title>{title}</title>'
            f'<rect x="{x}" y="0" width="{width}" height="{room}" class="th-chart__hit"/>'
            f'<rect x="{x}" y="{room - ended_h:.1f}" width="{width}" height="{ended_h:.1f}"'
            ' class="th-chart__ended"/></a>'
        )
        if point["failed"]:
            failed_h = room * point["failed"] / top
            parts.append(
                f'<a href="{escape(link(point, True))}" class="th-chart__bar">'
                f'<title>{title}</title><rect x="{x}" y="{room - failed_h:.1f}" width="{width}"'
                f' height="{failed_h:.1f}" class="th-chart__failed"/></a>'
            )
    for i in sorted({0, len(points) // 2, len(points) - 1} if points else set()):
        anchor = "start" if i == 0 else "end" if i == len(points) - 1 else "middle"
        tick = min(max(i * step + step / 2, 0), WIDTH)
        parts.append(
            f'<text x="{tick:.1f}" y="{HEIGHT - 4}" text-anchor="{anchor}"'
            f' class="th-chart__tick">{escape(whens[i])}</text>'
        )
    parts.append(
        f'<text x="{WIDTH - 2}" y="10" text-anchor="end" class="th-chart__tick">{top}</text>'
    )
    # Every value above is a number or escaped.
    return mark_safe(
        f'<svg class="th-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(label)}">{"".join(parts)}</svg>'
    )
