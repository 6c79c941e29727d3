"""The task list: columns, filters, search, newest first, and no count over the whole table."""

from __future__ import annotations

import datetime
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_tasks_hub.admin import EstimatedCountPaginator

URL = reverse("admin:django_tasks_hub_task_changelist")


def rows(response) -> list[str]:
    """The task names of the list, top to bottom."""
    return re.findall(r'<th class="field-name"><a href="[^"]+">([^<]+)</a>', response.text)


def test_columns_badges_and_progress(client, superuser, make_task):
    make_task("demo.add", "done", result=5)
    make_task(
        "demo.long",
        "processing",
        progress={"current": 3, "total": 4, "message": "step 3 of 4"},
    )
    client.force_login(superuser)
    response = client.get(URL)
    assert response.status_code == 200
    text = response.text
    # The progress bar sits under the status badge (no column of its own, empty on most rows).
    for header in ("Task name", "Status", "Attempts", "Created", "Started", "Runtime",
                   "Worker", "Error"):  # fmt: skip
        assert f">{header}<" in text or f">{header}</a>" in text, header
    assert '<span class="th-badge th-badge--done">Done</span>' in text
    assert '<span class="th-badge th-badge--processing">Processing</span>' in text
    assert 'aria-valuenow="75"' in text and "width: 75.0%" in text
    # Only running tasks get a bar.
    assert text.count('role="progressbar"') == 1
    assert "2.0 s" in text  # runtime of the finished task (started +1 s, finished +3 s)
    assert "django_tasks_hub/admin.css" in text


def test_newest_first(client, superuser, make_task):
    now = timezone.now()
    make_task("demo.old", "done", created_at=now - datetime.timedelta(hours=2))
    make_task("demo.new", "done", created_at=now)
    make_task("demo.mid", "done", created_at=now - datetime.timedelta(hours=1))
    client.force_login(superuser)
    assert rows(client.get(URL)) == ["demo.new", "demo.mid", "demo.old"]


def test_status_and_name_filters(client, superuser, make_task):
    make_task("demo.fail", "failed")
    make_task("demo.fail", "done")
    make_task("demo.add", "failed")
    make_task("demo.long", "processing")
    client.force_login(superuser)
    assert sorted(rows(client.get(URL, {"status": "failed"}))) == ["demo.add", "demo.fail"]
    assert rows(client.get(URL, {"status": "failed", "name": "demo.fail"})) == ["demo.fail"]
    assert rows(client.get(URL, {"status": "active"})) == ["demo.long"]
    assert len(rows(client.get(URL, {"status": "ended"}))) == 3
    sidebar = client.get(URL).text.split('id="changelist-filter"')[1]
    for name in ("demo.add", "demo.fail", "demo.long"):
        assert f"?name={name}" in sidebar
    # The filters link without counting: no "(2)" after a choice.
    assert not re.search(r"\(\d+\)</a>", sidebar)


def test_created_date_filter_and_date_hierarchy(client, superuser, make_task):
    now = timezone.now()
    make_task("demo.add", "done", created_at=now)
    make_task("demo.add", "done", created_at=now - datetime.timedelta(days=800))
    client.force_login(superuser)
    text = client.get(URL).text
    # Two years apart: the hierarchy offers both years, and only years that have tasks.
    this_year, old_year = now.year, (now - datetime.timedelta(days=800)).year
    assert f"created_at__year={this_year}" in text and f"created_at__year={old_year}" in text
    for empty_year in range(old_year + 1, this_year):
        assert f"created_at__year={empty_year}" not in text
    response = client.get(URL, {"created_at__year": this_year})
    assert len(rows(response)) == 1
    assert f"created_at__month={timezone.localtime(now).month}" in response.text
    today_link = re.search(r'href="(\?created_at__gte=[^"]+)"[^>]*>Today<', text)
    assert today_link, "the created date filter offers Today"
    today = client.get(URL + today_link.group(1).replace("&amp;", "&"))
    assert len(rows(today)) == 1


def test_search_by_id_broker_id_and_name(client, superuser, make_task):
    a = make_task("reports.build", "done")
    b = make_task("demo.add", "done", broker_id="custom-broker-id-42")
    make_task("demo.fail", "failed")
    client.force_login(superuser)
    assert rows(client.get(URL, {"q": str(a.pk)})) == ["reports.build"]
    assert rows(client.get(URL, {"q": b.broker_id})) == ["demo.add"]
    assert rows(client.get(URL, {"q": "report"})) == ["reports.build"]
    assert rows(client.get(URL, {"q": "no-such-thing"})) == []
    # A malformed id is a search without results, not an error.
    assert client.get(URL, {"q": "1234-not-a-uuid"}).status_code == 200


