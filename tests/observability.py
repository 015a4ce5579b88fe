"""Helpers for the observability tests: a web process, scraping, free ports."""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.processes import Process

Labels = tuple[tuple[str, str], ...]


class Gunicorn(Process):
    ready_marker = "Booting worker"

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, port: int
    ) -> None:
        super().__init__(
            name,
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py",
             "config.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "2"],
            env,
            log_dir,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """Return the status and the body (parsed when it is JSON) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def scrape(*urls: str) -> dict[str, dict[Labels, float]]:
    """Scrape ``/metrics`` endpoints; return samples summed across them.

    Summing is what ``sum()`` over a job's instances does in Prometheus.
    """
    samples: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                samples[sample.name][labels] += sample.value
    return samples


def by(
    samples: dict[str, dict[Labels, float]], name: str, *keys: str, **match: str
) -> dict[tuple[str, ...], float]:
    """Return the samples of ``name`` matching ``match``, keyed by ``keys``."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples.get(name, {}).items():
        given = dict(labels)
        if all(given.get(k) == v for k, v in match.items()) and value:
            out[tuple(given.get(k, "") for k in keys)] = value
    return out


class SpanReceiver:
    """An OTLP/HTTP trace receiver on loopback that keeps spans in memory.

    Processes under test export with their ordinary OTLP exporter
    (``OTEL_TRACES_EXPORTER=otlp``) to ``endpoint``; the test reads ``spans``.
    """

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = trace_service_pb2.ExportTraceServiceRequest()
                export.ParseFromString(body)
                receiver._add(export)
                reply = trace_service_pb2.ExportTraceServiceResponse()
                payload = reply.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _add(self, export: Any) -> None:
        from google.protobuf.json_format import MessageToDict

        for resource_spans in export.resource_spans:
            resource = {
                a.key: MessageToDict(a.value)
                for a in resource_spans.resource.attributes
            }
            service = next(iter(resource.get("service.name", {}).values()), "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {
                        a.key: next(iter(MessageToDict(a.value).values()), None)
                        for a in span.attributes
                    }
                    with self._lock:
                        self.spans.append(
                            {
                                "service": service,
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "start": span.start_time_unix_nano,
                                "attributes": attributes,
                            }
                        )

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.spans)

    def env(self, service: str) -> dict[str, str]:
        """Return the standard OTEL_* variables that export to this receiver."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": service,
            # Export within a fifth of a second, so the test need not wait long.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
