"""The journal: each process appends its events to a local file before they reach the database.

Write-behind keeps events in memory until the writer thread writes them; a process killed
in between (SIGKILL, the out-of-memory killer, ``os._exit``, a pool process terminated by a
cancel) would lose them. So each event is first appended to a file, with one ``write()``,
which the kernel keeps when the process dies (no fsync: the kernel, not the process, is what
must survive). This is the write-ahead log idea of rule 7 of the design.

- A journal is a series of *segments*, one per batch: the writer thread takes a batch and the
  segment that holds it together, writes the batch, then deletes the segment. A batch that
  cannot be written (the database is down) keeps its segment, tried again later.
- Each segment is locked (``fcntl.flock``) while its process lives. A segment whose lock is
  free belongs to a dead process: :func:`replay_dead_journals` writes its events and deletes
  it. The lock also makes sure two processes never replay the same segment.
- Replay is at-least-once: an event may be written twice (its batch was written, then the
  process died before deleting the segment). Every write is an upsert that follows the
  precedence order (rules 1 and 2), and a start carries the time it was taken, which is how a
  replayed start is told from a real redelivery; so writing an event twice changes nothing.
- A record is one line: a CRC-32 of the text, then the event as JSON. A line cut short (a
  kill in the middle of a write, a full disk) fails the check and is skipped; the rest of the
  segment is replayed.
- The directory is per project and database (:func:`journal_directory`), so the journals of
  another project or database on the same host are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import operator
import os
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import router

from django_tasks_hub.conf import hub_settings
from django_tasks_hub.events import TaskEvent
from django_tasks_hub.recorder import columns
from django_tasks_hub.recorder.rows import EventWriter
from django_tasks_hub.recorder.writer import write_events

__all__ = ["Journal", "Segment", "journal_directory", "replay_dead_journals"]

logger = logging.getLogger(__name__)

#: A segment's file name ends so; one still being created (not locked yet) ends ``.tmp``.
SUFFIX = ".journal"
#: Events are replayed in batches of this many.
REPLAY_BATCH = 1000
#: The longest wait between two tries to write the segments kept during a database outage.
MAX_RETRY_DELAY = 5.0
#: A recording process looks for dead processes' segments when it starts a segment, at most
#: this often (seconds): at its first event, and then now and again, since another process on
#: the host may die at any time.
SCAN_SECONDS = 10.0

_FIELDS = tuple(f.name for f in dataclasses.fields(TaskEvent))
_GET = operator.attrgetter(*_FIELDS)
_TIMESTAMP = 1 + _FIELDS.index("timestamp")  # In a record, after its number.
_VERSION = 1


# -- where ----------------------------------------------------------------------------------


def journal_root() -> Path:
    """The folder under which every project's journals live (``TASKS_HUB["JOURNAL_DIR"]``)."""
    configured = hub_settings.JOURNAL_DIR
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "django-tasks-hub"


