"""Restart and cancel from the admin: the actions, the page buttons, and their messages."""

from __future__ import annotations

import pytest
from django.contrib.admin import helpers
from django.test import override_settings
from django.urls import reverse

from django_tasks_hub.models import Task, TaskRun
from tests.admin.conftest import messages_of

URL = reverse("admin:django_tasks_hub_task_changelist")


def run_action(client, action: str, tasks: list[Task]):
    return client.post(
        URL,
        {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(t.pk) for t in tasks]},
        follow=True,
    )


def test_restart_selected(client, restarter, make_task, django_capture_on_commit_callbacks):
    failed = [make_task("demo.fail", "failed") for _ in range(2)]
    running = [make_task("demo.long", "processing") for _ in range(2)]
    client.force_login(restarter)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(client, "restart_selected", failed + running)
    [message] = messages_of(response)
    assert message.startswith("2 tasks restarted; 2 skipped: already running (demo.long ")
    for task in failed:
        task.refresh_from_db()
        assert task.status == "pending" and task.attempts == 2
        run = task.runs.order_by("-id").first()
        assert run.trigger == "restart" and run.triggered_by == restarter
        assert run.broker_id == task.broker_id
    for task in running:
        task.refresh_from_db()
        assert task.status == "processing" and task.attempts == 1


def test_restart_message_singular_and_level(client, superuser, make_task):
    task = make_task("demo.fail", "failed")
    client.force_login(superuser)
    response = run_action(client, "restart_selected", [task])
    [message] = response.context["messages"]
    assert str(message).startswith("1 task restarted. <a href=")
    assert message.tags == "success"


def test_the_restart_message_links_the_restarted_tasks(client, superuser, make_task):
    import re

    restarted = [make_task("demo.fail", "failed") for _ in range(2)]
    other = make_task("demo.other", "failed")
    client.force_login(superuser)
    [message] = messages_of(run_action(client, "restart_selected", restarted))
    link = re.search(r'<a href="([^"]+)">See them in the list.</a>', message)
    assert link, message
    listed = client.get(link[1].replace("&amp;", "&"))
    assert listed.status_code == 200
    shown = {str(t.pk) for t in listed.context["cl"].result_list}
    assert shown == {str(t.pk) for t in restarted} and str(other.pk) not in shown


def test_restart_unknown_task_name_is_skipped(client, superuser, make_task):
    task = make_task("gone.task", "failed")
    client.force_login(superuser)
    [message] = messages_of(run_action(client, "restart_selected", [task]))
    assert message == (
        "0 tasks restarted; 1 skipped: task name no longer registered "
        f"(gone.task {str(task.pk)[:8]})."
    )
    task.refresh_from_db()
    assert task.status == "failed"


def test_restart_without_permission_changes_nothing(client, canceller, viewer, make_task):
    task = make_task("demo.fail", "failed")
    for user in (canceller, viewer):
        client.force_login(user)
        response = run_action(client, "restart_selected", [task])
        # The action is not offered to them: Django refuses it as an unknown choice.
        assert not [m for m in messages_of(response) if "restart" in m.lower()]
        task.refresh_from_db()
        assert task.status == "failed" and task.attempts == 1


def test_cancel_selected(client, canceller, make_task):
    active = [make_task("demo.long", "processing"), make_task("demo.long", "pending")]
    done = [make_task("demo.add", "done") for _ in range(2)]
    failed = make_task("demo.fail", "failed")
    client.force_login(canceller)
    response = run_action(client, "cancel_selected", [*active, *done, failed])
    [message] = response.context["messages"]
    text = str(message)
    assert text.startswith("2 tasks cancelled; ")
    assert "2 skipped: already done (demo.add " in text
    assert "1 skipped: already failed (demo.fail " in text
    assert message.tags == "warning"
    for task in active:
        task.refresh_from_db()
        assert task.status == "canceled"
        assert task.runs.get().canceled_by == canceller
    assert Task.objects.filter(pk__in=[t.pk for t in done], status="done").count() == 2


def test_cancel_nothing_cancelable_is_an_error(client, superuser, make_task):
    task = make_task("demo.add", "done")
    client.force_login(superuser)
    [message] = run_action(client, "cancel_selected", [task]).context["messages"]
    assert message.tags == "error"
    assert str(message).startswith("0 tasks cancelled; 1 skipped: already done")


def test_cancel_without_permission_changes_nothing(client, restarter, viewer, make_task):
    task = make_task("demo.long", "processing")
    for user in (restarter, viewer):
        client.force_login(user)
        response = run_action(client, "cancel_selected", [task])
        # The action is not offered to them: Django refuses it as an unknown choice.
        assert not [m for m in messages_of(response) if "cancel" in m.lower()]
        task.refresh_from_db()
        assert task.status == "processing"


def test_many_skipped_are_summarised(client, superuser, make_task):
    tasks = [make_task("demo.long", "processing") for _ in range(7)]
    client.force_login(superuser)
    [message] = messages_of(run_action(client, "restart_selected", tasks))
    assert message.startswith("0 tasks restarted; 7 skipped: already running (")
    assert message.endswith(" and 2 more).")


