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
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
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
