"""Rule 1: duplicate and out-of-order lifecycle signals never move a status backwards.

Each scenario is a list of the Celery signals one task's lifecycle sends. The tests deliver them
in every order and check that the rows end exactly as they do for the in-order delivery.

Two levels:
- signals: the real Celery signals, sent with real worker request objects (built by
  ``celery.worker.request.Request`` from a real task message), so the receivers in
  ``receivers.py`` run as in a worker. Their timestamps are taken when each signal is
  handled, so the comparison leaves out the time values and keeps whether each one is set.
- events: the TaskEvents those receivers produced for one in-order delivery, captured once and
  replayed in every order into the database plugin: the rows must match to the microsecond,
  and after every single event no status has moved backwards.

And at the same moment: the events of one lifecycle written from parallel connections end like
the in-order delivery (on PostgreSQL this exercises READ COMMITTED races and row locks).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from django.db import connection, transaction
from django.test import override_settings

from django_tasks_hub.events import TaskEvent
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.plugins.base import TaskHubPlugin
from django_tasks_hub.plugins.db import TaskDbPlugin
from django_tasks_hub.recorder.background import background
from django_tasks_hub.recorder.journal import decode, encode
from django_tasks_hub.states import END_PRECEDENCE, TaskStatus
from testproject import tasks
from tests.conftest import HOST, Lifecycle

Step = tuple[str, Callable[[Lifecycle], None]]


@pytest.fixture(autouse=True)
def no_transaction_checks(settings: Any) -> None:
    """Orders are explored under savepoints that roll back, so with the transaction checks on
    every publish would queue a "rolled back" outcome for the background thread, which waits
    for the test's own write lock on SQLite (30 s each). They have tests of their own."""
    settings.TASKS_HUB = {**getattr(settings, "TASKS_HUB", {}), "TRANSACTION_CHECKS": False}


SUCCESS: list[Step] = [
    ("publish", lambda t: t.publish()),
    ("start", lambda t: t.start()),
    ("success", lambda t: t.succeed()),
]
FAILURE: list[Step] = [
    ("publish", lambda t: t.publish()),
    ("start", lambda t: t.start()),
    ("failure", lambda t: t.fail()),
]


def retried(end: Step) -> list[Step]:
    """A first attempt that asks for a retry, then the second attempt ending with ``end``.

    In a worker, ``Task.retry()`` publishes the next attempt *before* ``task_retry`` fires.
    """
    return [
        ("publish", lambda t: t.publish(0)),
        ("start", lambda t: t.start(0)),
        ("next-publish", lambda t: t.publish(1)),
        ("retry", lambda t: t.retry(0)),
        ("next-start", lambda t: t.start(1)),
        end,
    ]


RETRY_SUCCESS = retried(("next-success", lambda t: t.succeed(1, result="second time")))
RETRY_FAILURE = retried(("next-failure", lambda t: t.fail(1)))
CANCEL_VS_SUCCESS: list[Step] = [*SUCCESS, ("revoked", lambda t: t.revoke())]
LOST_VS_SUCCESS: list[Step] = [*SUCCESS, ("lost", lambda t: t.lose())]
DUPLICATE_PUBLISH: list[Step] = [*SUCCESS[:1], *SUCCESS]

SCENARIOS = {
    "success": SUCCESS,
    "failure": FAILURE,
    "retry-then-success": RETRY_SUCCESS,
    "retry-then-failure": RETRY_FAILURE,
    "duplicate-publish": DUPLICATE_PUBLISH,
}
MAIN_PROCESS_SCENARIOS = {
    "cancel-vs-success": CANCEL_VS_SUCCESS,
    "lost-vs-success": LOST_VS_SUCCESS,
}
#: The final task status each scenario must reach in every order.
EXPECTED = {
    "success": TaskStatus.DONE,
    "failure": TaskStatus.FAILED,
    "retry-then-success": TaskStatus.DONE,
    "retry-then-failure": TaskStatus.FAILED,
    "duplicate-publish": TaskStatus.DONE,
    "cancel-vs-success": TaskStatus.CANCELED,
    "lost-vs-success": TaskStatus.DONE,
}


