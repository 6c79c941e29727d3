"""The admin's overview: its figures match the rows, and each links to the rows behind it."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from django_tasks_hub.models import Task, TaskRun

OVERVIEW = "admin:django_tasks_hub_overview"


def staff(username: str, *codenames: str) -> Client:
    user = User.objects.create(username=username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(db: Any) -> Client:
    return staff("viewer", "view_task", "view_taskrun")


def links(html: str, pattern: str) -> list[str]:
    return [unescape(href) for href in re.findall(pattern, html)]


def test_overview_numbers_match_the_rows(make_run: Callable[..., TaskRun], viewer: Client) -> None:
    for _ in range(2):
        make_run("demo.add", "done")
    make_run("demo.add", "failed", error="ValueError: bad input")
    make_run("demo.fail", "failed", error="ValueError: bad input")
    make_run("demo.fail", "pending")
    response = viewer.get(reverse(OVERVIEW))
    assert response.status_code == 200
    html = response.content.decode()
    for status in ("done", "failed", "pending"):
        count = Task.objects.filter(status=status).count()
        card = re.search(rf'data-status="{status}">.*?th-card__count">(\d+)<', html, re.S)
        assert card and int(card[1]) == count
    row = re.search(r'data-name="demo.add">(.*?)</tr>', html, re.S)
    assert row
    runs = re.search(r'class="th-runs">(\d+)<', row[1])
    failed = re.search(r'class="th-failed">(\d+)<', row[1])
    assert runs and failed and (int(runs[1]), int(failed[1])) == (3, 1)
    assert "33 %" in row[1]
    count = re.search(r'class="th-count">(\d+)<', html)
    assert count and int(count[1]) == 2
    assert "<svg" in html and "cdn" not in html.lower()


def test_every_figure_links_to_its_rows(make_run: Callable[..., TaskRun], viewer: Client) -> None:
    make_run("demo.add", "done")
    make_run("demo.add", "failed", error="KeyError: 'k'")
    make_run("demo.fail", "failed", error="KeyError: 'k'")
    html = viewer.get(reverse(OVERVIEW)).content.decode()
    row = re.search(r'data-name="demo.add">(.*?)</tr>', html, re.S)
    assert row
    failed_url = links(row[1], r'<a href="([^"]+)" class="th-failed">')[0]
    page = viewer.get(failed_url)
    assert page.status_code == 200
    assert page.context["cl"].result_count == 1  # The one failed run of demo.add.
    error_url = links(html, r'<a href="([^"]+)" class="th-count">')[0]
    assert viewer.get(error_url).context["cl"].result_count == 2
    status_url = links(html, r'<a href="([^"]+)" data-status="failed">')[0]
    assert viewer.get(status_url).context["cl"].result_count == 2
    # The minute bar of now: its failed part lists the failed runs of that minute.
    bars = links(html, r'<a href="([^"]+)" class="th-chart__bar">')
    failed_bars = [url for url in bars if "status=failed" in url]
    assert failed_bars
    assert viewer.get(failed_bars[0]).context["cl"].result_count == 2


def test_the_app_index_leads_to_the_overview(viewer: Client) -> None:
    html = viewer.get("/admin/django_tasks_hub/").content.decode()
    assert reverse(OVERVIEW) in html


def test_overview_needs_the_view_permission(db: Any) -> None:
    assert staff("nobody").get(reverse(OVERVIEW)).status_code == 403
    anonymous = Client().get(reverse(OVERVIEW))
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_the_overview_names_what_needs_attention(
    make_run: Callable[..., TaskRun], viewer: Client
) -> None:
    import datetime

    from django.utils import timezone

    from django_tasks_hub.models import Schedule, ScheduleFire, TaskTransaction
    from django_tasks_hub.states import FireOutcome

    now = timezone.now()
    late = Schedule.objects.create(name="nightly-export", task="reports.export")
    ScheduleFire.objects.create(
        schedule=late, fire_at=now - datetime.timedelta(minutes=5), outcome=FireOutcome.MISSED
    )
    Schedule.objects.create(name="hourly-ok", task="reports.ping")
    run = make_run("shop.charge", "done")
    make_run("shop.refund", "done")
    TaskTransaction.objects.create(
        broker_id=run.broker_id, alias="default", outcome="rolled_back", ended_at=now
    )
    html = viewer.get(reverse(OVERVIEW)).content.decode()
    section = re.search(r'id="th-attention">(.*?)</section>', html, re.S)
    assert section
    assert "Schedule nightly-export" in section[1] and "missed 1 fire time" in section[1]
    assert "hourly-ok" not in section[1]
    warning = re.search(
        r'data-code="published_in_rolled_back_transaction"><a href="([^"]+)">'
        r'<strong class="th-attention__count">(\d+)<',
        section[1],
    )
    assert warning and int(warning[2]) == 1
    # The count links to exactly the flagged tasks.
    listed = viewer.get(unescape(warning[1]))
    assert listed.status_code == 200
    rows = re.search(r'<table id="result_list">(.*?)</table>', listed.content.decode(), re.S)
    assert rows and "shop.charge" in rows[1] and "shop.refund" not in rows[1]
    assert 'data-th-live="overview"' in html and "live.js" in html
