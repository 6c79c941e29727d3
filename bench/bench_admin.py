"""The admin task list at a million tasks: server time against Django's defaults, same run.

    .venv/bin/python bench/bench_admin.py                  # 1,000,000 tasks on PostgreSQL
    .venv/bin/python bench/bench_admin.py --tasks 100000 --repeat 10

Fills its own PostgreSQL database (``--db-url``, default ``hub_bench_admin``) with ``--tasks``
tasks and one run each, written by one ``INSERT ... SELECT generate_series`` per table (kept
between runs; ``--rebuild`` fills again). Then, through Django's test client (server time:
middleware, queries, templates; no network), it times the admin pages of the app and of two
baselines mounted beside it in the same process:

* ``full count``: the same admin with Django's paginator and ``show_full_result_count``;
* ``django defaults``: the same columns with Django's own filters (``status``, ``name``,
  ``created_at``), its date hierarchy and its counts.

It prints p50/p95 in milliseconds for each page and the ratio of each baseline to the app.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/hub_bench_admin"
# Row i of the fill: 20 task names, a month of creation times, mostly done (as in bigdata).
from bench.bigdata import CREATED_SQL as CREATED  # noqa: E402
from bench.bigdata import NAME_SQL as NAME  # noqa: E402
from bench.bigdata import STATUS_SQL as STATUS  # noqa: E402

TASK_ID = "md5('admin-bench' || i)::uuid"

TASK_COLUMNS = {
    "id": TASK_ID,
    "name": NAME,
    "args": "jsonb_build_array(i)",
    "kwargs": "'{{}}'::jsonb",
    "options": "'{{}}'::jsonb",
    "status": STATUS,
    "broker_id": TASK_ID + "::text",
    "tags": "'[]'::jsonb",
    "result": "CASE WHEN i % 100 < 84 THEN to_jsonb(i) END",
    "progress": "CASE WHEN i % 100 BETWEEN 95 AND 96 THEN "
    "jsonb_build_object('current', i % 10, 'total', 10, 'message', '') END",
    "error": "CASE WHEN i % 100 BETWEEN 84 AND 91 THEN 'ValueError: boom' ELSE '' END",
    "traceback": "''",
    "attempts": "1",
    "created_at": CREATED,
    "updated_at": CREATED + " + interval '2 seconds'",
    "started_at": CREATED + " + interval '1 second'",
    "finished_at": CREATED + " + interval '2 seconds'",
    "worker": "'celery@bench'",
}
RUN_COLUMNS = {
    "id": "i",
    "task_id": TASK_ID,
    "name": NAME,
    "attempt": "1",
    "broker_id": TASK_ID + "::text",
    "trigger": "'initial'",
    "status": STATUS,
    "queued_at": CREATED,
    "started_at": CREATED + " + interval '1 second'",
    "finished_at": CREATED + " + interval '2 seconds'",
    "runtime": "1.0",
    "worker": "'celery@bench'",
    "result": "CASE WHEN i % 100 < 84 THEN to_jsonb(i) END",
    "error": "CASE WHEN i % 100 BETWEEN 84 AND 91 THEN 'ValueError: boom' ELSE '' END",
    "traceback": "''",
}
# Columns a later migration adds, NOT NULL and without a database default: their type's zero.
ZERO = {
    "integer": "0",
    "smallint": "0",
    "bigint": "0",
    "double precision": "0",
    "boolean": "false",
    "jsonb": "'null'::jsonb",
    "timestamp with time zone": "now()",
}


def connect(db_url: str, dbname: str | None = None) -> Any:
    from bench.common import pg_connect

    return pg_connect(db_url, dbname)


def insert_sql(conn: Any, table: str, known: dict[str, str], n: int) -> str:
    """The generate_series fill of ``table``, with this bench's zero values (JSON ``null``)."""
    from bench.bigdata import insert_sql as fill_sql

    return fill_sql(conn, table, known, n, zero=ZERO)


