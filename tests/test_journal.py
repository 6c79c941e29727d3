"""The journal: events survive their process, and the journal's own faults lose nothing."""

from __future__ import annotations

import datetime
import errno
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from django_tasks_hub import flush
from django_tasks_hub.events import TaskEvent
from django_tasks_hub.models import Task
from django_tasks_hub.plugins.db import TaskDbPlugin
from django_tasks_hub.recorder import journal as journal_module
from django_tasks_hub.recorder.columns import to_json
from django_tasks_hub.recorder.journal import (
    Journal,
    decode,
    encode,
    journal_directory,
    pending_segments,
    read_segment,
    replay_dead_journals,
)
from testproject import tasks


@pytest.fixture
def journaled(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """Write-behind with the journal, as the package's default, in a folder of the test's."""
    settings.TASKS_HUB = {**settings.TASKS_HUB, "WRITE_BEHIND": True, "JOURNAL_DIR": str(tmp_path)}
    yield tmp_path
    flush(timeout=10)


def queued(count: int, **fields: Any) -> list[TaskEvent]:
    return [
        TaskEvent(
            kind="queued",
            broker_id=str(uuid.uuid4()),
            name=tasks.add.name,
            timestamp=timezone.now(),
            args=[i, i],
            kwargs={},
            **fields,
        )
        for i in range(count)
    ]


def dead_segment(events: list[TaskEvent]) -> Path:
    """A segment as a process killed before writing its batch leaves it: whole records, its
    lock gone with the process (here: its file descriptor closed, not its file deleted)."""
    journal = Journal({"task": "django_tasks_hub.Task", "run": "django_tasks_hub.TaskRun"},
                      lambda: "default")  # fmt: skip
    journal._next_scan = float("inf")  # This test replays by hand.
    for event in events:
        assert journal.append(event)
    segment = journal.rotate()
    assert segment is not None
    segment.close()
    return segment.path


def test_a_record_round_trips_to_the_same_event() -> None:
    (event,) = queued(1, options={"queue": "q"}, tags=("a", "b"), user_id=3)
    seq, back = decode(encode(event, 7)[:-1]) or (0, None)
    assert (seq, back) == (7, event)


def test_a_value_json_cannot_hold_is_journaled_as_the_columns_store_it() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    (event,) = queued(1)
    event = TaskEvent(
        **{**event.__dict__, "args": (Hostile(), float("nan")), "user_id": uuid.UUID(int=5)}
    )
    _, back = decode(encode(event, 1)[:-1]) or (0, None)
    assert back is not None
    # What the ``args`` column would store: a placeholder that says why.
    assert back.args == to_json(event.args)
    assert any("repr() raised" in str(item) for item in back.args)
    assert back.user_id == str(uuid.UUID(int=5))


def test_an_event_is_in_the_journal_until_its_batch_is_written(
    transactional_db: Any, journaled: Path, settings: Any
) -> None:
    settings.TASKS_HUB = {**settings.TASKS_HUB, "FLUSH_INTERVAL": 60}
    plugin = TaskDbPlugin()
    events = queued(5)
    for event in events:
        plugin.dispatch(event)
    directory = journal_directory()
    assert directory.parent == journaled
    (segment,) = pending_segments(directory)
    _, found, skipped = read_segment(segment)
    assert found == events and skipped == 0
    assert not Task.objects.exists()
    assert flush(timeout=10)
    assert Task.objects.count() == 5
    assert pending_segments(directory) == []


def test_a_dead_process_journal_is_replayed(transactional_db: Any, journaled: Path) -> None:
    events = queued(30)
    dead_segment(events[:10])
    dead_segment(events[10:])
    assert replay_dead_journals() == 30
    assert Task.objects.filter(status="pending").count() == 30
    assert pending_segments() == []
    # Replayed again (a crash after the batch was written): nothing changes.
    dead_segment(events)
    before = list(Task.objects.order_by("pk").values())
    assert replay_dead_journals() == 30
    assert list(Task.objects.order_by("pk").values()) == before


def test_a_live_process_journal_is_not_replayed(transactional_db: Any, journaled: Path) -> None:
    journal = Journal({}, lambda: "default")
    journal._next_scan = float("inf")
    assert journal.append(queued(1)[0])
    assert replay_dead_journals() == 0
    assert len(pending_segments()) == 1
    segment = journal.rotate()
    assert segment is not None
    segment.retire()


def test_the_replay_command(transactional_db: Any, journaled: Path, capsys: Any) -> None:
    dead_segment(queued(4))
    call_command("tasks_hub", "replay")
    assert "Replayed 4 events" in capsys.readouterr().out
    assert Task.objects.count() == 4


def test_records_cut_short_are_skipped_and_the_rest_replayed(
    transactional_db: Any, journaled: Path, caplog: Any
) -> None:
    events = queued(6)
    path = dead_segment(events)
    lines = path.read_bytes().split(b"\n")
    # A record in the middle damaged (a torn write), and the last one cut short by the kill.
    lines[3] = lines[3][:-5] + b"XXXXX"
    data = b"\n".join(lines).rstrip(b"\n")
    path.write_bytes(data[:-10])
    with caplog.at_level(logging.WARNING):
        assert replay_dead_journals() == 4
    assert "skipped 2 damaged or cut-short records" in caplog.text
    kept = {e.broker_id for i, e in enumerate(events) if i not in (2, 5)}
    assert set(Task.objects.values_list("broker_id", flat=True)) == kept


def test_two_processes_never_replay_the_same_journal(
    transactional_db: Any, journaled: Path
) -> None:
    for _ in range(20):
        dead_segment(queued(25))
    replayed: list[tuple[int, Path]] = []
    real = journal_module._replay_segment

    def spy(path: Path) -> int:
        replayed.append((threading.get_ident(), path))
        return real(path)

    barrier = threading.Barrier(2)
    counts: list[int] = []

    def replay() -> None:
        from django.db import connection

        barrier.wait()
        try:
            counts.append(replay_dead_journals())
        finally:
            connection.close()

    journal_module._replay_segment = spy  # type: ignore[assignment]
    try:
        threads = [threading.Thread(target=replay) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        journal_module._replay_segment = real  # type: ignore[assignment]
    paths = [path for _, path in replayed]
    assert len(paths) == len(set(paths)) == 20
    assert sum(counts) == 500
    assert Task.objects.count() == 500


def test_two_projects_on_one_host_keep_apart(
    transactional_db: Any, journaled: Path, tmp_path: Path
) -> None:
    with override_settings(BASE_DIR=tmp_path / "other-project"):
        other = journal_directory()
        dead_segment(queued(3))
    mine = journal_directory()
    assert other != mine and other.parent == mine.parent == journaled
    assert replay_dead_journals() == 0  # Not this project's.
    assert len(pending_segments(other)) == 1
    with override_settings(BASE_DIR=tmp_path / "other-project"):
        assert replay_dead_journals() == 3


def test_a_folder_that_cannot_be_written_falls_back_with_one_warning(
    transactional_db: Any, settings: Any, tmp_path: Path, caplog: Any
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    settings.TASKS_HUB = {"WRITE_BEHIND": True, "JOURNAL_DIR": str(not_a_folder / "journals")}
    plugin = TaskDbPlugin()
    with caplog.at_level(logging.WARNING):
        for event in queued(5):
            plugin.dispatch(event)
    # Written in their signal: there before flush, nothing lost.
    assert Task.objects.count() == 5
    warnings = [r for r in caplog.records if "cannot write its journal" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS], ids=["full-disk", "read-only"])
def test_a_full_disk_falls_back_with_one_warning(
    transactional_db: Any, journaled: Path, settings: Any, caplog: Any, monkeypatch: Any,
    error: int,
) -> None:  # fmt: skip
    settings.TASKS_HUB = {**settings.TASKS_HUB, "FLUSH_INTERVAL": 60}
    plugin = TaskDbPlugin()
    events = queued(10)
    for event in events[:4]:
        plugin.dispatch(event)
    # The disk fills up (or the folder is remounted read-only) after four events: the OS
    # refuses the next write. Fault injection at the OS call, not a stand-in for the database.
    real_write = os.write

    def refuse(fd: int, data: bytes) -> int:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(journal_module.os, "write", refuse)
    with caplog.at_level(logging.WARNING):
        for event in events[4:]:
            plugin.dispatch(event)
    monkeypatch.setattr(journal_module.os, "write", real_write)
    assert Task.objects.count() == 6  # Written in their signal.
    assert flush(timeout=10)
    assert Task.objects.count() == 10  # And the four journaled before: nothing lost.
    warnings = [r for r in caplog.records if "cannot write its journal" in r.getMessage()]
    assert len(warnings) == 1


def test_the_journal_is_bounded(
    transactional_db: Any, journaled: Path, settings: Any, caplog: Any
) -> None:
    """Past ``JOURNAL_MAX_BYTES`` (events the database has not taken yet, as in an outage)
    the process writes each event in its signal, as without write-behind."""
    settings.TASKS_HUB = {**settings.TASKS_HUB, "FLUSH_INTERVAL": 60, "JOURNAL_MAX_BYTES": 3000}
    plugin = TaskDbPlugin()
    with caplog.at_level(logging.WARNING):
        for event in queued(40):
            plugin.dispatch(event)
    journal = plugin.recorder.journal
    assert 0 < journal.size() <= 3000
    assert "JOURNAL_MAX_BYTES" in journal.disabled
    in_signal = Task.objects.count()
    assert 0 < in_signal < 40
    assert flush(timeout=10)
    assert Task.objects.count() == 40


CHILD = """
import os, sys, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django.setup()
from django_tasks_hub import flush
from testproject import tasks
ids = [tasks.add.apply_async((i, i), queue="nobody-reads-this").id for i in range(int(sys.argv[1]))]
print(" ".join(ids), flush=True)
if sys.argv[2] == "die":
    os._exit(0)  # Before the writer thread wrote a thing.
flush(timeout=30)
"""


def run_child(tmp_path: Path, count: int, how: str) -> list[str]:
    import subprocess
    import sys

    from tests.conftest import ROOT, SubprocessWorker

    env = SubprocessWorker().env()
    env["TASKS_HUB_JSON"] = f'{{"FLUSH_INTERVAL": 600, "JOURNAL_DIR": "{tmp_path}"}}'
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(count), how],
        cwd=ROOT, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return out.stdout.decode().split()


def test_a_process_killed_before_writing_loses_nothing(
    transactional_db: Any, journaled: Path
) -> None:
    """A real process publishes, then dies by ``os._exit`` before its writer thread wrote a
    thing; the next process on the host that records replays it, before it exits."""
    ids = run_child(journaled, 20, "die")
    assert len(ids) == 20
    assert not Task.objects.filter(broker_id__in=ids).exists()
    assert len(list(journaled.glob("*/*.journal"))) == 1
    other = run_child(journaled, 1, "exit")
    assert Task.objects.filter(broker_id__in=ids + other, status="pending").count() == 21
    assert list(journaled.glob("*/*.journal")) == []


def test_reconcile_replays_a_dead_journal_before_it_judges(
    transactional_db: Any, journaled: Path
) -> None:
    # A run whose worker is gone, started long ago: reconcile would mark it lost, but the end
    # its worker saw sits in that worker's journal, never written. Replayed first, it is done.
    from django_tasks_hub.reconcile import reconcile
    from django_tasks_hub.recorder import Recorder

    (queued_event,) = queued(1)
    long_ago = timezone.now() - datetime.timedelta(hours=1)
    common = {"broker_id": queued_event.broker_id, "name": queued_event.name}
    started = TaskEvent(kind="started", timestamp=long_ago, worker="celery@gone", **common)
    ended = TaskEvent(
        kind="succeeded", timestamp=long_ago, worker="celery@gone", result=2, runtime=0.1, **common
    )
    writer = Recorder()
    writer.write_batch([queued_event, started])
    dead_segment([ended])
    result = reconcile(grace=0, timeout=0.5, attempts=1)
    assert result.replayed == 1 and result.lost == []
    assert Task.objects.get(broker_id=queued_event.broker_id).status == "done"
