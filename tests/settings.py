"""Settings for the test suite: the project's, plus a test app with a test saga."""

from __future__ import annotations

import os

# The project refuses to start without a secret key outside DEBUG; the suite
# runs with DEBUG off, as production does, and plain HTTP on loopback.
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-" + "s" * 50)
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.sagatest"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]
