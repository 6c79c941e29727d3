"""Hostile values never stop the record (issue 14 item 6), each shown with a real worker.

An exception whose ``__str__`` raises, an argument whose ``__repr__`` raises (pickle
serializer), a result no JSON holds, huge values: the task and its run end in the task's true
status, with a placeholder where a value cannot be shown.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from django_tasks_hub.models import TaskRun
from django_tasks_hub.states import TaskStatus
from testproject import tasks
from tests.conftest import wait_status
from tests.test_reliability import queue_name

pytestmark = pytest.mark.worker

HUGE = "x" * 2_000_000


def ended(broker_id: str, status: str) -> Any:
    task = wait_status(broker_id, status, timeout=60)
    (run,) = TaskRun.objects.filter(task=task)
    assert run.status == status and run.finished_at is not None
    assert task.finished_at is not None
    return task, run


def check_unprintable(broker_id: str) -> None:
    task, run = ended(broker_id, TaskStatus.FAILED)
    assert task.error == run.error
    assert task.error.startswith("UnprintableError")
    assert "could not be read" in task.error


def check_unrepresentable(broker_id: str) -> None:
    task, run = ended(broker_id, TaskStatus.DONE)
    assert task.result == run.result == 2
    # The argument is shown as a placeholder naming its type.
    assert task.args == ["<Unrepresentable object: its repr() raised>"]


def check_unserializable(broker_id: str) -> None:
    task, run = ended(broker_id, TaskStatus.DONE)
    # Only the items that cannot be shown are placeholders.
    assert task.result == run.result
    assert task.result == {"self": "<Unrepresentable object: its repr() raised>", "set": "{1, 2}"}


def check_cycle(broker_id: str) -> None:
    task, run = ended(broker_id, TaskStatus.DONE)
    assert task.result == run.result == [1, "[1, [...]]"]


def check_huge(broker_id: str) -> None:
    task, run = ended(broker_id, TaskStatus.DONE)
    assert task.args == [HUGE] and task.result == run.result == HUGE


#: Each hostile kind: how it is sent (Celery options in, the broker id out), and its check.
KINDS: dict[str, tuple[Any, Any]] = {
    "unprintable": (lambda o: tasks.raise_unprintable.apply_async(**o), check_unprintable),
    "unrepresentable": (
        lambda o: tasks.take_unrepresentable.apply_async((tasks.Unrepresentable(1),), **o),
        check_unrepresentable,
    ),
    "unserializable": (
        lambda o: tasks.return_unserializable.apply_async(**o),
        check_unserializable,
    ),
    "cycle": (lambda o: tasks.return_cycle.apply_async(**o), check_cycle),
    "huge": (lambda o: tasks.echo.apply_async((HUGE,), **o), check_huge),
}


#: A worker that accepts pickle (for ``demo.take_unrepresentable``); as root, Celery refuses to
#: start one without C_FORCE_ROOT.
PICKLE_ENV = {"TASKS_HUB_TEST_PICKLE": "1", "C_FORCE_ROOT": "1"}


@pytest.mark.parametrize(
    ("pool", "write_behind"),
    [("prefork", False), ("prefork", True), ("threads", False), ("solo", True)],
    ids=["prefork-in-signal", "prefork-write-behind", "threads-in-signal", "solo-write-behind"],
)
def test_a_real_worker_records_every_hostile_value(
    subprocess_worker: Any, pool: str, write_behind: bool
) -> None:
    """A ``celery worker`` process: the values cross the pool (a pool process for prefork) and
    the main process, in either write mode, and every task ends in its true status."""
    q = queue_name()
    env = {**PICKLE_ENV, "TASKS_HUB_JSON": json.dumps({"WRITE_BEHIND": write_behind})}
    w = subprocess_worker("-Q", q, "-n", f"{q}@%h", "-P", pool, "-c", "2", env=env)
    sent = [(check, send({"queue": q}).id) for send, check in KINDS.values()]
    for check, broker_id in sent:
        check(broker_id)
    assert "could not record" not in w.output()
    assert "gave up recording" not in w.output()


# -- the encoding itself (no worker) -------------------------------------------------------------


class _Boom:
    def __repr__(self) -> str:
        raise ValueError("no")


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ([1, _Boom(), "a"], [1, "<_Boom object: its repr() raised>", "a"]),
        ({"a": float("nan"), "b": [1, {2, 3}]}, {"a": "nan", "b": [1, "{2, 3}"]}),
        ({(1, 2): "t", 3: "i", None: 0}, {"(1, 2)": "t", "3": "i", "null": 0}),
        (["a\x00b", object], ["a\\x00b", "<class 'object'>"]),
        (_Boom(), "<_Boom object: its repr() raised>"),
    ],
    ids=["item-repr-raises", "nan-and-set", "keys", "nul-and-type", "top-level"],
)
def test_only_the_items_that_cannot_be_shown_become_placeholders(value: Any, stored: Any) -> None:
    from django_tasks_hub.recorder.columns import to_json

    assert to_json(value) == stored
    json.dumps(stored, allow_nan=False)


def test_a_very_deep_value_is_stored_as_text() -> None:
    from django_tasks_hub.recorder.columns import to_json

    deep: list[Any] = [_Boom()]
    for _ in range(200):
        deep = [deep]
    stored = to_json(deep)
    json.dumps(stored, allow_nan=False)
