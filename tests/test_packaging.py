"""The wheel and the sdist: complete, valid metadata, one version, and they pass twine check."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser

import pytest

import django_tasks_hub
from tests import _dist

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _dist.on_sqlite_pass(), reason=_dist.SQLITE_ONLY_REASON),
]


@pytest.fixture(scope="module")
def dists() -> _dist.Dists:
    return _dist.build()


def wheel_names(dists: _dist.Dists) -> set[str]:
    with zipfile.ZipFile(dists.wheel) as wheel:
        return set(wheel.namelist())


def wheel_metadata(dists: _dist.Dists) -> dict[str, list[str]]:
    with zipfile.ZipFile(dists.wheel) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(wheel.read(name).decode())
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key, []).append(value)
    fields["Body"] = [message.get_payload()]
    return fields


def test_twine_check_passes(dists):
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists.wheel), str(dists.sdist)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_wheel_holds_every_file_of_the_package(dists):
    names = wheel_names(dists)
    missing = _dist.package_files() - names
    assert not missing, f"files of the package missing from the wheel: {sorted(missing)}"
    # Named, so that an empty package_files() could not make this pass.
    assert "django_tasks_hub/py.typed" in names
    assert "django_tasks_hub/migrations/0001_initial.py" in names
    assert any(n.startswith("django_tasks_hub/templates/") and n.endswith(".html") for n in names)
    assert any(n.startswith("django_tasks_hub/static/") for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("tests/", "testproject/", "bench/"))]


def test_sdist_holds_the_package_and_the_files_readers_look_for(dists):
    with tarfile.open(dists.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO"):
        assert name in names, name
    missing = _dist.package_files() - names
    assert not missing, f"files of the package missing from the sdist: {sorted(missing)}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_version_is_defined_once_and_carried_into_the_metadata(dists):
    metadata = wheel_metadata(dists)
    assert metadata["Version"] == [django_tasks_hub.__version__]
    assert dists.wheel.name.startswith(f"django_tasks_hub-{django_tasks_hub.__version__}-")
    # The version literal lives in __init__.py only: pyproject.toml reads it from there.
    pyproject = tomllib.loads((_dist.ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "django_tasks_hub.__version__"}
    quoted = (f'"{django_tasks_hub.__version__}"', f"'{django_tasks_hub.__version__}'")
    elsewhere = [
        path.relative_to(_dist.ROOT).as_posix()
        for folder in ("django_tasks_hub", "testproject", "tests", "bench", "examples")
        for path in (_dist.ROOT / folder).rglob("*.py")
        if any(q in path.read_text() for q in quoted)
    ]
    assert elsewhere == ["django_tasks_hub/__init__.py"]


def test_metadata_names_the_supported_versions_and_dependencies(dists):
    metadata = wheel_metadata(dists)
    classifiers = set(metadata["Classifier"])
    for expected in (
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Typing :: Typed",
    ):
        assert expected in classifiers, expected
    import trove_classifiers  # the dev extra; imported here so collection never needs it

    unknown = classifiers - trove_classifiers.classifiers
    assert not unknown, f"classifiers the package index would refuse: {sorted(unknown)}"
    assert metadata["Requires-Python"] == [">=3.11"]
    requires = " ".join(metadata["Requires-Dist"]).lower()
    for dependency in ("django", "djangorestframework", "django-filter", "celery[redis]"):
        assert dependency in requires, dependency
    # The quickstart's Redis broker needs kombu's redis extra (packaging, redis-py): Celery's
    # own extra brings it, a bare ``redis`` requirement does not.
    assert not any(r.lower().startswith("redis") for r in metadata["Requires-Dist"]), requires
    assert metadata["License-Expression"] == ["BSD-3-Clause"]
    # The long description is the README, rendered as Markdown on the package index.
    assert metadata["Description-Content-Type"] == ["text/markdown"]
    assert "./dev demo" in metadata["Body"][0]