def test_list_never_counts_the_table(client, superuser, make_task):
    for _ in range(3):
        make_task("demo.add", "done")
    client.force_login(superuser)
    with CaptureQueriesContext(connection) as queries:
        for params in ({}, {"status": "done"}, {"name": "demo.add"}):
            assert client.get(URL, params).status_code == 200
    sqls = [q["sql"].upper() for q in queries]
    counts = [sql for sql in sqls if "COUNT(" in sql]
    assert counts, "the list shows a count"
    # Every count is bounded by a LIMIT (or answered by the estimate on PostgreSQL).
    assert all("LIMIT" in sql for sql in counts), counts
    assert not [sql for sql in sqls if "DISTINCT" in sql]


def test_capped_count_reads_more_than(client, superuser, make_task, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "count_limit", 3)
    for _ in range(5):
        make_task("demo.fail", "failed")
    client.force_login(superuser)
    text = client.get(URL, {"status": "failed"}).text
    assert "more than 3 tasks" in text
    assert "Select all more than 3 tasks" in text


def test_exact_count_below_the_limit(client, superuser, make_task, monkeypatch):
    # Far above any planner estimate another test may have left on PostgreSQL.
    monkeypatch.setattr(EstimatedCountPaginator, "count_limit", 10**9)
    for _ in range(2):
        make_task("demo.fail", "failed")
    make_task("demo.add", "done")
    client.force_login(superuser)
    text = client.get(URL).text
    assert re.search(r">3 tasks</span>", text)
    assert "results (" not in text  # the search bar does not repeat the count of everything
    text = client.get(URL, {"status": "failed"}).text
    assert re.search(r">2 tasks</span>", text) and "2 results (" in text


@pytest.mark.postgres
def test_estimated_count_on_postgresql(client, superuser, make_task, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "count_limit", 5)
    for _ in range(12):
        make_task("demo.add", "done")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_tasks_hub_task")
    client.force_login(superuser)
    with CaptureQueriesContext(connection) as queries:
        text = client.get(URL).text
    assert "about 12 tasks" in text
    assert not [q for q in queries if "COUNT(" in q["sql"].upper()]
    # A filtered list is counted (up to the limit), never estimated.
    assert "more than 5 tasks" in client.get(URL, {"status": "done"}).text


def test_viewer_sees_no_actions(client, viewer, make_task):
    make_task()
    client.force_login(viewer)
    response = client.get(URL)
    assert response.status_code == 200
    assert "Restart selected tasks" not in response.text
    assert "Cancel selected tasks" not in response.text


def test_actions_listed_by_permission(client, restarter, canceller, superuser, make_task):
    make_task()
    client.force_login(restarter)
    text = client.get(URL).text
    assert "Restart selected tasks" in text and "Cancel selected tasks" not in text
    client.force_login(canceller)
    text = client.get(URL).text
    assert "Cancel selected tasks" in text and "Restart selected tasks" not in text
    client.force_login(superuser)
    text = client.get(URL).text
    assert "Cancel selected tasks" in text and "Restart selected tasks" in text


def test_date_hierarchy_days_come_from_index_probes(client, superuser, make_task):
    march = datetime.datetime(2025, 3, 3, 12, tzinfo=datetime.UTC)
    make_task("demo.add", "done", created_at=march)
    make_task("demo.add", "done", created_at=march + datetime.timedelta(days=2))
    client.force_login(superuser)
    with CaptureQueriesContext(connection) as queries:
        text = client.get(URL).text
    days = re.findall(r"created_at__day=(\d+)", text)
    assert sorted(set(days), key=int) == ["3", "5"]
    # One probe per day between the first and the last task, no DISTINCT over the rows.
    probes = [q for q in queries if '"created_at" >=' in q["sql"] and "LIMIT 1" in q["sql"]]
    assert len(probes) == 3
    assert not [q for q in queries if "DISTINCT" in q["sql"].upper()]


def test_list_query_leaves_out_the_heavy_columns(client, superuser, make_task):
    make_task("demo.fail", "failed", traceback="Traceback ...\n" * 2000, kwargs={"big": "x" * 5000})
    client.force_login(superuser)
    with CaptureQueriesContext(connection) as queries:
        client.get(URL)
    [page_query] = [
        q["sql"]
        for q in queries
        if '"django_tasks_hub_task"."name"' in q["sql"] and "ORDER BY" in q["sql"]
    ]
    assert '"traceback"' not in page_query and '"kwargs"' not in page_query
    assert '"progress"' in page_query and '"status"' in page_query
