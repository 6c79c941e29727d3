"""The workers and queues pages: permissions for the pages and each control, what real workers
answer, a pause and resume from the page, the flag on a task no worker would take."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from django_tasks_hub import control
from django_tasks_hub.models import QueuePause, Task
from django_tasks_hub.states import TaskStatus
from tests.admin.conftest import _staff as make_staff
from tests.admin.conftest import dead_broker_app
from tests.conftest import wait_for, wait_status

WORKERS = reverse("admin:django_tasks_hub_workers")
QUEUES = reverse("admin:django_tasks_hub_queues")


def control_url(page: str, key: str, op: str) -> str:
    return reverse(f"admin:django_tasks_hub_{page}_control", args=[key, op])


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def dead_broker(settings: Any) -> None:
    settings.TASKS_HUB = {**settings.TASKS_HUB, "CELERY_APP": dead_broker_app}
    control.forget_consumed()


def test_the_pages_have_the_promised_url_names() -> None:
    assert WORKERS == "/admin/django_tasks_hub/worker/"
    assert QUEUES == "/admin/django_tasks_hub/queuepause/"


@pytest.mark.parametrize(
    ("url", "codename"), [(WORKERS, "view_worker"), (QUEUES, "view_queuepause")]
)
def test_each_page_needs_its_view_permission(
    db: Any, dead_broker: None, url: str, codename: str
) -> None:
    assert client_for(make_staff("nobody", "view_task")).get(url).status_code == 403
    response = client_for(make_staff("viewer", codename)).get(url)
    # The broker is down: the page says so, with what to do, instead of failing.
    assert response.status_code == 503
    assert b"broker could not be reached" in response.content
    assert b"try again" in response.content


@pytest.mark.parametrize(
    ("page", "op", "codename"),
    [
        ("workers", "grow", "resize_worker_pool"),
        ("workers", "shrink", "resize_worker_pool"),
        ("workers", "shutdown", "shutdown_worker"),
        ("queues", "pause", "pause_queue"),
        ("queues", "resume", "pause_queue"),
    ],
)
def test_each_control_needs_its_permission(
    db: Any, dead_broker: None, page: str, op: str, codename: str
) -> None:
    url = control_url(page, "w@host" if page == "workers" else "celery", op)
    viewer = make_staff(f"v-{op}", "view_worker", "view_queuepause")
    assert client_for(viewer).post(url).status_code == 403
    assert client_for(make_staff(f"o-{op}", codename)).get(url).status_code == 405
    if op == "resume":
        QueuePause.objects.create(queue="celery", workers=["w@host"])
    allowed_user = make_staff(f"a-{op}", codename, "view_worker", "view_queuepause")
    allowed = client_for(allowed_user).post(url, follow=True)
    # Allowed, then refused by the dead broker: the message says why, nothing changed.
    assert allowed.status_code in (200, 503)
    assert "broker could not be reached" in allowed.content.decode()
    assert QueuePause.objects.filter(queue="celery").exists() == (op == "resume")


def test_an_unknown_control_is_refused(db: Any) -> None:
    admin = make_staff("root", "view_worker", "resize_worker_pool", "shutdown_worker")
    assert client_for(admin).post(control_url("workers", "w@host", "restart")).status_code == 403


@pytest.fixture
def ops(transactional_db: Any) -> User:
    return make_staff(
        "ops",
        "view_task",
        "view_worker",
        "view_queuepause",
        "pause_queue",
        "resize_worker_pool",
        "shutdown_worker",
    )


@pytest.mark.worker
@pytest.mark.parametrize("hub", ["redis", "rabbitmq"], indirect=True)
def test_pause_and_resume_from_the_queues_page(hub: Any, ops: User) -> None:
    client = client_for(ops)
    worker = hub.start()
    page = client.get(QUEUES).content.decode()
    assert f'data-queue="{hub.queue}"' in page and worker.hostname in page
    paused = client.post(control_url("queues", hub.queue, "pause"), follow=True).content.decode()
    assert "is paused" in paused and "none (paused)" in paused
    [waiting] = hub.send()
    wait_for(lambda: control.queues() and summary_depth(hub.queue) == 1, 15, 0.2)
    assert Task.objects.get(broker_id=waiting).status == TaskStatus.PENDING
    resumed = client.post(control_url("queues", hub.queue, "resume"), follow=True)
    assert f"resumed on {worker.hostname}" in resumed.content.decode()
    wait_status(waiting, TaskStatus.DONE)


def summary_depth(name: str) -> int | None:
    return next(q.depth for q in control.queues() if q.name == name)


@pytest.mark.worker
@pytest.mark.parametrize("hub", ["redis", "rabbitmq"], indirect=True)
def test_the_workers_page_shows_a_pool_shrink(hub: Any, ops: User) -> None:
    client = client_for(ops)
    worker = hub.start("-c", "2", pool="prefork")
    [running] = hub.send(steps=40, delay=0.25)
    task = wait_status(running, TaskStatus.PROCESSING)

    def shown() -> str | None:
        page = client.get(WORKERS).content.decode()
        return page if running[:8] in page else None

    page = wait_for(shown, 15, 0.3, "the page to show the running task")
    assert worker.hostname in page and "prefork" in page
    assert reverse("admin:django_tasks_hub_task_change", args=[task.pk]) in page
    assert '<span class="th-concurrency">2</span>' in page
    shrunk = client.post(control_url("workers", worker.hostname, "shrink"), follow=True)
    assert "will shrink" in shrunk.content.decode()
    wait_for(
        lambda: '<span class="th-concurrency">1</span>' in client.get(WORKERS).content.decode(),
        20,
        0.3,
        "the page to show one process",
    )


@pytest.mark.worker
@pytest.mark.parametrize("hub", ["redis"], indirect=True)  # The same on every broker.
def test_a_threads_worker_says_why_it_cannot_resize_and_the_list_flags_a_stranded_task(
    hub: Any, ops: User
) -> None:
    client = client_for(ops)
    worker = hub.start(queues=f"{hub.queue}-other")
    page = client.get(WORKERS).content.decode()
    assert worker.hostname in page and "ThreadPoolExecutor" in page
    assert 'class="button th-shrink"' not in page
    [waiting] = hub.send()
    control.forget_consumed()
    task = Task.objects.get(broker_id=waiting)
    listing = client.get(reverse("admin:django_tasks_hub_task_changelist")).content.decode()
    assert f"no worker consumes {hub.queue}" in listing
    detail = client.get(reverse("admin:django_tasks_hub_task_change", args=[task.pk]))
    assert f"no worker consumes {hub.queue}" in detail.content.decode()
