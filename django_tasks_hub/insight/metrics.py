"""The Prometheus exposition: task counts, runtime and wait histograms, queues and workers.

Built from the rollups (folded first) and two broker questions, in ``prometheus_client``'s
text format. The histograms and counters are the all-time rollups: they only grow, as
Prometheus expects of them, and survive ``prune``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from django.db import connections

from django_tasks_hub import broker
from django_tasks_hub.conf import hub_settings
from django_tasks_hub.insight import rollups
from django_tasks_hub.models import (
    HISTOGRAM_BOUNDS,
    RUNTIME_COLUMNS,
    WAIT_COLUMNS,
    RunRollup,
    TaskCount,
    TaskRun,
    Worker,
)
from django_tasks_hub.states import TaskStatus

logger = logging.getLogger(__name__)

#: The metric families a scrape carries (the names the Grafana dashboard may use).
METRIC_NAMES: tuple[str, ...] = (
    "tasks_hub_tasks",
    "tasks_hub_runs_ended",
    "tasks_hub_runs_failed",
    "tasks_hub_run_runtime_seconds",
    "tasks_hub_run_wait_seconds",
    "tasks_hub_oldest_pending_age_seconds",
    "tasks_hub_queue_depth",
    "tasks_hub_workers_up",
    "tasks_hub_broker_up",
)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _cumulative(row: RunRollup, columns: tuple[str, ...]) -> list[tuple[str, float]]:
    total = 0
    buckets = []
    for column, bound in zip(columns, HISTOGRAM_BOUNDS, strict=True):
        total += max(int(getattr(row, column)), 0)
        buckets.append((_le(bound), float(total)))
    return buckets


def oldest_pending_age(using: str = "default") -> float | None:
    """Seconds since the oldest pending run was queued, or ``None`` when none waits.

    The oldest by id, from the ``(status, id)`` index: one index probe, not a scan (ids are
    given in publish order, so the lowest pending id is the longest waiting, give or take a
    clock).
    """
    run = (
        TaskRun.objects.using(using)
        .filter(status=TaskStatus.PENDING, queued_at__isnull=False)
        .order_by("id")
        .values_list("queued_at", flat=True)
        .first()
    )
    return None if run is None else max(time.time() - run.timestamp(), 0.0)


class HubCollector:
    """A ``prometheus_client`` collector reading the hub at each scrape."""

    def __init__(self, using: str = "default", *, ask_broker: bool = True) -> None:
        self.using = using
        self.ask_broker = ask_broker

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        rollups.fold(self.using)
        tasks = GaugeMetricFamily(
            "tasks_hub_tasks", "Tasks in each status now.", labels=["status", "name"]
        )
        for count in TaskCount.objects.using(self.using).filter(count__gt=0).order_by("name"):
            tasks.add_metric([count.status, count.name], float(count.count))
        yield tasks

        ended = CounterMetricFamily(
            "tasks_hub_runs_ended", "Runs that ended, whatever the outcome.", labels=["name"]
        )
        failed = CounterMetricFamily("tasks_hub_runs_failed", "Runs that failed.", labels=["name"])
        runtime = HistogramMetricFamily(
            "tasks_hub_run_runtime_seconds", "Runtime of the runs that ended.", labels=["name"]
        )
        wait = HistogramMetricFamily(
            "tasks_hub_run_wait_seconds",
            "Queue wait (started minus queued) of the runs that ended.",
            labels=["name"],
        )
        for row in RunRollup.objects.using(self.using).span(0).order_by("name"):
            ended.add_metric([row.name], float(row.ended))
            failed.add_metric([row.name], float(row.failed))
            runtime.add_metric([row.name], _cumulative(row, RUNTIME_COLUMNS), row.runtime_sum)
            wait.add_metric([row.name], _cumulative(row, WAIT_COLUMNS), row.wait_sum)
        yield from (ended, failed, runtime, wait)

        age = GaugeMetricFamily(
            "tasks_hub_oldest_pending_age_seconds",
            "Seconds the oldest pending run has waited (0 when none waits).",
        )
        age.add_metric([], oldest_pending_age(self.using) or 0.0)
        yield age

        if self.ask_broker:
            yield from self._broker()

    def _broker(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("tasks_hub_broker_up", "1 when the broker answered the scrape.")
        depth = GaugeMetricFamily(
            "tasks_hub_queue_depth", "Messages waiting in each queue.", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "tasks_hub_workers_up", "Workers running, by their heartbeats (or a ping without)."
        )
        try:
            depths = broker.queue_depths(broker.configured_queues())
            # A ping waits its whole timeout for answers that may never come: the heartbeats
            # say the same from the database, and a scrape stays a few milliseconds.
            if float(hub_settings.WORKER_HEARTBEAT_SECONDS or 0) > 0:
                answering = Worker.objects.using(self.using).beating().count()
            else:
                answering = broker.workers_up()
        except Exception as exc:  # A broker that is down: the database's figures still count.
            logger.warning("metrics: the broker did not answer: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        for queue, value in sorted(depths.items()):
            if value is not None:
                depth.add_metric([queue], float(value))
        workers.add_metric([], float(answering))
        yield from (up, depth, workers)


def exposition(using: str = "default", *, ask_broker: bool = True) -> tuple[bytes, str]:
    """The scrape's body and content type; raises ``ImportError`` without prometheus_client."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    connections[using].ensure_connection()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(using, ask_broker=ask_broker))
    return generate_latest(registry), CONTENT_TYPE_LATEST
