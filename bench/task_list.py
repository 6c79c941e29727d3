"""The filtered task list at a million tasks: QuerySet + serializer, and the API list view.

    .venv/bin/python bench/task_list.py

Uses the million-task database of ``history_depth.py`` (filled once, kept). For each filter
(by status, by name, both, none) it times the first page of 50 tasks, newest first, three
ways: the QuerySet method plus ``TaskSerializer`` (what the list view does), a ``count()`` of
the filtered set (what a paginator that counts would add), and a GET of each API list view
the test project mounts (``/api/list``, the seed's plain list, and ``/api/tasks/``, the REST
list) through Django's test client: server time, no network.
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

# Where the test project mounts the list views: the seed's plain list and the REST list.
CANDIDATE_URLS = ("/api/list", "/api/tasks/")


def find_list_urls(client: Any, explicit: str) -> list[str]:
    """The list views that answer 200 here."""
    urls = [explicit] if explicit else list(CANDIDATE_URLS)
    return [url for url in urls if client.get(url, {"limit": 1}).status_code == 200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_BIG_DATABASE_URL", DEFAULT_BIG_DB)
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--url", default="", help="path of an API list view to time")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print each page's query plan")
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
    urls = find_list_urls(client, opts.url)

    print(f"machine: {machine()}")
    print(
        f"task list: {Task.objects.count():,} tasks, first page of {opts.limit}, "
        f"p50/p90 of {opts.repeat}, ms; API views: {', '.join(urls) or 'none mounted'}"
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
        # No task carries it: the worst case, the page walks the whole table to find nothing.
        ("tag=absent", Task.objects.tagged("absent"), {"tag": "absent"}),
    ]
    columns = ["queryset+serializer", "count()", *(f"GET {u}" for u in urls)]
    print(f"{'filter':<20}" + "".join(f"{c:>20}" for c in columns) + "   goal (<100 ms p50)")
    for label, qs, params in cases:
        qs = qs.order_by("-created_at")

        def page(qs: Any = qs) -> Any:
            return TaskSerializer(list(qs[:limit]), many=True).data

        cells = [timed(page, opts.repeat), timed(lambda qs=qs: qs.count(), opts.repeat)]
        for url in urls:

            def get(url: str = url, params: dict[str, str] = params) -> None:
                response = client.get(url, {**params, "limit": limit})
                assert response.status_code == 200, (response.status_code, response.content[:300])

            cells.append(timed(get, opts.repeat))
        # The goal is about what a user waits for: the API view when there is one.
        judged = cells[2:] or cells[:1]
        worst = max(percentile(c, 50) for c in judged)
        line = "".join(f"{percentile(c, 50):>12.1f} /{percentile(c, 90):>6.1f}" for c in cells)
        print(f"{label:<20}{line}   {'met' if worst < 100 else 'MISSED'}", flush=True)
        if opts.explain:
            print("\n".join("    " + row for row in qs[:limit].explain(analyze=True).splitlines()))


if __name__ == "__main__":
    main()