def count_orders(names: list[str]) -> int:
    """How many distinct orders ``names`` has (a duplicated step makes some orders the same)."""
    return len(set(itertools.permutations(names)))


# -- what a user sees ------------------------------------------------------------------------

TIMES = ("created_at", "started_at", "finished_at")
RUN_TIMES = ("queued_at", "started_at", "finished_at")


def rows(broker_id: str, exact: bool) -> dict[str, Any]:
    """The task and its runs as plain values; with ``exact=False`` times become "set or not"."""
    task = Task.objects.get(broker_id=broker_id)
    task_values = {
        f.attname: getattr(task, f.attname)
        for f in Task._meta.concrete_fields
        if f.attname not in ("updated_at",)
    }
    run_values = [
        {
            f.attname: getattr(run, f.attname)
            for f in TaskRun._meta.concrete_fields
            if f.attname != "id"
        }
        for run in TaskRun.objects.filter(task=task).order_by("retries", "delivery")
    ]
    for run in run_values:
        # Measured in the process between its start and its end, like the runtime.
        run["db_queries"] = run["db_time"] = run["memory_growth"] = None
    if not exact:
        for name in TIMES:
            task_values[name] = task_values[name] is not None
        for run in run_values:
            for name in RUN_TIMES:
                run[name] = run[name] is not None
            run["runtime"] = None  # Measured in the process: unknown when the start came late.
        task_values["id"] = None  # Each delivery uses its own broker id.
        task_values["broker_id"] = None
        for run in run_values:
            run["task_id"] = run["broker_id"] = None
    return {"task": task_values, "runs": run_values}


def check_times(snapshot: dict[str, Any]) -> None:
    """Whatever the order, each run says when it was queued, started and finished."""
    task = snapshot["task"]
    assert task["created_at"] and task["finished_at"]
    for run in snapshot["runs"]:
        assert run["queued_at"] and run["finished_at"], run
        if run["status"] in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.RETRYING):
            assert run["started_at"], run


# -- monotonic: checked after every single delivery ------------------------------------------

TASK_RANK = {
    TaskStatus.PENDING: 0,
    TaskStatus.RETRYING: 0,  # For a task: waiting for its next attempt.
    TaskStatus.PROCESSING: 1,
    **{status: 2 + i for i, status in enumerate(s for s in END_PRECEDENCE if s != "retrying")},
}
RUN_RANK = {
    TaskStatus.PENDING: 0,
    TaskStatus.PROCESSING: 1,
    **{status: 2 + i for i, status in enumerate(END_PRECEDENCE)},
}
Positions = tuple[tuple[int, int] | None, dict[tuple[int, int], int]]


def positions(broker_id: str) -> Positions:
    """Where the task is (attempt, status rank) and where each run is (status rank)."""
    # One query (this runs after every single delivery): the task's row has delivery -1.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT -1, retries, status FROM {Task._meta.db_table} WHERE broker_id = %s "
            f"UNION ALL SELECT delivery, retries, status FROM {TaskRun._meta.db_table} "
            "WHERE broker_id = %s",
            [broker_id, broker_id],
        )
        found = cursor.fetchall()
    task = [(retries, TASK_RANK[status]) for delivery, retries, status in found if delivery < 0]
    runs = {(r, d): RUN_RANK[s] for d, r, s in found if d >= 0}
    return (task[0] if task else None), runs


def assert_not_backwards(before: Positions, after: Positions, path: list[str]) -> None:
    (task_before, runs_before), (task_after, runs_after) = before, after
    assert task_before is None or (task_after is not None and task_after >= task_before), path
    assert all(runs_after[key] >= rank for key, rank in runs_before.items()), path


