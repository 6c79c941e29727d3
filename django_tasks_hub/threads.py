"""The package's own threads: started with the process's termination signals blocked.

A signal sent to a process is delivered to any one of its threads that does not block it.
Python runs its handlers in the main thread either way, but a signal whose action is the
default one kills the process from whichever thread the kernel picked. billiard relies on
this: a pool process that is exiting resets SIGTERM to the default, then blocks it in its main
thread only while it writes its last message to the queue shared by every pool process. A
second SIGTERM (a cancel's terminate, then the pool's own) delivered to one of our threads
meanwhile killed the process holding that queue's lock, and the pool never ran another task.
Our threads block these signals, so the main thread alone receives them, as billiard expects.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

#: Sent to a process to stop it or to steer it (Celery's pool grow and shrink, soft time
#: limits): handled by the main thread, never by ours. Faults (SIGSEGV, ...) stay unblocked.
_PROCESS_SIGNALS = frozenset(
    getattr(signal, name)
    for name in (
        "SIGTERM",
        "SIGINT",
        "SIGQUIT",
        "SIGHUP",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGCHLD",
        "SIGTTIN",
        "SIGTTOU",
    )
    if hasattr(signal, name)
)


def start_thread(
    target: Callable[..., Any], name: str, *, args: tuple[Any, ...] = (), daemon: bool = True
) -> threading.Thread:
    """Start ``target`` on a thread of its own that never receives the process's signals."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=daemon)
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no such signals to keep apart.
        thread.start()
        return thread
    # A new thread starts with its creator's mask: blocked here, it never has a moment
    # unblocked. A signal arriving meanwhile waits for this thread, as it would anyway.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread
