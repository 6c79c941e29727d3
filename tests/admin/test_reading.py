"""What the lists and pages tell a person: the error in the list, search in errors and
arguments, times to the second, what happened to an ended attempt, a cancelled run's runtime."""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from django_tasks_hub.models import Task, TaskRun

TASKS = reverse("admin:django_tasks_hub_task_changelist")
RUNS = reverse("admin:django_tasks_hub_taskrun_changelist")


def names(response) -> list[str]:
    return re.findall(r'<th class="field-name"><a href="[^"]+">([^<]+)</a>', response.text)


def test_the_task_list_shows_the_errors_first_line(client, superuser, make_task):
    make_task(
        "demo.fail",
        "failed",
        error="ValueError: invoice 1042 has no customer\nmore detail on the second line",
    )
    client.force_login(superuser)
    text = client.get(TASKS).text
    cell = re.search(r'<td class="field-error_summary">(.*?)</td>', text, re.DOTALL)
    assert cell, "the list has an error column"
    assert "ValueError: invoice 1042 has no customer" in cell[1]
    assert "more detail" not in re.sub(r'title="[^"]*"', "", cell[1])


def test_search_finds_text_in_errors_and_arguments(client, superuser, make_task):
    failed = make_task("demo.fail", "failed", error="KeyError: 'customer_1042'")
    failed.runs.update(error=failed.error)
    make_task("demo.echo", "done", args=["exports/2026-11.csv"], kwargs={"rows": 1200})
    make_task("demo.add", "done", args=[1, 2])
    client.force_login(superuser)
    assert names(client.get(TASKS, {"q": "customer_10"})) == ["demo.fail"]
    assert names(client.get(TASKS, {"q": "EXPORTS/2026"})) == ["demo.echo"]
    # Two characters are not looked for in the text (a trigram index needs three).
    assert names(client.get(TASKS, {"q": "xp"})) == []
    runs = client.get(RUNS, {"q": "customer_1042"}).text
    assert len(re.findall(r'<th class="field-id">', runs)) == 1


@pytest.mark.postgres
def test_search_in_errors_and_arguments_uses_the_trigram_indexes(make_task):
    from django.contrib.admin.sites import site
    from django.test import RequestFactory

    from django_tasks_hub.admin.filters import search

    make_task("demo.fail", "failed", error="KeyError: 'customer_1042'")
    request = RequestFactory().get(TASKS)
    queryset = search(request, Task, Task.objects.all(), "customer_1042")
    run_queryset = search(request, TaskRun, TaskRun.objects.all(), "customer_1042")
    assert site  # the admin is loaded
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plans = []
        for qs in (queryset, run_queryset):
            sql, params = qs.order_by().query.sql_with_params()
            cursor.execute(f"EXPLAIN {sql}", params)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    assert "th_task_error_trgm" in plans[0] and "th_task_args_trgm" in plans[0], plans[0]
    assert "th_run_error_trgm" in plans[1], plans[1]


def test_the_task_page_shows_times_to_the_second_and_ms_for_a_short_run(
    client, superuser, make_task
):
    start = timezone.now().replace(microsecond=250_000)
    task = make_task(
        "demo.add",
        "done",
        started_at=start,
        finished_at=start + datetime.timedelta(milliseconds=120),
    )
    client.force_login(superuser)
    text = client.get(reverse("admin:django_tasks_hub_task_change", args=[task.pk])).text
    local = timezone.localtime(start)
    assert local.strftime("%Y-%m-%d %H:%M:%S") + ".250" in text
    assert "120 ms" in text
    assert " p.m." not in text and " a.m." not in text


def test_an_attempt_that_ended_in_a_retry_says_so(client, superuser, make_task):
    task = make_task("demo.flaky", "done", runs=1)
    now = timezone.now()
    TaskRun.objects.create(
        task=task,
        name=task.name,
        attempt=2,
        broker_id=str(uuid.uuid4()),
        retries=0,
        status="retrying",
        queued_at=now,
        started_at=now,
        finished_at=now + datetime.timedelta(seconds=1),
        error="ConnectionError: try again",
    )
    client.force_login(superuser)
    page = client.get(reverse("admin:django_tasks_hub_task_change", args=[task.pk])).text
    runs = client.get(RUNS).text
    for text in (page, runs):
        assert "Ended: retried" in text
        assert "th-badge--retrying" not in text


def test_a_cancelled_run_shows_how_long_it_ran(client, superuser, make_task):
    now = timezone.now()
    task = make_task(
        "demo.long",
        "canceled",
        started_at=now,
        finished_at=now + datetime.timedelta(minutes=2, seconds=50),
    )
    assert task.runs.get().runtime is None  # a revoke carries no runtime of its own
    client.force_login(superuser)
    runs = client.get(RUNS).text
    assert re.search(r'<td class="field-runtime_display">2 min 50 s</td>', runs), runs[-3000:]
    page = client.get(reverse("admin:django_tasks_hub_task_change", args=[task.pk])).text
    assert page.count("2 min 50 s") >= 2  # the task's runtime and its run's


def test_list_titles_say_what_the_page_is_and_delete_comes_last(client, superuser, make_task):
    make_task()
    client.force_login(superuser)
    tasks = client.get(TASKS).text
    assert "<title>Tasks |" in tasks and "Select task to view" not in tasks
    assert "<title>Task runs |" in client.get(RUNS).text
    options = re.findall(r'<option value="(\w+)"', tasks.split('name="action"', 1)[1])
    assert options[:2] == ["restart_selected", "cancel_selected"], options
    assert options[-1] == "delete_selected", options


def test_task_page_cancel_asks_first_and_has_no_empty_history_link(client, superuser, make_task):
    task = make_task("demo.long", "processing")
    client.force_login(superuser)
    text = client.get(reverse("admin:django_tasks_hub_task_change", args=[task.pk])).text
    assert 'data-th-confirm="Cancel this task?' in text
    assert "django_tasks_hub/confirm.js" in text
    assert "/history/" not in text


def test_a_run_stuck_for_weeks_reads_in_days(client, superuser, make_task):
    now = timezone.now()
    make_task(
        "demo.long",
        "canceled",
        started_at=now - datetime.timedelta(days=400, hours=3, minutes=14),
        finished_at=now,
    )
    client.force_login(superuser)
    runs = client.get(RUNS).text
    assert re.search(r'<td class="field-runtime_display">400 d 3 h</td>', runs), runs[-3000:]
    # Up to two days the hours read better than a day and some hours.
    from django_tasks_hub.admin.display import duration

    assert duration(36 * 3600 + 600) == "36 h 10 min"
