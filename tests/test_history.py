"""get_db_plugin().get_history(): runs newest first, filtered, keyset-paginated on the run id."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from django_tasks_hub import HistoryQuery, get_db_plugin
from django_tasks_hub.history import InvalidCursor
from django_tasks_hub.models import TaskRun
from testproject import tasks
from tests.conftest import wait_status


def all_pages(query: HistoryQuery, between: Any = None) -> list[int]:
    """Every run id, page after page; ``between()`` runs after each page."""
    ids: list[int] = []
    cursor = ""
    while True:
        page = get_db_plugin().get_history(HistoryQuery(**{**query.__dict__, "cursor": cursor}))
        ids += [run.pk for run in page.data]
        if not page.cursor:
            return ids
        assert len(page.data) == query.limit
        cursor = page.cursor
        if between is not None:
            between()


@pytest.fixture
def history(eager: None) -> dict[str, Any]:
    """Runs of a few tasks, run eagerly: what each was, and a moment between the two halves."""
    for i in range(4):
        tasks.add.delay(i, i)
    middle = timezone.now()
    tasks.fail.delay()
    tasks.fail.delay()
    tasks.tagged.delay()
    tasks.flaky.delay(fail_times=1, countdown=0)  # Two runs: retrying, then done.
    return {"middle": middle}


def test_pages_cover_every_run_once_newest_first(history: dict[str, Any]) -> None:
    everything = list(TaskRun.objects.order_by("-id").values_list("pk", flat=True))
    assert len(everything) == 9
    assert all_pages(HistoryQuery(limit=3)) == everything
    assert all_pages(HistoryQuery(limit=9)) == everything
    last = get_db_plugin().get_history(HistoryQuery(limit=9))
    assert last.cursor == "" and [r.pk for r in last.data] == everything


def test_new_runs_during_paging_are_neither_repeated_nor_skipped(history: dict[str, Any]) -> None:
    before = list(TaskRun.objects.order_by("-id").values_list("pk", flat=True))
    seen = all_pages(HistoryQuery(limit=3), between=lambda: tasks.add.delay(9, 9))
    # The runs that arrived meanwhile are newer than the first page: the next look shows them.
    assert seen == before
    assert TaskRun.objects.count() == len(before) + 2


def test_filters(history: dict[str, Any]) -> None:
    page = get_db_plugin().get_history
    assert len(page(HistoryQuery(task="demo.add")).data) == 4
    assert {r.status for r in page(HistoryQuery(task="demo.fail")).data} == {"failed"}
    assert [r.name for r in page(HistoryQuery(status="retrying")).data] == ["demo.flaky"]
    assert len(page(HistoryQuery(status=["failed", "retrying"])).data) == 3
    assert [r.name for r in page(HistoryQuery(tag="nightly")).data] == ["demo.tagged"]
    assert page(HistoryQuery(tag="night")).data == []  # A whole tag, not a part of one.
    early = page(HistoryQuery(end=history["middle"])).data
    late = page(HistoryQuery(start=history["middle"])).data
    assert {r.name for r in early} == {"demo.add"} and len(late) == 5
    assert page(HistoryQuery(start=timezone.now() + datetime.timedelta(seconds=1))).data == []
    flaky = page(HistoryQuery(task="demo.flaky", limit=1))
    assert flaky.data[0].status == "done" and flaky.cursor
    rest = page(HistoryQuery(task="demo.flaky", limit=1, cursor=flaky.cursor))
    assert rest.data[0].status == "retrying" and rest.cursor == ""


def test_runs_as_plain_data(history: dict[str, Any]) -> None:
    (run,) = get_db_plugin().get_history(HistoryQuery(tag="reports")).data
    data = run.as_dict()
    assert data["task"] == "demo.tagged" and data["state"] == "done"
    assert data["result"] == "tagged" and data["attempt"] == 1 and data["trigger"] == "initial"


def test_limit_is_capped_and_a_bad_cursor_says_what_to_do(history: dict[str, Any]) -> None:
    with override_settings(TASKS_HUB={"HISTORY_MAX_LIMIT": 2, "HISTORY_DEFAULT_LIMIT": 1}):
        assert len(get_db_plugin().get_history(HistoryQuery(limit=50)).data) == 2
        assert len(get_db_plugin().get_history(HistoryQuery()).data) == 1
    for cursor in ("nonsense", "cjEy=x", "eDEy"):
        with pytest.raises(InvalidCursor, match="pass back the 'cursor' value"):
            get_db_plugin().get_history(HistoryQuery(cursor=cursor))


@pytest.mark.worker
def test_a_running_task_reads_its_own_history(worker: Any) -> None:
    first = tasks.read_history.delay()
    seen_by_first = wait_status(first.id, "done").result
    second = tasks.read_history.delay()
    seen_by_second = wait_status(second.id, "done").result
    first_run = TaskRun.objects.get(broker_id=first.id).pk
    second_run = TaskRun.objects.get(broker_id=second.id).pk
    # Each sees its own run (it exists while the task runs), newest first.
    assert seen_by_first == [first_run]
    assert seen_by_second == [second_run, first_run]
