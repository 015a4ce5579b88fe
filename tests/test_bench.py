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

from bench.probes import TreeUsage
from bench.throughput import Run, Snapshot
from tests.processes import ROOT

pytestmark = pytest.mark.integration

# A Redis database of its own: the bench empties it before every phase.
BENCH_REDIS_DB = 9
SMALL = [
    "--serial", "3",
    "--burst", "100",
    "--rounds", "2",
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
    # (two rounds of the chain and the engine side by side, the first alternating)
    assert [(r["workload"], r["mode"], r["-c"], r["round"], r["N"]) for r in runs] == [
        ("raw chain", "serial", "2", "1", "3"),
        ("engine", "serial", "2", "1", "3"),
        ("raw chain", "burst", "2", "1", "100"),
        ("engine", "burst", "2", "1", "100"),
        ("engine", "serial", "2", "2", "3"),
        ("raw chain", "serial", "2", "2", "3"),
        ("engine", "burst", "2", "2", "100"),
        ("raw chain", "burst", "2", "2", "100"),
        ("engine, INFO logs", "burst", "2", "1", "100"),
        ("order saga", "burst", "2", "1", "40"),
        ("raw chain", "burst", "1", "1", "100"),
        ("engine", "burst", "1", "1", "100"),
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

    # and: where a serial engine saga's time went, each segment in each round
    spent = _table(report, "engine, serial: segment")
    assert [
        row["engine, serial: segment (median)"].split(" ->")[0] for row in spent
    ] == [
        "saga_start called",
        "the insert",
        "a step's lock",
        "that statement",
    ], report
    assert all(float(row[f"round {n} ms"]) >= 0 for row in spent for n in (1, 2)), (
        report
    )

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
    # and: each ratio against the chain gives both rounds beside its median
    serial = next(
        line for line in report.splitlines() if "serial p50 latency /" in line
    )
    assert re.search(r"\d+\.\d\dx \(.* ms vs .* ms\), rounds \S+x \S+x", serial), serial

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


def _run(workload: str, mode: str, round_no: int, rate: float) -> Run:
    """A phase that took one second per ``rate`` sagas (the rest is zero)."""
    usage = TreeUsage(cpu=0.0, rss_mb=100.0, pss_mb=90.0, processes=3)
    at = Snapshot(0.0, 0.0, usage, None, None, 0.0)
    return Run(
        workload=workload,
        mode=mode,
        n=int(rate),
        steps=3,
        elapsed=1.0,
        latencies=[1.0 / rate],
        before=at,
        after=at,
        commits=0,
        sessions=0,
        round_no=round_no,
    )


def test_a_ratio_is_the_median_of_its_rounds_each_against_its_own_round() -> None:
    from bench.report import paired

    # given: three rounds; the machine ran twice as fast in the second one
    runs = [
        _run("raw chain", "burst", 1, 100),
        _run("engine", "burst", 1, 110),
        _run("engine", "burst", 2, 180),
        _run("raw chain", "burst", 2, 200),
        _run("raw chain", "burst", 3, 100),
        _run("engine", "burst", 3, 130),
        _run("engine", "serial", 1, 50),  # another mode: not paired here
    ]

    # when: the engine's throughput is compared with the chain's
    found = paired(runs, "burst", lambda run: run.rate)

    # then: each round against its own, the median of them, and that round's figures
    assert found is not None
    assert [round(r, 2) for r in found.ratios] == [1.1, 0.9, 1.3]
    assert found.median == pytest.approx(1.1)
    assert (found.raw.round_no, found.engine.round_no) == (1, 1)
    assert found.describe(lambda run: f"{run.rate:.0f}/s") == (
        "1.10x (110/s vs 100/s), rounds 1.10x 0.90x 1.30x"
    )
    # and: a mode with no raw side has no ratio
    assert paired(runs, "serial", lambda run: run.rate) is None


def test_a_probe_of_no_sagas_is_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench.main import parse_args

    assert parse_args(["--probe", "7"]).probe == 7
    with pytest.raises(SystemExit) as exited:
        parse_args(["--probe", "0"])
    assert exited.value.code == 2
    assert "argument --probe: must be at least 1, not 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "0"])
    assert "argument --rounds: must be at least 1, not 0" in capsys.readouterr().err


@pytest.mark.django_db
def test_a_serial_sagas_time_is_split_at_its_statements() -> None:
    from datetime import UTC, datetime, timedelta

    from bench.throughput import timeline
    from sagas.models import Saga, StepAttempt

    # given: a completed 2-step saga whose rows carry known database times, and
    # one still running (left out)
    base = datetime(2026, 1, 1, tzinfo=UTC)

    def at(ms: float) -> datetime:
        return base + timedelta(milliseconds=ms)

    done = Saga.objects.create(
        definition="bench_noop", version=1, business_key="t:1", status="completed"
    )
    running = Saga.objects.create(
        definition="bench_noop", version=1, business_key="t:2", status="running"
    )
    Saga.objects.filter(pk=done.pk).update(created_at=at(1))
    for index, (started, finished) in enumerate([(4, 4.5), (5.5, 6.25)]):
        StepAttempt.objects.create(
            saga=done, step=f"s{index}", step_index=index, kind="action", number=1,
            status="succeeded", started_at=at(started), finished_at=at(finished),
        )  # fmt: skip
    StepAttempt.objects.create(
        saga=running, step="s0", step_index=0, kind="action", number=1,
        status="succeeded", started_at=at(0), finished_at=at(100),
    )  # fmt: skip

    # when: the harness started it at 0 ms
    spent = timeline({"t:1": base.timestamp(), "t:2": base.timestamp()})

    # then: start 1 ms, first hop 3 ms, steps 0.5 and 0.75 (median 0.625), gap 1 ms
    assert {name: round(value * 1000, 3) for name, value in spent.items()} == {
        "start": 1.0,
        "first": 3.0,
        "step": 0.625,
        "between": 1.0,
    }
