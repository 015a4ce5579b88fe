"""Print the figures beside their targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bench.inflight import InFlight
from bench.scale import ScaleResult
from bench.throughput import SEGMENTS, Run

CHANGELIST_LIMIT_MS = 300.0
SWEEP_LIMIT_MS = 50.0


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    target: str
    met: bool | None  # None: not measured in this run


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Return a plain-text table with right-aligned numbers."""
    rows = [list(row) for row in rows]
    widths = [
        max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _f(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def runs_table(runs: Sequence[Run]) -> str:
    headers = [
        "workload", "mode", "-c", "round", "N", "sagas/s", "p50 ms", "p95 ms", "p99 ms",
        "worker CPU ms/saga", "PG CPU ms/saga", "sagas/s per PG core",
        "worker RSS MB before>after",
        "PSS MB after", "xact/step", "sessions/step", "not done", "others' cores",
    ]  # fmt: skip
    rows = []
    for run in runs:
        rows.append(
            [
                run.workload,
                run.mode,
                str(run.concurrency),
                str(run.round_no),
                str(run.n),
                _f(run.rate),
                _f(run.percentile(0.50) * 1000),
                _f(run.percentile(0.95) * 1000),
                _f(run.percentile(0.99) * 1000),
                _f(run.cpu * 1000 / run.n, 2),
                _f(None if run.pg_cpu is None else run.pg_cpu * 1000 / run.n, 2),
                _per_core(run),
                f"{run.before.worker.rss_mb:.0f}>{run.after.worker.rss_mb:.0f}",
                _f(run.after.worker.pss_mb, 0),
                _f(run.commits_per_step, 2),
                _f(run.sessions_per_step, 2),
                str(run.not_completed),
                _f(run.others_load, 2),
            ]
        )
    return table(headers, rows)


def timeline_table(runs: Sequence[Run]) -> str | None:
    """Return where a serial saga's time went (median ms), a column per round."""
    serial = [run for run in runs if run.timeline is not None]
    if not serial:
        return None
    headers = [
        "engine, serial: segment (median)",
        *(f"round {r.round_no} ms" for r in serial),
    ]
    rows = [
        [
            label,
            *(_f((run.timeline or {}).get(name, math.nan) * 1000, 2) for run in serial),
        ]
        for name, label in SEGMENTS
    ]
    return table(headers, rows)


def _per_core(run: Run) -> str:
    """Return the sagas/s one PostgreSQL core would carry, if PostgreSQL was busy.

    Below a tick of CPU over the phase (the raw chain never queries it) the
    figure would be noise.
    """
    if run.pg_cpu is None or run.pg_cpu < 0.05:
        return "-"
    return _f(run.sagas_per_pg_core, 0)


def _find(
    runs: Sequence[Run],
    workload: str,
    mode: str,
    concurrency: int = 2,
    round_no: int = 1,
) -> Run | None:
    for run in runs:
        if (
            run.workload == workload
            and run.mode == mode
            and run.concurrency == concurrency
            and run.round_no == round_no
        ):
            return run
    return None


@dataclass(frozen=True)
class Paired:
    """An engine-to-raw ratio measured round by round, and its median."""

    ratios: list[float]
    # The round whose ratio is the median (the lower middle one if even).
    raw: Run
    engine: Run

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def describe(self, figures: Callable[[Run], str]) -> str:
        """Return "1.23x (8.1 vs 6.6 ms), rounds 1.10x 1.23x 1.40x"."""
        text = f"{self.median:.2f}x ({figures(self.engine)} vs {figures(self.raw)})"
        return text + (f", {self.rounds()}" if len(self.ratios) > 1 else "")

    def rounds(self) -> str:
        """Return "rounds 1.10x 1.23x 1.40x"."""
        return "rounds " + " ".join(f"{r:.2f}x" for r in self.ratios)


def paired(
    runs: Sequence[Run], mode: str, measure: Callable[[Run], float]
) -> Paired | None:
    """Return ``measure`` engine / raw chain for each round of ``mode`` (-c 2).

    The two sides of a ratio ran back to back, so each round's ratio holds
    under the machine's drift between rounds; the median drops one odd round.
    """
    pairs = []
    for round_no in sorted({run.round_no for run in runs if run.mode == mode}):
        raw = _find(runs, "raw chain", mode, round_no=round_no)
        engine = _find(runs, "engine", mode, round_no=round_no)
        if raw is not None and engine is not None and measure(raw):
            pairs.append((measure(engine) / measure(raw), raw, engine))
    if not pairs:
        return None
    ratios = [ratio for ratio, _, _ in pairs]
    _, raw, engine = sorted(pairs, key=lambda pair: pair[0])[(len(pairs) - 1) // 2]
    return Paired(ratios, raw, engine)


SIZING_HEADERS = [
    "worker processes", "raw sagas/s", "engine sagas/s", "engine / raw",
    "engine worker CPU ms/saga", "engine / raw CPU", "engine PG CPU ms/saga",
    "sagas/s per PG core", "others' cores",
]  # fmt: skip


def sizing_rows(runs: Sequence[Run]) -> list[list[str]]:
    """Return one row per worker count measured with both the chain and the engine.

    The raw chain never touches PostgreSQL: its per-core figure is unbounded,
    so the engine's stands without a ratio.
    """
    rows = []
    counts = sorted({run.concurrency for run in runs if run.mode == "burst"})
    for concurrency in counts:
        raw = _find(runs, "raw chain", "burst", concurrency)
        engine = _find(runs, "engine", "burst", concurrency)
        if raw is None or engine is None:
            continue
        pg_ms = engine.pg_cpu_per_saga
        rows.append(
            [
                str(concurrency),
                _f(raw.rate),
                _f(engine.rate),
                _x(engine.rate, raw.rate),
                _f(engine.cpu * 1000 / engine.n, 2),
                _x(engine.cpu / engine.n, raw.cpu / raw.n),
                _f(None if pg_ms is None else pg_ms * 1000, 2),
                _per_core(engine),
                _f(max(raw.others_load, engine.others_load), 2),
            ]
        )
    return rows


def ratios(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """Return engine-to-raw ratios for each mode measured (median of the rounds)."""
    measures: list[tuple[str, Callable[[Run], float]]] = [
        ("throughput", lambda run: run.rate),
        ("p50 latency", lambda run: run.percentile(0.5)),
        ("p99 latency", lambda run: run.percentile(0.99)),
        ("worker CPU per saga", lambda run: run.cpu / run.n),
        ("worker RSS after", lambda run: run.after.worker.rss_mb),
    ]
    lines = []
    for mode in ("serial", "burst"):
        for label, measure in measures:
            found = paired(runs, mode, measure)
            if found is not None:
                rounds = f" ({found.rounds()})" if len(found.ratios) > 1 else ""
                lines.append(
                    (f"{mode} {label}, engine / raw", f"{found.median:.2f}x{rounds}")
                )
    info, engine = (
        _find(runs, "engine, INFO logs", "burst"),
        _find(runs, "engine", "burst"),
    )
    if info is not None and engine is not None:
        lines.append(
            ("burst worker CPU per saga, INFO / WARNING logs", _x(info.cpu, engine.cpu))
        )
    return lines


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def targets(
    runs: Sequence[Run], scale: ScaleResult | None, beside: InFlight | None = None
) -> list[Target]:
    """Return each target with the figure this run measured."""
    out: list[Target] = []
    throughput = paired(runs, "burst", lambda run: run.rate)
    if throughput is not None:
        out.append(
            Target(
                "engine no-op burst throughput / raw chain",
                throughput.describe(lambda run: f"{run.rate:.0f}/s"),
                ">= 1.0x",
                throughput.median >= 1.0,
            )
        )
    engines = [
        run
        for run in runs
        if run.workload == "engine" and run.mode == "burst" and run.concurrency == 2
    ]
    if engines:
        # The worst round: every one of them must stay within a transaction a step.
        commits = max(run.commits_per_step for run in engines)
        out.append(
            Target(
                "DB transactions per step, happy path (engine burst, worst round)",
                f"{commits:.2f}",
                "<= 1.0",
                # Compared as printed, to two decimals.
                round(commits, 2) <= 1.0,
            )
        )
    serial = paired(runs, "serial", lambda run: run.percentile(0.5))
    if serial is not None:
        out.append(
            Target(
                "serial p50 latency / raw chain's",
                serial.describe(lambda run: f"{run.percentile(0.5) * 1000:.1f} ms"),
                "<= 1.5x",
                serial.median <= 1.5,
            )
        )
    burst = paired(runs, "burst", lambda run: run.percentile(0.5))
    if burst is not None:
        out.append(
            Target(
                "burst p50 latency / raw chain's",
                burst.describe(lambda run: f"{run.percentile(0.5) * 1000:.0f} ms"),
                "<= 0.5x",
                burst.median <= 0.5,
            )
        )
    order = _find(runs, "order saga", "burst")
    if beside is not None:
        # Not stalled: a begun saga ends long before the burst queued ahead of it.
        share = beside.percentile(0.5) / beside.burst_elapsed
        out.append(
            Target(
                f"in-flight p50 beside a {beside.burst:,} burst / the burst's drain",
                f"{share:.3f}x ({beside.percentile(0.5) * 1000:.0f} ms vs"
                f" {beside.burst_elapsed:.1f} s)",
                "<= 0.1x",
                share <= 0.1,
            )
        )
    if order:
        out.append(
            Target(
                "order saga burst throughput",
                f"{order.rate:.0f} sagas/s",
                ">= 120 sagas/s",
                order.rate >= 120 and order.not_completed == 0,
            )
        )
    if scale:
        out.append(
            Target(
                f"sweeper pass ({scale.finished:,} finished, {scale.active:,} active,"
                f" {scale.sweep_due_handled} due)",
                f"{scale.sweep_due_ms:.1f} ms",
                f"<= {SWEEP_LIMIT_MS:.0f} ms",
                scale.sweep_due_ms <= SWEEP_LIMIT_MS,
            )
        )
        slowest = max(
            (e for e in scale.explained if not e.label.startswith("sweeper")),
            key=lambda e: e.execution_ms,
        )
        out.append(
            Target(
                "changelist queries, slowest (EXPLAIN ANALYZE)",
                f"{slowest.execution_ms:.1f} ms ({slowest.label})",
                f"<= {CHANGELIST_LIMIT_MS:.0f} ms",
                all(
                    e.execution_ms <= CHANGELIST_LIMIT_MS
                    for e in scale.explained
                    if not e.label.startswith("sweeper")
                ),
            )
        )
    rss = paired(runs, "burst", lambda run: run.after.worker.rss_mb)
    if rss is not None:
        out.append(
            Target(
                "worker RSS / raw Celery worker's (after burst)",
                rss.describe(lambda run: f"{run.after.worker.rss_mb:.0f} MB"),
                "<= 1.2x",
                rss.median <= 1.2,
            )
        )
    return out


def scale_table(scale: ScaleResult) -> str:
    rows = [
        [
            f"sweeper pass, {scale.sweep_due_handled} due, warm (median of 7)"
            f" ({scale.sweep_due_ms / max(scale.sweep_due_handled, 1):.1f} ms each)",
            f"{scale.sweep_due_ms:.1f}",
            f"<= {SWEEP_LIMIT_MS:.0f}",
        ],
        [
            f"first sweeper pass, {scale.sweep_due_handled} due (cold)",
            f"{scale.sweep_cold_ms:.1f}",
            "-",
        ],
        ["sweeper pass, none due (median of 5)", f"{scale.sweep_idle_ms:.1f}", "-"],
        [
            "metrics gauges read by a sweep task (median of 5)",
            f"{scale.gauges_ms:.1f}",
            "-",
        ],
        [
            f"saga_start in a transaction (median / p95 of {scale.starts})",
            f"{scale.start_p50_ms:.2f} / {scale.start_p95_ms:.2f}",
            "-",
        ],
    ]
    for explained in scale.explained:
        limit = "-" if explained.label.startswith("sweeper") else "<= 300"
        rows.append(
            [
                f"{explained.label} (exec + plan)",
                f"{explained.execution_ms:.1f} + {explained.planning_ms:.1f}",
                limit,
            ]
        )
    return table(["query / operation", "ms", "target ms"], rows)


def status(met: bool | None) -> str:
    return {True: "MET", False: "MISSED", None: "not measured"}[met]