def fill(db_url: str, n: int, rebuild: bool) -> None:
    """Create and migrate the bench database; fill it with ``n`` tasks and runs if needed."""
    name = urlparse(db_url).path.lstrip("/")
    with connect(db_url, "postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    with connect(db_url) as conn:
        tasks = conn.execute("SELECT count(*) FROM django_tasks_hub_task").fetchone()[0]
        runs = conn.execute("SELECT count(*) FROM django_tasks_hub_taskrun").fetchone()[0]
        if tasks == n and runs == n and not rebuild:
            print(f"database {name}: {n:,} tasks and runs already there")
            return
        start = time.perf_counter()
        conn.execute("TRUNCATE django_tasks_hub_taskrun, django_tasks_hub_task CASCADE")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(insert_sql(conn, "django_tasks_hub_task", TASK_COLUMNS, n))
        conn.execute(insert_sql(conn, "django_tasks_hub_taskrun", RUN_COLUMNS, n))
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('django_tasks_hub_taskrun', 'id'), %s)", [n]
        )
        conn.execute("VACUUM ANALYZE django_tasks_hub_task")
        conn.execute("VACUUM ANALYZE django_tasks_hub_taskrun")
        print(f"database {name}: filled {n:,} tasks and runs in {time.perf_counter() - start:.0f}s")


def baseline_sites() -> Any:
    """Two admin sites beside the app's: its admin with full counts, and Django's defaults."""
    from django.contrib import admin
    from django.contrib.admin.views.main import ChangeList
    from django.core.paginator import Paginator

    from django_tasks_hub.admin import TaskAdmin, TaskRunAdmin
    from django_tasks_hub.models import Task, TaskRun

    class FullCount:
        paginator = Paginator
        show_full_result_count = True

        def get_changelist(self, request: Any, **kwargs: Any) -> Any:
            return ChangeList

    class FullCountTaskAdmin(FullCount, TaskAdmin):  # type: ignore[misc]
        pass

    class FullCountRunAdmin(FullCount, TaskRunAdmin):  # type: ignore[misc]
        pass

    class DefaultsTaskAdmin(FullCountTaskAdmin):
        list_filter = ("status", "name", "created_at")
        change_list_template = "admin/change_list.html"
        show_facets = admin.ShowFacets.ALLOW
        list_per_page = 100

    class DefaultsRunAdmin(FullCountRunAdmin):
        list_filter = ("status", "name", "queued_at")
        change_list_template = "admin/change_list.html"
        show_facets = admin.ShowFacets.ALLOW
        list_per_page = 100

    full = admin.AdminSite(name="fullcount")
    full.register(Task, FullCountTaskAdmin)
    full.register(TaskRun, FullCountRunAdmin)
    defaults = admin.AdminSite(name="defaults")
    defaults.register(Task, DefaultsTaskAdmin)
    defaults.register(TaskRun, DefaultsRunAdmin)
    return full, defaults


