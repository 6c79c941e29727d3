"""``workers/`` and ``queues/``: permissions for reading and for each control, the answers of
real workers on the run's broker, and a 503 with a message when the broker is down."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from django_tasks_hub.models import QueuePause, Task
from django_tasks_hub.states import TaskStatus
from tests.api.conftest import client_for, dead_broker_app, make_user
from tests.conftest import wait_for, wait_status

API = "/api"


@pytest.fixture
def dead_broker(settings: Any) -> None:
    settings.TASKS_HUB = {**settings.TASKS_HUB, "CELERY_APP": dead_broker_app}


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/workers/"),
        ("post", "/workers/w@host/grow/"),
        ("post", "/workers/w@host/shrink/"),
        ("post", "/workers/w@host/shutdown/"),
        ("get", "/queues/"),
        ("post", "/queues/celery/pause/"),
        ("post", "/queues/celery/resume/"),
    ],
)
def test_each_route_needs_its_permission(db: Any, method: str, url: str) -> None:
    anonymous = getattr(Client(), method)(API + url)
    assert anonymous.status_code in (401, 403)
    # view_task is not enough: each route has its own permission.
    user = make_user(f"u-{method}-{url.replace('/', '-')}", "view_task")
    response = getattr(client_for(user), method)(API + url)
    assert response.status_code == 403
    assert "permission" in response.json()["detail"]


@pytest.mark.parametrize(
    ("codename", "url"),
    [
        ("view_worker", "/workers/"),
        ("resize_worker_pool", "/workers/nobody@nowhere/grow/"),
        ("resize_worker_pool", "/workers/nobody@nowhere/shrink/"),
        ("shutdown_worker", "/workers/nobody@nowhere/shutdown/"),
        ("view_queuepause", "/queues/"),
        ("pause_queue", "/queues/celery/resume/"),
    ],
)
def test_with_the_permission_the_broker_being_down_is_a_503(
    db: Any, dead_broker: None, codename: str, url: str
) -> None:
    user = make_user(f"p-{codename}-{url.replace('/', '-')}", codename)
    method = "get" if url.endswith("s/") else "post"
    if codename == "pause_queue":
        QueuePause.objects.create(queue="celery", workers=["w@host"])
    response = getattr(client_for(user), method)(API + url)
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "broker_unavailable"
    assert "broker" in body["detail"] and "try again" in body["detail"]


def test_pause_on_a_dead_broker_pauses_nothing(db: Any, dead_broker: None) -> None:
    user = make_user("pauser", "pause_queue")
    response = client_for(user).post(f"{API}/queues/celery/pause/")
    assert response.status_code == 503
    assert not QueuePause.objects.exists()


@pytest.fixture
def ops(transactional_db: Any) -> User:
    return make_user(
        "ops",
        "view_worker",
        "view_queuepause",
        "pause_queue",
        "resize_worker_pool",
        "shutdown_worker",
    )


@pytest.mark.worker
@pytest.mark.parametrize("hub", ["redis", "rabbitmq"], indirect=True)
def test_queues_api_pause_and_resume(hub: Any, ops: User) -> None:
    client = client_for(ops)
    worker = hub.start()
    paused = client.post(f"{API}/queues/{hub.queue}/pause/")
    assert paused.status_code == 200, paused.content
    assert paused.json()["paused"] is True
    assert paused.json()["paused_workers"] == [worker.hostname]
    again = client.post(f"{API}/queues/{hub.queue}/pause/")
    assert again.status_code == 409 and "Resume it first" in again.json()["detail"]
    [waiting] = hub.send()

    def listed() -> Any:
        items = {q["name"]: q for q in client.get(f"{API}/queues/").json()}
        item = items.get(hub.queue)
        return item if item and item["depth"] == 1 else None

    item = wait_for(listed, 15, 0.2, "the queue to list one waiting message")
    assert item["consumers"] == [] and item["paused"] is True
    assert item["oldest_age"] is not None
    assert Task.objects.get(broker_id=waiting).status == TaskStatus.PENDING
    resumed = client.post(f"{API}/queues/{hub.queue}/resume/")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    wait_status(waiting, TaskStatus.DONE)
    workers = {w["hostname"]: w for w in client.get(f"{API}/workers/").json()}
    me = workers[worker.hostname]
    assert me["answering"] is True and me["queues"] == [hub.queue]
    assert {"hostname", "active", "queues", "last_seen"} <= set(me)
    refused = client.post(f"{API}/workers/{worker.hostname}/grow/", {"n": 1})
    assert refused.status_code == 409 and "threads pool" in refused.json()["detail"]


@pytest.mark.worker
@pytest.mark.parametrize("hub", ["redis"], indirect=True)  # The same on every broker.
def test_unknown_queue_and_worker_are_404(hub: Any, ops: User) -> None:
    client = client_for(ops)
    missing = client.post(f"{API}/queues/no-such-queue/pause/")
    assert missing.status_code == 404 and "queues page" in missing.json()["detail"]
    nobody = client.post(f"{API}/workers/nobody@nowhere/shutdown/")
    assert nobody.status_code == 404 and "did not answer" in nobody.json()["detail"]
    not_paused = client.post(f"{API}/queues/{hub.queue}/resume/")
    assert not_paused.status_code == 409
