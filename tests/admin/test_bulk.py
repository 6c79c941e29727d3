"""Restart / cancel all matching in the admin: the count first, then the job and its page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from django_tasks_hub.admin import spec_from_changelist
from django_tasks_hub.models import BulkJob, Task
from tests.admin.conftest import _staff
from tests.test_bulk import make_tasks, purge_sink, restarts_per_task

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/admin/django_tasks_hub/task/"
BULK = ("view_task", "restart_task", "cancel_task", "restart_matching", "cancel_matching")


@pytest.fixture
def ops() -> Client:
    purge_sink()
    client = Client()
    client.force_login(_staff("ops", *BULK, "view_bulkjob"))
    yield client
    purge_sink()


def listed_count(client: Client, query: str) -> int:
    """The count the task list itself shows for ``query``."""
    page = client.get(f"{LIST}?{query}").content.decode()
    match = re.search(r'class="th-count[^"]*"[^>]*>([\d,]+) task', page)
    assert match, page[-2000:]
    return int(match.group(1).replace(",", ""))


@pytest.mark.parametrize(
    "query",
    ["status=failed", "status=ended&name=demo.fail", "q=demo.f", "status=active"],
)
def test_the_confirmation_counts_what_the_list_shows_and_changes_nothing(
    ops: Client, query: str
) -> None:
    make_tasks(4)
    make_tasks(3, status="pending")
    make_tasks(2, status="done", name="demo.add")
    page = ops.get(f"{LIST}bulk/restart/?{query}")
    assert page.status_code == 200
    html = page.content.decode()
    total = int(re.search(r'class="th-bulk__total">(\d+)<', html).group(1))
    assert total == listed_count(ops, query)
    assert "Yes, restart" in html and not BulkJob.objects.exists()
    assert restarts_per_task()[1] == 0


def test_the_list_links_to_both_with_its_current_filters(ops: Client) -> None:
    make_tasks(1)
    html = ops.get(f"{LIST}?status=failed&name=demo.fail").content.decode()
    assert (
        'href="/admin/django_tasks_hub/task/bulk/restart/?status=failed&amp;name=demo.fail"' in html
    )
    assert "Cancel all matching" in html


def test_confirming_restarts_each_matching_task_and_shows_the_job(ops: Client) -> None:
    make_tasks(5)
    make_tasks(2, status="processing")
    response = ops.post(f"{LIST}bulk/restart/", {"_filters": "name=demo.fail"})
    job = BulkJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:django_tasks_hub_bulkjob_change", args=[job.pk])
    assert (job.status, job.succeeded, job.skipped) == ("done", 5, 2)
    assert job.created_by.username == "ops" and job.description == "name: demo.fail"
    page = ops.get(response["Location"]).content.decode()
    assert "5 of 7" not in page and "7 of 7" in page
    assert page.count("/admin/django_tasks_hub/task/") >= 7  # the touched tasks, linked
    assert restarts_per_task() == {1: 5, 0: 2}


@override_settings(TASKS_HUB={"BULK_INLINE_MAX": 3})
def test_a_large_set_goes_to_the_background_and_its_page_says_so(
    ops: Client, parked_bulk_jobs: str
) -> None:
    make_tasks(5)
    confirm = ops.get(f"{LIST}bulk/restart/?status=failed").content.decode()
    assert "runs in the background" in confirm
    response = ops.post(f"{LIST}bulk/restart/", {"_filters": "status=failed"}, follow=True)
    job = BulkJob.objects.get()
    assert job.background and job.status == "pending"
    assert b"running in the background over 5 tasks" in response.content


def test_an_unfiltered_list_needs_every_task_ticked(ops: Client) -> None:
    make_tasks(2)
    confirm = ops.get(f"{LIST}bulk/cancel/").content.decode()
    assert "every task in the database" in confirm
    refused = ops.post(f"{LIST}bulk/cancel/", {"_filters": ""}, follow=True)
    assert b"Tick" in refused.content and not BulkJob.objects.exists()
    ops.post(f"{LIST}bulk/cancel/", {"_filters": "", "all": "yes"})
    assert BulkJob.objects.get().filters == {}


def test_a_filter_the_bulk_cannot_replay_is_refused(ops: Client) -> None:
    response = ops.get(f"{LIST}bulk/restart/?worker=w1", follow=True)
    assert b"cannot be used for all matching tasks: worker" in response.content


@pytest.mark.parametrize(
    "codenames",
    [
        ("view_task",),
        ("view_task", "restart_task", "cancel_task"),
        ("view_task", "restart_matching"),
    ],
)
def test_both_permissions_are_needed(codenames: tuple[str, ...]) -> None:
    make_tasks(1)
    client = Client()
    client.force_login(_staff("someone", *codenames))
    assert b"all matching" not in client.get(LIST).content
    assert client.get(f"{LIST}bulk/restart/?status=failed").status_code == 403
    assert client.post(f"{LIST}bulk/restart/", {"_filters": "status=failed"}).status_code == 403
    assert not BulkJob.objects.exists()


def test_the_date_hierarchy_and_groups_become_the_spec() -> None:
    from django.http import QueryDict

    spec = spec_from_changelist(
        QueryDict("created_at__year=2026&created_at__month=12&status=ended")
    )
    assert spec["status"] == ["canceled", "done", "failed", "lost", "refused"]
    assert spec["created_after"].startswith("2026-12-01T00:00:00")
    assert spec["created_before"].startswith("2027-01-01T00:00:00")
    assert spec_from_changelist(QueryDict("o=-1&p=2")) == {}


def test_a_stalled_job_can_be_resumed_from_its_page(ops: Client) -> None:
    make_tasks(3)
    job = BulkJob.objects.create(
        action="restart", filters={"status": ["failed"]}, total=3, status="running",
        lease_expires=timezone.now(),
    )  # fmt: skip
    page = ops.get(reverse("admin:django_tasks_hub_bulkjob_change", args=[job.pk]))
    assert b"stalled" in page.content and b'name="resume"' in page.content
    ops.post(reverse("admin:django_tasks_hub_bulkjob_resume", args=[job.pk]))
    job.refresh_from_db()
    assert (job.status, job.succeeded) == ("done", 3)
    assert restarts_per_task() == {1: 3, 0: 0}
    assert Task.objects.filter(status="pending").count() == 3


def test_the_live_pages_ship_their_script_and_fetch_nothing_from_elsewhere(ops: Client) -> None:
    from django.contrib.staticfiles import finders

    script = finders.find("django_tasks_hub/live.js")
    assert script, "live.js is not a static file of the app"
    text = Path(str(script)).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    make_tasks(1)
    task = Task.objects.get()
    for url in (LIST, f"{LIST}{task.pk}/change/"):
        html = ops.get(url).content.decode()
        assert "django_tasks_hub/live.js" in html and 'data-th-live="' in html
        assert "data-th-live-switch" in html
