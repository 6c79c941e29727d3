"""The task page: read-only, formatted data, relations, run history, Restart/Cancel buttons."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import reverse

from django_tasks_hub.models import Task, TaskRun


def page_url(task: Task) -> str:
    return reverse("admin:django_tasks_hub_task_change", args=[task.pk])


def test_json_error_and_traceback_are_readable(client, superuser, make_task):
    task = make_task(
        "demo.fail",
        "failed",
        args=[1, "two"],
        kwargs={"report": "monthly", "pages": [1, 2]},
        error="ValueError: boom <b>",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom',
    )
    client.force_login(superuser)
    response = client.get(page_url(task))
    assert response.status_code == 200
    text = response.text
    # Indented JSON (PostgreSQL's jsonb may reorder the keys).
    assert '<pre class="th-pre th-json">{\n  &quot;' in text
    assert "\n  &quot;report&quot;: &quot;monthly&quot;" in text
    assert "&quot;pages&quot;: [\n    1,\n    2\n  ]" in text
    assert '<pre class="th-pre th-json">[\n  1,\n  &quot;two&quot;\n]</pre>' in text
    # Error text is escaped, never rendered as HTML.
    assert "ValueError: boom &lt;b&gt;" in text and "boom <b>" not in text
    assert 'class="th-pre th-traceback">Traceback (most recent call last):\n' in text
    # Read-only: no form field to edit, no save button.
    assert 'name="_save"' not in text and 'name="name"' not in text


def test_progress_on_the_page(client, superuser, make_task):
    task = make_task(
        "demo.long", "processing", progress={"current": 1, "total": 4, "message": "warming up"}
    )
    client.force_login(superuser)
    text = client.get(page_url(task)).text
    assert 'aria-valuenow="25"' in text and "1 of 4: warming up" in text
    # A bar and words, not a raw JSON dump; once the task has ended, where it stopped.
    assert "&quot;message&quot;" not in text
    task.status = "canceled"
    task.save(update_fields=["status"])
    text = client.get(page_url(task)).text
    assert "stopped at 1 of 4: warming up" in text and "&quot;message&quot;" not in text


def test_parent_and_children_links(client, superuser, make_task):
    parent = make_task("demo.chain", "done")
    child = make_task("demo.add", "done", parent_id=parent.pk)
    client.force_login(superuser)
    child_page = client.get(page_url(child)).text
    assert f'<a href="{page_url(parent)}">demo.chain</a>' in child_page
    parent_page = client.get(page_url(parent)).text
    assert f'<a href="{page_url(child)}">demo.add</a>' in parent_page


def test_missing_parent_is_shown_not_a_500(client, superuser, make_task):
    # The parent key has no database constraint: the parent may never have been recorded.
    ghost = uuid.uuid4()
    child = make_task("demo.add", "done", parent_id=ghost)
    client.force_login(superuser)
    response = client.get(page_url(child))
    assert response.status_code == 200
    assert f"{ghost} (not recorded)" in response.text


def test_run_history_inline_newest_first(client, superuser, make_task):
    task = make_task("demo.fail", "failed", runs=3)
    last = task.runs.order_by("-id").first()
    TaskRun.objects.filter(pk=last.pk).update(triggered_by=superuser, trigger="restart")
    client.force_login(superuser)
    text = client.get(page_url(task)).text
    assert "Run history (newest first)" in text
    shown = [
        int(n)
        for n in re.findall(r'<a href="/admin/django_tasks_hub/taskrun/(\d+)/change/">#', text)
    ]
    assert shown == sorted(task.runs.values_list("id", flat=True), reverse=True)
    inline = text.split("Run history (newest first)")[1]
    assert "boss" in inline  # who triggered the restart
    assert "celery@test-host" in inline
    assert f"?task__exact={task.pk}" in text


def test_run_inline_shows_the_newest_runs_only(client, superuser, make_task, monkeypatch):
    monkeypatch.setattr("django_tasks_hub.admin.RUNS_SHOWN", 2)
    task = make_task("demo.fail", "failed", runs=4)
    client.force_login(superuser)
    text = client.get(page_url(task)).text
    shown = [int(n) for n in re.findall(r'taskrun/(\d+)/change/">#', text)]
    assert shown == list(task.runs.order_by("-id").values_list("id", flat=True)[:2])


@pytest.mark.parametrize(
    ("status", "user", "restart", "cancel"),
    [
        ("failed", "superuser", True, False),
        ("done", "superuser", True, False),
        ("processing", "superuser", False, True),
        ("pending", "superuser", False, True),
        ("retrying", "superuser", False, True),
        ("failed", "viewer", False, False),
        ("processing", "viewer", False, False),
        ("failed", "restarter", True, False),
        ("processing", "restarter", False, False),
        ("processing", "canceller", False, True),
        ("failed", "canceller", False, False),
    ],
)
def test_buttons_follow_permission_and_status(
    client, make_task, request, status, user, restart, cancel
):
    task = make_task("demo.long", status)
    client.force_login(request.getfixturevalue(user))
    text = client.get(page_url(task)).text
    assert ('class="th-tool th-tool--restart"' in text) is restart
    assert ('class="th-tool th-tool--cancel"' in text) is cancel


def test_nobody_adds_or_edits(client, superuser, make_task):
    task = make_task()
    client.force_login(superuser)
    assert client.get(reverse("admin:django_tasks_hub_task_add")).status_code == 403
    assert client.get(reverse("admin:django_tasks_hub_taskrun_add")).status_code == 403
    response = client.post(page_url(task), {"name": "hacked", "status": "done"})
    assert response.status_code == 403
    task.refresh_from_db()
    assert task.name == "demo.fail" and task.status == "failed"
    run = task.runs.get()
    run_url = reverse("admin:django_tasks_hub_taskrun_change", args=[run.pk])
    assert client.post(run_url, {"status": "done"}).status_code == 403


def test_delete_follows_the_delete_permission(client, viewer, superuser, make_task):
    task = make_task()
    delete_url = reverse("admin:django_tasks_hub_task_delete", args=[task.pk])
    client.force_login(viewer)
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    assert Task.objects.filter(pk=task.pk).exists()
    client.force_login(superuser)
    assert client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not Task.objects.filter(pk=task.pk).exists()
    assert not TaskRun.objects.filter(task_id=task.pk).exists()
