"""Live pages (static/django_tasks_hub/live.js): the list and the task page follow a running
task with no reload, a switch pauses them, and a hidden tab makes no request."""

from __future__ import annotations

import time
from typing import Any

import pytest

from django_tasks_hub.models import Task
from tests.browser.conftest import PATIENCE, browser_worker, expect, login, send
from tests.conftest import wait_status

pytestmark = [pytest.mark.browser, pytest.mark.worker]

LIST = "/admin/django_tasks_hub/task/"
#: A change must show within this many milliseconds (the issue's 5 s).
WITHIN_MS = 5000


def mark_page(page: Any) -> None:
    """A JS marker that a reload would lose."""
    page.evaluate("window.__thMarker = 'kept'")


def not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__thMarker") == "kept"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.evaluate("window.tasksHubLive.polls") > 0


def requests_to(page: Any, path: str) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if path in r.url else None)
    return seen


def until(page: Any, predicate: Any, seconds: float, what: str) -> None:
    """Wait with Playwright's clock: its events (the requests seen) are handled meanwhile."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        page.wait_for_timeout(100)


def set_visibility(page: Any, state: str) -> None:
    # Headless Chromium has no window to hide: the page is told what a hidden tab is told.
    page.evaluate(
        """state => {
            const define = (name, value) =>
                Object.defineProperty(document, name, {value: value, configurable: true});
            define('visibilityState', state);
            define('hidden', state === 'hidden');
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        state,
    )


def test_the_list_shows_a_task_move_from_processing_to_done_with_no_reload(
    page: Any, admin_user: Any, subprocess_worker: Any
) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    browser_worker(subprocess_worker)
    running = send("demo.long", steps=16, delay=0.5)
    wait_status(running.id, "processing", timeout=PATIENCE)
    login(page, admin_user)
    row = page.locator("#result_list tbody tr", has=page.locator(f"a[href*='{running.id}']"))
    expect(row.locator(".th-badge--processing")).to_be_visible()
    mark_page(page)
    # The progress moves in place while it runs...
    first = row.locator(".th-progress__text").inner_text()
    expect(row.locator(".th-progress__text")).not_to_have_text(first, timeout=WITHIN_MS)
    # ...and the end shows within 5 s of the row saying so.
    wait_status(running.id, "done", timeout=PATIENCE)
    expect(row.locator(".th-badge--done")).to_be_visible(timeout=WITHIN_MS)
    not_reloaded(page)
    assert page.locator(".th-live__switch").inner_text() == "Live: on"


def test_the_task_page_follows_status_progress_and_runs(
    page: Any, admin_user: Any, subprocess_worker: Any
) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    browser_worker(subprocess_worker)
    running = send("demo.long", steps=12, delay=0.5)
    wait_status(running.id, "processing", timeout=PATIENCE)
    login(page, admin_user, f"{LIST}{running.id}/change/")
    status = page.locator(".field-status_badge .readonly")
    expect(status.locator(".th-badge--processing")).to_be_visible()
    mark_page(page)
    expect(page.locator(".th-runs .th-badge--processing")).to_be_visible()
    wait_status(running.id, "done", timeout=PATIENCE)
    expect(status.locator(".th-badge--done")).to_be_visible(timeout=WITHIN_MS)
    expect(page.locator(".th-runs .th-badge--done")).to_be_visible(timeout=WITHIN_MS)
    # The Restart button appears with the end, in the same page.
    expect(page.locator("button[name=restart]")).to_be_visible(timeout=WITHIN_MS)
    not_reloaded(page)


def test_the_switch_pauses_and_a_hidden_tab_makes_no_request(
    page: Any, admin_user: Any, transactional_db: Any
) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    login(page, admin_user)
    seen = requests_to(page, LIST)
    until(page, lambda: len(seen) >= 1, 10, "a first poll")

    set_visibility(page, "hidden")
    page.wait_for_timeout(500)  # a poll already on its way may land
    count = len(seen)
    page.wait_for_timeout(5000)  # two and a half periods
    assert len(seen) == count, "requests were made while the tab was hidden"
    set_visibility(page, "visible")
    until(page, lambda: len(seen) > count, 2, "a poll as soon as it is shown")

    page.click(".th-live__switch")
    expect(page.locator(".th-live__switch")).to_have_text("Live: paused")
    page.wait_for_timeout(500)
    count = len(seen)
    page.wait_for_timeout(5000)
    assert len(seen) == count, "requests were made while paused"
    # The choice outlives the page: a reload stays paused.
    page.reload()
    expect(page.locator(".th-live__switch")).to_have_text("Live: paused")
    page.click(".th-live__switch")
    until(page, lambda: len(seen) > count + 1, 3, "polling again after resume")


def test_ticked_rows_hold_the_list(page: Any, admin_user: Any, transactional_db: Any) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    task = Task.objects.create(name="demo.add", broker_id="live-hold", status="pending")
    login(page, admin_user)
    row = page.locator("#result_list tbody tr").first
    row.locator("input.action-select").check()
    Task.objects.filter(pk=task.pk).update(name="demo.renamed")
    polls = page.evaluate("window.tasksHubLive.polls")
    until(page, lambda: page.evaluate("window.tasksHubLive.polls") >= polls + 2, 10, "polls")
    # Still the old row, still ticked: an action must apply to what the user ticked.
    expect(row).to_contain_text("demo.add")
    assert row.locator("input.action-select").is_checked()
    row.locator("input.action-select").uncheck()
    expect(row).to_contain_text("demo.renamed", timeout=WITHIN_MS)
