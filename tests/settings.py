"""Settings for the test suite: the project's, plus a test app with a test saga."""

from __future__ import annotations

import os

# The project refuses to start without a secret key outside DEBUG; the suite
# runs with DEBUG off, as production does, and plain HTTP on loopback.
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-" + "s" * 50)
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
# Throttling counters live in Redis, as in production: a database of their own.
if os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
    _broker = os.environ["CELERY_BROKER_URL"].rsplit("/", 1)[0]
    os.environ.setdefault("CACHE_URL", f"{_broker}/1")
# Tests place many orders from one address; the throttle tests lower it.
os.environ.setdefault("ORDERS_CHECKOUT_RATE", "100000/s")

from config.settings import *  # noqa: F403
from config.settings import DATABASES, INSTALLED_APPS, VAR_DIR

INSTALLED_APPS = [*INSTALLED_APPS, "tests.sagatest", "examples.travel"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]

# On SQLite, test databases are files (not Django's default in-memory ones) so
# that worker processes can open them too.
for _alias, _db in DATABASES.items():
    if _db["ENGINE"] == "django.db.backends.sqlite3":
        _db["TEST"] = {"NAME": str(VAR_DIR / f"test_{_alias}.sqlite3")}
