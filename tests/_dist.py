"""Build the wheel and the sdist once per test run, from a copy of the sources in a tmp dir."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent

#: What a build reads. Copied so that the build's own folders (build/, *.egg-info) land in a
#: tmp dir, never in the working tree.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in")
PACKAGE = "django_tasks_hub"

#: Why the packaging and newcomer tests run in one pass only.
SQLITE_ONLY_REASON = (
    "runs in the SQLite pass only: it builds the package in a tmp dir with a project of its own, "
    "so once is enough (the newcomer test reaches the README's Redis itself)"
)


def on_sqlite_pass() -> bool:
    """Whether this run is ``./dev test``'s SQLite pass."""
    return settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")


@dataclass(frozen=True)
class Dists:
    wheel: Path
    sdist: Path
    source: Path


def package_files() -> set[str]:
    """Every file of the package in the working tree, relative to the repository root."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@functools.cache
def build() -> Dists:
    """Build both distributions with ``python -m build`` (isolated, as a release would)."""
    tmp = Path(tempfile.mkdtemp(prefix="tasks-hub-dist-"))
    atexit.register(shutil.rmtree, tmp, True)
    source = tmp / "src"
    source.mkdir()
    for name in SOURCES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / PACKAGE,
        source / PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    out = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"python -m build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    wheels = list(out.glob("*.whl"))
    sdists = list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return Dists(wheel=wheels[0], sdist=sdists[0], source=source)
