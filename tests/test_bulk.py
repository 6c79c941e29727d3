"""Bulk by filter (services.start_bulk / run_bulk / resume_bulk): claims, cursor, real workers."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from typing import Any

import pytest
from django.db.models import Count
from django.test import override_settings
from django.utils import timezone

from django_tasks_hub import services
from django_tasks_hub.exceptions import BulkFilterError, BulkJobNotResumable
from django_tasks_hub.models import BulkJob, BulkJobItem, BulkJobStatus, Task, TaskRun
from django_tasks_hub.states import RunTrigger, TaskStatus
from tests.api.conftest import make_user
from tests.conftest import bulk_jobs_routed_to, purge_queue, wait_for

#: A queue no worker reads: the restarted tasks wait there, so only the job itself runs.
SINK = "tasks-hub-bulk-sink"
#: The queue a test's own subprocess worker reads, so the job runs there and nowhere else (the
#: in-process session worker, once an earlier test started it, also reads "celery").
JOB_QUEUE = "tasks-hub-bulk-jobs"


def make_tasks(count: int, status: str = TaskStatus.FAILED, name: str = "demo.fail") -> list[Task]:
    """``count`` ended tasks of ``name``, each with its one run, routed to the sink queue."""
    now = timezone.now()
    tasks = []
    for _ in range(count):
        broker_id = str(uuid.uuid4())
        tasks.append(
            Task(
                id=uuid.UUID(broker_id),
                name=name,
                status=status,
                broker_id=broker_id,
                attempts=1,
                options={"routing_key": SINK},
                created_at=now,
                finished_at=now,
            )
        )
    Task.objects.bulk_create(tasks, batch_size=500)
    TaskRun.objects.bulk_create(
        [TaskRun(task=t, name=t.name, broker_id=t.broker_id, status=status) for t in tasks],
        batch_size=500,
    )
    return tasks


def restarts_per_task(names: str = "demo.fail") -> Counter[int]:
    """How many tasks were restarted how many times: ``{1: 2000}`` means each once."""
    per_task = (
        TaskRun.objects.filter(trigger=RunTrigger.RESTART, name=names)
        .values("task_id")
        .annotate(n=Count("id"))
    )
    counts: Counter[int] = Counter(row["n"] for row in per_task)
    restarted = {row["task_id"] for row in per_task}
    counts[0] = Task.objects.filter(name=names).exclude(pk__in=restarted).count()
    return counts


def purge_sink() -> None:
    purge_queue(SINK)


@pytest.fixture
def sink() -> Any:
    purge_sink()
    yield SINK
    purge_sink()


@pytest.fixture
def job_queue() -> Any:
    """The hub's bulk task goes to :data:`JOB_QUEUE`, which the test's own worker reads."""
    with bulk_jobs_routed_to(JOB_QUEUE) as queue:
        yield queue


# -- the filter -------------------------------------------------------------------------------


def test_a_filter_that_narrows_nothing_is_refused_unless_all_is_asked_for() -> None:
    with pytest.raises(BulkFilterError, match="all=true"):
        services.clean_bulk_filter({"status": [], "name": ""})
    assert services.clean_bulk_filter({"name": ""}, all_tasks=True) == {}


def test_an_unknown_filter_or_status_is_refused_with_what_to_use() -> None:
    with pytest.raises(BulkFilterError, match="worker cannot narrow"):
        services.clean_bulk_filter({"worker": "w1"})
    with pytest.raises(BulkFilterError, match="Unknown status nope"):
        services.clean_bulk_filter({"status": ["failed", "nope"]})


@pytest.mark.django_db
def test_the_spec_matches_what_the_list_filters_match() -> None:
    failed = make_tasks(3)
    make_tasks(2, status=TaskStatus.DONE)
    make_tasks(1, name="demo.add")
    matching = Task.objects.matching
    assert matching({"status": ["failed"], "name": "demo.fail"}).count() == 3
    assert matching({"q": "DEMO.F"}).count() == 5
    assert matching({"q": str(failed[0].pk)}).get() == failed[0]
    assert matching({"q": failed[1].broker_id}).get() == failed[1]
    later = (timezone.now() + timezone.timedelta(seconds=5)).isoformat()
    assert matching({"created_before": later, "status": ["done"]}).count() == 2
    assert matching({"created_after": later}).count() == 0


# -- in the request ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_small_set_is_done_in_the_request_with_a_record_of_who_and_what(sink: str) -> None:
    user = make_user("ops")
    make_tasks(5)
    make_tasks(2, status=TaskStatus.PROCESSING)
    job = services.start_bulk("restart", {"name": "demo.fail"}, user, description="demo.fail")
    assert not job.background
    assert job.status == BulkJobStatus.DONE
    assert (job.total, job.processed, job.succeeded, job.skipped) == (7, 7, 5, 2)
    assert job.skip_reasons == {"processing": 2}
    assert job.created_by_id == user.pk
    assert job.items.filter(outcome="done").count() == 5
    assert restarts_per_task() == Counter({1: 5, 0: 2})
    # The restart's runs name the user, as a one-by-one restart does.
    assert set(TaskRun.objects.filter(trigger=RunTrigger.RESTART).values_list(
        "triggered_by_id", flat=True
    )) == {user.pk}  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_cancel_all_matching_cancels_the_active_ones_and_says_why_it_skipped_the_rest(
    sink: str,
) -> None:
    make_tasks(3, status=TaskStatus.PENDING)
    make_tasks(1, status=TaskStatus.DONE)
    job = services.start_bulk("cancel", {"name": "demo.fail"})
    assert (job.succeeded, job.skipped, job.skip_reasons) == (3, 1, {"done": 1})
    assert Task.objects.filter(status=TaskStatus.CANCELED).count() == 3


@pytest.mark.django_db(transaction=True)
def test_running_a_job_again_touches_no_task_twice(sink: str) -> None:
    make_tasks(30)
    with override_settings(TASKS_HUB={"BULK_CHUNK_SIZE": 7}):
        job = services.start_bulk("restart", {"status": ["failed"]})
        # The restarted tasks are pending now; make them fail again, so the filter matches
        # them once more, and run the job as a retry would.
        Task.objects.update(status=TaskStatus.FAILED)
        BulkJob.objects.filter(pk=job.pk).update(finished_at=None, status="running", cursor="")
        again = services.run_bulk(job.pk)
    assert again.status == BulkJobStatus.DONE
    assert restarts_per_task() == Counter({1: 30, 0: 0})


@pytest.mark.django_db(transaction=True)
def test_a_claim_left_open_by_a_dead_runner_is_resolved_without_a_second_restart(
    sink: str,
) -> None:
    tasks = make_tasks(4)
    job = BulkJob.objects.create(action="restart", filters={"status": ["failed"]}, total=4)
    # A runner died after restarting the first two and before committing their outcomes;
    # it had claimed all four.
    for task in tasks:
        BulkJobItem.objects.create(job=job, task_id=task.pk, before=task.broker_id)
    for task in tasks[:2]:
        services.restart(task.pk)
    done = services.run_bulk(job.pk)
    assert (done.processed, done.succeeded, done.status) == (4, 4, BulkJobStatus.DONE)
    assert restarts_per_task() == Counter({1: 4, 0: 0})


@pytest.mark.django_db(transaction=True)
def test_a_job_held_by_a_live_runner_is_not_resumed_nor_run_twice(sink: str) -> None:
    make_tasks(3)
    job = BulkJob.objects.create(
        action="restart",
        filters={"status": ["failed"]},
        total=3,
        status="running",
        lease_owner="someone",
        lease_expires=timezone.now() + timezone.timedelta(minutes=1),
    )
    with pytest.raises(BulkJobNotResumable, match="still running"):
        services.resume_bulk(job)
    assert services.run_bulk(job.pk).processed == 0
    assert restarts_per_task()[1] == 0
    BulkJob.objects.filter(pk=job.pk).update(lease_expires=timezone.now())
    assert services.resume_bulk(job).status == BulkJobStatus.DONE
    assert restarts_per_task() == Counter({1: 3, 0: 0})
    with pytest.raises(BulkJobNotResumable, match="done"):
        services.resume_bulk(job)


@pytest.mark.django_db
def test_a_job_deleted_before_a_worker_took_it_ends_without_retrying() -> None:
    from django_tasks_hub.tasks import run_bulk_job

    gone = BulkJob.objects.create(action="restart", filters={"status": ["failed"]}, total=1)
    gone.delete()
    result = run_bulk_job.apply(args=[gone.pk])
    # Retrying would find the job no more than this attempt did (before: five retries, 5 s
    # apart, each "BulkJob matching query does not exist").
    assert result.state == "SUCCESS", result.traceback
    assert result.result == {"job": gone.pk, "status": "deleted"}


# -- in the background, with real workers -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.timeout(420)
def test_restart_by_filter_of_2000_failed_tasks_runs_in_the_background_each_once(
    subprocess_worker: Any, sink: str
) -> None:
    make_tasks(2000)
    subprocess_worker("--pool=solo", "-Q", "celery")
    job = services.start_bulk("restart", {"status": ["failed"], "name": "demo.fail"})
    assert job.background and job.total == 2000
    job = wait_for(
        lambda: BulkJob.objects.filter(pk=job.pk, status=BulkJobStatus.DONE).first(),
        timeout=360,
        interval=0.5,
        what="the bulk job to end",
    )
    assert (job.processed, job.succeeded, job.skipped) == (2000, 2000, 0)
    assert restarts_per_task() == Counter({1: 2000, 0: 0})


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.timeout(300)
def test_killing_the_jobs_worker_mid_way_and_resuming_restarts_none_twice(
    subprocess_worker: Any, sink: str, job_queue: str, session_worker: Any
) -> None:
    make_tasks(600)
    env = {"TASKS_HUB_JSON": json.dumps({"BULK_CHUNK_SIZE": 20, "BULK_LEASE_SECONDS": 2})}
    # Only the worker killed below may run the job: were another one to take it, the job
    # would go on and never stall. The session worker runs beside it on "celery", as it does
    # whenever an earlier test started it, so the test shows the route keeps the job apart.
    first = subprocess_worker("--pool=solo", "-Q", job_queue, env=env)
    job = services.start_bulk("restart", {"status": ["failed"]})
    wait_for(
        lambda: BulkJob.objects.filter(pk=job.pk, processed__gte=100).exists(),
        timeout=120,
        interval=0.05,
        what="the job to be on its way",
    )
    first.stop(signal.SIGKILL)
    job.refresh_from_db()
    assert job.status == BulkJobStatus.RUNNING and job.processed < 600, "killed too late"
    restarted_before = restarts_per_task()[1]
    # Its lease runs out; a resume sends it to a new worker, which goes on from the cursor.
    wait_for(lambda: BulkJob.objects.get(pk=job.pk).is_stalled(), timeout=30, what="stall")
    subprocess_worker("--pool=solo", "-Q", job_queue, env=env)
    services.resume_bulk(job.pk)
    job = wait_for(
        lambda: BulkJob.objects.filter(pk=job.pk, status=BulkJobStatus.DONE).first(),
        timeout=150,
        interval=0.5,
        what="the resumed job to end",
    )
    assert restarted_before >= 100
    assert restarts_per_task() == Counter({1: 600, 0: 0})
    assert (job.processed, job.succeeded) == (600, 600)


@pytest.mark.django_db(transaction=True)
def test_a_job_stopped_by_a_broker_outage_is_resumed_where_it_stopped(sink: str) -> None:
    tasks = make_tasks(4)
    job = BulkJob.objects.create(action="restart", filters={"status": ["failed"]}, total=4)
    BulkJobItem.objects.create(
        job=job, task_id=tasks[0].pk, before=tasks[0].broker_id, outcome="done"
    )
    BulkJob.objects.filter(pk=job.pk).update(
        status=BulkJobStatus.FAILED,
        finished_at=timezone.now(),
        processed=1,
        succeeded=1,
        error="The broker could not be reached",
    )
    job.refresh_from_db()
    assert job.is_resumable
    done = services.resume_bulk(job)
    assert (done.status, done.processed, done.succeeded, done.error) == ("done", 4, 4, "")
    # The one its first attempt did is not done again.
    assert restarts_per_task() == Counter({1: 3, 0: 1})


@pytest.mark.django_db(transaction=True)
def test_a_broker_outage_stops_the_job_failed_and_a_resume_finishes_it(sink: str) -> None:
    from tests.api.conftest import dead_broker_app

    make_tasks(3)
    with override_settings(TASKS_HUB={"CELERY_APP": dead_broker_app}):
        job = services.start_bulk("restart", {"status": ["failed"]})
    assert job.status == BulkJobStatus.FAILED and "broker" in job.error
    assert job.succeeded == 0 and job.items.filter(outcome="").count() == 3
    # Nothing left pending that the broker never got: the tasks are failed as they were.
    assert Task.objects.filter(status=TaskStatus.FAILED).count() == 3
    done = services.resume_bulk(job)
    assert (done.status, done.succeeded) == (BulkJobStatus.DONE, 3)
    sent = TaskRun.objects.filter(trigger=RunTrigger.RESTART).exclude(status=TaskStatus.FAILED)
    assert sorted(Counter(sent.values_list("task_id", flat=True)).values()) == [1, 1, 1]
