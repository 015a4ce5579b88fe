"""The shipped monitoring files agree with the code: every metric the alert rules
and the dashboard query is exported, every dashboard query parses as PromQL, and
compose provisions Prometheus, Grafana and Flower with health checks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import sagas.metrics  # noqa: F401  (declares the metrics)
from tests.processes import ROOT

DEPLOY = ROOT / "deploy"
METRIC_NAME = re.compile(r"\bsagas_[a-z_]+\b")


SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def _exported() -> set[str]:
    """Return every series name the metrics expose, labelled ones not yet set too."""
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/sagas.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_rules_and_dashboard_query_only_exported_metrics() -> None:
    # given
    rules = (DEPLOY / "prometheus/rules.yml").read_text()
    queries = _dashboard_queries()

    # when
    used = set(METRIC_NAME.findall(rules)) | {
        name for query in queries for name in METRIC_NAME.findall(query)
    }

    # then
    exported = _exported()
    assert used, "no saga metric found in the rules or the dashboard"
    assert used <= exported, sorted(used - exported)


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test-tools` installs it"
    # given: each panel query as a recording rule, the template variable filled
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{n}", "expr": query}
                    for n, query in enumerate(
                        q.replace("$definition", ".*") for q in _dashboard_queries()
                    )
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))

    # when
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True
    )

    # then
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", ["web", "worker", "beat", "flower"])
def test_compose_checks_the_health_of_each_app_service(service: str) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"][service]["healthcheck"]["test"]


def test_compose_provisions_prometheus_and_grafana_from_deploy() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {
        name: [v.split(":")[0] for v in compose["services"][name]["volumes"]]
        for name in ("prometheus", "grafana")
    }
    for name, sources in mounts.items():
        for source in sources:
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert "./deploy/prometheus/rules.yml" in mounts["prometheus"]
    assert "./deploy/grafana/dashboards" in mounts["grafana"]
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in scrape["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    port = compose["x-app"]["environment"]["SAGAS_WORKER_METRICS_PORT"]
    assert targets == {"web:8000", f"worker:{port}", "flower:5555"}
