"""A plugin that posts every failed or lost task, and every missed periodic run, to a webhook
(docs/plugins.md, docs/periodic.md)."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder

from django_tasks_hub.plugins.base import MissedFire, TaskEvent, TaskHubPlugin

logger = logging.getLogger(__name__)


class FailureWebhookPlugin(TaskHubPlugin):
    """POSTs a JSON message to ``settings.TASKS_HUB_FAILURE_WEBHOOK_URL`` when a task fails,
    and when a periodic schedule misses a fire time (``on_missed``).

    The message has a ``text`` line (what chat webhooks display) and the details as fields.
    """

    name: ClassVar[str] = "failure-webhook"
    timeout: ClassVar[float] = 5.0

    def __init__(self) -> None:
        self.url: str = getattr(settings, "TASKS_HUB_FAILURE_WEBHOOK_URL", "")
        if not self.url:
            raise ImproperlyConfigured(
                "FailureWebhookPlugin needs settings.TASKS_HUB_FAILURE_WEBHOOK_URL: "
                "the URL to POST failed tasks to."
            )

    def on_failed(self, event: TaskEvent) -> None:
        self.notify(event)

    def on_lost(self, event: TaskEvent) -> None:
        self.notify(event)

    def on_missed(self, missed: MissedFire) -> None:
        self.send(self.missed_payload(missed))

    def missed_payload(self, missed: MissedFire) -> dict[str, Any]:
        """The JSON body of a missed fire time: override this to match your webhook."""
        return {
            "text": (
                f"Schedule {missed.schedule} ({missed.task}) did not run at "
                f"{missed.fire_at:%Y-%m-%d %H:%M:%S %Z}: nothing was sent within "
                f"{missed.grace:g} s. Is celery beat running?"
            ),
            "schedule": missed.schedule,
            "task": missed.task,
            "status": "missed",
            "fire_at": missed.fire_at,
            "grace": missed.grace,
            "at": missed.detected_at,
        }

    def payload(self, event: TaskEvent) -> dict[str, Any]:
        """The JSON body: override this to match what your webhook expects."""
        return {
            "text": f"Task {event.name} {event.status}: {event.error or 'no error message'}",
            "task": event.name,
            "status": event.status,
            "broker_id": event.broker_id,
            "retries": event.retries,
            "error": event.error,
            "traceback": event.traceback[-2000:],
            "worker": event.worker,
            "at": event.timestamp,
        }

    def notify(self, event: TaskEvent) -> None:
        self.send(self.payload(event))

    def send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, cls=DjangoJSONEncoder).encode()
        # Hooks run inside the worker: the request goes out on its own thread, so a slow or
        # dead webhook never holds up the task or the worker.
        threading.Thread(target=self.post, args=(body,), daemon=True).start()

    def post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except OSError as exc:
            logger.warning("failure webhook %s did not take the message: %s", self.url, exc)
