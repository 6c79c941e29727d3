"""The test project as an app: demo tasks and the example custom task model."""

from django.apps import AppConfig


class TestProjectConfig(AppConfig):
    name = "testproject"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import os

        # Registers reports.build (outside tasks.py, next to the ReportTask it records).
        from testproject import reports  # noqa: F401

        if os.environ.get("TASKS_HUB_STATUS_WRITERS_LOG"):
            # A worker the tests started: check its status writes too (see status_writers).
            from testproject import status_writers

            status_writers.install()