def explore(
    broker_id: str,
    steps: list[tuple[str, Callable[[], None]]],
    leaf: Callable[[list[str]], None],
) -> int:
    """Deliver ``steps`` in every distinct order, depth first: each order shares its prefix
    with the others under a savepoint, so a prefix is delivered once, not once per order.
    After every delivery nothing has moved backwards; ``leaf`` checks each complete order.
    Returns the number of orders.
    """

    def walk(remaining: list[tuple[str, Callable[[], None]]], path: list[str]) -> int:
        if not remaining:
            leaf(path)
            return 1
        total, seen = 0, set()
        before = positions(broker_id)
        for i, (name, deliver) in enumerate(remaining):
            if name in seen:
                continue  # The same step twice: the same subtree.
            seen.add(name)
            with transaction.atomic():
                deliver()
                assert_not_backwards(before, positions(broker_id), [*path, name])
                total += walk(remaining[:i] + remaining[i + 1 :], [*path, name])
                transaction.set_rollback(True)
        return total

    return walk(steps, [])


# -- signal level ----------------------------------------------------------------------------


#: The 720 orders of a retry are explored once per level, with a different end each time.
SIGNAL_LEVEL = {name: steps for name, steps in SCENARIOS.items() if name != "retry-then-failure"}
EVENT_LEVEL = {
    name: steps
    for name, steps in {**SCENARIOS, **MAIN_PROCESS_SCENARIOS}.items()
    if name != "retry-then-success"
}


@pytest.mark.parametrize("name", SIGNAL_LEVEL)
def test_every_order_of_the_signals_ends_the_same(db: Any, name: str) -> None:
    steps = SIGNAL_LEVEL[name]
    life = Lifecycle(tasks.add)
    reference: list[dict[str, Any]] = []

    def leaf(path: list[str]) -> None:
        snapshot = rows(life.id, exact=False)
        check_times(snapshot)
        assert snapshot["task"]["status"] == EXPECTED[name], path
        reference.append(snapshot) if not reference else None
        # The first order explored is the in-order delivery.
        assert snapshot == reference[0], path

    bound = [(step_name, lambda step=step: step(life)) for step_name, step in steps]
    assert explore(life.id, bound, leaf) == count_orders([n for n, _ in steps])


@pytest.mark.parametrize("name", MAIN_PROCESS_SCENARIOS)
def test_every_order_with_main_process_signals_ends_the_same(
    transactional_db: Any, name: str
) -> None:
    # Revoked and worker-lost are written from the background thread, on its own connection:
    # it needs committed rows (``transactional_db``), so each order gets its own task.
    steps = MAIN_PROCESS_SCENARIOS[name]
    reference = None
    orders = sorted(set(itertools.permutations(range(len(steps)))))
    for order in orders:
        life = Lifecycle(tasks.add)
        path = [steps[i][0] for i in order]
        before = positions(life.id)
        for i in order:
            steps[i][1](life)
            after = positions(life.id)
            assert_not_backwards(before, after, path)
            before = after
        snapshot = rows(life.id, exact=False)
        check_times(snapshot)
        assert snapshot["task"]["status"] == EXPECTED[name], path
        reference = reference or snapshot
        assert snapshot == reference, path


def test_in_order_rows(db: Any) -> None:
    """The reference the orders are compared with is itself right."""
    life = Lifecycle(tasks.add)
    for _, step in RETRY_SUCCESS:
        step(life)
    task = Task.objects.get(pk=life.id)
    assert (task.status, task.retries, task.attempts, task.result) == ("done", 1, 2, "second time")
    assert task.error == "" and task.worker == HOST and task.parent_id is None
    first, second = TaskRun.objects.filter(task=task).order_by("retries")
    assert (first.attempt, first.trigger, first.status) == (1, "initial", "retrying")
    assert first.error == "RuntimeError: attempt 0 failed" and "RuntimeError" in first.traceback
    assert (second.attempt, second.trigger, second.status) == (2, "retry", "done")
    # Task.retry() publishes the next attempt before the retry is reported.
    assert first.queued_at <= first.started_at <= second.queued_at <= first.finished_at
    assert second.queued_at <= second.started_at <= second.finished_at == task.finished_at
    assert task.created_at == first.queued_at and task.started_at == second.started_at