def timed(get: Callable[[], Any], repeat: int) -> list[float]:
    """Milliseconds of ``repeat`` calls after one warm-up call."""
    get()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        get()
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks (and runs) to fill")
    parser.add_argument("--db-url", default=os.environ.get("BENCH_ADMIN_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per page and site")
    parser.add_argument("--rebuild", action="store_true", help="fill the database again")
    opts = parser.parse_args()

    os.environ["DATABASE_URL"] = opts.db_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    os.environ.setdefault("TASKS_HUB_VAR_DIR", "/tmp/hub-bench-admin")
    os.environ["DJANGO_DEBUG"] = "0"  # DEBUG keeps every query in memory and skews the times
    import django

    django.setup()
    fill(opts.db_url, opts.tasks, opts.rebuild)

    from django.conf import settings
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import clear_url_caches, path

    from django_tasks_hub.models import Task

    full, defaults = baseline_sites()
    urls = types.ModuleType("bench_admin_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("admin/", admin.site.urls),
        path("fullcount/", full.urls),
        path("defaults/", defaults.urls),
    ]
    settings.ROOT_URLCONF = urls
    settings.ALLOWED_HOSTS = ["*"]
    clear_url_caches()

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    one = Task.objects.filter(status="failed").values_list("pk", flat=True).first()
    now = time.gmtime()

    pages: list[tuple[str, str, dict[str, Any], bool]] = [
        ("tasks, no filter", "django_tasks_hub/task/", {}, True),
        ("tasks, status=failed", "django_tasks_hub/task/", {"status": "failed"}, True),
        ("tasks, name=bench.task_07", "django_tasks_hub/task/", {"name": "bench.task_07"}, True),
        (
            "tasks, one day",
            "django_tasks_hub/task/",
            {
                "created_at__year": now.tm_year,
                "created_at__month": now.tm_mon,
                "created_at__day": now.tm_mday,
            },
            True,
        ),
        ("tasks, search by id", "django_tasks_hub/task/", {"q": str(one)}, True),
        ("runs, no filter", "django_tasks_hub/taskrun/", {}, True),
        ("runs, status=failed", "django_tasks_hub/taskrun/", {"status": "failed"}, True),
        ("task page", f"django_tasks_hub/task/{one}/change/", {}, False),
    ]
    # Django's own filters name their parameters after the lookups.
    default_params = {"status": "status__exact"}

    print(
        f"admin at {Task.objects.order_by().count():,} tasks on PostgreSQL "
        f"{connection.pg_version // 10000}; {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}; Django {django.get_version()}; "
        f"p50/p95 ms of {opts.repeat} requests each"
    )
    header = (
        f"{'page':<27} {'app p50/p95':>15} {'queries, SQL ms':>10} {'full count':>16} "
        f"{'ratio':>6} {'django defaults':>16} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, url, params, compare in pages:
        dparams = {default_params.get(k, k): v for k, v in params.items()}
        sites = [("admin", params), ("fullcount", params), ("defaults", dparams)]
        if not compare:
            sites = sites[:1]

        def get(prefix: str, query: dict[str, Any], url: str = url) -> None:
            response = client.get(f"/{prefix}/{url}", query)
            if response.status_code != 200:
                raise SystemExit(f"{prefix}/{url} {query}: HTTP {response.status_code}")

        sql_ms: list[float] = []

        def count(execute: Any, *args: Any, sql_ms: list[float] = sql_ms) -> Any:
            start = time.perf_counter()
            try:
                return execute(*args)
            finally:
                sql_ms.append((time.perf_counter() - start) * 1000)

        for prefix, query in sites:  # warm-up, and the app's queries
            if prefix == "admin":
                with connection.execute_wrapper(count):
                    get(prefix, query)
            else:
                get(prefix, query)
        # Interleaved, so that the load of a shared machine weighs on all three alike.
        times: dict[str, list[float]] = {prefix: [] for prefix, _ in sites}
        for _ in range(opts.repeat):
            for prefix, query in sites:
                start = time.perf_counter()
                get(prefix, query)
                times[prefix].append((time.perf_counter() - start) * 1000)
        app = times["admin"]
        line = (
            f"{label:<27} {pct(app, 50):>7.1f}/{pct(app, 95):<7.1f}"
            f" {len(sql_ms):>3} {sum(sql_ms):>6.1f}"
        )
        for prefix in ("fullcount", "defaults") if compare else ():
            base = times[prefix]
            ratio = pct(base, 50) / pct(app, 50)
            line += f" {pct(base, 50):>8.1f}/{pct(base, 95):<7.1f} {ratio:>5.1f}x"
        print(line, flush=True)
    print(
        "queries, SQL ms: the app's queries on one request and their time in the database; "
        "ratio: the baseline's p50 / the app's p50 (above 1: the app is faster)"
    )


if __name__ == "__main__":
    main()
