"""Demo tasks: one succeeds, one fails, one retries, one runs long and reports progress."""

import threading
import time
from typing import Any

from celery import shared_task

from django_tasks_hub import HistoryQuery, get_db_plugin, set_progress


@shared_task(name="demo.add")
def add(x: int, y: int) -> int:
    """Succeeds with the sum."""
    return x + y


@shared_task(name="demo.fail")
def fail(message: str = "boom") -> None:
    """Always fails."""
    raise ValueError(message)


@shared_task(name="demo.flaky", bind=True, max_retries=5)
def flaky(self: Any, fail_times: int = 2, countdown: float = 0.1) -> str:
    """Fails ``fail_times`` times, retrying each time, then succeeds."""
    if self.request.retries < fail_times:
        raise self.retry(
            exc=RuntimeError(f"attempt {self.request.retries} failed"), countdown=countdown
        )
    return f"succeeded after {self.request.retries} retries"


@shared_task(name="demo.always_retry", bind=True, max_retries=2)
def always_retry(self: Any) -> None:
    """Retries until its retries run out, then fails."""
    raise self.retry(exc=RuntimeError("still broken"), countdown=0.1)


@shared_task(name="demo.long")
def long_running(steps: int = 20, delay: float = 0.5) -> int:
    """Runs ``steps * delay`` seconds, reporting progress after each step."""
    for step in range(1, steps + 1):
        time.sleep(delay)
        set_progress(step, steps, f"step {step} of {steps}")
    return steps


@shared_task(name="demo.skipped", tags=["skip_db"])
def skipped() -> str:
    """Tagged ``skip_db``: never recorded."""
    return "not recorded"


@shared_task(name="demo.tagged", tags=["reports", "nightly"])
def tagged() -> str:
    """Carries tags, stored on the task."""
    return "tagged"


@shared_task(name="demo.read_history", bind=True)
def read_history(self: Any) -> list[int]:
    """Reads the runs of its own name from inside the worker, through the Python API."""
    page = get_db_plugin().get_history(HistoryQuery(task=self.name, limit=10))
    return [run.pk for run in page.data]


@shared_task(name="demo.echo")
def echo(value: Any) -> Any:
    """Returns what it was given (results that are not JSON are stored as repr)."""
    return value


@shared_task(name="demo.crash")
def crash() -> None:
    """Kills the prefork pool process running it, so the demo shows a ``lost`` task."""
    import os

    from billiard.process import current_process

    # Only ever a pool child: in a threads or solo worker this would end the whole worker.
    if current_process().name == "MainProcess":
        raise RuntimeError("demo.crash only runs in a prefork pool child (celery -P prefork).")
    # os._exit skips every exit hook: the events this process has not written yet (the ends
    # of the tasks it ran just before) are in its journal, which the next process replays.
    os._exit(1)


@shared_task(name="shop.process_order", tasks_hub_related={"order_id": "testproject.Order"})
def process_order(order_id: int, note: str = "") -> int:
    """Linked to its order by its argument (``tasks_hub_related``), whoever sends it."""
    return order_id


@shared_task(name="shop.three_queries")
def three_queries(extra: int = 0, fail: bool = False) -> int:
    """Makes exactly ``3 + extra`` SQL queries (db_queries records them), then fails if told."""
    from django.contrib.auth.models import User

    User.objects.exists()
    User.objects.count()
    found = len(list(User.objects.all()[:1]))
    for _ in range(extra):
        User.objects.exists()
    if fail:
        raise RuntimeError("told to fail")
    return found


#: Gates the in-process test worker opens when a task body starts (tests/test_transactions.py).
GATES: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    """The event ``count_orders(name)`` sets once its body has counted."""
    return GATES.setdefault(name, threading.Event())


@shared_task(name="shop.count_orders")
def count_orders(gate_name: str = "") -> int:
    """Counts the orders it can see: run before the publisher commits, it finds none."""
    from testproject.models import Order

    seen = Order.objects.count()
    if gate_name:
        gate(gate_name).set()
    return seen


@shared_task(name="shop.savepoints_and_progress")
def savepoints_and_progress() -> int:
    """One query inside nested atomic blocks, and two progress reports: db_queries records 1."""
    from django.contrib.auth.models import User
    from django.db import transaction

    set_progress(1, 2, "half")
    with transaction.atomic(), transaction.atomic():
        found = User.objects.exists()
    set_progress(2, 2, "done")
    return int(found)


@shared_task(name="shop.retry_in_atomic", bind=True, max_retries=2)
def retry_in_atomic(self: Any) -> str:
    """Retries once from inside its own atomic() block, which the retry rolls back."""
    from django.db import transaction

    with transaction.atomic():
        if self.request.retries < 1:
            raise self.retry(countdown=0.1)
    return "done"


# -- hostile values (issue 14 item 6): whatever they do, the record ends in the true status ----


class UnprintableError(Exception):
    """An exception whose message cannot be read: ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ of UnprintableError raised")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of UnprintableError raised")


class Unrepresentable:
    """A value (sent with the pickle serializer) whose ``repr()`` raises."""

    def __init__(self, value: int = 1) -> None:
        self.value = value

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of Unrepresentable raised")


@shared_task(name="demo.raise_unprintable")
def raise_unprintable() -> None:
    """Fails with an exception whose ``__str__`` raises."""
    raise UnprintableError()


@shared_task(name="demo.take_unrepresentable", serializer="pickle")
def take_unrepresentable(value: Any) -> int:
    """Takes an argument whose ``__repr__`` raises (pickle serializer) and succeeds."""
    return int(value.value) + 1


@shared_task(name="demo.return_unserializable")
def return_unserializable() -> Any:
    """Returns what no JSON holds and whose ``repr()`` raises too."""
    return {"self": Unrepresentable(), "set": {1, 2}}


@shared_task(name="demo.return_cycle")
def return_cycle() -> Any:
    """Returns a list that contains itself."""
    value: list[Any] = [1]
    value.append(value)
    return value


@shared_task(name="demo.short", bind=True)
def short(self: Any, seconds: float = 0.01, fail: bool = False) -> str:
    """Sleeps a moment, then succeeds or fails (the kill tests' burst)."""
    import time

    time.sleep(seconds)
    if fail:
        raise ValueError("failed on purpose")
    return str(self.request.id)
