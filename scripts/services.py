#!/usr/bin/env python3
"""Run a command against throwaway PostgreSQL and Redis (and RabbitMQ) servers.

The servers listen on free ports on 127.0.0.1 and keep all their files in a
temporary directory, which is removed afterwards. Only the processes started
here are ever stopped (plus the Redis server named in the Redis pidfile, when
the command restarted Redis itself and that process is a ``redis-server``).

Usage::

    python scripts/services.py run -- pytest -x
    python scripts/services.py run --rabbitmq -- pytest tests/test_chaos.py
    python scripts/services.py start --env-file var/services.env

``run`` exits with the exit status of the command. ``start`` writes
``KEY=value`` lines to the env file (load them with ``set -a; . FILE; set +a``)
and stays in the foreground until SIGTERM or SIGINT.

Exported variables: ``DATABASE_URL``, ``CELERY_BROKER_URL``,
``SAGAS_TEST_REDIS_CONF``, ``SAGAS_TEST_REDIS_PIDFILE`` and
``SAGAS_TEST_SERVICES=1``; with ``--rabbitmq`` also ``SAGAS_TEST_RABBITMQ_URL``,
``SAGAS_TEST_RABBITMQ_START`` (how to start the node again) and
``SAGAS_TEST_RABBITMQ_PIDFILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import glob
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

HOST = "127.0.0.1"
DB_NAME = "sagas"
DB_USER = "sagas"
DB_PASSWORD = "sagas"
PG_OS_USER = "postgres"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CHILD_GRACE = 30.0
PORT_ATTEMPTS = 5
APT_ATTEMPTS = 5


class ServiceError(RuntimeError):
    """A service could not be installed or started."""


class PortInUseError(ServiceError):
    """The chosen port was taken before the server could bind it."""


class Interrupted(Exception):
    """A termination signal arrived while the services were starting."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------


class SignalState:
    """Record SIGINT/SIGTERM instead of dying, so cleanup always runs."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.on_signal: Callable[[int], None] | None = None

    def install(self) -> None:
        """Route SIGINT, SIGTERM and SIGHUP to this object."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.on_signal is not None:
            self.on_signal(signum)

    @property
    def first(self) -> int | None:
        """Return the first signal received, if any."""
        return self.received[0] if self.received else None

    def check(self) -> None:
        """Raise ``Interrupted`` if a termination signal has arrived."""
        if self.received:
            raise Interrupted(self.received[0])


SIGNALS = SignalState()

# Server processes started here. They are polled while the command runs so
# that a server the command stops (e.g. Redis, via its pidfile) is reaped at
# once instead of lingering as a zombie that still looks alive to ``kill -0``.
SERVICE_PROCS: list[subprocess.Popen[bytes]] = []


