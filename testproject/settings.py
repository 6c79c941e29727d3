"""Settings of the test project: SQLite and kombu's filesystem broker unless told otherwise.

``DATABASE_URL`` (``postgres://user@host:port/name`` or ``sqlite:////path``) and
``CELERY_BROKER_URL`` (``redis://...``, ``amqp://...``) switch to real servers.
"""

import json
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TASKS_HUB_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "testproject-insecure-key-do-not-use")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "django_tasks_hub",
    "testproject",
]
try:
    import drf_spectacular  # noqa: F401
    import drf_spectacular_sidecar  # noqa: F401

    # The sidecar serves Swagger UI and Redoc from static files: no CDN, works offline.
    INSTALLED_APPS += ["drf_spectacular", "drf_spectacular_sidecar"]
    HAS_SPECTACULAR = True
except ImportError:
    HAS_SPECTACULAR = False
try:
    # The optional ``[beat]`` extra: its DatabaseScheduler and admin, when installed.
    import django_celery_beat  # noqa: F401

    INSTALLED_APPS.append("django_celery_beat")
    HAS_CELERY_BEAT = True
except ImportError:
    HAS_CELERY_BEAT = False

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "testproject.wsgi.application"


def database_from_url(url: str) -> dict:
    """A DATABASES entry from ``postgres://user:pass@host:port/name`` or ``sqlite:///path``."""
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql", "pgsql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parsed.scheme == "sqlite":
        return sqlite_database(Path(unquote(parsed.path)))
    raise ValueError(f"DATABASE_URL scheme {parsed.scheme!r} is not supported here.")


def sqlite_database(path: Path) -> dict:
    if os.environ.get("TASKS_HUB_SQLITE_DEFAULTS") == "1":
        # What ``startproject`` writes (no WAL, deferred transactions, a 5 s busy timeout): the
        # product must work on it (tests/test_sqlite_rounds.py).
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # Workers and the web server write at once: WAL and a long busy timeout keep them
        # from failing with "database is locked".
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": str(VAR_DIR / "test.sqlite3")},
    }


DATABASES = {
    "default": database_from_url(os.environ["DATABASE_URL"])
    if os.environ.get("DATABASE_URL")
    else sqlite_database(VAR_DIR / "db.sqlite3")
}

AUTH_PASSWORD_VALIDATORS: list = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/admin/login/"

# --- Celery -----------------------------------------------------------------------------
# Under pytest each run gets its own broker folder, so no message from an earlier run is left.
_running_tests = "pytest" in sys.modules
BROKER_DIR = Path(
    os.environ.get("TASKS_HUB_BROKER_DIR")
    or (tempfile.mkdtemp(prefix="tasks-hub-broker-") if _running_tests else VAR_DIR / "broker")
)
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem"):
    for sub in ("queue", "control", "processed"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    # The same transport with atomic writes (see testproject/fstransport.py).
    CELERY_BROKER_TRANSPORT = "testproject.fstransport:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
if os.environ.get("TASKS_HUB_TEST_PICKLE") == "1":
    # For the hostile-value tests (demo.take_unrepresentable); a worker run as root that
    # accepts pickle also needs C_FORCE_ROOT.
    CELERY_ACCEPT_CONTENT.append("pickle")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = os.environ.get("CELERY_TASK_ALWAYS_EAGER") == "1"
CELERY_TIMEZONE = os.environ.get("CELERY_TIMEZONE", "UTC")
# TASKS_HUB_TEST_BEAT_EVERY=2: a beat schedule "every-2s" of demo.add (tests/test_periodic.py).
CELERY_BEAT_SCHEDULE: dict[str, dict] = {}
if os.environ.get("TASKS_HUB_TEST_BEAT_EVERY"):
    CELERY_BEAT_SCHEDULE["every-2s"] = {
        "task": "demo.add",
        "schedule": float(os.environ["TASKS_HUB_TEST_BEAT_EVERY"]),
        "args": (1, 2),
        "options": {"queue": "tasks-hub-periodic"},
    }

# --- REST framework and tasks hub ----------------------------------------------------------
REST_FRAMEWORK: dict[str, object] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
if HAS_SPECTACULAR:
    import django_tasks_hub

    REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
    SPECTACULAR_SETTINGS = {
        "TITLE": "django-tasks-hub test project",
        "VERSION": django_tasks_hub.__version__,
        # drf-spectacular's defaults load these from a public CDN (and unpinned): the
        # sidecar's pinned copies instead, the favicon included.
        "SWAGGER_UI_DIST": "SIDECAR",
        "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
        "REDOC_DIST": "SIDECAR",
    }

# The package's defaults; TASKS_HUB_JSON='{"FLUSH_INTERVAL": 1}' overrides keys (tests, demos).
TASKS_HUB: dict = json.loads(os.environ.get("TASKS_HUB_JSON") or "{}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_tasks_hub": {"handlers": ["console"], "level": "INFO"}},
}
