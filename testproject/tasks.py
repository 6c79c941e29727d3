"""Demo tasks: one succeeds, one fails, one retries, one runs long and reports progress."""

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

    from django_tasks_hub import flush

    # Only ever a pool child: in a threads or solo worker this would end the whole worker.
    if current_process().name == "MainProcess":
        raise RuntimeError("demo.crash only runs in a prefork pool child (celery -P prefork).")
    # os._exit skips every exit hook, so the events this process buffered in the last
    # FLUSH_INTERVAL (the ends of the demo tasks it ran just before) would die with it, as
    # they would in a real crash (docs/configuration.md, WRITE_BEHIND). The demo shows a lost
    # task, not lost history of the others.
    flush()
    os._exit(1)
