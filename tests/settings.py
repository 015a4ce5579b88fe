"""Settings for the test suite: the project's, plus a test app with a test saga."""

from __future__ import annotations

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