# -- event level -----------------------------------------------------------------------------


class CapturePlugin(TaskHubPlugin):
    """Keeps every event the receivers produce, in the order they produce them."""

    name: ClassVar[str] = "capture"
    events: ClassVar[list[TaskEvent]] = []

    def dispatch(self, event: TaskEvent) -> None:
        self.events.append(event)


def capture(steps: list[Step]) -> list[TaskEvent]:
    """The events the real receivers make of one in-order delivery of ``steps``."""
    CapturePlugin.events = []
    plugins = {"PLUGINS": ["tests.test_ordering.CapturePlugin"], "TRANSACTION_CHECKS": False}
    with override_settings(TASKS_HUB=plugins):
        life = Lifecycle(tasks.add)
        for _, step in steps:
            step(life)
        assert background.flush(timeout=60), "the background thread did not finish"
    # The registry is process-wide: the suite's in-process worker may be recording another
    # test's task meanwhile. Only this lifecycle's events count.
    events = [event for event in CapturePlugin.events if event.broker_id == life.id]
    assert len(events) == len(steps)
    return events


@pytest.mark.parametrize("name", EVENT_LEVEL)
def test_every_order_of_the_events_ends_exactly_the_same(db: Any, name: str) -> None:
    events = capture(EVENT_LEVEL[name])
    plugin = TaskDbPlugin()
    broker_id = events[0].broker_id
    reference: list[dict[str, Any]] = []

    def leaf(path: list[str]) -> None:
        snapshot = rows(broker_id, exact=True)
        assert snapshot["task"]["status"] == EXPECTED[name], path
        reference.append(snapshot) if not reference else None
        assert snapshot == reference[0], path

    bound = [
        (f"{i}:{event.kind}", lambda event=event: plugin.dispatch(event))
        for i, event in enumerate(events)
    ]
    assert explore(broker_id, bound, leaf) == len(list(itertools.permutations(events)))


def replayed(event: TaskEvent) -> TaskEvent:
    """``event`` as a replay of the journal gives it back: through its record and back."""
    found = decode(encode(event, 1)[:-1])
    assert found is not None
    return found[1]


#: Every event delivered twice (the second time as the journal's replay gives it back), in
#: every order: the lifecycles short enough for all of their orders.
ALL_TWICE = ["success", "failure"]
#: One event delivered twice, for each event in turn, in every order.
ONE_TWICE = [name for name in EVENT_LEVEL if len(EVENT_LEVEL[name]) <= 4]


def duplicated_orders(name: str, twice: list[int] | None) -> None:
    """Every order of ``name``'s events and the replays of those ``twice`` names (all: None)
    ends exactly as the in-order delivery, nothing moving backwards after any delivery."""
    events = capture(EVENT_LEVEL[name])
    plugin = TaskDbPlugin()
    broker_id = events[0].broker_id
    with transaction.atomic():
        for event in events:
            plugin.dispatch(event)
        reference = rows(broker_id, exact=True)
        transaction.set_rollback(True)

    def leaf(path: list[str]) -> None:
        assert rows(broker_id, exact=True) == reference, path

    def step(event: TaskEvent) -> Callable[[], None]:
        return lambda: plugin.dispatch(event)

    # An event and its replay carry the same name: orders that only swap them are one order.
    bound = [(f"{i}:{event.kind}", step(event)) for i, event in enumerate(events)]
    indexes = range(len(events)) if twice is None else twice
    bound += [(f"{i}:{events[i].kind}", step(replayed(events[i]))) for i in indexes]
    assert explore(broker_id, bound, leaf) == count_orders([n for n, _ in bound])


