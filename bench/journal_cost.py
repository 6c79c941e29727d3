"""The journal's own cost: CPU per task of appending a task's three events to the journal.

    .venv/bin/python bench/journal_cost.py --tasks 20000

What ``Journal.append`` costs in the process that records (encoding each event as one line
and one ``write()``), plus deleting one segment per batch of ``FLUSH_MAX_EVENTS`` events, in
a process of its own with no database or broker: the figure ``cpu.py`` and ``throughput.py``
print on their "journal:" line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(tasks: int) -> float:
    """Microseconds of CPU (user + system) per task for its publish, start and success."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.utils import timezone

    from django_tasks_hub.events import TaskEvent
    from django_tasks_hub.recorder.journal import Journal

    folder = tempfile.mkdtemp(prefix="tasks-hub-journal-cost-")
    settings.TASKS_HUB = {"JOURNAL_DIR": folder}
    journal = Journal({"task": "django_tasks_hub.Task", "run": "django_tasks_hub.TaskRun"},
                      lambda: "default")  # fmt: skip
    journal._next_scan = float("inf")  # Nothing to replay here.
    common = {"name": "bench.noop", "args": [], "kwargs": {}}
    ids = [str(uuid.uuid4()) for _ in range(tasks)]
    per_batch = 1000
    start = time.process_time()
    for n, broker_id in enumerate(ids):
        now = timezone.now()
        journal.append(TaskEvent("queued", broker_id, timestamp=now, **common))
        journal.append(TaskEvent("started", broker_id, timestamp=now, worker="w@h", **common))
        journal.append(
            TaskEvent("succeeded", broker_id, timestamp=now, worker="w@h", runtime=0.001, **common)
        )
        if n % (per_batch // 3) == 0:
            journal.written(journal.rotate())
    journal.written(journal.rotate())
    return (time.process_time() - start) * 1e6 / tasks


def journal_line(tasks: int = 20000) -> str:
    """The "journal:" line, measured in a process of its own."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__)), "--tasks", str(tasks), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    us = float(out.stdout.strip())
    return f"journal: {us:.1f} us of CPU per task (3 events appended, segments deleted per batch)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--quiet", action="store_true", help="print the figure alone")
    opts = parser.parse_args()
    us = measure(opts.tasks)
    print(f"{us:.2f}" if opts.quiet else f"journal: {us:.1f} us of CPU per task")


if __name__ == "__main__":
    main()
