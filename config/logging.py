"""Structured logging through structlog, for Django, Celery and the engine.

Every line carries the request id (web) or the Celery task id and name
(workers), and a step's lines its saga id, through structlog's contextvars;
with tracing on, also the current trace and span ids.
"""

from __future__ import annotations

import logging.config
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

# A proxy's id is kept only if it is short and plain (it lands in every line).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _add_trace_ids(
    logger: Any, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Add the current span's trace and span ids, when tracing is on."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def configure_logging(*, level: str, fmt: str) -> None:
    """Route stdlib and structlog records through one structlog formatter."""
    from sagas.redaction import structlog_processor

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        # Secrets a saga definition declares never reach a log line.
        structlog_processor,
        _add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info,
                        renderer,
                    ],
                    "foreign_pre_chain": shared,
                },
            },
            "handlers": {
                "console": {
                    "class": "logging.StreamHandler",
                    "formatter": "structured",
                },
            },
            "root": {"handlers": ["console"], "level": level},
            "loggers": {
                "django.db.backends": {"level": "INFO"},
                "celery": {"level": level},
            },
        }
    )
    structlog.configure(
        processors=[
            # Drop filtered-out lines before any processor spends time on them.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class RequestIdMiddleware:
    """Bind a request id to every line logged while a request is served.

    The id comes from a well-formed ``X-Request-ID`` header (set by a proxy), or
    is made here; it is sent back in the response's ``X-Request-ID``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()
        response["X-Request-ID"] = request_id
        return response