def reap_services() -> None:
    """Reap server processes started here that have exited."""
    for proc in SERVICE_PROCS:
        proc.poll()


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def log(message: str) -> None:
    """Print a status line on stderr, so that the command's stdout stays clean."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def is_root() -> bool:
    """Return whether this process runs as root."""
    return os.geteuid() == 0


def sleep_checked(seconds: float) -> None:
    """Sleep, but raise ``Interrupted`` promptly if a signal arrived."""
    SIGNALS.check()
    time.sleep(seconds)
    SIGNALS.check()


def tail(path: Path, lines: int = 30) -> str:
    """Return the last lines of a log file, or an empty string."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The state follows the parenthesised command name, which may hold spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def die_with_parent(signum: int) -> Callable[[], None] | None:
    """Return a preexec_fn that sends ``signum`` to the child if we die.

    This keeps a server from outliving this script even when it is killed
    with SIGKILL (Linux only; elsewhere the servers are only stopped normally).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signum, 0, 0, 0)
        if os.getppid() != parent:  # we died before prctl took effect
            os.kill(os.getpid(), signum)

    return preexec


def privileged(cmd: Sequence[str]) -> list[str]:
    """Prefix ``cmd`` with sudo when not root and sudo is available."""
    if is_root():
        return list(cmd)
    if shutil.which("sudo"):
        return ["sudo", "-n", *cmd]
    raise ServiceError(
        f"need root to run {shlex.join(cmd)!r}; install the package by hand"
    )


def apt_install(*packages: str) -> None:
    """Install Debian packages, retrying while another apt/dpkg holds the lock."""
    if not shutil.which("apt-get"):
        raise ServiceError(f"apt-get not found; install {' '.join(packages)} by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=120"]
    steps = [
        privileged(["apt-get", *lock, "update"]),
        privileged(
            [
                "apt-get",
                *lock,
                "install",
                "-y",
                "--no-install-recommends",
                *packages,
            ]
        ),
    ]
    log(f"installing {' '.join(packages)} with apt-get")
    for step in steps:
        for attempt in range(1, APT_ATTEMPTS + 1):
            SIGNALS.check()
            result = subprocess.run(
                step, env=env, stdin=subprocess.DEVNULL, check=False
            )
            if result.returncode == 0:
                break
            if attempt == APT_ATTEMPTS:
                raise ServiceError(f"{shlex.join(step)} failed ({result.returncode})")
            log(f"{step[-1]} failed (maybe the dpkg lock is held); retrying")
            sleep_checked(min(5.0 * attempt, 30.0))


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def find_pg_bindir() -> Path | None:
    """Return the bin directory of the newest PostgreSQL found, if any."""
    override = os.environ.get("SAGAS_PG_BINDIR")
    if override:
        return Path(override)
    found: list[tuple[int, Path]] = []
    for candidate in glob.glob("/usr/lib/postgresql/*/bin"):
        path = Path(candidate)
        version = path.parent.name
        if not version.isdigit():
            continue
        if (path / "postgres").exists() and (path / "initdb").exists():
            found.append((int(version), path))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    return None


def ensure_postgres() -> Path:
    """Return the PostgreSQL bin directory, installing PostgreSQL if needed."""
    bindir = find_pg_bindir()
    if bindir is None:
        apt_install("postgresql")
        bindir = find_pg_bindir()
    if bindir is None:
        raise ServiceError("PostgreSQL binaries not found after installing them")
    return bindir


def ensure_os_user(name: str) -> pwd.struct_passwd:
    """Return the OS user ``name``, creating it as a system user if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    log(f"creating system user {name}")
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", name],
        check=True,
    )
    return pwd.getpwnam(name)


