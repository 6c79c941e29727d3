"""The test project as an app: demo tasks and the example custom task model."""

from django.apps import AppConfig


class TestProjectConfig(AppConfig):
    name = "testproject"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers reports.build (outside tasks.py, next to the ReportTask it records).
        from testproject import reports  # noqa: F401
