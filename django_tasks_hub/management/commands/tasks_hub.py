"""``manage.py tasks_hub``: list, show, restart, cancel, prune, reconcile and replay."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from kombu.exceptions import OperationalError as BrokerError

from django_tasks_hub import exceptions
from django_tasks_hub.models import Task, TaskRun
from django_tasks_hub.states import TaskStatus

#: Exit codes, documented in docs/operations.md; argparse itself exits 2 on bad usage.
EXIT_NOT_FOUND = 1
EXIT_REFUSED = 3
EXIT_BROKER = 4

_TASK_COLUMNS = ("id", "name", "status", "attempts", "updated_at", "worker")


def _task_dict(task: Task) -> dict[str, Any]:
    return {
        "id": str(task.pk),
        "name": task.name,
        "status": task.status,
        "broker_id": task.broker_id,
        "retries": task.retries,
        "attempts": task.attempts,
        "args": task.args,
        "kwargs": task.kwargs,
        "tags": task.tags,
        "worker": task.worker,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "result": task.result,
        "error": task.error,
    }


def _run_dict(run: TaskRun) -> dict[str, Any]:
    data = run.as_dict()
    data.pop("task_id", None)
    return data


class Command(BaseCommand):
    help = (
        "Look at and act on recorded Celery tasks: list, show ID, restart ID, cancel ID, "
        "prune --older-than DAYS, reconcile, replay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

        p = sub.add_parser("list", help="Tasks, newest first.")
        p.add_argument(
            "--status",
            action="append",
            choices=list(TaskStatus.values),
            help="Only tasks in this status (repeat for several).",
        )
        p.add_argument("--name", help="Only tasks of this Celery task name.")
        p.add_argument("--limit", type=int, default=20, help="How many tasks (default 20).")
        p.add_argument("--json", action="store_true", help="One JSON object per line.")

        p = sub.add_parser("show", help="One task and its runs.")
        p.add_argument("task_id", help="Task id, or the Celery id of one of its runs.")
        p.add_argument("--json", action="store_true", help="Print JSON.")

        for name, verb in (
            ("restart", "Send an ended task again, as a new run."),
            ("cancel", "Cancel a pending, processing or retrying task."),
        ):
            p = sub.add_parser(name, help=verb)
            p.add_argument("task_id", help="Task id, or the Celery id of one of its runs.")
            p.add_argument("--user", help="Username recorded as the one who did it.")

        p = sub.add_parser("prune", help="Delete old runs and finished tasks in batches.")
        p.add_argument(
            "--older-than",
            type=float,
            dest="older_than",
            metavar="DAYS",
            help="Delete what ended more than DAYS ago (default TASKS_HUB['RETENTION_DAYS']).",
        )
        p.add_argument("--batch-size", type=int, dest="batch_size", help="Rows per batch.")
        p.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

        p = sub.add_parser("reconcile", help="Mark lost the runs whose worker is gone.")
        p.add_argument(
            "--grace",
            type=float,
            metavar="SECONDS",
            help="A worker silent this long is gone (default "
            "TASKS_HUB['RECONCILE_GRACE_SECONDS']).",
        )
        p.add_argument(
            "--timeout",
            type=float,
            default=2.0,
            metavar="SECONDS",
            help="How long to wait for the workers to answer (default 2).",
        )
        p.add_argument("--dry-run", action="store_true", help="Report, change nothing.")

        sub.add_parser("replay", help="Write the journaled events of dead processes on this host.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        getattr(self, f"do_{action}")(options)

    # -- helpers -------------------------------------------------------------------------------

    def _find(self, ident: str) -> Task:
        """The task named by its id or by the Celery id of any of its runs."""
        task = None
        with contextlib.suppress(ValueError):
            task = Task.objects.filter(pk=uuid.UUID(ident)).first()
        if task is None:
            task = Task.objects.filter(broker_id=ident).first()
        if task is None:
            run = TaskRun.objects.filter(broker_id=ident).select_related("task").first()
            task = run.task if run else None
        if task is None:
            raise CommandError(
                f"No task with id or Celery id {ident!r}; `tasks_hub list` shows the ids.",
                returncode=EXIT_NOT_FOUND,
            )
        return task

    def _user(self, username: str | None) -> Any:
        if not username:
            return None
        User = get_user_model()
        try:
            return User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            raise CommandError(
                f"No user {username!r}; pass an existing username to --user or leave it out.",
                returncode=EXIT_NOT_FOUND,
            ) from None

    def _json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder))

    # -- actions -------------------------------------------------------------------------------

    def do_list(self, options: dict[str, Any]) -> None:
        if options["limit"] < 1:
            raise CommandError("--limit must be 1 or more.", returncode=EXIT_NOT_FOUND)
        qs = Task.objects.order_by("-created_at")
        if options["status"]:
            qs = qs.with_status(*options["status"])
        if options["name"]:
            qs = qs.by_name(options["name"])
        tasks = list(qs[: options["limit"]])
        if options["json"]:
            for task in tasks:
                self._json(_task_dict(task))
            return
        if not tasks:
            self.stdout.write("No tasks.")
            return
        rows = [
            (
                str(t.pk),
                t.name,
                t.status,
                str(t.attempts),
                t.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                t.worker or "-",
            )
            for t in tasks
        ]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_TASK_COLUMNS)]
        header = tuple(c.upper() for c in _TASK_COLUMNS)
        for row in (header, *rows):
            cells = (v.ljust(w) for v, w in zip(row, widths, strict=True))
            self.stdout.write("  ".join(cells).rstrip())

    def do_show(self, options: dict[str, Any]) -> None:
        task = self._find(options["task_id"])
        runs = list(task.runs.order_by("id"))
        if options["json"]:
            self._json({**_task_dict(task), "runs": [_run_dict(r) for r in runs]})
            return
        for key, value in _task_dict(task).items():
            if value not in (None, "", [], {}):
                self.stdout.write(f"{key:>12}: {value}")
        self.stdout.write(f"{'runs':>12}: {len(runs)}")
        for run in runs:
            when = run.started_at or run.queued_at
            line = (
                f"  #{run.attempt} {run.trigger:<11} {run.status:<10} "
                f"{when:%Y-%m-%d %H:%M:%S} {run.worker or '-'}"
                if when
                else f"  #{run.attempt} {run.trigger:<11} {run.status:<10} - {run.worker or '-'}"
            )
            if run.error:
                line += f"  {run.error.splitlines()[0][:120]}"
            self.stdout.write(line)

    def _act(self, options: dict[str, Any], fn_name: str, done: str) -> None:
        from django_tasks_hub import services

        task = self._find(options["task_id"])
        user = self._user(options["user"])
        try:
            task = getattr(services, fn_name)(task, user)
        except exceptions.TaskNotFound as exc:
            raise CommandError(exc.message, returncode=EXIT_NOT_FOUND) from exc
        except (exceptions.BrokerUnavailable, exceptions.DatabaseUnavailable) as exc:
            # The service's message already says what to check, and to try again.
            raise CommandError(exc.message, returncode=EXIT_BROKER) from exc
        except exceptions.TaskHubError as exc:
            raise CommandError(exc.message, returncode=EXIT_REFUSED) from exc
        self.stdout.write(self.style.SUCCESS(f"{done} task {task.pk}: now {task.status}."))

    def do_restart(self, options: dict[str, Any]) -> None:
        self._act(options, "restart", "Restarted")

    def do_cancel(self, options: dict[str, Any]) -> None:
        self._act(options, "cancel", "Canceled")

    def do_prune(self, options: dict[str, Any]) -> None:
        from django_tasks_hub.retention import prune

        try:
            result = prune(
                older_than_days=options["older_than"],
                batch_size=options["batch_size"],
                dry_run=options["dry_run"],
            )
        except ValueError as exc:
            raise CommandError(str(exc), returncode=EXIT_NOT_FOUND) from exc
        verb = "Would delete" if result.dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {result.tasks} finished task(s) and {result.runs} run(s) "
            f"that ended before {result.cutoff:%Y-%m-%d %H:%M:%S %Z}"
            + ("." if result.dry_run else f" in {result.batches} batch(es).")
        )

    def do_replay(self, options: dict[str, Any]) -> None:
        from django_tasks_hub.recorder.journal import journal_directory, replay_dead_journals

        replayed = replay_dead_journals()
        self.stdout.write(f"Replayed {replayed} events from {journal_directory()}.")

    def do_reconcile(self, options: dict[str, Any]) -> None:
        from django_tasks_hub.reconcile import describe, reconcile

        if not options["dry_run"]:
            # First: it needs no broker, so a broker outage does not silence missed runs.
            self.check_schedules()
        try:
            result = reconcile(
                grace=options["grace"], timeout=options["timeout"], dry_run=options["dry_run"]
            )
        except (OSError, BrokerError) as exc:
            raise CommandError(
                f"Could not ask the workers through the broker ({exc}); "
                "check that the broker is running, then try again.",
                returncode=EXIT_BROKER,
            ) from exc
        verb = "Would mark" if result.dry_run else "Marked"
        if result.replayed:
            self.stdout.write(f"Replayed {result.replayed} events from dead processes' journals.")
        self.stdout.write(
            f"Checked {result.checked} processing run(s); "
            f"workers answering: {len(result.workers_alive)}, "
            f"gone: {', '.join(result.workers_gone) or 'none'}."
        )
        for line in describe(result.lost):
            self.stdout.write(f"  {line}")
        self.stdout.write(f"{verb} {len(result.lost)} run(s) lost.")

    def check_schedules(self) -> None:
        from django_tasks_hub.schedules import check

        found = check()
        self.stdout.write(
            f"Checked {found.schedules} schedule(s) with fire times due: {found.on_time} on "
            f"time, {found.late} late, {len(found.missed)} missed."
        )
        for missed in found.missed:
            self.stdout.write(
                f"  missed: {missed.schedule} at {missed.fire_at:%Y-%m-%d %H:%M:%S %Z}"
            )
