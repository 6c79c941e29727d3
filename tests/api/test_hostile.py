"""Hostile input: exact tag filters on every database, bounded text, too many parameters."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from django_tasks_hub.api.filters import TEXT_MAX_LENGTH
from django_tasks_hub.models import Task, TaskRun

#: Tags JSON writes with an escape, or that a LIKE pattern or a quoted match would misread.
AWKWARD_TAGS = ["\\", '"', "\\\\", '\\"', "a\\b", "%", "_", "a%", "é", "\n", "\u2028", "'", "[]"]

#: The routes that filter by tag, and how to read the task ids from an answer.
TAG_ROUTES = {
    "/api/list": lambda body: {row["id"] for row in body},
    "/api/tasks/": lambda body: {row["id"] for row in body["results"]},
    "/api/task-history/": lambda body: {row["task_id"] for row in body["data"]},
}


def _ids(client: Client, route: str, query: str) -> set[str]:
    response = client.get(f"{route}?{query}")
    assert response.status_code == 200, (route, query, response.content[:300])
    return TAG_ROUTES[route](response.json())


@pytest.mark.parametrize("route", sorted(TAG_ROUTES))
def test_a_backslash_tag_matches_only_tasks_that_carry_it(
    operator_client: Client, make_task: Any, route: str
) -> None:
    plain = make_task(tags=["nightly", 'say "hi"', "C:\\temp"])
    slash = make_task(tags=["\\"])
    assert _ids(operator_client, route, "tag=%5C") == {str(slash.pk)}
    assert _ids(operator_client, route, "tag=" + quote("C:\\temp")) == {str(plain.pk)}
    assert _ids(operator_client, route, "tag=" + quote('say "hi"')) == {str(plain.pk)}
    # Exactly: neither a part of a tag nor another case.
    assert _ids(operator_client, route, "tag=night") == set()
    assert _ids(operator_client, route, "tag=NIGHTLY") == set()
    assert _ids(operator_client, route, "tag=nightly") == {str(plain.pk)}


def test_a_tag_filter_is_exact_whatever_the_tags(make_task: Any) -> None:
    tasks = [make_task(tags=[tag]) for tag in AWKWARD_TAGS]
    make_task(tags=[])
    make_task(tags=[1, None, {"a": "\\"}])  # non-string elements match no text tag

    @hypothesis_settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(tag=st.one_of(st.sampled_from(AWKWARD_TAGS), st.text(min_size=1, max_size=6)))
    def check(tag: str) -> None:
        expected = {str(t.pk) for t in tasks if tag in t.tags}
        assert {str(pk) for pk in Task.objects.tagged(tag).values_list("pk", flat=True)} == (
            expected
        ), tag
        runs = TaskRun.objects.tagged(tag).values_list("task_id", flat=True)
        assert {str(pk) for pk in runs} == expected, tag

    check()


@pytest.mark.parametrize(
    ("route", "parameter"),
    [
        ("/api/list", "tag"),
        ("/api/list", "name"),
        ("/api/tasks/", "tag"),
        ("/api/tasks/", "name"),
        ("/api/task-history/", "tag"),
        ("/api/task-history/", "task"),
    ],
)
def test_a_very_long_text_filter_answers_400_naming_it(
    operator_client: Client, make_task: Any, route: str, parameter: str
) -> None:
    make_task(tags=["x"])
    response = operator_client.get(f"{route}?{parameter}={'a' * 60_000}")
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert parameter in body, body
    assert str(TEXT_MAX_LENGTH) in body[parameter][0]
    # The longest allowed value is still a filter, not an error.
    response = operator_client.get(f"{route}?{parameter}={'a' * TEXT_MAX_LENGTH}")
    assert response.status_code == 200, response.content[:300]


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("get", "/api/list"),
        ("get", "/api/task-history/"),
        ("get", "/api/info"),
        ("get", "/api/tasks/"),
        ("put", "/api/restart"),
        ("put", "/api/cancel"),
    ],
)
def test_too_many_parameters_answer_a_json_400(
    operator_client: Client, make_task: Any, method: str, route: str
) -> None:
    task = make_task("failed")
    count = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 200
    query = f"task_id={task.pk}&" + "&".join(["status=failed"] * count)
    response = getattr(operator_client, method)(f"{route}?{query}")
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = response.json()
    assert body["code"] == "request_too_large"
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in body["detail"]
    assert "status=failed,lost" in body["detail"]