def journal_directory(db: str | None = None) -> Path:
    """The folder of this project's journals for the database alias ``db``.

    A folder per project (``BASE_DIR``, else the working directory) and database (engine,
    host, port, name) under :func:`journal_root`: two projects, or two databases, on one host
    (or sharing one volume) never replay each other's events.
    """
    alias = db or _default_db()
    conf = settings.DATABASES.get(alias, {})
    base = str(getattr(settings, "BASE_DIR", None) or os.getcwd())
    key = "|".join(
        str(part)
        for part in (
            base,
            conf.get("ENGINE", ""),
            conf.get("HOST", ""),
            conf.get("PORT", ""),
            conf.get("NAME", ""),
        )
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return journal_root() / digest


def _default_db() -> str:
    return router.db_for_write(apps.get_model("django_tasks_hub", "Task"))


# -- records --------------------------------------------------------------------------------


def _frame(payload: str) -> bytes:
    data = payload.encode()
    return b"%08x %s\n" % (zlib.crc32(data), data)


def encode(event: TaskEvent, seq: int) -> bytes:
    """One record: ``event`` and its number in the segment (its identity), as one line."""
    values: list[Any] = [seq, *_GET(event)]
    values[_TIMESTAMP] = event.timestamp.isoformat()
    try:
        # Most events are plain JSON already: one encoding, by the C encoder.
        return _frame(json.dumps(values, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        pass
    # A value JSON cannot hold is stored as the columns would store it (a placeholder when
    # it cannot even be shown): what is replayed is what would have been written.
    plain = (str, int, bool, type(None))
    safe = [value if type(value) in plain else columns.to_json(value) for value in values]
    return _frame(json.dumps(safe, allow_nan=False, default=columns.safe_repr))


def decode(line: bytes) -> tuple[int, TaskEvent] | None:
    """The event of a record, or ``None`` for a record cut short or damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    data = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(data):
            return None
        seq, *values = json.loads(data)
        fields = dict(zip(_FIELDS, values, strict=True))
        fields["timestamp"] = datetime.datetime.fromisoformat(fields["timestamp"])
        fields["tags"] = tuple(fields["tags"] or ())
        fields["related"] = tuple(fields.get("related") or ())
        return int(seq), TaskEvent(**fields)
    except (ValueError, TypeError, KeyError):
        return None


def read_segment(path: Path) -> tuple[dict[str, Any], list[TaskEvent], int]:
    """A segment's header, its events (a duplicated record once) and how many records were
    skipped as damaged."""
    data = path.read_bytes()
    header: dict[str, Any] = {}
    events: list[TaskEvent] = []
    seen: set[int] = set()
    skipped = 0
    lines = data.split(b"\n")
    # The last piece is empty when the file ends with a whole record; else it was cut short.
    if lines and lines[-1]:
        skipped += 1
    for index, line in enumerate(lines[:-1]):
        if index == 0 and line.startswith(b"{"):
            try:
                header = json.loads(line)
            except ValueError:
                skipped += 1
            continue
        found = decode(line)
        if found is None:
            skipped += 1
        elif found[0] not in seen:
            seen.add(found[0])
            events.append(found[1])
    return header, events, skipped


# -- a process's own journal ----------------------------------------------------------------


@dataclasses.dataclass
class Segment:
    """One segment file, locked by this process while the file descriptor is open."""

    path: Path
    fd: int
    size: int = 0
    records: int = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def retire(self) -> None:
        """Its events are written: delete it (unlinked first, so no one finds it unlocked)."""
        self.path.unlink(missing_ok=True)
        self.close()


class JournalUnavailable(Exception):
    """The journal could not take an event (a full disk, a read-only folder, its bound)."""


class Journal:
    """The segments of one recorder in one process.

    ``append`` is called under the write buffer's lock, so appends and ``rotate`` never
    overlap. It returns ``False`` when the journal cannot take the event: the recorder then
    writes it in its signal, so nothing is lost (a warning is logged once per process).
    """

    def __init__(self, header: dict[str, Any], db: Any) -> None:
        self._header = header
        self._db = db  # A callable: the alias is the router's choice at the time.
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._current: Segment | None = None
        self._retained: list[Segment] = []
        self._failures = 0
        self._retry_at = 0.0
        self._seq = 0
        self._disabled = ""
        self._next_scan = 0.0
        self._name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._directory: Path | None = None

    def _forked(self) -> None:
        # The parent's segments are the parent's: close our copies of their descriptors
        # (closing, not unlocking: the lock belongs to the file, which the parent still has).
        for segment in [*self._retained, *([self._current] if self._current else [])]:
            segment.close()
        self._reset()

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = journal_directory(self._db())
        return self._directory

    @property
    def disabled(self) -> str:
        """Why the journal takes no events in this process ("" when it does)."""
        return self._disabled

    def size(self) -> int:
        """The bytes this process's segments hold on disk."""
        current = self._current.size if self._current else 0
        return current + sum(s.size for s in self._retained)

    def append(self, event: TaskEvent) -> bool:
        """Append ``event`` to the current segment; ``False`` if the journal cannot take it."""
        if self._pid != os.getpid():
            self._forked()
        if self._disabled:
            return False
        try:
            self._seq += 1
            record = encode(event, self._seq)
        except Exception:
            # Whatever a task's values do (rule 5): this event is written in its signal.
            logger.debug("tasks-hub could not journal %s", event.kind, exc_info=True)
            return False
        try:
            if self.size() + len(record) > hub_settings.JOURNAL_MAX_BYTES:
                raise JournalUnavailable(
                    f"it holds {self.size()} bytes, TASKS_HUB['JOURNAL_MAX_BYTES'] is "
                    f"{hub_settings.JOURNAL_MAX_BYTES}"
                )
            if self._current is None:
                self._current = self._open()
            written = os.write(self._current.fd, record)
            self._current.size += written
            if written != len(record):
                raise OSError(errno.ENOSPC, "short write")
            self._current.records += 1
            return True
        except (OSError, JournalUnavailable) as exc:
            self._disable(exc)
            return False

    def _disable(self, exc: BaseException) -> None:
        self._disabled = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "tasks-hub cannot write its journal in %s (%s); this process writes each event "
            "in its signal from now on",
            self._directory or journal_root(),
            self._disabled,
        )

    def _open(self) -> Segment:
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{self._name}-{time.time_ns():x}"
        tmp = directory / f"{name}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            header = json.dumps({"v": _VERSION, "pid": os.getpid(), **self._header}).encode()
            size = os.write(fd, header + b"\n")
            # Renamed once locked: a replayer only looks at ``.journal`` files, so it can never
            # take a live process's segment for a dead one in the moment before the lock.
            path = directory / f"{name}{SUFFIX}"
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        if time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + SCAN_SECONDS
            _replay_later(directory)
        return Segment(path, fd, size)

    def rotate(self) -> Segment | None:
        """The segment holding every event appended so far; the next append starts a new one."""
        if self._pid != os.getpid():
            self._forked()
        segment, self._current = self._current, None
        return segment

    # -- after a batch ------------------------------------------------------------------------

    def written(self, segment: Segment | None) -> None:
        """``segment``'s batch is in the database: delete it."""
        self._failures = 0
        if segment is not None:
            segment.retire()

    def keep(self, segment: Segment | None, failed: bool = True) -> None:
        """``segment``'s batch was not written: keep it, tried again later. ``failed``: a
        write failed, so wait longer before the next try (at most ``MAX_RETRY_DELAY``)."""
        if failed:
            self._failures += 1
            delay = hub_settings.WRITE_RETRY_DELAY * 2 ** min(self._failures - 1, 10)
            self._retry_at = time.monotonic() + min(MAX_RETRY_DELAY, delay)
        if segment is not None and segment not in self._retained:
            self._retained.append(segment)

    def waiting(self) -> bool:
        """Whether the last write failed and it is too early to try again."""
        return time.monotonic() < self._retry_at

    def retry_in(self) -> float | None:
        """Seconds until kept segments should be tried again (``None``: none is kept)."""
        if not self._retained or self._pid != os.getpid():
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def write_kept(self, rows: EventWriter) -> bool:
        """Write the segments kept from earlier failures, oldest first; ``False`` on failure."""
        while self._retained:
            segment = self._retained[0]
            try:
                _, events, _ = read_segment(segment.path)
            except OSError:
                logger.exception("tasks-hub could not read its journal segment %s", segment.path)
                self._retained.pop(0).close()
                continue
            if write_events(rows, events):
                return False
            self._retained.pop(0).retire()
        return True


# -- replaying the dead ---------------------------------------------------------------------


def _replay_later(directory: Path) -> None:
    from django_tasks_hub.recorder.background import background

    background.submit(lambda: _replay_quietly(directory))


def _replay_quietly(directory: Path) -> None:
    try:
        replayed = replay_dead_journals(directory=directory)
    except Exception:
        logger.exception("tasks-hub could not replay the journals in %s", directory)
        return
    if replayed:
        logger.info("tasks-hub replayed %d events of dead processes from %s", replayed, directory)


def _owned(path: Path) -> Iterator[int]:
    """The file descriptor of ``path`` locked by this process, if its owner is dead; nothing
    if another process holds it (alive, or replaying it) or it was deleted meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        # Another replayer may have replayed and deleted it between our open and our lock:
        # then the file we hold is no longer the one at ``path``.
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return
        except FileNotFoundError:
            return
        yield fd
    finally:
        os.close(fd)


def _recorder_rows(header: dict[str, Any]) -> EventWriter:
    task_model = apps.get_model(header.get("task") or "django_tasks_hub.Task")
    run_model = apps.get_model(header.get("run") or "django_tasks_hub.TaskRun")
    db = header.get("db") or router.db_for_write(task_model)
    return EventWriter(task_model, run_model, db)


def replay_dead_journals(directory: Path | None = None) -> int:
    """Write the events of every dead process's journal in this project's folder; return how
    many events were replayed.

    A segment is replayed by the one process that holds its lock, then deleted; one whose
    events cannot all be written (the database is down) is left for the next replay. Records
    cut short are skipped (and logged). Safe to run at any time, from any number of processes.
    """
    directory = directory or journal_directory()
    if not directory.is_dir():
        return 0
    replayed = 0
    for path in sorted(directory.iterdir()):
        if path.suffix == ".tmp":
            # A segment whose creation was cut short holds no event yet.
            for _ in _owned(path):
                path.unlink(missing_ok=True)
            continue
        if path.suffix != SUFFIX:
            continue
        for _ in _owned(path):
            replayed += _replay_segment(path)
    return replayed


def _replay_segment(path: Path) -> int:
    header, events, skipped = read_segment(path)
    if skipped:
        logger.warning(
            "tasks-hub skipped %d damaged or cut-short records in %s", skipped, path.name
        )
    if events:
        rows = _recorder_rows(header)
        for start in range(0, len(events), REPLAY_BATCH):
            if write_events(rows, events[start : start + REPLAY_BATCH]):
                logger.warning(
                    "tasks-hub could not replay %s; it is kept for the next replay", path.name
                )
                return 0  # What was written is written again next time: harmless.
    path.unlink(missing_ok=True)
    return len(events)


def pending_segments(directory: Path | None = None) -> Sequence[Path]:
    """The segments in this project's folder (live and dead)."""
    directory = directory or journal_directory()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix == SUFFIX)
