"""``manage.py demo_tasks``: send the demo tasks so the admin shows every status, then say where."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count
from django.urls import NoReverseMatch, get_resolver, reverse

from django_tasks_hub import services
from django_tasks_hub.exceptions import TaskHubError
from django_tasks_hub.models import Task
from django_tasks_hub.states import TaskStatus
from testproject import tasks

#: A queue the demo worker does not consume: tasks sent there stay pending.
PAUSED_QUEUE = "demo.paused"

#: The failures the demo causes on purpose, and why: their tracebacks in the worker's log are
#: the demo working, not the demo breaking.
ON_PURPOSE = [
    ("demo.fail", "ValueError", "a task that raises: shows a failed task and its restart"),
    ("demo.flaky / demo.always_retry", "RuntimeError, Retry",
     "retries: two that end done, one still waiting, one that runs out of retries"),
    ("demo.crash", "WorkerLostError", "its pool process kills itself: shows a lost task"),
    ("demo.no_such_task", "NotRegistered",
     "no worker knows the name: shows a refused task"),
    ("demo.long (the second one)", "Terminated / revoked",
     "cancelled while running: shows a cancel"),
]  # fmt: skip


def hub_prefix() -> str | None:
    """The URL prefix under which the project includes ``django_tasks_hub.urls``, if any."""
    for pattern in get_resolver().url_patterns:
        urlconf = getattr(pattern, "urlconf_name", None)
        module = urlconf if isinstance(urlconf, str) else getattr(urlconf, "__name__", "")
        if module.startswith("django_tasks_hub"):
            return "/" + str(pattern.pattern).lstrip("^")
    return None


class Command(BaseCommand):
    help = (
        "Send the demo tasks (done, failed, retried, retrying, refused, lost, canceled, pending "
        "and one long task reporting progress) and print where to look at them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--addr",
            default=os.environ.get("TASKS_HUB_DEMO_ADDR", "127.0.0.1:8000"),
            help="host:port of the web server, for the links printed at the end",
        )
        parser.add_argument(
            "--long-steps", type=int, default=600, help="steps of the long task (default 600)"
        )
        parser.add_argument(
            "--long-delay",
            type=float,
            default=0.5,
            help="seconds per step of the long task (default 0.5: five minutes in all)",
        )
        parser.add_argument(
            "--retry-countdown",
            type=float,
            default=90.0,
            help="seconds the retrying demo task waits before its retry (default 90)",
        )
        parser.add_argument(
            "--queue",
            default=None,
            help="queue to send the demo tasks to (default: the Celery app's default queue)",
        )
        parser.add_argument(
            "--login",
            default=f"{os.environ.get('TASKS_HUB_DEMO_USER', 'demo')}/"
            f"{os.environ.get('TASKS_HUB_DEMO_PASSWORD', 'demo')}",
            help="username/password to repeat in the closing banner (default demo/demo)",
        )
        parser.add_argument(
            "--logs",
            default="",
            help="where the worker and the web server write their logs, for the banner",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help="longest wait, in seconds, for the worker to reach the tasks the demo "
            "restarts and cancels (0: do not wait)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.wait = float(options["wait"])
        self.queue: str | None = options["queue"]
        queue = {"queue": self.queue} if self.queue else {}
        user = get_user_model()._default_manager.filter(is_superuser=True).order_by("pk").first()
        long_kwargs = {"steps": options["long_steps"], "delay": options["long_delay"]}

        # The long one first, so it gets a pool process straight away.
        self.send("processing, with a moving progress bar", tasks.long_running, user, long_kwargs)
        self.send("done", tasks.add, user, {"x": 2, "y": 3})
        self.send("done, with tags", tasks.tagged, user)
        self.send("done, with a JSON result", tasks.echo, user, {"value": {"rows": 1234}})
        self.send("done, after two retries", tasks.flaky, user, {"fail_times": 2, "countdown": 1})
        countdown = float(options["retry_countdown"])
        self.send(
            f"retrying for {countdown:g} seconds, then done",
            tasks.flaky,
            user,
            {"fail_times": 1, "countdown": countdown},
        )
        self.send("failed once its retries ran out", tasks.always_retry, user)
        failed = self.send(
            "failed, then restarted by the demo user",
            tasks.fail,
            user,
            {"message": "The monthly report could not be built: the source file is missing."},
        )
        crash = self.send("lost: its pool process dies mid-run", tasks.crash, user)
        chain = (tasks.add.s(1, 2).set(**queue) | tasks.add.s(10).set(**queue)).apply_async()
        self.stdout.write(f"  sent a chain add | add ({chain.id}): the second has a parent")
        refused = services.get_celery_app().send_task("demo.no_such_task", args=(1,), **queue)
        self.stdout.write(f"  sent demo.no_such_task ({refused.id}): refused, no worker knows it")
        self.send("pending: sent to a queue no worker reads", tasks.add, user, {"x": 40, "y": 2},
                  queue=PAUSED_QUEUE)  # fmt: skip
        waiting = self.send("canceled before it ran", tasks.add, user, {"x": 0, "y": 0},
                            queue=PAUSED_QUEUE)  # fmt: skip
        running = self.send("canceled while running", tasks.long_running, user, long_kwargs)

        self.act("cancel", waiting, user)
        if running is not None:
            self.until(running, TaskStatus.PROCESSING)
            self.act("cancel", running, user)
        if failed is not None:
            self.until(failed, TaskStatus.FAILED)
            self.act("restart", failed, user)
        if crash is not None:
            # The worker notices a dead pool process a few seconds later; count it once it has.
            self.until(crash, TaskStatus.LOST)

        self.summary(str(options["addr"]), countdown, str(options["login"]), str(options["logs"]))

    def send(
        self,
        what: str,
        celery_task: Any,
        user: Any,
        kwargs: dict[str, Any] | None = None,
        **send_options: Any,
    ) -> Task | None:
        """Send one demo task through ``services.submit`` (recording the user) and say why."""
        if self.queue:
            send_options.setdefault("queue", self.queue)
        task = services.submit(celery_task, kwargs=kwargs or {}, user=user, **send_options)
        ident = task.pk if task is not None else "not recorded"
        self.stdout.write(f"  sent {celery_task.name} ({ident}): {what}")
        return task

    def until(self, task: Task, status: str) -> bool:
        """Wait (at most ``--wait`` seconds) until the worker has moved ``task`` to ``status``."""
        deadline = time.monotonic() + self.wait
        while True:
            task.refresh_from_db()
            if task.status == status:
                return True
            if time.monotonic() >= deadline:
                self.stdout.write(
                    self.style.WARNING(
                        f"  {task.name} ({task.pk}) is {task.status}, not {status} yet: "
                        "is the worker running?"
                    )
                )
                return False
            time.sleep(0.2)

    def act(self, action: str, task: Task | None, user: Any) -> None:
        """Restart or cancel ``task`` the way the admin and the API do: through services."""
        if task is None:
            return
        run: Callable[..., Task] = getattr(services, action)
        try:
            run(task, user)
        except TaskHubError as exc:
            self.stdout.write(self.style.WARNING(f"  could not {action} {task.pk}: {exc}"))
        else:
            self.stdout.write(f"  {action}ed {task.name} ({task.pk}) as {user or 'nobody'}")

    def summary(self, addr: str, countdown: float, login: str = "", logs: str = "") -> None:
        """Print the tasks by status, the failures that are on purpose, the pages to open and
        how to log in: the last thing on the screen says what to do next."""
        time.sleep(min(self.wait, 3.0))  # let the quick tasks land before counting
        counts = dict(Task.objects.values_list("status").annotate(n=Count("pk")).order_by("status"))
        line = ", ".join(f"{status} {counts.get(status, 0)}" for status in TaskStatus.values)
        self.stdout.write(f"\nTasks by status now: {line}")
        self.stdout.write(
            f"(the long task runs for a few minutes; the retrying one ends in {countdown:g} s)\n"
        )

        self.stdout.write(
            self.style.SUCCESS("Failures on purpose (their tracebacks are expected):")
        )
        for name, error, why in ON_PURPOSE:
            self.stdout.write(f"  {name}: {error} - {why}")
        if logs:
            self.stdout.write(f"  they are in the worker's log: {logs}/worker.log")
        self.stdout.write("")

        base = f"http://{addr}"
        self.stdout.write(self.style.SUCCESS("Where to look:"))
        self.stdout.write(f"  admin:            {base}/admin/django_tasks_hub/task/")
        prefix = hub_prefix()
        if prefix is not None:
            self.stdout.write(f"  browsable API:    {base}{prefix}list")
            self.stdout.write(f"  task history:     {base}{prefix}task-history/")
        try:
            self.stdout.write(f"  Swagger UI:       {base}{reverse('swagger-ui')}")
        except NoReverseMatch:
            self.stdout.write("  Swagger UI:       install drf-spectacular to get /api/docs/")
        if logs:
            self.stdout.write(f"  logs:             {logs}/worker.log, {logs}/web.log")
        username, _, password = login.partition("/")
        if username:
            self.stdout.write(
                self.style.SUCCESS(f"Log in as username {username!r}, password {password!r}.")
            )
        self.stdout.write("Ctrl-C stops the demo.")