@pytest.mark.parametrize("name", ALL_TWICE)
def test_every_order_of_the_events_each_twice_ends_exactly_the_same(db: Any, name: str) -> None:
    """At-least-once: a replay writes again what a batch wrote before the process died, and
    a duplicate may come anywhere."""
    duplicated_orders(name, None)


@pytest.mark.parametrize("name", ONE_TWICE)
def test_every_order_with_any_one_event_twice_ends_exactly_the_same(db: Any, name: str) -> None:
    for index in range(len(EVENT_LEVEL[name])):
        duplicated_orders(name, [index])


#: A retry's 720 orders: see ``test_a_retry_replayed_in_any_order``.
REPLAYED = [name for name in EVENT_LEVEL if name != "retry-then-failure"]


@pytest.mark.parametrize("name", REPLAYED)
def test_every_order_then_a_replay_of_it_ends_exactly_the_same(db: Any, name: str) -> None:
    """Every lifecycle, in every order, then replayed whole from the journal (in the same
    order, and in the reverse one): the rows are those of the in-order delivery."""
    events = capture(EVENT_LEVEL[name])
    plugin = TaskDbPlugin()
    broker_id = events[0].broker_id
    reference: list[dict[str, Any]] = []

    def leaf(path: list[str]) -> None:
        snapshot = rows(broker_id, exact=True)
        reference.append(snapshot) if not reference else None
        order = [events[int(step.split(":")[0])] for step in path]
        for again in (order, order[::-1]):
            with transaction.atomic():
                for event in again:
                    plugin.dispatch(replayed(event))
                assert rows(broker_id, exact=True) == reference[0], (path, again is order)
                transaction.set_rollback(True)

    bound = [
        (f"{i}:{event.kind}", lambda event=event: plugin.dispatch(event))
        for i, event in enumerate(events)
    ]
    assert explore(broker_id, bound, leaf) == len(list(itertools.permutations(events)))


def test_a_retry_replayed_in_any_order_ends_exactly_the_same(db: Any) -> None:
    """The longest lifecycle written in order, then replayed from the journal in every 12th
    of its 720 orders (all of them would take minutes; the shorter lifecycles get all)."""
    events = capture(EVENT_LEVEL["retry-then-failure"])
    plugin = TaskDbPlugin()
    broker_id = events[0].broker_id
    for event in events:
        plugin.dispatch(event)
    reference = rows(broker_id, exact=True)
    orders = sorted(itertools.permutations(range(len(events))))
    for order in orders[::12]:
        with transaction.atomic():
            for i in order:
                plugin.dispatch(replayed(events[i]))
            assert rows(broker_id, exact=True) == reference, order
            transaction.set_rollback(True)


def test_a_late_start_does_not_reopen_an_ended_attempt(db: Any) -> None:
    life = Lifecycle(tasks.add)
    life.publish()
    life.start()
    life.succeed()
    ended = Task.objects.get(pk=life.id)
    life.start()  # A duplicate delivery of the start, or one that took the long way.
    life.publish()
    task = Task.objects.get(pk=life.id)
    assert (task.status, task.finished_at, task.started_at) == (
        "done",
        ended.finished_at,
        ended.started_at,
    )
    (run,) = TaskRun.objects.filter(task=task)
    assert run.status == "done" and run.started_at == ended.started_at


