"""A check for the test suite: every statement that sets a task's or a run's status comes from
the rule module (``django_tasks_hub.transitions``) or the recorder's batch statements, which
render the same rule as SQL.

Installed on every database connection of a process (``install()``); ``tests/conftest.py``
installs it in the test process and the worker subprocesses the tests start install it too
(``TASKS_HUB_STATUS_WRITERS_LOG`` names the file they report to).
"""

from __future__ import annotations

import functools
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_tasks_hub"

#: The modules allowed to send a statement that sets a status.
ALLOWED = {PACKAGE / "transitions.py", PACKAGE / "recorder" / "writer.py"}

_UPDATE = re.compile(
    r"^\s*UPDATE\s+(?P<table>\S+)\s+SET\s+(?P<set>.*?)(\s+FROM\s|\s+WHERE\s|$)", re.I | re.S
)
_SETS_STATUS = re.compile(r'(^|,)\s*(\S+\.)?"?status"?\s*=', re.I)

_lock = threading.Lock()
#: Where each offending statement came from: (file, line, function, statement).
found: list[tuple[str, int, str, str]] = []
_listeners: list[Callable[[tuple[str, int, str, str]], None]] = []


@functools.cache
def _status_tables() -> set[str]:
    from django.apps import apps

    from django_tasks_hub.models import AbstractTask, TaskRun

    tables = {TaskRun._meta.db_table}
    for model in apps.get_models():
        if issubclass(model, AbstractTask):
            # A model built on Task by multi-table inheritance keeps its status in Task's.
            tables.add(model._meta.db_table)
    return tables


def origin(stack: list[traceback.FrameSummary]) -> traceback.FrameSummary | None:
    """The innermost frame of the project's own code (package, tests, test project)."""
    for frame in reversed(stack):
        path = Path(frame.filename)
        if path == Path(__file__) or ROOT not in path.parents:
            continue
        # Installed packages, in whichever venv (``.venv``, ``.venv-django6``) sits in the
        # project: Django's own frames are not a writer of the package.
        if "site-packages" in path.parts or any(p.startswith(".venv") for p in path.parts):
            continue
        return frame
    return None


def check(sql: str) -> None:
    """Record ``sql`` if it sets a status and the package code sending it is not allowed to."""
    match = _UPDATE.match(sql)
    if not match or not _SETS_STATUS.search(match["set"]):
        return
    if match["table"].strip('"`') not in _status_tables():
        return
    frame = origin(traceback.extract_stack())
    if frame is None or PACKAGE not in Path(frame.filename).parents:
        return  # A test or the test project setting up rows: not a writer of the package.
    if Path(frame.filename) in ALLOWED:
        return
    entry = (str(Path(frame.filename).relative_to(ROOT)), frame.lineno or 0, frame.name, sql)
    with _lock:
        found.append(entry)
        for listener in list(_listeners):
            listener(entry)


def _wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    check(sql)
    return execute(sql, params, many, context)


def _add(connection: Any) -> None:
    # First in the list, not last: ``connection.execute_wrapper()`` pops the last wrapper on
    # exit, so a check appended while such a block is open (a connection opened inside it)
    # would be the one popped, and the check would be gone for the rest of the run.
    if _wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, _wrapper)


def _on_connection(sender: Any, connection: Any, **_: Any) -> None:
    _add(connection)


def install() -> None:
    """Check every statement of every connection of this process, from now on."""
    connection_created.connect(_on_connection, dispatch_uid="tasks_hub.status_writers")
    for alias in connections:
        _add(connections[alias])
    log = os.environ.get("TASKS_HUB_STATUS_WRITERS_LOG")
    if log:

        def report(entry: tuple[str, int, str, str]) -> None:
            with open(log, "a") as out:
                out.write(f"{entry[0]}:{entry[1]} in {entry[2]}: {entry[3][:200]}\n")

        _listeners.append(report)


@contextmanager
def captured() -> Iterator[list[tuple[str, int, str, str]]]:
    """The offending statements sent in the block (on top of ``found``)."""
    seen: list[tuple[str, int, str, str]] = []
    for alias in connections:
        _add(connections[alias])
    _listeners.append(seen.append)
    try:
        yield seen
    finally:
        _listeners.remove(seen.append)
