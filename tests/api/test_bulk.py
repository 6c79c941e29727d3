"""POST tasks/restart/ and tasks/cancel/: restart or cancel all matching, and the job's progress."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings

from django_tasks_hub.models import BulkJob, Task
from tests.api.conftest import client_for, make_user
from tests.test_bulk import make_tasks, purge_sink, restarts_per_task

pytestmark = pytest.mark.django_db(transaction=True)

BULK = ("restart_task", "cancel_task", "restart_matching", "cancel_matching")


@pytest.fixture
def bulk_client() -> Any:
    purge_sink()
    yield client_for(make_user("bulk", *BULK))
    purge_sink()


def post(client: Any, path: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(path, json.dumps(body or {}), content_type="application/json")


def test_a_small_set_is_restarted_in_the_request_with_its_record(bulk_client: Any) -> None:
    make_tasks(4)
    make_tasks(2, status="done")
    response = post(bulk_client, "/api/tasks/restart/?status=failed")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "done" and body["background"] is False
    assert (body["total"], body["changed"], body["skipped"]) == (4, 4, 0)
    assert body["created_by"] == "bulk" and body["filters"] == {"status": ["failed"]}
    assert restarts_per_task() == {1: 4, 0: 2}
    # The job's progress is one GET away.
    assert bulk_client.get(body["url"]).json()["status"] == "done"


def test_filters_may_come_in_the_body(bulk_client: Any) -> None:
    make_tasks(3, status="pending")
    make_tasks(2, status="pending", name="demo.add")
    response = post(bulk_client, "/api/tasks/cancel/", {"status": ["pending"], "name": "demo.add"})
    assert response.status_code == 200, response.content
    assert response.json()["changed"] == 2
    assert Task.objects.filter(status="canceled").count() == 2


@override_settings(TASKS_HUB={"BULK_INLINE_MAX": 2})
def test_a_larger_set_answers_202_with_a_link_to_the_jobs_progress(
    bulk_client: Any, parked_bulk_jobs: str
) -> None:
    make_tasks(3)
    response = post(bulk_client, "/api/tasks/restart/", {"status": "failed"})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["background"] is True and body["status"] == "pending"
    assert response["Location"] == body["url"]
    assert body["url"].endswith(f"/api/bulk-jobs/{body['id']}")
    progress = bulk_client.get(response["Location"])
    assert progress.status_code == 200 and progress.json()["total"] == 3


@pytest.mark.parametrize("body", [{}, {"status": []}, {"name": ""}])
def test_no_filter_is_refused_unless_all_is_true(bulk_client: Any, body: dict[str, Any]) -> None:
    make_tasks(2)
    response = post(bulk_client, "/api/tasks/restart/", body)
    assert response.status_code == 400
    assert "all=true" in response.json()["detail"]
    assert not BulkJob.objects.exists()
    everything = post(bulk_client, "/api/tasks/restart/?all=true", body)
    assert everything.status_code == 200 and everything.json()["changed"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("statsu=failed", "statsu"),
        ("status=nope", "status"),
        ("created_after=soon", "created_after"),
    ],
)
def test_a_bad_or_unknown_parameter_is_400_naming_it(bulk_client: Any, query: str, field: str):
    make_tasks(1)
    response = post(bulk_client, f"/api/tasks/restart/?{query}")
    assert response.status_code == 400
    assert field in response.json()
    assert not BulkJob.objects.exists()


@pytest.mark.parametrize("path", ["/api/tasks/restart/", "/api/tasks/cancel/"])
@pytest.mark.parametrize(
    "codenames",
    [(), ("restart_task", "cancel_task"), ("restart_matching", "cancel_matching")],
    ids=["none", "one-by-one-only", "bulk-only"],
)
def test_bulk_routes_need_both_the_action_and_the_bulk_permission(
    path: str, codenames: tuple[str, ...]
) -> None:
    make_tasks(1)
    client = client_for(make_user("someone", *codenames))
    response = post(client, f"{path}?status=failed")
    assert response.status_code == 403
    assert "permission" in response.json()["detail"]
    assert not BulkJob.objects.exists()


def test_anonymous_gets_nothing() -> None:
    assert post(client_for(None), "/api/tasks/restart/?status=failed").status_code in (401, 403)
    assert client_for(None).get("/api/bulk-jobs/").status_code in (401, 403)


def test_a_done_job_is_not_resumed(bulk_client: Any) -> None:
    make_tasks(1)
    job = post(bulk_client, "/api/tasks/restart/?status=failed").json()
    response = post(bulk_client, f"/api/bulk-jobs/{job['id']}/resume/")
    assert response.status_code == 409 and "nothing left" in response.json()["detail"]
    assert bulk_client.get("/api/bulk-jobs/").json()[0]["id"] == job["id"]
    assert bulk_client.get("/api/bulk-jobs/999999/").status_code == 404
