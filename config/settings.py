"""Project settings, read from the environment (12-factor).

The embedded default needs no services: SQLite files and kombu's filesystem
broker under ``var/``. Production sets ``DATABASE_URL`` (PostgreSQL) and
``CELERY_BROKER_URL`` (Redis).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
VAR_DIR = Path(env.str("SAGAS_VAR_DIR", default=str(BASE_DIR / "var")))

# Off unless asked for: DEBUG shows tracebacks and settings to anyone.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is required unless DJANGO_DEBUG=true (generate "
            "one: python -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )
    SECRET_KEY = "django-insecure-development-only"
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS (deploy/production.env sets every one of these) --------------------
# Outside DEBUG the site is served over HTTPS: cookies never travel in clear.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False
)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# Behind a proxy that terminates TLS: trust its X-Forwarded-Proto, and only its
# (the proxy must overwrite the header a client sends).
if env.bool("DJANGO_TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The health check is probed over plain HTTP from inside the host.
SECURE_REDIRECT_EXEMPT = [r"^healthz/$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "axes",
    "sagas",
    "sagas.events",
    "inventory",
    "payments",
    "shipping",
    "orders",
]

MIDDLEWARE = [
    "config.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under gunicorn, without a separate server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: locks out admin login brute force.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Proxies in front of the app that append to X-Forwarded-For (1 behind the
# nginx of deploy/nginx.conf): without it every client looks like the proxy.
NUM_PROXIES = env.int("DJANGO_NUM_PROXIES", default=0)
NINJA_NUM_PROXIES = NUM_PROXIES

# --- Admin login lockout (django-axes) --------------------------------------
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
# Hours an address stays locked out after too many failed logins.
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_IPWARE_PROXY_COUNT = NUM_PROXIES or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if NUM_PROXIES else ["REMOTE_ADDR"]
)

# --- Cache (API throttling counters) ---------------------------------------
# Redis in production, so every web process counts against the same limits.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}
# Orders one client (IP address) may place; beyond it, 429 with Retry-After.
ORDERS_CHECKOUT_RATE = env.str("ORDERS_CHECKOUT_RATE", default="20/min")

# The largest valid checkout (50 lines, every text field at its limit and
# \u-escaped) is under 20 KiB; refuse bodies well past it before parsing (413).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int(
    "DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=65536
)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
            ],
        },
    },
]


def _database(url: str) -> dict[str, object]:
    """Return a Django database dict for ``url`` with per-engine options."""
    config: dict[str, object] = env.db_url_config(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # IMMEDIATE takes the write lock at BEGIN, so concurrent workers queue
        # instead of failing with "database is locked" on lock upgrade.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    else:
        config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    if config["ENGINE"] == "django.db.backends.postgresql" and env.bool(
        "DATABASE_PREPARED_STATEMENTS", default=True
    ):
        # Parameters bound on the server, and a statement prepared once it has
        # run 5 times on a connection: steps and the order's services send the
        # same few statements over and over, and parsing and planning them each
        # time cost PostgreSQL more than running them. Django leaves both off
        # for poolers that cannot keep prepared statements.
        config["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
    return config


VAR_DIR.mkdir(parents=True, exist_ok=True)
_default_db_url = env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
_sandbox_default = (
    f"sqlite:///{VAR_DIR / 'sandbox.sqlite3'}"
    if _default_db_url.startswith("sqlite")
    else _default_db_url
)
DATABASES = {
    "default": _database(_default_db_url),
    # The sandbox payment gateway and carrier stand for services outside the
    # application: they write through their own connection, so their ledgers
    # commit independently of a saga step's transaction, as a real provider's would.
    "sandbox": _database(env.str("SANDBOX_DATABASE_URL", default=_sandbox_default)),
}
DATABASE_ROUTERS = ["config.routers.SandboxRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend"
)
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="shop@example.com")

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
BROKER_FOLDER = Path(env.str("SAGAS_BROKER_FOLDER", default=str(VAR_DIR / "broker")))
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu's stock filesystem transport can hand a worker a message file
    # that is not written yet (kombu#1551); this one publishes and claims by
    # atomic rename. `bench/broker.py` compares the two.
    CELERY_BROKER_TRANSPORT = env.str(
        "CELERY_BROKER_TRANSPORT", default="sagas.transport:Transport"
    )
    # The transport needs its folders to exist.
    (BROKER_FOLDER / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(BROKER_FOLDER),
        "data_folder_out": str(BROKER_FOLDER),
        "processed_folder": str(BROKER_FOLDER / "processed"),
        "control_folder": str(BROKER_FOLDER / "control"),
        "store_processed": False,
        # The default 1 s poll moves about 2 messages/s.
        "polling_interval": 0.02,
    }
elif CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # The broker confirms every message it has taken (written to a durable
        # queue) before apply_async returns.
        "confirm_publish": True,
        # Bound publishing while the broker is down (celery#4296).
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # An unacked message comes back only after this; it must exceed the
        # longest broker countdown plus the longest step (sagas/conf.py).
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600),
        # A worker looks for such messages every 10 s; kombu's default throttle
        # makes it every 10th look (100 s), which a killed worker's messages
        # would wait for on top of the visibility timeout.
        "unacked_restore_throttle": 1,
        "queue_order_strategy": "priority",
        "sep": ":",
        "priority_steps": list(range(10)),
        # Bound publishing while the broker is down (celery#4296): the
        # database is the source of truth and the sweeper re-sends.
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 1,
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Durable, with priorities: on RabbitMQ x-max-priority makes the queue a
# priority queue (the other transports ignore the argument and use their own).
CELERY_TASK_QUEUES = [
    Queue(
        "celery",
        Exchange("celery"),
        routing_key="celery",
        durable=True,
        queue_arguments={"x-max-priority": 10},
    )
]
CELERY_TASK_DEFAULT_DELIVERY_MODE = "persistent"
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 1,
}
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup otherwise closes every database connection around every
# task: a new PostgreSQL session (and two extra transactions) per saga step.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat copies these into its tables at start-up (editable in the admin there).
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "orders-deliver-confirmations": {
        "task": "orders.confirmations_deliver",
        "schedule": 60.0,
    },
}
# Write each sent periodic task's last run at once (not every 3 minutes): the
# beat health check (`manage.py sagas_health beat`) reads it.
CELERY_BEAT_SYNC_EVERY = env.int("CELERY_BEAT_SYNC_EVERY", default=1)
CELERY_TIMEZONE = TIME_ZONE

# --- Sagas and choreography (sagas, sagas.events) ----------------------------
# Every setting's default and meaning is in sagas/conf.py and
# sagas/events/conf.py (and the README's table): this deployment sets only
# those given in the environment, each from the variable of the same name.
_from_environment: dict[str, Callable[[str], object]] = {
    "SAGAS_DISPATCH_LEASE": env.float,
    "SAGAS_MAX_BROKER_COUNTDOWN": env.float,
    "SAGAS_COMPENSATION_MAX_ATTEMPTS": env.int,
    "SAGAS_COMPENSATION_BACKOFF": env.float,
    "SAGAS_COMPENSATION_MAX_BACKOFF": env.float,
    "SAGAS_HARD_LIMIT_GRACE": env.float,
    "SAGAS_MAX_DELIVERIES": env.int,
    "SAGAS_SWEEP_BATCH": env.int,
    "SAGAS_SWEEP_INTERVAL": env.float,
    "SAGAS_STUCK_AFTER": env.float,
    "SAGAS_INLINE_STEPS": env.int,
    "SAGAS_INLINE_SECONDS": env.float,
    "SAGAS_RETRIABLE_MAX_ERRORS": env.int,
    "SAGAS_SWEEP_STALE_AFTER": env.float,
    # "name=secret,..."
    "SAGAS_PARTICIPANTS": env.dict,
    "SAGAS_DEFINITION_MODULES": env.list,
    "SAGA_EVENTS_QUEUES": env.list,
    "SAGA_EVENTS_RELAY_LEASE": env.float,
    "SAGA_EVENTS_SWEEP_INTERVAL": env.float,
    "SAGA_EVENTS_FLOW_TIMEOUT": env.float,
    "SAGA_EVENTS_REDELIVER_AFTER": env.float,
    "SAGA_EVENTS_MAX_RETRIES": env.int,
    "SAGA_EVENTS_RETRY_MAX_BACKOFF": env.float,
    "SAGA_EVENTS_TRACK": env.bool,
    "SAGA_EVENTS_RELAY_ON_COMMIT": env.bool,
}
for _name, _read in _from_environment.items():
    if _name in os.environ:
        globals()[_name] = _read(_name)

# --- Orders -----------------------------------------------------------------
# How an order runs unless its request says: "orchestration" (the order saga),
# "remote" (the order saga with stock kept by the warehouse service, a
# participant in its own process, by command and reply) or "choreography"
# (services reacting to events).
ORDERS_FLOW = env.str("ORDERS_FLOW", default="orchestration")
# Seconds an Idempotency-Key answers with its first order; then it is free again.
ORDERS_IDEMPOTENCY_TTL = env.int("ORDERS_IDEMPOTENCY_TTL", default=86400)

# --- Sandbox providers ------------------------------------------------------
# Milliseconds each sandbox gateway or carrier call takes, to rehearse real latency.
SANDBOX_LATENCY_MS = env.int("SANDBOX_LATENCY_MS", default=0)

# --- Logging ----------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="console")  # "json" in production
LOGGING_CONFIG = None

from config.logging import configure_logging  # noqa: E402

configure_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)
