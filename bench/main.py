"""Measure the engine against a raw Celery chain in one run, then print the figures.

Needs PostgreSQL in ``DATABASE_URL`` and Redis in ``CELERY_BROKER_URL``; every
phase empties the benchmark's tables and the Redis database first.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.throughput import Workload

ROOT = Path(__file__).resolve().parent.parent
# Cores used by other processes, on average, above which a phase is flagged.
OTHERS_WARN = 0.25


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--serial", type=int, default=200, help="sagas run one by one")
    parser.add_argument("--burst", type=int, default=2000, help="sagas in a burst")
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=3,
        help="rounds of the raw chain and the engine side by side (serial, then"
        " burst); each ratio is the median of the rounds' ratios",
    )
    parser.add_argument(
        "--order", type=int, default=1000, help="order sagas in a burst"
    )
    parser.add_argument(
        "--tracers", type=int, default=50, help="sagas in flight beside a burst"
    )
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--active", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=100, help="active sagas due")
    parser.add_argument("--starts", type=int, default=200, help="saga_start timings")
    parser.add_argument(
        "--finished-attempts",
        action="store_true",
        help="also write three attempts per finished saga (slower to generate)",
    )
    parser.add_argument(
        "--workers",
        default="1,2,4",
        help="worker processes for the sizing bursts (comma-separated)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile a sweeper pass, and the no-op and order sagas' step path"
        " in this process",
    )
    parser.add_argument(
        "--probe",
        type=_positive,
        default=300,
        help="sagas per step-path probe (--profile)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["raw", "engine", "info", "inflight", "order", "scale", "workers"],
        help="leave a part out (repeatable)",
    )
    return parser.parse_args(argv)


def configure_environment() -> Path:
    """Set the environment shared by the harness and every worker; return VAR_DIR."""
    var_dir = Path(os.environ.get("SAGAS_BENCH_DIR", ROOT / "var" / "bench"))
    shutil.rmtree(var_dir, ignore_errors=True)
    (var_dir / "logs").mkdir(parents=True)
    # Another settings module may be named to try a change against the same figures.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.update(
        {
            "SANDBOX_DATABASE_URL": os.environ["DATABASE_URL"],
            "SAGAS_DEFINITION_MODULES": "bench.sagas",
            "SAGAS_VAR_DIR": str(var_dir),
            "EMAIL_FILE_PATH": str(var_dir / "mail"),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Production runs without DEBUG (it keeps every query in memory).
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + "b" * 50)
    os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
    return var_dir


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


Phase = tuple[str, "Workload", str, int, int, int]


def compared_phases(args: argparse.Namespace) -> list[Phase]:
    """Return the raw chain's and the engine's phases, round by round.

    In each round the two run back to back, serial then burst, and the one that
    goes first alternates: drift of the machine between rounds then weighs on
    both sides of each round's ratio alike.
    """
    from bench import throughput

    phases: list[Phase] = []
    for round_ in range(1, args.rounds + 1):
        pair = [("raw", throughput.RAW), ("engine", throughput.ENGINE)]
        if round_ % 2 == 0:
            pair.reverse()
        for mode, n in (("serial", args.serial), ("burst", args.burst)):
            phases += [(part, workload, mode, n, 2, round_) for part, workload in pair]
    return phases


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Turn SIGTERM into SystemExit so the phases' cleanup stops their workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not (
        os.environ.get("CELERY_BROKER_URL", "").startswith("redis")
    ):
        print(
            "python -m bench needs PostgreSQL in DATABASE_URL and Redis in"
            " CELERY_BROKER_URL: run `make bench`, which starts both.",
            file=sys.stderr,
        )
        return 2
    var_dir = configure_environment()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    import bench.tasks  # noqa: F401  (registers the baseline's tasks here too)
    from bench import inflight, report, scale, stepprobe, throughput
    from config.celery import app

    began = time.monotonic()
    progress("migrating")
    call_command("migrate", verbosity=0)
    call_command("migrate", database="sandbox", verbosity=0)
    harness = throughput.Harness(
        app, dict(os.environ), var_dir / "logs", os.environ["DATABASE_URL"]
    )
    phases = compared_phases(args)
    phases += [
        ("info", throughput.ENGINE_INFO, "burst", args.burst, 2, 1),
        ("order", throughput.ORDER, "burst", args.order, 2, 1),
    ]
    # Sizing: the same bursts with other worker process counts (2 is above).
    for concurrency in sorted({int(c) for c in args.workers.split(",") if c} - {2}):
        phases += [
            ("workers", throughput.RAW, "burst", args.burst, concurrency, 1),
            ("workers", throughput.ENGINE, "burst", args.burst, concurrency, 1),
        ]
    runs = []
    autovacuum_paused = harness.db.pause_autovacuum()
    try:
        for part, workload, mode, n, concurrency, round_ in phases:
            if part in args.skip:
                continue
            progress(
                f"{workload.name}, {mode}, N={n}, -c {concurrency}, round {round_}"
            )
            runs.append(throughput.run(harness, workload, mode, n, concurrency, round_))
    finally:
        if autovacuum_paused:
            harness.db.resume_autovacuum()
    beside = None
    if "inflight" not in args.skip:
        progress(f"in flight: {args.tracers} tracers beside a burst of {args.burst}")
        beside = inflight.run(harness, args.tracers, args.burst)
    result = None
    if "scale" not in args.skip:
        harness.reset()
        progress(f"scale: writing {args.finished:,} finished, {args.active:,} active")
        result = scale.run(
            finished=args.finished,
            active=args.active,
            due=args.due,
            starts=args.starts,
            finished_attempts=args.finished_attempts,
            profile=args.profile,
        )
        progress(f"scale: rows written in {result.generate_s:.0f}s")
    probes = []
    if args.profile:
        # The order saga's probe too when its burst ran: it is the one to explain.
        profiled = [("no-op 3-step", throughput.ENGINE)]
        if "order" not in args.skip:
            profiled.append(("order", throughput.ORDER))
        for label, workload in profiled:
            harness.reset()
            progress(f"profiling the {label} sagas' step path in this process")
            probes.append(stepprobe.run(workload, args.probe, label))
    harness.reset()
    harness.close()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]  # type: ignore[index]
    progress(f"done in {time.monotonic() - began:.0f}s; worker logs in {var_dir}")

    print(
        f"Saga engine benchmark: {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}, PostgreSQL {pg_version}, Redis"
        f" {harness.redis_version}; settings {os.environ['DJANGO_SETTINGS_MODULE']};"
        " workers: prefork -c 2 unless said, acks_late, prefetch 1,"
        " LOG_LEVEL=WARNING unless said, DEBUG off"
    )
    print()
    if runs:
        print(report.runs_table(runs))
        print()
        print(
            "Burst: the whole burst is queued while the worker is frozen"
            " (SIGSTOP); latency and throughput count from its release. Serial:"
            " from before the start (saga_start's transaction, or apply_async)."
            " End: finished_at for sagas, the last task's clock for the chain."
            " xact/step and sessions/step: pg_stat_database deltas for the"
            " worker alone (the harness's own transactions subtracted"
            + (", autovacuum paused)." if autovacuum_paused else ").")
            + f" The raw chain and the engine ran {args.rounds} round(s) side by"
            " side, serial then burst, the one going first alternating; each"
            " engine / raw ratio is the median of the rounds' ratios."
        )
        print()
        spent = report.timeline_table(runs)
        if spent is not None:
            print(
                "Where an engine saga's serial time goes, from the database's"
                " statement times (a 3-step saga: start + first + 3 steps + 2"
                " between, the last step ending the saga):"
            )
            print(spent)
            print()
        queued = [
            f"{r.workload} (round {r.round_no}) {r.submit_elapsed:.1f}s"
            for r in runs
            if r.mode == "burst"
        ]
        if queued:
            print("Time the harness took to queue each burst: " + ", ".join(queued))
            print()
        print(report.table(["ratio", "value"], report.ratios(runs)))
        print()
        sizing = report.sizing_rows(runs)
        if sizing:
            print(
                "Sizing (no-op 3-step burst): throughput by worker processes, and"
                " the PostgreSQL CPU each saga costs. One PostgreSQL core carries"
                " 1 / (PG CPU per saga) sagas/s before it saturates; ratios are"
                " engine / raw chain at the same worker count."
            )
            print(report.table(report.SIZING_HEADERS, sizing))
            print()
        busy = [run for run in runs if run.others_load > OTHERS_WARN]
        if busy:
            print(
                f"WARNING: {len(busy)} phase(s) shared the CPUs with processes outside"
                f" the benchmark (up to {max(r.others_load for r in busy):.2f} cores):"
                " their timings are pessimistic. Rerun on an idle machine."
            )
            print()
    if beside is not None:
        print(
            f"In flight: {beside.tracers} sagas whose first step waited for a retry"
            f" while a burst of {beside.burst:,} new sagas was queued; the retries"
            " fell due just after the worker was released. From due to end:"
            f" p50 {beside.percentile(0.5) * 1000:.0f} ms, p95"
            f" {beside.percentile(0.95) * 1000:.0f} ms; the burst took"
            f" {beside.burst_elapsed:.1f}s and {beside.burst_left_at_median:,} of"
            " it were still unfinished when the median tracer ended."
        )
        print()
    if result is not None:
        print(
            f"Scale: {result.finished:,} finished + {result.active:,} active sagas"
            f" ({result.due} due), written in {result.generate_s:.0f}s"
        )
        print(report.scale_table(result))
        print()
    targets = report.targets(runs, result, beside)
    print(
        report.table(
            ["target", "figure", "target", "status"],
            [[t.name, t.figure, t.target, report.status(t.met)] for t in targets],
        )
    )
    met = sum(1 for t in targets if t.met)
    print(f"\n{met} of {len(targets)} targets met.")
    for probe in probes:
        print(
            f"\nThe step path in one process, no broker ({probe.sagas}"
            f" {probe.workload} sagas, inline): {probe.statements_per_saga}"
            f" statements and {probe.transactions_per_saga} transactions per saga"
            " (every database), "
            f"{probe.cpu_ms_per_saga:.2f} ms CPU and {probe.wall_ms_per_saga:.2f} ms"
            " wall per saga; profiled (pyinstrument):"
        )
        print(probe.profile)
    if result is not None and result.sweep_profile:
        print("\nOne warm sweeper pass, profiled (pyinstrument):")
        print(result.sweep_profile)
    if result is not None:
        print("\nEXPLAIN (ANALYZE, BUFFERS), second run of each query:")
        for explained in result.explained:
            print(f"\n-- {explained.label}")
            print(explained.plan)
    return 0
