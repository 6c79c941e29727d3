"""Browser fixtures: Playwright driving Debian's Chromium against the live test server."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from testproject import tasks as demo_tasks
from testproject.celery import app as celery_app
from tests.conftest import IN_CI

assert demo_tasks.add.name == "demo.add"  # registered on the project's app

CHROMIUM = os.environ.get("TASKS_HUB_CHROMIUM", "/usr/bin/chromium")
# Without the networking flags Chromium keeps trying to reach the internet from the sandbox.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser-pw"
#: Seconds to wait for the worker or the page: generous, for a loaded CI machine. Waiting
#: longer never makes a test pass that should fail; it only stops a slow machine from failing.
PATIENCE = 60

_FAILED = pytest.StashKey[bool]()

try:
    from playwright.sync_api import expect
except ImportError:  # the page fixture says what is missing (and fails in CI)
    expect = None


def screenshot_dir() -> Path:
    """Where failure screenshots go: ``var/`` (git-ignored) unless told otherwise."""
    return Path(os.environ.get("TASKS_HUB_SCREENSHOTS", Path(settings.VAR_DIR) / "screenshots"))


def _missing(reason: str) -> None:
    # CI must run these tests: a missing browser there is a failure, not a skip.
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


@pytest.fixture
def page(request: pytest.FixtureRequest, live_server: Any, monkeypatch: Any) -> Iterator[Any]:
    """A Chromium page whose relative URLs go to the live server; screenshots on failure."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[dev]'")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    # Playwright's sync API keeps an event loop in this thread; the test's own database
    # queries are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    assert expect is not None
    expect.set_options(timeout=PATIENCE * 1000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1440, "height": 900}
        )
        pg = context.new_page()
        pg.set_default_timeout(PATIENCE * 1000)
        try:
            yield pg
        finally:
            if request.node.stash.get(_FAILED, True):
                target = screenshot_dir()
                target.mkdir(parents=True, exist_ok=True)
                name = re.sub(r"[^\w.-]+", "_", request.node.name)
                path = target / f"{name}.png"
                pg.screenshot(path=str(path), full_page=True)
                print(f"screenshot of the failed browser test: {path}")
            context.close()
            browser.close()
            # Queries made while Playwright's loop is alive get connections of their own
            # (Django keys them by async context); close them before the database goes.
            connections.close_all()


#: The browser tests' own queue. The suite's in-process worker reads the default queue and runs
#: a threads pool, which cannot terminate a task: the prefork worker of a test must get its tasks.
#: Restarts follow, since a restart publishes with the task's recorded routing key.
BROWSER_QUEUE = "browser-tests"


def send(name: str, *args: Any, **kwargs: Any) -> Any:
    """Publish a demo task through the project's Celery app (not whichever app is current)."""
    return celery_app.tasks[name].apply_async(args, kwargs, queue=BROWSER_QUEUE)


def browser_worker(start: Any, concurrency: int = 2) -> Any:
    """A prefork ``celery worker`` process that reads only :data:`BROWSER_QUEUE`."""
    return start(
        "-P", "prefork", "-c", str(concurrency), "-Q", BROWSER_QUEUE, "-n", "browser@%h"
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _project_celery_app(settings: Any) -> None:
    # The admin (in the live server's thread) sends restarts through this app.
    settings.TASKS_HUB = {**settings.TASKS_HUB, "CELERY_APP": "testproject.celery.app"}


@pytest.fixture
def admin_user(transactional_db: Any, django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", PASSWORD)


def login(page: Any, user: Any, next_url: str = "/admin/django_tasks_hub/task/") -> None:
    """Log in through the admin's login form."""
    page.goto(f"/admin/login/?next={next_url}")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_url}")
