"""`python -m bench` end to end, on small numbers: every part runs and reports.

The figures themselves are not checked here (they are timings on a shared
machine); what is checked is that each phase finishes every saga it started
and that the report prints each table, each target and both step-path probes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.processes import ROOT

pytestmark = pytest.mark.integration

# A Redis database of its own: the bench empties it before every phase.
BENCH_REDIS_DB = 9
SMALL = [
    "--serial", "3",
    "--burst", "100",
    "--order", "40",
    "--tracers", "3",
    "--finished", "2000",
    "--active", "200",
    "--due", "10",
    "--starts", "5",
    "--workers", "1",
    "--probe", "5",
    "--profile",
]  # fmt: skip


@pytest.fixture
def bench_database() -> Iterator[str]:
    """A database of its own on the suite's PostgreSQL; return its URL."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.fail("the bench needs PostgreSQL: run `make test`", pytrace=False)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _table(report: str, header_start: str) -> list[dict[str, str]]:
    """Return the rows of the report's table whose header starts so, by column."""
    lines = report.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = re.split(r"\s{2,}", lines[at].strip())
    rows = []
    for line in lines[at + 2 :]:  # past the rule under the header
        if not line.strip():
            break
        rows.append(dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)))
    return rows


def test_the_bench_runs_every_part_and_reports_each_figure(
    bench_database: str, tmp_path: Path
) -> None:
    # given: the suite's servers, with a database and a Redis database of the bench's
    broker = os.environ["CELERY_BROKER_URL"].rsplit("/", 1)[0]
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "CACHE_URL", "SANDBOX_DATABASE_URL")
    }
    env.update(
        DATABASE_URL=bench_database,
        CELERY_BROKER_URL=f"{broker}/{BENCH_REDIS_DB}",
        SAGAS_BENCH_DIR=str(tmp_path / "bench"),
    )

    # when: every part of the bench runs, on small numbers
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", *SMALL],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        report, errors = bench.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        # SIGTERM: the bench stops the workers it started before it exits.
        bench.terminate()
        report, errors = bench.communicate(timeout=60)
        pytest.fail(f"the bench ran over 480 s:\n{report[-3000:]}{errors[-3000:]}")

    # then: it succeeds, and every phase finished every saga it started
    assert bench.returncode == 0, report[-3000:] + errors[-3000:]
    runs = _table(report, "workload ")
    assert [(r["workload"], r["mode"], r["-c"], r["N"]) for r in runs] == [
        ("raw chain", "serial", "2", "3"),
        ("raw chain", "burst", "2", "100"),
        ("engine", "serial", "2", "3"),
        ("engine", "burst", "2", "100"),
        ("engine, INFO logs", "burst", "2", "100"),
        ("order saga", "burst", "2", "40"),
        ("raw chain", "burst", "1", "100"),
        ("engine", "burst", "1", "100"),
    ], report
    assert all(r["not done"] == "0" for r in runs), report
    assert all(float(r["sagas/s"]) > 0 for r in runs), report
    # PostgreSQL's CPU is read in clock ticks: a burst's worth is well above one
    # (three serial sagas may be below it).
    engine_pg = [
        r["PG CPU ms/saga"]
        for r in runs
        if r["workload"] != "raw chain" and r["mode"] == "burst"
    ]
    assert all(float(cpu) > 0 for cpu in engine_pg), report

    # and: the sizing table has a row per worker count, with the PG core figure
    sizing = _table(report, "worker processes ")
    assert [r["worker processes"] for r in sizing] == ["1", "2"], report
    assert all(int(r["sagas/s per PG core"]) > 0 for r in sizing), report

    # and: each target is printed with a status, and the count of those met
    statuses = [
        line.split()[-1]
        for line in report.splitlines()
        if line.rstrip().endswith((" MET", " MISSED"))
    ]
    assert len(statuses) == 9, report
    met = statuses.count("MET")
    assert f"{met} of 9 targets met." in report

    # and: the sweeper's and both step paths' profiles follow, the no-op saga's
    # at one transaction per step
    probes = re.findall(
        r"no broker \(5 (no-op 3-step|order) sagas, inline\): (\d+) statements and"
        r" (\d+) transactions per saga",
        report,
    )
    assert [name for name, _, _ in probes] == ["no-op 3-step", "order"], report
    assert probes[0][2] == "3", report
    assert int(probes[1][1]) > int(probes[0][1]), report
    assert report.count("pyinstrument") >= 3, report
    assert "One warm sweeper pass, profiled" in report


def test_a_probe_of_no_sagas_is_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench.main import parse_args

    assert parse_args(["--probe", "7"]).probe == 7
    with pytest.raises(SystemExit) as exited:
        parse_args(["--probe", "0"])
    assert exited.value.code == 2
    assert "argument --probe: must be at least 1, not 0" in capsys.readouterr().err
