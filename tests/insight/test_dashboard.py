"""The Grafana dashboard and the alert rules in docs/ use only metrics the scrape carries."""

from __future__ import annotations

import json
import re

from django_tasks_hub.insight.metrics import METRIC_NAMES
from tests.conftest import ROOT

#: The suffixes Prometheus adds to a counter's or a histogram's series.
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def family(series: str) -> str:
    for suffix in SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in METRIC_NAMES:
            return series[: -len(suffix)]
    return series


def used(text: str) -> set[str]:
    return {family(name) for name in re.findall(r"\btasks_hub_[a-z_]+", text)}


def test_the_dashboard_uses_only_exposed_metrics() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana" / "tasks-hub.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = set().union(*(used(expr) for expr in exprs))
    assert names <= set(METRIC_NAMES), names - set(METRIC_NAMES)
    # The four the issue names are all on it.
    assert {"tasks_hub_tasks", "tasks_hub_run_runtime_seconds", "tasks_hub_run_wait_seconds",
            "tasks_hub_queue_depth", "tasks_hub_workers_up"} <= names  # fmt: skip


def test_the_alert_rules_use_only_exposed_metrics() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    rules = page.split("## Alert rules", 1)[1]
    names = used(rules.split("```yaml", 1)[1].split("```", 1)[0])
    assert {"tasks_hub_runs_failed", "tasks_hub_oldest_pending_age_seconds"} <= names
    assert names <= set(METRIC_NAMES)


def test_the_metrics_page_lists_every_metric() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    for name in METRIC_NAMES:
        assert f"`{name}" in page, name
