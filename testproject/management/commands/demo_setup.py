"""``manage.py demo_setup``: make sure the demo superuser exists and print how to log in."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create (or reset) the demo superuser and print its credentials. Safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--username", default=os.environ.get("TASKS_HUB_DEMO_USER", "demo"), help="login"
        )
        parser.add_argument(
            "--password",
            default=os.environ.get("TASKS_HUB_DEMO_PASSWORD", "demo"),
            help="password (the demo is for your own machine: keep it simple)",
        )

    def handle(self, *args: Any, username: str, password: str, **options: Any) -> None:
        user_model = get_user_model()
        user, created = user_model._default_manager.get_or_create(
            **{user_model.USERNAME_FIELD: username}
        )
        # Reset on every run, so the credentials printed below are always the ones that work.
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()
        verb = "created" if created else "already there, password reset"
        message = f"Demo superuser {verb}: username {username!r}, password {password!r}"
        self.stdout.write(self.style.SUCCESS(message))
