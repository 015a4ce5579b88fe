"""The launcher of the demo's, the suite's and the bench's processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from sagas.processes import Process, ProcessError


class Marked(Process):
    ready_marker = "listening"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """Return whether ``pid`` ended (a zombie waiting for init to reap it counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_start_waits_for_the_marker_and_stop_ends_the_whole_group(
    tmp_path: Path,
) -> None:
    # given: a process that starts a child of its own (same process group)
    code = (
        "import subprocess, sys, time\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "child = subprocess.Popen(sleeper)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(0.5)\n"
        "print('listening', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = Marked("marked", _python(code), dict(os.environ), tmp_path)

    # when
    began = time.monotonic()
    process.start()
    waited = time.monotonic() - began
    child = int(process.log_text().split()[0])
    process.stop()

    # then
    assert waited >= 0.5
    assert not process.alive
    assert _gone(child)


def test_a_process_that_exits_before_it_is_ready_fails_with_its_log(
    tmp_path: Path,
) -> None:
    # given
    process = Marked(
        "early", _python("print('no such setting'); raise SystemExit(3)"), {}, tmp_path
    )

    # when / then
    with pytest.raises(ProcessError, match="no such setting"):
        process.start()


def test_a_process_that_exits_cleanly_before_it_is_ready_fails_too(
    tmp_path: Path,
) -> None:
    process = Marked("clean", _python("print('done')"), {}, tmp_path)

    with pytest.raises(ProcessError, match="exited early"):
        process.start()


def test_each_start_reads_only_its_own_lines_of_the_log(tmp_path: Path) -> None:
    # given: a process started, stopped and started again on the same log
    code = (
        "import sys, time; print('listening', sys.argv[1], flush=True); time.sleep(60)"
    )
    first = Marked("twice", [*_python(code), "first"], {}, tmp_path).start()
    first.stop()

    # when
    second = Marked("twice", [*_python(code), "second"], {}, tmp_path).start()
    second.stop()

    # then
    assert second.log_text() == "listening second\n"
    assert "listening first" in second.log_tail()