# -- the buttons of the task page --------------------------------------------------------------


def button_url(task: Task, which: str) -> str:
    return reverse(f"admin:django_tasks_hub_task_{which}", args=[task.pk])


def test_restart_button(client, restarter, make_task):
    task = make_task("demo.fail", "failed")
    client.force_login(restarter)
    response = client.post(button_url(task, "restart"), follow=True)
    assert response.redirect_chain[-1][0] == reverse(
        "admin:django_tasks_hub_task_change", args=[task.pk]
    )
    [message] = messages_of(response)
    assert message.startswith("Task “demo.fail” (") and message.endswith("a new run is queued.")
    task.refresh_from_db()
    assert task.status == "pending"
    assert TaskRun.objects.filter(task=task, trigger="restart", triggered_by=restarter).exists()
    # Now active: the page offers no second restart.
    assert 'class="th-tool th-tool--restart"' not in response.text


def test_restart_button_on_a_running_task_says_why(client, superuser, make_task):
    task = make_task("demo.long", "processing")
    client.force_login(superuser)
    [message] = messages_of(client.post(button_url(task, "restart"), follow=True))
    assert "only an ended task can be restarted" in message


def test_cancel_button(client, canceller, make_task):
    task = make_task("demo.long", "processing")
    client.force_login(canceller)
    response = client.post(button_url(task, "cancel"), follow=True)
    [message] = messages_of(response)
    assert message.startswith("Task “demo.long” (") and message.endswith("was cancelled.")
    task.refresh_from_db()
    assert task.status == "canceled"
    assert '<span class="th-badge th-badge--canceled">Canceled</span>' in response.text


def test_buttons_need_the_permission_and_a_post(client, viewer, restarter, make_task):
    failed = make_task("demo.fail", "failed")
    running = make_task("demo.long", "processing")
    client.force_login(viewer)
    assert client.post(button_url(failed, "restart")).status_code == 403
    assert client.post(button_url(running, "cancel")).status_code == 403
    client.force_login(restarter)
    assert client.post(button_url(running, "cancel")).status_code == 403
    assert client.get(button_url(failed, "restart")).status_code == 405
    failed.refresh_from_db()
    running.refresh_from_db()
    assert (failed.status, running.status) == ("failed", "processing")


def test_button_on_a_deleted_task(client, superuser, make_task):
    task = make_task("demo.fail", "failed")
    url = button_url(task, "restart")
    task.delete()
    client.force_login(superuser)
    response = client.post(url, follow=True)
    assert response.status_code == 200
    assert "it may have been deleted" in messages_of(response)[0]


@pytest.mark.timeout(60)  # a publish that hangs instead of failing fails here
@pytest.mark.django_db(transaction=True)
def test_restart_with_the_broker_down(client, superuser, make_task):
    tasks = [make_task("demo.fail", "failed") for _ in range(3)]
    client.force_login(superuser)
    with override_settings(TASKS_HUB={"CELERY_APP": "tests.admin.conftest.dead_broker_app"}):
        response = run_action(client, "restart_selected", tasks)
    [message] = response.context["messages"]
    assert message.tags == "error"
    assert str(message).startswith(
        "0 tasks restarted; 1 skipped: the broker could not be reached (demo.fail "
    )
    # The others are not sent one by one into a dead broker.
    assert "; 2 skipped: not tried after that (demo.fail " in str(message)
    statuses = sorted(Task.objects.values_list("status", flat=True))
    # Nothing is left pending that the broker never got: the one tried is marked failed.
    assert statuses == ["failed", "failed", "failed"]
    assert not TaskRun.objects.filter(status="pending").exists()


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_cancel_button_with_the_broker_down(client, superuser, make_task):
    task = make_task("demo.long", "processing")
    client.force_login(superuser)
    with override_settings(TASKS_HUB={"CELERY_APP": "tests.admin.conftest.dead_broker_app"}):
        response = client.post(button_url(task, "cancel"), follow=True)
    [message] = response.context["messages"]
    assert message.tags == "error"
    assert "The broker could not be reached, so the task was not canceled" in str(message)
    task.refresh_from_db()
    assert task.status == "processing"


def test_too_many_selected_changes_nothing(client, superuser, make_task, monkeypatch):
    monkeypatch.setattr("django_tasks_hub.admin.TaskAdmin.action_limit", 2)
    tasks = [make_task("demo.fail", "failed") for _ in range(3)]
    client.force_login(superuser)
    [message] = run_action(client, "restart_selected", tasks).context["messages"]
    assert message.tags == "error"
    assert str(message).startswith("More than 2 tasks are selected; an action takes at most 2")
    assert Task.objects.filter(status="failed", attempts=1).count() == 3
    # Within the limit it goes through.
    [message] = run_action(client, "restart_selected", tasks[:2]).context["messages"]
    assert str(message).startswith("2 tasks restarted. <a href=")
