from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from sagas import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Gunicorn loads this module in each worker process, after the fork, so the
# span exporter's thread belongs to that process. Django's instrumentation
# wraps the middleware, so it goes in before the handler loads it.
tracing.configure()  # nothing unless OTEL_TRACES_EXPORTER is set

application = get_wsgi_application()
