"""The webhook plugin of docs/plugins.md, against a real worker and a real local HTTP server."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_tasks_hub.plugins.base import get_plugin
from examples.webhook_plugin import FailureWebhookPlugin
from testproject import tasks
from tests.conftest import ROOT, wait_for, wait_status

PLUGINS = [
    "django_tasks_hub.plugins.db.TaskDbPlugin",
    "examples.webhook_plugin.FailureWebhookPlugin",
]


class Webhook:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.received.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tasks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with (
        Webhook() as hook,
        override_settings(TASKS_HUB={"PLUGINS": PLUGINS}, TASKS_HUB_FAILURE_WEBHOOK_URL=hook.url),
    ):
        yield hook


@pytest.mark.worker
def test_a_failed_task_is_posted_to_the_webhook(worker, webhook):
    assert isinstance(get_plugin("failure-webhook"), FailureWebhookPlugin)
    ok = tasks.add.delay(1, 2)
    wait_status(ok.id, "done")
    failed = tasks.fail.delay("the report could not be built")

    wait_for(lambda: webhook.received, what="the webhook to receive a POST")
    wait_status(failed.id, "failed")
    [message] = webhook.received  # the task that succeeded posted nothing
    assert message["path"] == "/hooks/tasks"
    assert message["content_type"] == "application/json"
    body = message["body"]
    assert body["task"] == "demo.fail"
    assert body["status"] == "failed"
    assert body["broker_id"] == failed.id
    assert body["error"] == "ValueError: the report could not be built"
    assert "raise ValueError(message)" in body["traceback"]
    assert body["worker"]
    assert body["text"] == "Task demo.fail failed: ValueError: the report could not be built"


@pytest.mark.worker
def test_a_dead_webhook_does_not_break_the_task_or_the_recording(worker, caplog):
    with Webhook() as hook:
        url = hook.url  # closed on exit: nothing listens there any more
    with override_settings(TASKS_HUB={"PLUGINS": PLUGINS}, TASKS_HUB_FAILURE_WEBHOOK_URL=url):
        failed = tasks.fail.delay("nobody listens")
        task = wait_status(failed.id, "failed")
        wait_for(lambda: "did not take the message" in caplog.text, what="the webhook error logged")
        assert task.error == "ValueError: nobody listens"
        after = tasks.add.delay(2, 2)
        assert wait_status(after.id, "done").result == 4


def test_the_plugin_asks_for_its_url():
    with (
        override_settings(TASKS_HUB_FAILURE_WEBHOOK_URL=""),
        pytest.raises(ImproperlyConfigured, match="TASKS_HUB_FAILURE_WEBHOOK_URL"),
    ):
        FailureWebhookPlugin()


def test_the_docs_show_the_tested_example():
    # docs/plugins.md shows the example in full; it must be the file this test runs.
    page = (ROOT / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.DOTALL)
    source = (ROOT / "examples" / "webhook_plugin.py").read_text()
    assert source in blocks


@pytest.mark.django_db(transaction=True)
def test_a_missed_fire_time_is_posted_to_the_webhook(webhook):
    import datetime

    from django_tasks_hub import schedules
    from django_tasks_hub.models import Schedule

    start = datetime.datetime(2026, 3, 1, 12, tzinfo=datetime.UTC)
    row = Schedule(name="nightly-export", task="reports.export", spec={"every": 60.0})
    schedules._fresh(row, start)
    row.save()
    schedules.check(now=start + datetime.timedelta(seconds=95), sync_first=False)
    wait_for(lambda: webhook.received, what="the webhook to receive a POST")
    [message] = webhook.received
    body = message["body"]
    assert (body["schedule"], body["task"], body["status"]) == (
        "nightly-export",
        "reports.export",
        "missed",
    )
    assert body["fire_at"].startswith("2026-03-01T12:01:00")
    assert body["text"] == (
        "Schedule nightly-export (reports.export) did not run at 2026-03-01 12:01:00 UTC: "
        "nothing was sent within 30 s. Is celery beat running?"
    )
