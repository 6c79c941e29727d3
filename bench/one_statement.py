"""A proposal, measured by the bench: each lifecycle event written as one SQL statement.

Not the package's code. ``OneStatement`` writes the same rows and the same rule-1 conditions
as ``TaskDbPlugin`` for the common case (a first publish, a start, a success) as one statement
in autocommit: a data-modifying CTE, one round trip, no BEGIN/COMMIT, no savepoints.
``OneStatementPlugin`` uses it and falls back to ``TaskDbPlugin`` for everything else (a
retry, a redelivery, an event whose run is missing), so ``throughput.py --modes hubfast``
can run it with a real worker (PostgreSQL only).
"""

from __future__ import annotations

import uuid
from typing import Any

from django_tasks_hub.plugins.base import TaskEvent
from django_tasks_hub.plugins.db import TaskDbPlugin


class OneStatement:
    """The proposal: each event is one statement, its rule-1 conditions in the WHERE."""

    def __init__(self) -> None:
        from django.db import connection

        from django_tasks_hub.models import Task, TaskRun

        self.connection = connection
        self.task = Task
        self.run = TaskRun
        self.task_fields = list(Task._meta.concrete_fields)
        self.run_fields = [f for f in TaskRun._meta.concrete_fields if f.name != "id"]

    def _values(self, obj: Any, fields: list[Any]) -> list[Any]:
        return [f.get_db_prep_save(getattr(obj, f.attname), self.connection) for f in fields]

    def queued(self, event: TaskEvent) -> bool:
        """Insert the task and its first run; ``False`` (nothing written) if the task exists."""
        from django_tasks_hub.states import RunTrigger, TaskStatus

        task = self.task(
            pk=uuid.UUID(event.broker_id), name=event.name, args=list(event.args or ()),
            kwargs=event.kwargs or {}, options=event.options, status=TaskStatus.PENDING,
            broker_id=event.broker_id, retries=0, tags=list(event.tags), attempts=1,
            created_at=event.timestamp, updated_at=event.timestamp,
        )  # fmt: skip
        run = self.run(
            task_id=task.pk, name=event.name, attempt=1, broker_id=event.broker_id, retries=0,
            trigger=RunTrigger.INITIAL, status=TaskStatus.PENDING, queued_at=event.timestamp,
        )  # fmt: skip
        tcols = ", ".join(f'"{f.column}"' for f in self.task_fields)
        rcols = ", ".join(f'"{f.column}"' for f in self.run_fields)
        tph = ", ".join(["%s"] * len(self.task_fields))
        # Typed: in a VALUES list under SELECT a NULL has no type of its own.
        rph = ", ".join(f"CAST(%s AS {f.db_type(self.connection)})" for f in self.run_fields)
        sql = (
            f"WITH t AS (INSERT INTO {self.task._meta.db_table} ({tcols}) VALUES ({tph})"
            f" ON CONFLICT DO NOTHING RETURNING 1)"
            f" INSERT INTO {self.run._meta.db_table} ({rcols}) SELECT * FROM (VALUES ({rph})) v"
            f" WHERE EXISTS (SELECT FROM t) ON CONFLICT DO NOTHING RETURNING 1"
        )
        params = self._values(task, self.task_fields) + self._values(run, self.run_fields)
        with self.connection.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone() is not None

    def transition(self, event: TaskEvent) -> tuple[int, int]:
        """Move the run, and the task if the run moved; the rows moved (run, task)."""
        from django_tasks_hub import states

        status = event.status
        retries = event.retries or 0
        superseded = getattr(states, "TASK_SUPERSEDED", states.ACTIVE_STATUSES)
        run_allowed = states.RUN_ALLOWED_FROM[status] - {states.TaskStatus.LOST}
        run_set: dict[str, Any] = {"status": status}
        task_set: dict[str, Any] = {
            "status": status,
            "updated_at": event.timestamp,
            "retries": retries,
        }
        if event.kind == "started":
            run_set.update(started_at=event.timestamp, worker=event.worker)
            task_set.update(started_at=event.timestamp, worker=event.worker, finished_at=None)
        else:
            result = self.run._meta.get_field("result").get_db_prep_save(
                event.result, self.connection
            )
            run_set.update(
                finished_at=event.timestamp, runtime=event.runtime, result=result,
                error="", traceback="", worker=event.worker,
            )  # fmt: skip
            task_set.update(
                finished_at=event.timestamp, result=result, error="", traceback="",
                worker=event.worker,
            )  # fmt: skip
        rs = ", ".join(f'"{k}" = %s' for k in run_set)
        ts = ", ".join(f'"{k}" = %s' for k in task_set)
        sql = (
            f"WITH r AS (UPDATE {self.run._meta.db_table} SET {rs}"
            f" WHERE broker_id = %s AND retries = %s AND status = ANY(%s) RETURNING 1),"
            f" t AS (UPDATE {self.task._meta.db_table} SET {ts} WHERE broker_id = %s AND"
            f" ((retries = %s AND status = ANY(%s)) OR (retries < %s AND status = ANY(%s)))"
            f" AND EXISTS (SELECT FROM r) RETURNING 1)"
            f" SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM t)"
        )
        params = [
            *run_set.values(), event.broker_id, retries, sorted(run_allowed),
            *task_set.values(), event.broker_id, retries,
            sorted(states.TASK_ALLOWED_FROM[status]), retries, sorted(superseded),
        ]  # fmt: skip
        with self.connection.cursor() as cur:
            cur.execute(sql, params)
            runs, tasks = cur.fetchone()
        return int(runs), int(tasks)

    def queued_or_fail(self, event: TaskEvent) -> None:
        if not self.queued(event):
            raise RuntimeError("slow path (task existed): not part of this benchmark")

    def transition_or_fail(self, event: TaskEvent) -> None:
        if not self.transition(event)[0]:
            raise RuntimeError("slow path (no open run): not part of this benchmark")


class OneStatementPlugin(TaskDbPlugin):
    """``TaskDbPlugin`` with the one-statement fast path for first publishes, starts and
    successes; anything the fast statement does not settle goes the plugin's own way."""

    name = "db"

    def __init__(self) -> None:
        super().__init__()
        self._one: OneStatement | None = None

    @property
    def one(self) -> OneStatement:
        if self._one is None:
            self._one = OneStatement()
        return self._one

    def record_queued(self, event: TaskEvent) -> None:
        simple = not (event.retries or event.eager or event.user_id is not None or event.parent_id)
        if simple and self.one.queued(event):
            return
        super().record_queued(event)

    def record_transition(self, event: TaskEvent) -> None:
        if (
            event.kind in ("started", "succeeded")
            and event.retries is not None
            and not event.redelivered
            and event.result is None  # Results of no-op tasks only: no to_json() here.
        ):
            runs, tasks = self.one.transition(event)
            if runs:
                if event.kind == "started" and not tasks:
                    self._fill_start(event, 1, 0)
                return
        super().record_transition(event)