# -- at the same moment ------------------------------------------------------------------------


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Which fields of which row differ: readable when a comparison fails."""
    found = [
        f"task.{k}: {v!r} != {want['task'][k]!r}"
        for k, v in got["task"].items()
        if v != want["task"][k]
    ]
    if len(got["runs"]) != len(want["runs"]):
        return [*found, f"{len(got['runs'])} runs != {len(want['runs'])}"]
    for i, (a, b) in enumerate(zip(got["runs"], want["runs"], strict=True)):
        found += [f"runs[{i}].{k}: {v!r} != {b[k]!r}" for k, v in a.items() if v != b[k]]
    return found


def deliver_at_once(plugin: TaskDbPlugin, events: list[TaskEvent]) -> None:
    """Each event from its own thread (its own database connection), all released together."""
    barrier = threading.Barrier(len(events))
    errors: list[BaseException] = []

    def deliver(event: TaskEvent) -> None:
        try:
            barrier.wait()
            plugin.dispatch(event)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    # A write that lost a race on a lock is tried again on the background thread.
    assert background.flush()


@pytest.mark.parametrize("name", ["retry-then-success", "cancel-vs-success", "lost-vs-success"])
def test_events_delivered_at_the_same_moment_end_like_in_order(
    transactional_db: Any, name: str
) -> None:
    """Real concurrency: two writers inserting the same task, moving the same row."""
    steps = {**SCENARIOS, **MAIN_PROCESS_SCENARIOS}[name]
    plugin = TaskDbPlugin()
    for _ in range(8):
        events = capture(steps)
        broker_id = events[0].broker_id
        deliver_at_once(plugin, events)
        together = rows(broker_id, exact=True)
        Task.objects.filter(broker_id=broker_id).delete()
        for event in events:
            plugin.dispatch(event)
        in_order = rows(broker_id, exact=True)
        found = differences(together, in_order)
        assert not found, "\n".join(found)
        assert together["task"]["status"] == EXPECTED[name]


# -- write-behind: whole batches -------------------------------------------------------------


class _Collect(list):
    """Stands in for the plugin's buffer: keeps the events it would queue."""

    def add(self, item: Any) -> bool:
        self.append(item)
        return True  # Taken, as the journal takes it.


@pytest.mark.parametrize("name", EVENT_LEVEL)
def test_every_order_written_as_one_batch_ends_exactly_the_same(
    db: Any, settings: Any, caplog: Any, name: str
) -> None:
    """The write-behind buffer hands the events of a lifecycle to ``write_batch`` together, in
    any order. Its set-based statements group them by kind: the rows must still be those of the
    in-order delivery, one event at a time, to the microsecond. Each order is also written with
    its first half delivered one by one and the rest as a batch (rows already there)."""
    events = capture(EVENT_LEVEL[name])
    broker_id = events[0].broker_id
    plugin = TaskDbPlugin()
    with transaction.atomic():
        for event in events:
            plugin.dispatch(event)
        reference = rows(broker_id, exact=True)
        transaction.set_rollback(True)
    settings.TASKS_HUB = {**settings.TASKS_HUB, "WRITE_BEHIND": True}
    plugin.recorder._buffer = _Collect()  # type: ignore[assignment]
    for event in events:
        plugin.dispatch(event)
    items: list[Any] = list(plugin.recorder._buffer)
    assert len(items) == len(events)
    orders = sorted(set(itertools.permutations(range(len(items)))))
    # A retry's 720 orders are replayed in ``test_a_retry_replayed_in_any_order`` instead.
    every = len(orders) + 1 if len(items) > 4 else 1
    for n, order in enumerate(orders):
        for split in (0, len(order) // 2):
            with transaction.atomic():
                for i in order[:split]:
                    plugin.recorder.rows.write(items[i])
                plugin.recorder.write_batch([items[i] for i in order[split:]])
                snapshot = rows(broker_id, exact=True)
                again = snapshot
                if split == 0 and n % every == 0:
                    # The process died before deleting the segment: the next one replays
                    # it, as a batch of its own, in the order the journal has it.
                    plugin.recorder.write_batch([replayed(items[i]) for i in order])
                    again = rows(broker_id, exact=True)
                transaction.set_rollback(True)
            assert snapshot == reference, (order, split)
            assert again == reference, (order, split, "replayed")
    # Set-based or event by event, by choice: never because a statement failed.
    assert "could not write" not in caplog.text
