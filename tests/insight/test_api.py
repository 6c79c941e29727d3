"""``GET stats/`` and ``GET metrics``: the numbers match the rows, and who may read them."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery
from django.contrib.auth.models import Permission, User
from django.db.models import Count
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from django_tasks_hub import broker
from django_tasks_hub.models import Task, TaskRun
from testproject.celery import app as celery_app
from tests.conftest import wait_status


def client_for(user: User | None, **headers: str) -> Client:
    client = Client(headers=headers)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def viewer(db: Any) -> User:
    user = User.objects.create(username="viewer")
    user.user_permissions.set(Permission.objects.filter(codename="view_task"))
    return user


@pytest.fixture
def stranger(db: Any) -> User:
    """Signed in, without the view permission."""
    return User.objects.create(username="stranger")


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_stats_match_the_rows(make_run: Callable[..., TaskRun], viewer: User) -> None:
    for _ in range(3):
        make_run("demo.add", "done", runtime=0.3, wait=2.0)
    make_run("demo.add", "failed", runtime=0.3, wait=2.0, error="ValueError: no")
    make_run("demo.fail", "failed", runtime=0.01, wait=0.1, error="ValueError: no")
    make_run("demo.fail", "pending")
    response = client_for(viewer).get("/api/stats/")
    assert response.status_code == 200, response.content
    data = response.json()
    rows = dict(Task.objects.values_list("status").annotate(n=Count("id")))
    assert {k: v for k, v in data["statuses"].items() if v} == rows
    assert len(data["per_minute"]) == 60 and len(data["per_hour"]) == 24
    assert sum(p["ended"] for p in data["per_minute"]) == 5
    assert sum(p["failed"] for p in data["per_hour"]) == 2
    names = {n["name"]: n for n in data["names"]}
    assert names["demo.add"]["runs"] == 4 and names["demo.add"]["failed"] == 1
    assert names["demo.add"]["failure_rate"] == 0.25
    assert 0.25 < names["demo.add"]["p50_runtime"] <= 0.5  # Within its bucket (0.25, 0.5].
    assert 1.0 < names["demo.add"]["p95_wait"] <= 2.5
    assert names["demo.fail"]["last_failure_at"]
    assert data["errors"][0] == {
        "error": "ValueError: no",
        "type": "ValueError",
        "message": "no",
        "count": 2,
        "last_seen": data["errors"][0]["last_seen"],
    }


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_stats_need_the_view_permission(who: str, stranger: User) -> None:
    response = client_for(None if who == "anonymous" else stranger).get("/api/stats/")
    assert response.status_code in (401, 403)
    assert "view_task" in response.json()["detail"] or who == "anonymous"


def test_metrics_match_the_rows(make_run: Callable[..., TaskRun], viewer: User) -> None:
    make_run("demo.add", "done", runtime=0.3, wait=2.0)
    make_run("demo.add", "done", runtime=12.0, wait=0.02)
    make_run("demo.fail", "failed", runtime=0.01, error="ValueError: no")
    make_run("demo.fail", "pending")
    response = client_for(viewer).get("/api/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    metrics = families(response.content.decode())
    tasks = {
        (s.labels["name"], s.labels["status"]): s.value for s in metrics["tasks_hub_tasks"].samples
    }
    rows = Counter(Task.objects.values_list("name", "status"))
    assert tasks == {key: float(n) for key, n in rows.items()}
    runtime = list(metrics["tasks_hub_run_runtime_seconds"].samples)
    count = {s.labels["name"]: s.value for s in runtime if s.name.endswith("_count")}
    ended = Counter(
        TaskRun.objects.filter(finished_at__isnull=False).values_list("name", flat=True)
    )
    assert count == {name: float(n) for name, n in ended.items()}
    le_1 = {
        s.labels["name"]: s.value
        for s in runtime
        if s.name.endswith("_bucket") and s.labels["le"] == "1.0"
    }
    assert le_1 == {"demo.add": 1.0, "demo.fail": 1.0}
    total = {s.labels["name"]: s.value for s in runtime if s.name.endswith("_sum")}
    assert total["demo.add"] == pytest.approx(12.3)
    failed = {s.labels["name"]: s.value for s in metrics["tasks_hub_runs_failed"].samples}
    assert failed == {"demo.add": 0.0, "demo.fail": 1.0}
    assert metrics["tasks_hub_oldest_pending_age_seconds"].samples[0].value >= 0
    assert metrics["tasks_hub_broker_up"].samples[0].value == 1.0
    depth = {s.labels["queue"] for s in metrics["tasks_hub_queue_depth"].samples}
    assert depth == set(broker.configured_queues())
    assert "tasks_hub_workers_up" in metrics


def test_metrics_count_the_workers_whose_heartbeat_is_recent(viewer: User) -> None:
    """From the heartbeats, not a ping that waits its whole timeout: a worker beating now
    counts; one silent for three beats, or stopped, does not."""
    from datetime import timedelta

    from django.utils import timezone

    from django_tasks_hub.conf import hub_settings
    from django_tasks_hub.models import Worker

    beat = timedelta(seconds=float(hub_settings.WORKER_HEARTBEAT_SECONDS))
    now = timezone.now()
    Worker.objects.create(hostname="beating@h", last_seen=now)
    Worker.objects.create(hostname="late@h", last_seen=now - beat * 1.5)
    Worker.objects.create(hostname="silent@h", last_seen=now - beat * 3)
    Worker.objects.create(hostname="stopped@h", last_seen=now, stopped_at=now)
    metrics = families(client_for(viewer).get("/api/metrics").content.decode())
    assert metrics["tasks_hub_workers_up"].samples[0].value == 2.0


def test_metrics_take_the_bearer_token(db: Any, settings: Any) -> None:
    settings.TASKS_HUB = {**getattr(settings, "TASKS_HUB", {}), "METRICS_TOKEN": "s3cret"}
    assert client_for(None, authorization="Bearer s3cret").get("/api/metrics").status_code == 200
    wrong = client_for(None, authorization="Bearer nope").get("/api/metrics")
    assert wrong.status_code in (401, 403)
    assert "METRICS_TOKEN" in wrong.json()["detail"]


def test_metrics_refuse_without_token_or_permission(stranger: User) -> None:
    assert client_for(None).get("/api/metrics").status_code in (401, 403)
    refused = client_for(stranger).get("/api/metrics")
    assert refused.status_code == 403
    assert "view_task" in refused.json()["detail"]


def test_metrics_with_the_broker_down(db: Any, viewer: User, settings: Any) -> None:
    """The database's figures still come; the broker's say it did not answer."""
    dead = Celery("i15a-dead", set_as_current=False)
    dead.conf.broker_write_url = dead.conf.broker_read_url = "redis://127.0.0.1:1/0"
    dead.conf.broker_transport_options = {"socket_connect_timeout": 1}
    settings.TASKS_HUB = {**getattr(settings, "TASKS_HUB", {}), "CELERY_APP": dead}
    response = client_for(viewer).get("/api/metrics")
    assert response.status_code == 200
    metrics = families(response.content.decode())
    assert metrics["tasks_hub_broker_up"].samples[0].value == 0.0
    assert "tasks_hub_queue_depth" not in metrics and "tasks_hub_tasks" in metrics


def _depth_of_published(app: Any, settings: Any, n: int) -> int | None:
    settings.TASKS_HUB = {**getattr(settings, "TASKS_HUB", {}), "CELERY_APP": app}
    queue = f"tasks-hub-i15a-depth-{uuid.uuid4().hex[:8]}"
    with app.connection_for_write() as conn:
        try:
            for _ in range(n):
                app.send_task("demo.add", args=(1, 2), queue=queue, connection=conn)
            return broker.queue_depths([queue])[queue]
        finally:
            with conn.channel() as channel:
                channel.queue_delete(queue)


def test_queue_depth_from_the_broker(db: Any, settings: Any) -> None:
    """Redis or the folder broker (whichever the run uses): the messages published."""
    assert _depth_of_published(celery_app, settings, 3) == 3


def test_queue_depth_from_rabbitmq(db: Any, settings: Any, rabbitmq_url: str) -> None:
    app = Celery("i15a-amqp", set_as_current=False)
    app.conf.broker_write_url = app.conf.broker_read_url = rabbitmq_url
    app.conf.task_create_missing_queues = True
    assert _depth_of_published(app, settings, 2) == 2
    assert broker.queue_depths(["tasks-hub-i15a-no-such-queue"]) == {
        "tasks-hub-i15a-no-such-queue": None
    }


@pytest.mark.worker
def test_stats_of_tasks_a_real_worker_ran(worker: Any, viewer: User) -> None:
    """End to end: a real worker runs tasks, the recorder writes them, the stats count them."""
    done = [celery_app.send_task("demo.add", args=(i, 1)) for i in range(3)]
    failed = [celery_app.send_task("demo.fail", kwargs={"message": "nope"}) for _ in range(2)]
    for result in done:
        wait_status(result.id, "done")
    for result in failed:
        wait_status(result.id, "failed")
    data = client_for(viewer).get("/api/stats/").json()
    names = {n["name"]: n for n in data["names"]}
    assert (names["demo.add"]["runs"], names["demo.add"]["failed"]) == (3, 0)
    assert (names["demo.fail"]["runs"], names["demo.fail"]["failed"]) == (2, 2)
    assert names["demo.add"]["p95_runtime"] is not None
    assert data["statuses"]["done"] == Task.objects.filter(status="done").count()
    assert data["errors"][0]["count"] == 2 and data["errors"][0]["message"].startswith("nope")
