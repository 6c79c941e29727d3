"""The docs follow the code: every setting with its default, the transition tables, the nav."""

from __future__ import annotations

import re

import pytest

from django_tasks_hub.states import RUN_ALLOWED_FROM, TASK_ALLOWED_FROM
from tests.conftest import PACKAGE_DEFAULTS as DEFAULTS
from tests.conftest import ROOT

DOCS = ROOT / "docs"


def sections(text: str) -> dict[str, str]:
    """The ``### `KEY` `` sections of a page, by key."""
    parts = re.split(r"^### `([A-Z_]+)`\s*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_configuration_documents_every_setting_with_its_default():
    documented = sections((DOCS / "configuration.md").read_text())
    missing = sorted(set(DEFAULTS) - set(documented))
    assert not missing, f"docs/configuration.md has no section for {missing}"
    stale = sorted(set(documented) - set(DEFAULTS))
    assert not stale, f"docs/configuration.md documents settings that do not exist: {stale}"
    for key, default in DEFAULTS.items():
        assert f"Default: `{default!r}`" in documented[key], (
            f"docs/configuration.md: {key} should say Default: `{default!r}`"
        )


def transition_table(text: str, heading: str) -> dict[str, set[str]]:
    """The ``| to | allowed from |`` table after ``heading``, as {target: sources}."""
    after = text.split(heading, 1)[1]
    table = re.search(r"\| to \| allowed from \|\n\|[- |]+\|\n((?:\|.*\|\n)+)", after)
    assert table, f"no transition table after {heading!r}"
    allowed: dict[str, set[str]] = {}
    for row in table.group(1).splitlines():
        to, sources = row.strip("|").split("|")
        # Words in parentheses explain; only the backticked statuses before them count.
        sources = sources.split("(")[0]
        for target in re.findall(r"`(\w+)`", to):
            allowed[target] = set(re.findall(r"`(\w+)`", sources))
    return allowed


@pytest.mark.parametrize(
    ("heading", "rules"),
    [("For a **task**", TASK_ALLOWED_FROM), ("For a **run**", RUN_ALLOWED_FROM)],
)
def test_concepts_transition_tables_are_the_ones_in_states(heading, rules):
    documented = transition_table((DOCS / "concepts.md").read_text(), heading)
    assert documented == {str(k): {str(s) for s in v} for k, v in rules.items()}


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert pages, "no docs pages"
    for page in pages:
        assert f": {page}" in nav, f"{page} is not in the nav of mkdocs.yml"


def test_every_relative_link_of_the_readme_leads_to_a_file():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert "docs/quickstart.md" in local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_plugins_page_documents_every_hook_and_every_event_field():
    import dataclasses

    from django_tasks_hub.plugins.base import TaskEvent, TaskHubPlugin

    page = (DOCS / "plugins.md").read_text()
    hooks = [name for name in vars(TaskHubPlugin) if name.startswith("on_")]
    assert {f"on_{kind}" for kind in TaskEvent.STATUS} <= set(hooks)
    for hook in hooks:
        assert f"| `{hook}(event)` |" in page, f"docs/plugins.md does not document {hook}"
    for field in dataclasses.fields(TaskEvent):
        assert re.search(rf"^\| `{field.name}`", page, re.MULTILINE) or re.search(
            rf"^\| `\w+`, `{field.name}`", page, re.MULTILINE
        ), f"docs/plugins.md does not document TaskEvent.{field.name}"
