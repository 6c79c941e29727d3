"""The package's threads never receive the process's signals (``django_tasks_hub.threads``).

The end-to-end case is ``tests/test_sqlite_rounds.py`` on the folder broker: before, a prefork
pool process whose writer thread took a cancel's second SIGTERM died holding billiard's shared
queue lock, and the worker never ran another task (most 8-round runs stalled).
"""

from __future__ import annotations

import ast
import signal
import threading
from pathlib import Path

import pytest

from django_tasks_hub import threads

PACKAGE = Path(threads.__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "pthread_sigmask"), reason="no POSIX signal masks on this platform"
)


def test_a_package_thread_blocks_the_process_signals_and_its_creator_keeps_its_own() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    seen: list[set[int]] = []
    threads.start_thread(
        lambda: seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, []))), "probe"
    ).join(5)
    assert seen, "the thread did not run"
    blocked = seen[0]
    assert {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP} <= blocked
    assert signal.SIGSEGV not in blocked  # A fault is the thread's own: never blocked.
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_a_signal_sent_to_the_process_reaches_the_main_thread_while_ours_run() -> None:
    # With the default action a signal kills the process from whichever thread takes it; with
    # a handler, Python runs it in the main thread anyway. Either way ours never take it: the
    # kernel delivers it to the main thread, which is what billiard's exit path relies on.
    stop = threading.Event()
    worker = threads.start_thread(stop.wait, "idle")
    got: list[str] = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: got.append(threading.current_thread().name))
    try:
        signal.raise_signal(signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGUSR2, previous)
        stop.set()
        worker.join(5)
    assert got == [threading.main_thread().name]


def test_every_thread_of_the_package_starts_through_start_thread() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "threads.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "Thread"
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders
