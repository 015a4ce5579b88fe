"""OpenTelemetry traces: one trace per saga, from the request that started it.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``),
and ``OTEL_SDK_DISABLED`` is not true; everything else comes from the standard
``OTEL_*`` variables (``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_PROPAGATORS``...).

``saga_start`` stores the W3C trace context of a "saga" span (a child of the
current span: the HTTP request, say) in the saga row. Each step action or
compensation then runs in a span whose parent is that stored context, whoever
sent its message: the previous step, an operator, or the sweeper re-sending a
lost one. Messages also carry Celery's own context (opentelemetry-instrumentation
-celery); a step span links to it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import propagate, trace

log = structlog.get_logger("sagas.tracing")

_state = {"configured": False}


def enabled() -> bool:
    """Return whether the ``OTEL_*`` environment asks for traces."""
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return bool(exporters) and exporters != "none" and not disabled


def configure() -> bool:
    """Install a tracer provider and the Django, Celery and psycopg instrumentation.

    Call it once per process, after any fork (gunicorn loads ``config.wsgi`` in
    each worker; Celery calls it on ``worker_process_init``). Return whether
    tracing is on.
    """
    if _state["configured"] or not enabled():
        return _state["configured"]
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    provider = TracerProvider(resource=Resource.create())
    names = os.environ["OTEL_TRACES_EXPORTER"].lower().split(",")
    for name in (n.strip() for n in names):
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter()
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        else:
            log.warning("tracing.unknown_exporter", exporter=name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()  # type: ignore[no-untyped-call]
    CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]
    PsycopgInstrumentor().instrument(skip_dep_check=True)  # type: ignore[no-untyped-call]
    _state["configured"] = True
    return True


def shutdown() -> None:
    """Flush and stop the span processors (a worker process exiting)."""
    if _state["configured"]:
        provider: Any = trace.get_tracer_provider()
        provider.shutdown()


def _tracer() -> trace.Tracer:
    return trace.get_tracer("sagas")


def saga_context(definition: str) -> dict[str, str]:
    """Start and end a "saga" span under the current one; return its context.

    The carrier (``traceparent``...) is stored in the saga row; it is empty when
    tracing is off, so the call costs nothing then.
    """
    if not _state["configured"]:
        return {}
    carrier: dict[str, str] = {}
    span = _tracer().start_span(f"saga {definition}", kind=trace.SpanKind.PRODUCER)
    with trace.use_span(span, end_on_exit=True):
        span.set_attribute("saga.definition", definition)
        propagate.inject(carrier)
    return carrier


@contextmanager
def step_span(saga_id: str, attempt_id: int) -> Iterator[trace.Span]:
    """Run a step task in a span whose parent is the saga's stored context."""
    if not _state["configured"]:
        yield trace.INVALID_SPAN
        return
    from sagas.models import StepAttempt

    row = (
        StepAttempt.objects.filter(pk=attempt_id)
        .values("step", "kind", "number", "dispatches", "saga__trace_context")
        .first()
    )
    if row is None:
        yield trace.INVALID_SPAN
        return
    delivered_by = trace.get_current_span().get_span_context()
    links = [trace.Link(delivered_by)] if delivered_by.is_valid else []
    with _tracer().start_as_current_span(
        f"{row['step']} {row['kind']}",
        context=propagate.extract(row["saga__trace_context"] or {}),
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes={
            "saga.id": str(saga_id),
            "saga.step": row["step"],
            "saga.step.kind": row["kind"],
            "saga.step.attempt": row["number"],
            "saga.step.dispatches": row["dispatches"],
        },
    ) as span:
        yield span


def on_saga_transition(
    *,
    saga_id: str,
    step: str,
    kind: str,
    attempt: int | None,
    old_status: str,
    new_status: str,
    actor: str,
    detail: str,
    **_: Any,
) -> None:
    """Record the sweeper's re-sends and timeouts as spans in the saga's trace."""
    if not _state["configured"] or actor != "sweeper" or not step:
        return
    if not detail.startswith("re-sent") and new_status != "timed_out":
        return
    from sagas.models import Saga

    carrier = (
        Saga.objects.filter(pk=saga_id).values_list("trace_context", flat=True).first()
    )
    what = "re-send" if detail.startswith("re-sent") else "time out"
    span = _tracer().start_span(
        f"sweeper {what} {step} {kind}",
        context=propagate.extract(carrier or {}),
        attributes={
            "saga.id": saga_id,
            "saga.step": step,
            "saga.step.kind": kind,
            "saga.step.attempt": attempt or 0,
            "saga.transition": f"{old_status} -> {new_status}",
        },
    )
    span.end()


def connect() -> None:
    """Connect the sweeper receiver (``SagasConfig.ready``)."""
    from sagas import signals

    signals.saga_transition.connect(on_saga_transition, dispatch_uid="sagas.tracing")
