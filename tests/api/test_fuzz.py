"""Property-based: whatever the path ids and query parameters, no route answers a 5xx.

The values include what hostile input tries: backslashes, quotes and the characters JSON
escapes in text filters, values longer than any column, and parameters repeated a few times
or past Django's ``DATA_UPLOAD_MAX_NUMBER_FIELDS``; every error answer is JSON.
"""

from __future__ import annotations

import base64
import os
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_tasks_hub.history import encode_cursor
from django_tasks_hub.states import TaskStatus
from testproject.models import ReportTask

#: Examples per route; raise it locally with TASKS_HUB_FUZZ_EXAMPLES=1000.
EXAMPLES = int(os.environ.get("TASKS_HUB_FUZZ_EXAMPLES", "40"))

ROUTES = [
    ("get", "/api/info"),
    ("get", "/api/list"),
    ("put", "/api/restart"),
    ("put", "/api/cancel"),
    ("get", "/api/tasks/"),
    ("get", "/api/tasks/{id}/"),
    ("post", "/api/tasks/{id}/restart/"),
    ("post", "/api/tasks/{id}/cancel/"),
    ("get", "/api/tasks/{id}/runs/"),
    ("get", "/api/task-history/"),
    ("get", "/api/task-history/{id}/"),
    ("get", "/api/reports/list"),
    ("get", "/api/reports/task-history/"),
    ("post", "/api/reports/tasks/{id}/restart/"),
    ("options", "/api/tasks/{id}/"),
]
PARAMETERS = [
    "task_id",
    "limit",
    "offset",
    "status",
    "name",
    "tag",
    "created_after",
    "created_before",
    "task",
    "start",
    "end",
    "cursor",
]

# Any text a URL can carry (surrogates cannot be encoded, so no client could send them).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
numbers = st.integers(min_value=-(2**70), max_value=2**70).map(str)
offsets = st.sampled_from(["Z", "+00:00", "-12:00", "+14:00", "+05:30", ""])
datetimes = st.builds(lambda d, o: d.isoformat() + o, st.datetimes(), offsets)
statuses = st.lists(st.sampled_from([*TaskStatus.values, "nope", ""]), max_size=3).map(",".join)
cursors = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(
        lambda n: encode_cursor(n) if n >= 0 else "r"
    ),
    st.binary(max_size=30).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
)
#: What text filters get wrong: characters JSON and LIKE escape, quotes, NUL, line separators.
awkward = st.lists(
    st.sampled_from(["\\", '"', "'", "%", "_", "\x00", "\n", "\u2028", "\\u0000", "é", "a", "*"]),
    min_size=1,
    max_size=12,
).map("".join)
#: Values longer than any column: a filter must bound them, not hand them to the database.
long_values = st.builds(
    lambda chunk, times: chunk * times,
    st.sampled_from(["a", "9", "\\", "%", "é", "failed,"]),
    st.sampled_from([256, 5_000, 60_000]),
)
values = st.one_of(text, numbers, datetimes, statuses, cursors, awkward, long_values)
#: One value, or the parameter repeated (a few times, or past DATA_UPLOAD_MAX_NUMBER_FIELDS).
repeated = st.one_of(
    values,
    st.lists(values, min_size=2, max_size=4),
    st.builds(lambda v, n: [v] * n, st.one_of(text, statuses), st.sampled_from([50, 1_100])),
)


@pytest.fixture
def known_ids(make_task: Any, operator: Any) -> dict[str, list[str]]:
    """Ids that exist, so examples also reach tasks and runs (not only 404s)."""
    tasks = [make_task(status) for status in ("done", "failed", "pending", "processing")]
    ReportTask(task_ptr=tasks[1], report_format="pdf").save_base(raw=True, force_insert=True)
    runs = [str(task.runs.get().pk) for task in tasks]
    return {"task": [str(task.pk) for task in tasks], "run": runs}


@pytest.mark.parametrize(("method", "template"), ROUTES)
def test_no_route_answers_5xx(operator: Any, known_ids: dict[str, list[str]], method, template):
    client = Client()
    client.force_login(operator)
    run_route = "task-history" in template
    ids = st.one_of(
        st.sampled_from(known_ids["run" if run_route else "task"]),
        st.uuids().map(str),
        numbers,
        text.filter(bool),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        path_id=ids,
        query=st.dictionaries(st.sampled_from(PARAMETERS), repeated, max_size=5),
        task_id=st.one_of(st.none(), st.sampled_from(known_ids["task"]), text),
        # Drawn apart from ``query`` so that every run tries them, not only a lucky one.
        hostile=st.one_of(
            st.none(),
            st.tuples(st.sampled_from(PARAMETERS), long_values),
            st.tuples(st.sampled_from(PARAMETERS), awkward),
            st.tuples(
                st.sampled_from(PARAMETERS), st.one_of(text, statuses).map(lambda v: [v] * 1_100)
            ),
        ),
    )
    def check(
        path_id: str,
        query: dict[str, str | list[str]],
        task_id: str | None,
        hostile: tuple[str, str | list[str]] | None,
    ) -> None:
        if hostile is not None:
            query = {**query, hostile[0]: hostile[1]}
        if task_id is not None:
            query = {**query, "task_id": task_id}
        path = template.format(id=quote(path_id, safe=""))
        response = getattr(client, method)(path, query) if method == "get" else None
        if response is None:
            qs = "&".join(
                f"{quote(k)}={quote(v, safe='')}"
                for k, vs in query.items()
                for v in ([vs] if isinstance(vs, str) else vs)
            )
            response = getattr(client, method)(f"{path}?{qs}")
        assert response.status_code < 500, (path, query, response.content[:500])
        if response.status_code >= 400:
            assert response["Content-Type"].startswith("application/json"), response.content
            assert response.json(), "an error answer says what is wrong"

    check()
