"""Measure processes through /proc and PostgreSQL through its statistics views."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

_TICK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    """Return /proc/PID/stat fields after the command name (field 3 onwards)."""
    raw = (_PROC / str(pid) / "stat").read_text()
    # The command name may contain spaces and parentheses: cut at the last ")".
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """Return ``root`` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class TreeUsage:
    """CPU seconds and memory of a process tree at one instant."""

    cpu: float
    rss_mb: float
    pss_mb: float
    processes: int


def tree_usage(root: int) -> TreeUsage:
    """Sum user+system CPU (reaped children included), RSS and PSS over a tree."""
    ticks = 0
    rss_kb = pss_kb = 0
    pids = process_tree(root)
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            # utime, stime, cutime, cstime: fields 14-17 of proc(5).
            ticks += sum(int(value) for value in fields[11:15])
            rss_kb += _status_kb(pid, "VmRSS:")
            pss_kb += _rollup_kb(pid, "Pss:")
        except (OSError, ValueError):
            continue
    return TreeUsage(
        cpu=ticks / _TICK,
        rss_mb=rss_kb / 1024,
        pss_mb=pss_kb / 1024,
        processes=len(pids),
    )


def _status_kb(pid: int, key: str) -> int:
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def _rollup_kb(pid: int, key: str) -> int:
    try:
        text = (_PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def machine_busy() -> float:
    """Return the CPU seconds all processors have spent busy since boot."""
    with (_PROC / "stat").open() as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def process_cpu(pid: int) -> float:
    """Return one process's user+system CPU seconds (no children)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True)
class DbCounters:
    """Cumulative counters of one database from pg_stat_database."""

    commits: int
    rollbacks: int
    sessions: int


class DbStats:
    """Read a database's counters over a connection to another database.

    Reading through the ``postgres`` database keeps these reads out of the
    counters being measured.
    """

    def __init__(self, url: str, dbname: str) -> None:
        self.dbname = dbname
        self.conn = psycopg.connect(url, dbname="postgres", autocommit=True)

    def read(self) -> DbCounters:
        """Return the counters as the statistics collector has them now."""
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT xact_commit, xact_rollback, sessions"
                " FROM pg_stat_database WHERE datname = %s",
                (self.dbname,),
            )
            row = cursor.fetchone()
        assert row is not None
        return DbCounters(commits=row[0], rollbacks=row[1], sessions=row[2])

    def settled(self, *, timeout: float = 15.0) -> DbCounters:
        """Return the counters once backends have flushed their pending stats.

        Backends report at most once a second, so wait until two reads 0.6 s
        apart agree (bounded by ``timeout``).
        """
        deadline = time.monotonic() + timeout
        last = self.read()
        while time.monotonic() < deadline:
            time.sleep(0.6)
            now = self.read()
            if now == last:
                return now
            last = now
        return last

    def pause_autovacuum(self) -> bool:
        """Turn autovacuum off server-wide, if allowed; return whether it is off.

        Its transactions would be counted as the worker's, and its CPU as the
        database's share of a saga.
        """
        return self._autovacuum("ALTER SYSTEM SET autovacuum = off")

    def resume_autovacuum(self) -> None:
        self._autovacuum("ALTER SYSTEM RESET autovacuum")

    def _autovacuum(self, statement: str) -> bool:
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            row = cursor.fetchone()
            if not row or not row[0]:
                return False
            cursor.execute(statement)
            cursor.execute("SELECT pg_reload_conf()")
        return True

    def postmaster_pid(self) -> int | None:
        """Return the PID of the server's postmaster, if this host can see it."""
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            row = cursor.fetchone()
        assert row is not None
        try:
            return int(_stat_fields(int(row[0]))[1])
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        self.conn.close()
