"""The routes through HTTP: shapes, filters, pagination, errors and permissions."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from django_tasks_hub.history import encode_cursor
from django_tasks_hub.models import Task, TaskRun
from tests.api.conftest import client_for, make_user
from tests.conftest import ROOT

TASK = "00000000-0000-0000-0000-000000000000"
#: (method, path) of every route; {task} and {run} are filled in with existing ids.
ROUTES = [
    ("get", "/api/info?task_id={task}"),
    ("get", "/api/list"),
    ("put", "/api/restart?task_id={task}"),
    ("put", "/api/cancel?task_id={task}"),
    ("get", "/api/tasks/"),
    ("get", "/api/tasks/{task}/"),
    ("post", "/api/tasks/{task}/restart/"),
    ("post", "/api/tasks/{task}/cancel/"),
    ("get", "/api/tasks/{task}/runs/"),
    ("get", "/api/task-history/"),
    ("get", "/api/task-history/{run}/"),
    ("get", "/api/reports/tasks/"),
    ("get", "/api/reports/info?task_id={task}"),
]


def fill(path: str, task: Task) -> str:
    return path.format(task=task.pk, run=task.runs.first().pk)  # type: ignore[union-attr]


def call(client: Client, method: str, path: str, **extra: Any) -> Any:
    return getattr(client, method)(path, **extra)


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_anonymous_gets_nothing(make_task, method, path):
    task = make_task("failed")
    response = call(Client(), method, fill(path, task))
    assert response.status_code in (401, 403)
    assert "detail" in response.json()
    task.refresh_from_db()
    assert task.status == "failed" and task.attempts == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/restart?task_id={task}"),
        ("post", "/api/tasks/{task}/restart/"),
        ("put", "/api/cancel?task_id={task}"),
        ("post", "/api/tasks/{task}/cancel/"),
    ],
)
def test_restart_and_cancel_need_the_model_permissions(reader_client, make_task, method, path):
    task = make_task("failed" if "restart" in path else "processing")
    response = call(reader_client, method, fill(path, task))
    assert response.status_code == 403
    needed = "restart_task" if "restart" in path else "cancel_task"
    assert f"django_tasks_hub.{needed}" in response.json()["detail"]
    task.refresh_from_db()
    assert task.status in ("failed", "processing") and task.attempts == 1


def test_each_permission_allows_its_action_only(db, make_task):
    restarter = client_for(make_user("restarter", "restart_task"))
    failed, running = make_task("failed"), make_task("processing")
    assert restarter.post(f"/api/tasks/{running.pk}/cancel/").status_code == 403
    assert restarter.post(f"/api/tasks/{failed.pk}/restart/").status_code == 200


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[0] == "get"])
def test_an_authenticated_user_reads_every_route(reader_client, make_task, method, path):
    from testproject.models import ReportTask

    task = make_task("done")
    ReportTask(task_ptr=task, report_format="pdf").save_base(raw=True, force_insert=True)
    response = call(reader_client, method, fill(path, task))
    assert response.status_code == 200, response.content


@override_settings(
    TASKS_HUB={
        "READ_PERMISSION_CLASSES": [
            "rest_framework.permissions.IsAuthenticated",
            "rest_framework.permissions.IsAdminUser",
        ]
    }
)
def test_permission_classes_come_from_settings(reader_client, make_task):
    task = make_task()
    assert reader_client.get(f"/api/tasks/{task.pk}/").status_code == 403
    assert reader_client.get("/api/task-history/").status_code == 403


def own_tasks(queryset: Any, request: Any) -> Any:
    """A scope: each user sees the tasks they created."""
    return queryset.filter(created_by=request.user)


@override_settings(TASKS_HUB={"QUERYSET_SCOPE": "tests.api.test_views.own_tasks"})
def test_queryset_scope_hides_other_users_tasks(db, make_task):
    alice = make_user("alice", "restart_task", "cancel_task")
    bob = make_user("bob", "restart_task", "cancel_task")
    mine, theirs = make_task("failed", created_by=alice), make_task("failed", created_by=bob)
    client = client_for(alice)
    assert [t["id"] for t in client.get("/api/list").json()] == [str(mine.pk)]
    assert client.get(f"/api/info?task_id={theirs.pk}").status_code == 404
    assert client.post(f"/api/tasks/{theirs.pk}/restart/").status_code == 404
    runs = client.get("/api/task-history/").json()["data"]
    assert {run["task_id"] for run in runs} == {str(mine.pk)}
    other_run = theirs.runs.get()
    assert client.get(f"/api/task-history/{other_run.pk}/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "failed"


# -- info, with and without the trailing slash -------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_info_returns_the_task(reader_client, make_task, slash):
    task = make_task("done", tags=["nightly"])
    response = reader_client.get(f"/api/info{slash}?task_id={task.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(task.pk) and body["status"] == "done"
    assert body["name"] == "demo.add" and body["tags"] == ["nightly"]
    # The seed's examples quote the id.
    assert reader_client.get(f'/api/info?task_id="{task.pk}"').json()["id"] == str(task.pk)


@pytest.mark.parametrize("task_id", [str(uuid.uuid4()), "not-a-uuid", "1' OR '1'='1", "%00"])
def test_unknown_or_malformed_task_is_404(reader_client, db, task_id):
    response = reader_client.get("/api/info", {"task_id": task_id})
    assert response.status_code == 404
    assert "No task with id" in response.json()["detail"]
    assert reader_client.get(f"/api/tasks/{task_id}/").status_code == 404


def test_info_without_task_id_names_the_parameter(reader_client, db):
    response = reader_client.get("/api/info")
    assert response.status_code == 400
    assert "task_id" in response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/restart"),
        ("put", "/api/restart/"),
        ("put", "/api/cancel"),
        ("put", "/api/cancel/"),
        ("post", "/api/tasks/{task}/restart"),
        ("post", "/api/tasks/{task}/restart/"),
        ("get", "/api/list"),
        ("get", "/api/tasks"),
        ("get", "/api/tasks/{task}"),
        ("get", "/api/task-history"),
        ("get", "/api/tasks/{task}/runs"),
    ],
)
def test_routes_answer_with_and_without_trailing_slash(operator_client, make_task, method, path):
    task = make_task("failed")
    url = path.format(task=task.pk)
    if "?" not in url and "tasks" not in url and "history" not in url and "list" not in url:
        url += f"?task_id={task.pk}"
    response = call(operator_client, method, url)
    assert response.status_code not in (301, 302, 308, 404), response.status_code
    assert response.status_code < 500


# -- restart and cancel answers ---------------------------------------------------------------


def test_restart_answers_the_task_pending_in_a_new_run(operator, operator_client, make_task):
    task = make_task("failed")
    response = operator_client.put(f"/api/restart?task_id={task.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "pending" and body["attempts"] == 2
    assert body["broker_id"] != task.broker_id
    run = TaskRun.objects.filter(task=task).order_by("-id").first()
    assert run is not None
    assert run.trigger == "restart" and run.triggered_by_id == operator.pk
    assert run.broker_id == body["broker_id"] and run.attempt == 2


@pytest.mark.parametrize("status", ["pending", "processing", "retrying"])
def test_restart_of_an_active_task_is_409_with_its_status(operator_client, make_task, status):
    task = make_task(status)
    response = operator_client.post(f"/api/tasks/{task.pk}/restart/")
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == status and body["code"] == "task_not_restartable"
    assert status in body["detail"]
    assert TaskRun.objects.filter(task=task).count() == 1


@pytest.mark.parametrize("status", ["done", "failed", "canceled", "refused", "lost"])
def test_cancel_of_an_ended_task_is_409_with_its_status(operator_client, make_task, status):
    task = make_task(status)
    response = operator_client.put(f"/api/cancel?task_id={task.pk}")
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == status and body["code"] == "task_not_cancelable"


def test_restart_of_an_unregistered_task_name_is_409(operator_client, make_task):
    task = make_task("failed", name="gone.away")
    response = operator_client.post(f"/api/tasks/{task.pk}/restart/")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "unknown_task_name" and "gone.away" in body["detail"]
    task.refresh_from_db()
    assert task.status == "failed" and task.attempts == 1


def test_cancel_marks_task_and_run_canceled_by_the_user(operator, operator_client, make_task):
    task = make_task("pending")
    response = operator_client.post(f"/api/tasks/{task.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    run = task.runs.get()
    assert run.status == "canceled" and run.canceled_by_id == operator.pk
    assert run.finished_at is not None


def test_restart_without_task_id_is_400(operator_client, db):
    response = operator_client.put("/api/restart")
    assert response.status_code == 400 and "task_id" in response.json()


# -- list -------------------------------------------------------------------------------------


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def test_list_is_a_plain_list_newest_first_with_total_and_link(reader_client, make_task):
    now = timezone.now()
    made = [make_task(created_at=now - datetime.timedelta(minutes=i)) for i in range(5)]
    response = reader_client.get("/api/list", {"limit": 2})
    assert response.status_code == 200
    assert _ids(response.json()) == [str(made[0].pk), str(made[1].pk)]
    assert response["X-Total-Count"] == "5"
    assert 'rel="next"' in response["Link"] and "offset=2" in response["Link"]
    last = reader_client.get("/api/list", {"limit": 2, "offset": 4})
    assert _ids(last.json()) == [str(made[4].pk)]
    assert last["X-Total-Count"] == "5" and 'rel="next"' not in last["Link"]


def test_tasks_route_is_an_envelope(reader_client, make_task):
    for _ in range(3):
        make_task()
    body = reader_client.get("/api/tasks/", {"limit": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2
    assert body["next"] and body["previous"] is None


@override_settings(TASKS_HUB={"LIST_MAX_LIMIT": 3, "LIST_COUNT_MAX": 4})
def test_limit_is_capped_and_the_total_only_counted_when_cheap(reader_client, make_task):
    for _ in range(6):
        make_task()
    body = reader_client.get("/api/tasks/", {"limit": 1000}).json()
    assert len(body["results"]) == 3
    # Six rows and a count capped at four: the total is not cheap, so it is left out.
    assert body["count"] is None
    # The last page knows the total without counting.
    assert reader_client.get("/api/tasks/", {"offset": 4}).json()["count"] == 6
    assert reader_client.get("/api/tasks/", {"status": "failed"}).json()["count"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "ten"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "10000000000"}, "offset"),
        ({"status": "exploded"}, "status"),
        ({"status": "done,exploded"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "9999-12-31T23:59:59-12:00"}, "created_before"),
    ],
)
def test_bad_list_parameters_are_400_naming_the_field(reader_client, db, params, field):
    for path in ("/api/list", "/api/tasks/"):
        response = reader_client.get(path, params)
        assert response.status_code == 400, (path, response.content)
        assert field in response.json()


def test_list_filters(reader_client, make_task):
    now = timezone.now()
    old = make_task("failed", name="reports.build", created_at=now - datetime.timedelta(days=3))
    lost = make_task("lost", tags=["nightly", "reports"])
    done = make_task("done", tags=["nightly"])

    def ids(**params: Any) -> set[str]:
        return set(_ids(reader_client.get("/api/list", params).json()))

    assert ids(status="failed") == {str(old.pk)}
    assert ids(status="failed,lost") == {str(old.pk), str(lost.pk)}
    assert set(_ids(reader_client.get("/api/list?status=failed&status=done").json())) == {
        str(old.pk),
        str(done.pk),
    }
    assert ids(name="reports.build") == {str(old.pk)}
    assert ids(tag="reports") == {str(lost.pk)}
    assert ids(tag="nightly") == {str(lost.pk), str(done.pk)}
    cut = (now - datetime.timedelta(days=1)).isoformat()
    assert ids(created_before=cut) == {str(old.pk)}
    assert ids(created_after=cut) == {str(lost.pk), str(done.pk)}


# -- history ----------------------------------------------------------------------------------


def test_history_pages_newest_first_with_cursor(reader_client, make_task):
    task = make_task("failed", runs=5)
    runs = list(TaskRun.objects.filter(task=task).order_by("-id"))
    first = reader_client.get("/api/task-history/", {"limit": 2}).json()
    assert set(first) == {"data", "cursor", "next"}
    assert [r["id"] for r in first["data"]] == [runs[0].pk, runs[1].pk]
    assert first["data"][0]["task_id"] == str(task.pk) and first["data"][0]["task"] == "demo.add"
    assert first["data"][0]["state"] == "failed"
    assert first["cursor"] and f"cursor={first['cursor']}" in first["next"]
    seen = [r["id"] for r in first["data"]]
    page = first
    while page["cursor"]:
        page = reader_client.get(page["next"]).json()
        seen += [r["id"] for r in page["data"]]
    assert seen == [r.pk for r in runs]
    assert page["cursor"] == "" and page["next"] is None


@pytest.mark.parametrize("cursor", ["garbage", "!!!", encode_cursor(-5), "cjE5OTk5OTk5OTk5OTk5"])
def test_invalid_cursor_is_400_with_a_message(reader_client, db, cursor):
    response = reader_client.get("/api/task-history/", {"cursor": cursor})
    if cursor == "cjE5OTk5OTk5OTk5OTk5":  # a well-formed cursor beyond every run: a page
        assert response.status_code == 200
        return
    assert response.status_code == 400
    assert "cursor" in response.json()["cursor"][0].lower()


def test_history_filters(reader_client, make_task):
    now = timezone.now()
    old = make_task("failed", name="reports.build", created_at=now - datetime.timedelta(days=2))
    tagged = make_task("done", tags=["nightly"])

    def task_ids(**params: Any) -> set[str]:
        response = reader_client.get("/api/task-history/", params)
        assert response.status_code == 200, response.content
        return {run["task_id"] for run in response.json()["data"]}

    assert task_ids(task="reports.build") == {str(old.pk)}
    assert task_ids(status="done") == {str(tagged.pk)}
    assert task_ids(tag="nightly") == {str(tagged.pk)}
    assert task_ids(task_id=str(old.pk)) == {str(old.pk)}
    cut = (now - datetime.timedelta(days=1)).isoformat()
    assert task_ids(end=cut) == {str(old.pk)}
    assert task_ids(start=cut) == {str(tagged.pk)}
    bad = reader_client.get("/api/task-history/", {"task_id": "nope", "start": "soon"})
    assert bad.status_code == 400 and {"task_id", "start"} <= set(bad.json())


def test_run_detail_and_its_404s(reader_client, make_task):
    task = make_task("failed")
    run = task.runs.get()
    run.traceback = "Traceback: boom"
    run.save()
    body = reader_client.get(f"/api/task-history/{run.pk}").json()
    assert body["id"] == run.pk and body["traceback"] == "Traceback: boom"
    for bad in ("abc", "99999999999999999999999999", "-1", str(run.pk + 1000)):
        response = reader_client.get(f"/api/task-history/{bad}/")
        assert response.status_code == 404 and "No run with id" in response.json()["detail"]


def test_runs_of_one_task(reader_client, make_task):
    task = make_task("failed", runs=3)
    make_task("done")
    body = reader_client.get(f"/api/tasks/{task.pk}/runs/", {"limit": 2}).json()
    assert [r["attempt"] for r in body["data"]] == [3, 2] and body["cursor"]
    rest = reader_client.get(body["next"]).json()
    assert [r["attempt"] for r in rest["data"]] == [1] and rest["cursor"] == ""
    failed = reader_client.get(f"/api/tasks/{task.pk}/runs/", {"status": "failed"}).json()
    assert len(failed["data"]) == 3


# -- the factory, the browsable API, the schema -----------------------------------------------


def test_factory_routes_show_report_tasks_with_their_serializer(reader_client, make_task):
    from testproject.models import ReportTask

    plain = make_task("done")
    report_task = make_task("failed", name="reports.build")
    ReportTask(task_ptr=report_task, report_format="pdf").save_base(raw=True, force_insert=True)
    listed = reader_client.get("/api/reports/list").json()
    assert _ids(listed) == [str(report_task.pk)] and listed[0]["report_format"] == "pdf"
    assert reader_client.get(f"/api/reports/tasks/{plain.pk}/").status_code == 404
    runs = reader_client.get("/api/reports/task-history/").json()["data"]
    assert {run["task_id"] for run in runs} == {str(report_task.pk)}
    # The hub's own routes show it too: it is a task.
    assert str(report_task.pk) in _ids(reader_client.get("/api/list").json())


def test_convert_to_response_renders_with_the_given_serializer(make_task):
    from django_tasks_hub.api import convert_to_response
    from testproject.models import ReportTask
    from testproject.serializers import ReportTaskSerializer

    task = make_task("done")
    ReportTask(task_ptr=task, report_format="html").save_base(raw=True, force_insert=True)
    data = convert_to_response(ReportTask.objects.get(pk=task.pk), ReportTaskSerializer)
    assert data["id"] == str(task.pk) and data["report_format"] == "html"


@pytest.mark.parametrize(
    "path",
    [
        "/api/",
        "/api/list",
        "/api/info?task_id={task}",
        "/api/restart?task_id={task}",
        "/api/tasks/",
        "/api/tasks/{task}/",
        "/api/tasks/{task}/restart/",
        "/api/tasks/{task}/cancel/",
        "/api/tasks/{task}/runs/",
        "/api/task-history/",
        "/api/task-history/{run}/",
        "/api/reports/",
        "/api/reports/tasks/",
    ],
)
def test_browsable_api_renders_every_route(operator_client, make_task, path):
    task = make_task("failed")
    response = operator_client.get(fill(path, task), HTTP_ACCEPT="text/html")
    # GET on a restart or cancel route answers 405, as an HTML page with the form to send it.
    assert response.status_code in (200, 405)
    assert response["Content-Type"].startswith("text/html")
    assert b"</html>" in response.content


def test_schema_documents_every_route(reader_client, db):
    response = reader_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for path in (
        "/api/info/",
        "/api/list/",
        "/api/restart/",
        "/api/cancel/",
        "/api/tasks/{id}/",
        "/api/tasks/{id}/restart/",
        "/api/tasks/{id}/cancel/",
        "/api/tasks/{id}/runs/",
        "/api/task-history/",
        "/api/task-history/{id}/",
        "/api/reports/tasks/{id}/restart/",
    ):
        assert path in paths, path
    assert "put" in paths["/api/restart/"] and "post" in paths["/api/tasks/{id}/cancel/"]


def test_the_package_works_without_drf_spectacular():
    code = (
        "import sys; sys.modules['drf_spectacular'] = None\n"
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "from django.test.utils import setup_test_environment; setup_test_environment()\n"
        "import django_tasks_hub.urls, django_tasks_hub.api.views\n"
        "from django.urls import reverse\n"
        "print(reverse('tasks_hub:task-seed-info'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "testproject.settings"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "/api/info"


@pytest.mark.parametrize("path", ["/api/list", "/api/tasks/", "/api/task-history/"])
def test_pages_cost_the_same_queries_whatever_their_size(reader_client, make_task, path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(30):
        make_task("done", runs=2)

    def queries(limit: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = reader_client.get(path, {"limit": limit})
        assert response.status_code == 200
        return len(captured.captured_queries)

    assert queries(2) == queries(25), "a query per row"


def test_schema_is_valid_openapi_and_swagger_ui_serves_it(reader_client, tmp_path):
    from django.core.management import call_command

    # --validate checks the generated document against the OpenAPI 3 JSON schema.
    call_command("spectacular", "--validate", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/tasks/{id}/restart/" in (tmp_path / "schema.yaml").read_text()
    page = reader_client.get("/api/docs/")
    assert page.status_code == 200 and b"swagger" in page.content.lower()


def _failed_only_urls() -> list[Any]:
    from django.urls import include, path

    from django_tasks_hub.api import create_task_helpers_router

    router = create_task_helpers_router(Task.objects.filter(status="failed"), basename="failed")
    return [path("failed/", include(router.urls))]


urlpatterns = _failed_only_urls()


@pytest.mark.urls("tests.api.test_views")
def test_a_router_on_a_filtered_queryset_keeps_to_it(reader_client, make_task):
    failed, done = make_task("failed"), make_task("done")
    assert _ids(reader_client.get("/failed/list").json()) == [str(failed.pk)]
    assert reader_client.get(f"/failed/tasks/{done.pk}/").status_code == 404
    runs = reader_client.get("/failed/task-history/").json()["data"]
    assert {run["task_id"] for run in runs} == {str(failed.pk)}
    assert reader_client.get(f"/failed/task-history/{done.runs.get().pk}/").status_code == 404
