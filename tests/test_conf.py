"""TASKS_HUB settings: read when used, changed by override_settings, typos refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_tasks_hub.conf import DEFAULTS, hub_settings
from django_tasks_hub.plugins.base import registry


def test_defaults_when_the_project_sets_nothing() -> None:
    with override_settings(TASKS_HUB={}):
        assert DEFAULTS["HISTORY_MAX_LIMIT"] == hub_settings.HISTORY_MAX_LIMIT
        assert hub_settings.SKIP_DB_TAG == "skip_db"
    with override_settings(TASKS_HUB=None):
        assert DEFAULTS["WRITE_RETRIES"] == hub_settings.WRITE_RETRIES


def test_override_settings_takes_effect_and_is_undone() -> None:
    with override_settings(TASKS_HUB={"HISTORY_MAX_LIMIT": 7, "SKIP_DB_TAG": "quiet"}):
        assert hub_settings.HISTORY_MAX_LIMIT == 7 and hub_settings.SKIP_DB_TAG == "quiet"
        assert DEFAULTS["WRITE_RETRIES"] == hub_settings.WRITE_RETRIES
    assert DEFAULTS["HISTORY_MAX_LIMIT"] == hub_settings.HISTORY_MAX_LIMIT


def test_an_unknown_key_says_which_and_what_is_valid() -> None:
    with (
        override_settings(TASKS_HUB={"HISTORY_MAX": 10, "PLUGIN": []}),
        pytest.raises(ImproperlyConfigured) as caught,
    ):
        hub_settings.HISTORY_MAX_LIMIT  # noqa: B018
    message = str(caught.value)
    assert message.startswith("Unknown TASKS_HUB setting(s): HISTORY_MAX, PLUGIN.")
    assert "HISTORY_MAX_LIMIT" in message and "PLUGINS" in message


def test_reading_a_name_that_is_not_a_setting() -> None:
    with pytest.raises(AttributeError, match="Invalid TASKS_HUB setting: 'RETRIES'"):
        hub_settings.RETRIES  # noqa: B018


def test_changing_the_plugins_rebuilds_them(db: Any) -> None:
    before = registry.plugins
    with override_settings(TASKS_HUB={"PLUGINS": []}):
        assert registry.plugins == []
    assert [p.name for p in registry.plugins] == ["db"] and registry.plugins is not before


def test_skip_tag_setting_is_read_when_a_task_is_published(eager: None) -> None:
    from django_tasks_hub.models import Task
    from testproject import tasks

    with override_settings(TASKS_HUB={"SKIP_DB_TAG": "nightly"}):
        quiet = tasks.tagged.delay().id  # Tagged "reports" and "nightly".
    loud = tasks.tagged.delay().id
    assert not Task.objects.filter(pk=quiet).exists()
    assert Task.objects.filter(pk=loud).exists()
