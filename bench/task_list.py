"""The filtered task list at a million tasks: QuerySet + serializer, and the API list view.

    .venv/bin/python bench/task_list.py

Uses the million-task database of ``history_depth.py`` (filled once, kept). For each filter
(by status, by name, both, none) it times the first page of 50 tasks, newest first, three
ways: the QuerySet method plus ``TaskSerializer`` (what the list view does), a ``count()`` of
the filtered set (what a paginator that counts would add), and a GET of the API list view
through Django's test client (server time, no network) when the test project mounts it.
Goal: under 100 ms server time at p50.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bigdata import DEFAULT_BIG_DB, ensure_big_database, timed
from bench.common import base_env, percentile

# Where the list view may be mounted; the first that answers 200 is used.
CANDIDATE_URLS = ("/api/tasks/list", "/api/list", "/api/tasks/", "/tasks/list")


def find_list_url(client: Any, explicit: str) -> str:
    for url in (explicit,) if explicit else CANDIDATE_URLS:
        if client.get(url, {"limit": 1}).status_code == 200:
            return url
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_BIG_DATABASE_URL", DEFAULT_BIG_DB)
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--url", default="", help="path of the API list view")
    parser.add_argument("--rebuild", action="store_true")
    opts = parser.parse_args()
    ensure_big_database(opts.db_url, opts.rows, opts.rebuild)
    os.environ.update(base_env("hub", opts.db_url, "redis://127.0.0.1:6379/5"))

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from bench.common import machine
    from django_tasks_hub.models import Task

    try:
        from django_tasks_hub.api.serializers import TaskSerializer
    except ImportError:
        from rest_framework import serializers

        class TaskSerializer(serializers.ModelSerializer):  # type: ignore[no-redef]
            class Meta:
                model = Task
                fields = "__all__"

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    url = find_list_url(client, opts.url)

    print(f"machine: {machine()}")
    print(
        f"task list: {Task.objects.count():,} tasks, first page of {opts.limit}, "
        f"p50/p90 of {opts.repeat}; API view: {url or 'not mounted in testproject.urls'}"
    )
    limit = opts.limit
    cases: list[tuple[str, Any, dict[str, str]]] = [
        ("no filter", Task.objects.all(), {}),
        ("status=failed", Task.objects.with_status("failed"), {"status": "failed"}),
        ("status=done", Task.objects.with_status("done"), {"status": "done"}),
        ("status=pending", Task.objects.with_status("pending"), {"status": "pending"}),
        ("name=bench.task_07", Task.objects.by_name("bench.task_07"), {"name": "bench.task_07"}),
        (
            "name+status=failed",
            Task.objects.by_name("bench.task_07").with_status("failed"),
            {"name": "bench.task_07", "status": "failed"},
        ),
        ("tag=reports", Task.objects.tagged("reports"), {"tag": "reports"}),
    ]
    print(f"{'filter':<20} {'queryset+serializer':>20} {'count()':>17} {'API view':>17}   goal")
    for label, qs, params in cases:
        qs = qs.order_by("-created_at")

        def page(qs: Any = qs) -> Any:
            return TaskSerializer(list(qs[:limit]), many=True).data

        s = timed(page, opts.repeat)
        c = timed(lambda qs=qs: qs.count(), max(3, opts.repeat // 5))
        a: list[float] = []
        if url:

            def get(params: dict[str, str] = params) -> None:
                response = client.get(url, {**params, "limit": limit})
                assert response.status_code == 200, (response.status_code, response.content[:300])

            a = timed(get, opts.repeat)
        api = f"{percentile(a, 50):>7.1f}/{percentile(a, 90):<6.1f}ms" if a else f"{'-':>15}"
        worst = percentile(a, 50) if a else percentile(s, 50)
        print(
            f"{label:<20} {percentile(s, 50):>10.1f}/{percentile(s, 90):<6.1f}ms"
            f" {percentile(c, 50):>8.1f}/{percentile(c, 90):<6.1f}ms {api}"
            f"   {'met' if worst < 100 else 'MISSED'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
