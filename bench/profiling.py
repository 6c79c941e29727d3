"""Profiling hooks of the bench: pyinstrument and SQL statement counts in each pool child.

``bench.celery_app`` installs them when ``BENCH_PROFILE_DIR`` is set; each child writes
``<pid>.pyisession`` and ``<pid>.json`` into that folder when it exits.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from celery import signals

_state: dict[str, Any] = {}
_FIRST_WORD = re.compile(r"\s*(\w+)")


def _count_sql(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    match = _FIRST_WORD.match(sql)
    word = match.group(1).upper() if match else "?"
    counts: Counter[str] = _state["sql"]
    counts[word] += 1
    if word == "SELECT":
        # Which table a SELECT reads: the "read before write" the issue names.
        table = re.search(r'FROM "(\w+)"', sql)
        counts[f"SELECT {table.group(1) if table else '?'}"] += 1
    return execute(sql, params, many, context)


def _on_connect(sender: Any, connection: Any, **_: Any) -> None:
    _state["sql"]["CONNECT"] += 1
    if _count_sql not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_sql)


def start(label: str = "") -> None:
    """Start profiling this process (its main thread) and counting its SQL statements."""
    from django.db import connections
    from django.db.backends.signals import connection_created
    from pyinstrument import Profiler

    _state["sql"] = Counter()
    _state["tasks"] = 0
    _state["label"] = label
    connection_created.connect(_on_connect, weak=False, dispatch_uid="bench.count_sql")
    wrappers = connections["default"].execute_wrappers
    if _count_sql not in wrappers:
        wrappers.append(_count_sql)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    _state["profiler"] = profiler


def stop(folder: str) -> None:
    """Stop profiling and write the session and the counts into ``folder``."""
    profiler = _state.pop("profiler", None)
    if profiler is None:
        return
    profiler.stop()
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    write_profile(profiler, str(path / f"{_state['label']}{pid}"))
    counts = {"tasks": _state["tasks"], "sql": dict(_state["sql"])}
    (path / f"{_state['label']}{pid}.json").write_text(json.dumps(counts))


def write_profile(profiler: Any, base: str) -> None:
    """Save ``profiler``'s session as ``base.pyisession`` (combinable later)."""
    session = profiler.last_session
    if session is not None:
        session.save(f"{base}.pyisession")


def install(folder: str) -> None:
    """Profile every pool child of a worker from its start to its exit."""

    def child_init(**_: Any) -> None:
        start("worker-")

    def child_exit(**_: Any) -> None:
        stop(folder)

    def count_task(**_: Any) -> None:
        if "tasks" in _state:
            _state["tasks"] += 1

    signals.worker_process_init.connect(child_init, weak=False)
    signals.worker_process_shutdown.connect(child_exit, weak=False)
    signals.task_postrun.connect(count_task, weak=False)


def report(folder: str, prefix: str, tasks: int | None = None) -> str:
    """The combined profile and per-task statement counts of the files ``prefix*`` in folder."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    path = Path(folder)
    sessions = [Session.load(str(p)) for p in sorted(path.glob(f"{prefix}*.pyisession"))]
    counts: Counter[str] = Counter()
    n = 0
    for p in sorted(path.glob(f"{prefix}*.json")):
        data = json.loads(p.read_text())
        n += data["tasks"]  # The publisher counts none: the caller passes ``tasks``.
        counts.update(data["sql"])
    n = tasks or n or 1
    lines = [f"SQL statements per task ({prefix.rstrip('-')}, {n} tasks):"]
    for key, value in sorted(counts.items()):
        lines.append(f"  {key:<40} {value / n:6.2f}")
    if sessions:
        combined = sessions[0]
        for s in sessions[1:]:
            combined = Session.combine(combined, s)
        renderer = ConsoleRenderer(unicode=False, color=False, short_mode=False)
        lines.append(renderer.render(combined))
    return "\n".join(lines)
