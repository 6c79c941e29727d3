"""The test project as an app: demo tasks and the example custom task model."""

from django.apps import AppConfig


class TestProjectConfig(AppConfig):
    name = "testproject"
    default_auto_field = "django.db.models.BigAutoField"
