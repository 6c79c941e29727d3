"""The workers and queues pages in Chromium at 1400 px, with real workers on Redis and
RabbitMQ: a pool shrink seen on the workers page; pausing a queue stops its tasks from
starting and resuming starts them.

Set ``TASKS_HUB_DOCS_IMG=docs/img`` to write the screenshots the documentation shows
(``workers.png``, ``queues.png``; ``*-390.png`` at phone width, not kept in docs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from django_tasks_hub.models import Task
from django_tasks_hub.states import TaskStatus
from tests.browser.conftest import PATIENCE, expect, login
from tests.conftest import wait_for, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.worker]

WIDE = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}


def _out(tmp_path: Path, hub: Any) -> Path:
    # Only one broker's pictures go to the docs: the Redis run's.
    docs = os.environ.get("TASKS_HUB_DOCS_IMG")
    return Path(docs) if docs and hub.kind == "redis" else tmp_path


@pytest.mark.parametrize("hub", ["redis", "rabbitmq"], indirect=True)
def test_shrinking_a_pool_is_seen_on_the_workers_page(
    page: Any, admin_user: Any, hub: Any, tmp_path: Path
) -> None:
    out = _out(tmp_path, hub)
    worker = hub.start("-c", "3", pool="prefork")
    running = hub.send(steps=300, delay=0.1)[0]
    wait_status(running, TaskStatus.PROCESSING, timeout=PATIENCE)
    # A threads worker on the same queue, started only once the prefork worker holds the
    # task (when both were up, CI saw the threads worker take it): the page says why its
    # pool cannot be resized.
    hub.start()
    page.set_viewport_size(WIDE)
    login(page, admin_user, "/admin/django_tasks_hub/worker/")
    row = page.locator(f'tr[data-hostname="{worker.hostname}"]')
    expect(row.locator(".th-concurrency")).to_have_text("3")
    task = Task.objects.get(broker_id=running)
    expect(row.locator(".th-running a")).to_have_attribute(
        "href", f"/admin/django_tasks_hub/task/{task.pk}/change/"
    )
    expect(page.locator(".th-not-resizable").first).to_contain_text("ThreadPoolExecutor")
    page.screenshot(path=str(out / "workers.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(out / "workers-390.png"), full_page=True)
    page.set_viewport_size(WIDE)

    row.locator("button.th-shrink").click()
    expect(page.locator(".messagelist")).to_contain_text("will shrink")
    deadline = time.monotonic() + PATIENCE
    concurrency = page.locator(f'tr[data-hostname="{worker.hostname}"] .th-concurrency')
    while concurrency.inner_text() != "2":
        assert time.monotonic() < deadline, "the workers page never showed the smaller pool"
        page.wait_for_timeout(500)
        page.reload()


@pytest.mark.parametrize("hub", ["redis", "rabbitmq"], indirect=True)
def test_pausing_a_queue_stops_its_tasks_and_resuming_starts_them(
    page: Any, admin_user: Any, hub: Any, tmp_path: Path
) -> None:
    out = _out(tmp_path, hub)
    worker = hub.start()
    page.set_viewport_size(WIDE)
    login(page, admin_user, "/admin/django_tasks_hub/queuepause/")
    row = page.locator(f'tr[data-queue="{hub.queue}"]')
    expect(row.locator(".th-consumers")).to_contain_text(worker.hostname)
    row.locator("button.th-pause").click()
    expect(page.locator(".messagelist")).to_contain_text("is paused")
    ids = hub.send(3)
    page.reload()
    expect(row.locator(".th-depth")).to_contain_text("3")
    expect(row.locator(".th-age")).not_to_have_text("—")
    time.sleep(2)  # Long enough for a consuming worker to have started them.
    assert set(Task.objects.filter(broker_id__in=ids).values_list("status", flat=True)) == {
        TaskStatus.PENDING
    }
    page.screenshot(path=str(out / "queues.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(out / "queues-390.png"), full_page=True)
    page.set_viewport_size(WIDE)
    row.locator("button.th-resume").click()
    expect(page.locator(".messagelist")).to_contain_text(f"resumed on {worker.hostname}")
    for broker_id in ids:
        wait_status(broker_id, TaskStatus.DONE, timeout=PATIENCE)
    wait_for(lambda: not Task.objects.filter(broker_id__in=ids).exclude(status="done").exists())
