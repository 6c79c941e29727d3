"""Releases compared per task name, p50/p95 of the cost, and the duplicates report."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from django_tasks_hub import flush
from django_tasks_hub.conf import current_release
from django_tasks_hub.insight import per_name as stats
from django_tasks_hub.models import Task, TaskRun
from testproject import tasks
from tests.conftest import wait_status

NAME = "shop.three_queries"


def test_the_release_defaults_to_the_environment(settings, monkeypatch):
    monkeypatch.setenv("TASKS_HUB_RELEASE", "abc123")
    assert current_release() == "abc123"
    settings.TASKS_HUB = {**settings.TASKS_HUB, "RELEASE": "v7"}
    assert current_release() == "v7"


def test_percentiles_are_nearest_rank():
    assert stats.percentile([], 0.5) is None
    assert stats.percentile([5, 1, 3], 0.5) == 3
    assert stats.percentile(list(range(1, 101)), 0.95) == 95


@pytest.mark.worker
def test_two_releases_compared(worker, settings):
    settings.TASKS_HUB = {**settings.TASKS_HUB, "RELEASE": "v1"}
    first = [tasks.three_queries.delay() for _ in range(2)]
    for result in first:
        wait_status(result.id, "done")
    settings.TASKS_HUB = {**settings.TASKS_HUB, "RELEASE": "v2"}
    slow = tasks.three_queries.delay(extra=6)
    broken = tasks.three_queries.delay(extra=6, fail=True)
    wait_status(slow.id, "done")
    wait_status(broken.id, "failed")
    flush(timeout=10)

    assert TaskRun.objects.get(broker_id=first[0].id).release == "v1"
    v2, v1 = stats.by_release(NAME)
    assert (v2.release, v2.runs, v2.failed, v2.queries_p95) == ("v2", 2, 1, 9)
    assert (v1.release, v1.runs, v1.failed, v1.queries_p95) == ("v1", 2, 0, 3)
    assert v2.failure_rate == 0.5 and v2.runtime_p95 is not None
    [cost] = stats.cost_by_name([NAME])
    assert cost.runs == 4 and cost.queries == (3, 9)

    # The same arguments succeeded twice within the window: a duplicate.
    dupes = stats.duplicates(NAME, 3600)
    assert (dupes.groups, dupes.extra_successes, dupes.redelivered) == (1, 1, 0)

    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    run = TaskRun.objects.get(broker_id=slow.id)
    assert client.get(f"/api/task-history/{run.pk}/").json()["release"] == "v2"
    assert (
        "/admin/django_tasks_hub/taskrun/insights/"
        in client.get("/admin/django_tasks_hub/taskrun/").content.decode()
    )  # The run list links to the page.
    page = client.get("/admin/django_tasks_hub/taskrun/insights/")
    assert page.status_code == 200
    html = page.content.decode()
    for text in ("Releases compared", "v1", "v2", "50.0 %", "3 / 9", NAME, "extra successes"):
        assert text in html, text


def test_a_redelivered_run_counts_in_the_report(db):
    now = timezone.now()
    broker_id = str(uuid.uuid4())
    task = Task.objects.create(id=broker_id, name="shop.once", broker_id=broker_id, status="done")
    for delivery in (0, 1):
        TaskRun.objects.create(
            task=task, name="shop.once", broker_id=broker_id, delivery=delivery,
            attempt=delivery + 1, status="lost" if delivery == 0 else "done",
            started_at=now, finished_at=now,
        )  # fmt: skip
    assert stats.duplicates("shop.once", 3600).redelivered == 1


def test_the_insights_page_needs_the_view_permission(db):
    client = Client()
    client.force_login(User.objects.create_user("nobody", is_staff=True))
    assert client.get("/admin/django_tasks_hub/taskrun/insights/").status_code == 403