class Postgres:
    """A throwaway PostgreSQL cluster."""

    def __init__(self, root: Path) -> None:
        self.bindir = ensure_postgres()
        self.dir = root / "pg"
        self.datadir = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""
        self.user: pwd.struct_passwd | None = None
        if is_root():
            self.user = ensure_os_user(PG_OS_USER)

    @property
    def url(self) -> str:
        """Return the DATABASE_URL for the ``sagas`` role and database."""
        return f"postgres://{DB_USER}:{DB_PASSWORD}@{HOST}:{self.port}/{DB_NAME}"

    def _popen_kwargs(self) -> dict[str, Any]:
        """Return the Popen arguments that run a program as the cluster owner."""
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        kwargs: dict[str, Any] = {
            "cwd": self.dir,
            "env": env,
            "stdin": subprocess.DEVNULL,
        }
        if self.user is not None:
            env["HOME"] = str(self.dir)
            env["USER"] = env["LOGNAME"] = self.user.pw_name
            kwargs.update(
                user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[]
            )
        return kwargs

    def _run(self, cmd: Sequence[str]) -> str:
        """Run a PostgreSQL tool as the cluster owner and return its output."""
        result: subprocess.CompletedProcess[bytes] = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
            **self._popen_kwargs(),
        )
        output = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            SIGNALS.check()  # killed by a Ctrl-C aimed at us: report that instead
            raise ServiceError(f"{shlex.join(cmd)} failed:\n{output}")
        return output

    def start(self) -> None:
        """Create the cluster, start the server and create role and database."""
        self.dir.mkdir(mode=0o700)
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.version = self._run([str(self.bindir / "postgres"), "--version"])
        match = re.search(r"\)\s*(\S+)", self.version)
        self.version = match.group(1) if match else self.bindir.parent.name
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ]
        )
        SIGNALS.check()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_server(free_port())
                break
            except PortInUseError:
                if attempt == PORT_ATTEMPTS:
                    raise
                log("postgres: port taken, retrying with another one")
        self._psql(
            f"CREATE ROLE {DB_USER} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'",
            f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}",
        )

    def _start_server(self, port: int) -> None:
        """Start the postmaster on ``port`` and wait until it accepts connections."""
        self.port = port
        settings = {
            "port": str(port),
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "logging_collector": "off",
        }
        cmd = [str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        with self.logfile.open("ab") as logf:
            self.proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGINT),  # fast shutdown
                **self._popen_kwargs(),
            )
        SERVICE_PROCS.append(self.proc)
        deadline = time.monotonic() + START_TIMEOUT
        # Ask our own socket, not 127.0.0.1:port, which a parallel run might
        # have grabbed first; _is_ready() checks that we own the TCP port too.
        isready = [
            str(self.bindir / "pg_isready"),
            "-q",
            "-h",
            str(self.dir),
            "-p",
            str(port),
            "-t",
            "1",
        ]
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                log_tail = tail(self.logfile)
                if "Address already in use" in log_tail:
                    raise PortInUseError(log_tail)
                raise ServiceError(f"postgres exited with {code}:\n{log_tail}")
            if self._is_ready(self.proc.pid):
                ready = subprocess.run(
                    isready, stdin=subprocess.DEVNULL, capture_output=True, check=False
                )
                if ready.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"postgres did not start in time:\n{tail(self.logfile)}"
                )
            sleep_checked(0.1)

    def _is_ready(self, pid: int) -> bool:
        """Return whether our postmaster has bound its sockets and is ready.

        The postmaster writes "ready" into line 8 of postmaster.pid once it
        accepts connections; it exits instead if it cannot bind the TCP port.
        """
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and lines[0].strip() == str(pid)
            and lines[7].strip() == "ready"
        )

    def _psql(self, *statements: str) -> None:
        """Run SQL statements as the bootstrap superuser over the unix socket."""
        cmd = [
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]
        for statement in statements:
            cmd += ["-c", statement]
        self._run(cmd)

    def stop(self) -> None:
        """Stop the postmaster started here (fast shutdown, then harder)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for signum, timeout in (
            (signal.SIGINT, STOP_TIMEOUT),  # fast shutdown
            (signal.SIGQUIT, 5.0),  # immediate shutdown
            (signal.SIGKILL, 5.0),
        ):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                log(f"postgres did not stop after {signal.Signals(signum).name}")


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


def ensure_redis() -> str:
    """Return the path of redis-server, installing it if needed."""
    path = shutil.which("redis-server")
    if path is None:
        apt_install("redis-server")
        path = shutil.which("redis-server")
    if path is None:
        raise ServiceError("redis-server not found after installing it")
    return path


def redis_pid(port: int) -> int | None:
    """Return the process id of the Redis server on ``port``, if one answers."""
    data = b""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"INFO server\r\n")
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
                match = re.search(rb"\r\nprocess_id:(\d+)\r\n", data)
                if match:
                    return int(match.group(1))
    except OSError:
        pass
    return None


class Redis:
    """A throwaway Redis server with a config file tests can restart it with."""

    def __init__(self, root: Path) -> None:
        self.binary = ensure_redis()
        self.dir = root
        self.conf = root / "redis.conf"
        self.pidfile = root / "redis.pid"
        self.logfile = root / "redis.log"
        self.stderr_log = root / "redis.stderr.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    @property
    def url(self) -> str:
        """Return the CELERY_BROKER_URL for database 0."""
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        """Write the config file, start the server and wait for PING."""
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        match = re.search(r"v=(\S+)", out)
        self.version = match.group(1) if match else "?"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_server(free_port())
                return
            except PortInUseError:
                if attempt == PORT_ATTEMPTS:
                    raise
                log("redis: port taken, retrying with another one")

    def _write_conf(self, port: int) -> None:
        """Write the Redis config file for ``port``."""
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f'dir "{self.dir}"',
            "appendonly yes",
            "maxmemory-policy noeviction",
            'save ""',
            "daemonize no",
            f'pidfile "{self.pidfile}"',
            f'logfile "{self.logfile}"',
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _start_server(self, port: int) -> None:
        """Start redis-server on ``port`` and wait until it answers PING."""
        self.port = port
        self._write_conf(port)
        with self.stderr_log.open("ab") as errf:
            self.proc = subprocess.Popen(
                [self.binary, str(self.conf)],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=errf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        SERVICE_PROCS.append(self.proc)
        deadline = time.monotonic() + START_TIMEOUT
        # Compare process ids: a parallel run might own this port already.
        while redis_pid(port) != self.proc.pid:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                message = tail(self.stderr_log) + "\n" + tail(self.logfile)
                if "Address already in use" in message:
                    raise PortInUseError(message)
                raise ServiceError(f"redis-server exited with {code}:\n{message}")
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"redis did not start in time:\n{tail(self.logfile)}"
                )
            sleep_checked(0.05)

    def _is_our_redis(self, pid: int) -> bool:
        """Return whether ``pid`` is a redis-server serving this instance."""
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        if comm != "redis-server":
            return False
        return f"{HOST}:{self.port}" in cmdline or str(self.conf) in cmdline

    def stop(self) -> None:
        """Stop our redis-server and any restarted one named in the pidfile."""
        pids: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(self.pidfile.read_text().strip()))
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None and proc.pid not in pids:
            pids.append(proc.pid)
        for pid in pids:
            if proc is not None and pid == proc.pid:
                self._stop_child(proc)
            elif self._is_our_redis(pid):
                self._stop_foreign(pid)

    @staticmethod
    def _stop_child(proc: subprocess.Popen[bytes]) -> None:
        """Terminate a redis-server started by this script and reap it."""
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log("redis did not stop after SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5.0)

    @staticmethod
    def _stop_foreign(pid: int) -> None:
        """Terminate a redis-server restarted by the command (not our child)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid):
            if time.monotonic() > deadline:
                log(f"redis (pid {pid}) did not stop after SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)


# --------------------------------------------------------------------------
# RabbitMQ
# --------------------------------------------------------------------------

RABBITMQ_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def ensure_rabbitmq() -> Path:
    """Return the rabbitmq-server start script, installing the package if needed."""
    if not RABBITMQ_SCRIPT.exists():
        apt_install("rabbitmq-server")
    if not RABBITMQ_SCRIPT.exists():
        raise ServiceError("rabbitmq-server not found after installing it")
    return RABBITMQ_SCRIPT


def amqp_ready(port: int) -> bool:
    """Return whether an AMQP 0-9-1 server answers the protocol header on ``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            # Connection.Start: a method frame (type 1) on channel 0.
            return sock.recv(7)[:3] == b"\x01\x00\x00"
    except OSError:
        return False


class RabbitMQ:
    """A throwaway RabbitMQ node on loopback, private to this run.

    Its own node name, AMQP and distribution ports, Erlang port mapper (epmd,
    started here on a free port), cookie, database and log folders: it shares
    nothing with another node on the machine. Tests restart it with the
    command line and environment written to ``start.json``.
    """

    def __init__(self, root: Path) -> None:
        self.script = ensure_rabbitmq()
        self.dir = root / "rabbitmq"
        self.pidfile = self.dir / "rabbitmq.pid"
        self.logfile = self.dir / "rabbitmq.stdout.log"
        self.start_file = self.dir / "start.json"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self.version = ""

    @property
    def url(self) -> str:
        """Return the CELERY_BROKER_URL (the default vhost; guest is loopback-only)."""
        return f"amqp://guest:guest@{HOST}:{self.port}//"

    def start(self) -> None:
        """Start epmd and the node; wait until the node speaks AMQP."""
        self.dir.mkdir()
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = {HOST}:{{port}}",
                    "loopback_users.guest = true",
                    # A test machine's disk may be nearly full; never block publishers.
                    "disk_free_limit.absolute = 1MB",
                    "vm_memory_high_watermark.relative = 0.8",
                ]
            )
            + "\n"
        )
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_node(epmd)
                return
            except PortInUseError:
                self.stop()
                if attempt == PORT_ATTEMPTS:
                    raise
                log("rabbitmq: port taken, retrying with other ones")

    def _start_node(self, epmd: str) -> None:
        self.port = free_port()
        epmd_port = free_port()
        dist_port = free_port()
        conf = self.dir / "rabbitmq.conf"
        conf.write_text(
            re.sub(r"listeners\.tcp\.1 = .*", f"listeners.tcp.1 = {HOST}:{self.port}",
                   conf.read_text())
        )  # fmt: skip
        env = {
            **os.environ,
            "HOME": str(self.dir),  # the Erlang cookie lives here
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_NODENAME": f"sagas-{os.getpid()}-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_CONFIG_FILE": str(conf.with_suffix("")),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.pidfile),
            "RABBITMQ_LOGS": "-",
        }
        self.epmd = subprocess.Popen(
            [epmd, "-port", str(epmd_port), "-address", HOST],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        SERVICE_PROCS.append(self.epmd)
        argv = [str(self.script)]
        self.start_file.write_text(json.dumps({"argv": argv, "env": env}))
        with self.logfile.open("ab") as logf:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        SERVICE_PROCS.append(self.proc)
        deadline = time.monotonic() + START_TIMEOUT
        while not amqp_ready(self.port):
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                message = tail(self.logfile)
                if "eaddrinuse" in message or "already in use" in message:
                    raise PortInUseError(message)
                raise ServiceError(f"rabbitmq exited with {code}:\n{message}")
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"rabbitmq did not start in time:\n{tail(self.logfile)}"
                )
            sleep_checked(0.2)
        match = re.search(r"RabbitMQ (\d+\.\d+\.\d+)", self.logfile.read_text())
        self.version = match.group(1) if match else "?"

    def _node_pids(self) -> list[int]:
        """Return our node's process ids: the child, and one a test restarted."""
        pids: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(self.dir).encode() in cmdline:
                pids.append(pid)
        if self.proc is not None and self.proc.poll() is None:
            pids.append(self.proc.pid)
        return list(dict.fromkeys(pids))

    def stop(self) -> None:
        """Stop the node (also one restarted by a test), then our epmd."""
        for pid in self._node_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while pid_alive(pid):
                reap_services()
                if time.monotonic() > deadline:
                    log(f"rabbitmq (pid {pid}) did not stop after SIGTERM; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        self.proc = None
        epmd, self.epmd = self.epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            try:
                epmd.wait(5.0)
            except subprocess.TimeoutExpired:
                epmd.kill()


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------


@contextlib.contextmanager
def services(*, rabbitmq: bool = False) -> Iterator[dict[str, str]]:
    """Start PostgreSQL, Redis (and RabbitMQ); yield the variables to export."""
    root = Path(tempfile.mkdtemp(prefix="sagas-services-"))
    # Traversable by the postgres OS user, which owns only the pg/ subdirectory.
    root.chmod(0o711)
    postgres: Postgres | None = None
    redis: Redis | None = None
    rabbit: RabbitMQ | None = None
    try:
        postgres = Postgres(root)
        postgres.start()
        log(f"postgres {postgres.version} on {HOST}:{postgres.port}")
        SIGNALS.check()
        redis = Redis(root)
        redis.start()
        log(f"redis {redis.version} on {HOST}:{redis.port}")
        SIGNALS.check()
        exports = {
            "DATABASE_URL": postgres.url,
            "CELERY_BROKER_URL": redis.url,
            "SAGAS_TEST_REDIS_CONF": str(redis.conf),
            "SAGAS_TEST_REDIS_PIDFILE": str(redis.pidfile),
            "SAGAS_TEST_SERVICES": "1",
        }
        if rabbitmq:
            rabbit = RabbitMQ(root)
            rabbit.start()
            log(f"rabbitmq {rabbit.version} on {HOST}:{rabbit.port}")
            SIGNALS.check()
            exports.update(
                SAGAS_TEST_RABBITMQ_URL=rabbit.url,
                SAGAS_TEST_RABBITMQ_START=str(rabbit.start_file),
                SAGAS_TEST_RABBITMQ_PIDFILE=str(rabbit.pidfile),
            )
        yield exports
    finally:
        # Late signals must not interrupt the cleanup itself.
        SIGNALS.on_signal = None
        for service in (rabbit, redis, postgres):
            if service is not None:
                try:
                    service.stop()
                except Exception as exc:
                    log(f"error while stopping {type(service).__name__}: {exc}")
        shutil.rmtree(root, ignore_errors=True)


def wait_for_child(child: subprocess.Popen[bytes]) -> int:
    """Wait for the command, escalating if we are asked to stop; return its code."""
    escalate_at: float | None = None
    escalations = [signal.SIGTERM, signal.SIGKILL]

    def on_signal(signum: int) -> None:
        nonlocal escalate_at
        if signum != signal.SIGINT:
            # SIGINT from a terminal already reached the command (same process
            # group); other signals are aimed at us alone, so pass them on.
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            if escalations and escalations[0] == signal.SIGTERM:
                escalations.pop(0)
        if escalate_at is None:
            escalate_at = time.monotonic() + CHILD_GRACE

    SIGNALS.on_signal = on_signal
    if SIGNALS.first is not None:
        on_signal(SIGNALS.first)
    try:
        while True:
            reap_services()
            try:
                code = child.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if escalate_at is not None and time.monotonic() > escalate_at:
                if escalations:
                    signum = escalations.pop(0)
                    log(f"command still running; sending {signum.name}")
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(signum)
                escalate_at = time.monotonic() + CHILD_GRACE
    finally:
        SIGNALS.on_signal = None
    return 128 - code if code < 0 else code


def cmd_run(command: list[str], *, rabbitmq: bool = False) -> int:
    """Start the services, run ``command`` with their URLs, return its status."""
    with services(rabbitmq=rabbitmq) as exports:
        env = {**os.environ, **exports}
        try:
            child = subprocess.Popen(
                command, env=env, preexec_fn=die_with_parent(signal.SIGTERM)
            )
        except OSError as exc:
            log(f"cannot run {shlex.join(command)}: {exc}")
            return 127
        return wait_for_child(child)


def cmd_start(env_file: Path, *, rabbitmq: bool = False) -> int:
    """Start the services, write the env file and wait for SIGTERM or SIGINT."""
    env_file = env_file.absolute()
    with services(rabbitmq=rabbitmq) as exports:
        env_file.parent.mkdir(parents=True, exist_ok=True)
        partial = env_file.with_name(env_file.name + ".tmp")
        partial.write_text(
            "".join(f"{key}={shlex.quote(value)}\n" for key, value in exports.items())
        )
        partial.replace(env_file)
        log(f"wrote {env_file}; send SIGTERM or press Ctrl-C to stop")
        try:
            while not SIGNALS.received:
                reap_services()
                time.sleep(0.1)
        finally:
            env_file.unlink(missing_ok=True)
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a command with the services up")
    run.add_argument("--rabbitmq", action="store_true", help="start RabbitMQ too")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    start = sub.add_parser("start", help="start the services and wait for SIGTERM")
    start.add_argument("--env-file", type=Path, required=True)
    start.add_argument("--rabbitmq", action="store_true", help="start RabbitMQ too")
    args = parser.parse_args(argv)
    if args.action == "run":
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        if not args.command:
            run.error("missing command (usage: services.py run -- COMMAND [ARG...])")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script and return its exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    SIGNALS.install()
    try:
        if args.action == "run":
            return cmd_run(args.command, rabbitmq=args.rabbitmq)
        return cmd_start(args.env_file, rabbitmq=args.rabbitmq)
    except Interrupted as exc:
        log(f"interrupted by {exc}")
        return 128 + exc.signum
    except ServiceError as exc:
        log(f"services.py: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
