"""Throwaway servers for the test suite and the benchmark.

``python -m tests.services COMMAND [ARG...]`` runs a command against a
PostgreSQL cluster from Debian's ``pg_virtualenv`` and a Redis server, on free
loopback ports, with ``DATABASE_URL`` and ``CELERY_BROKER_URL`` set, removes
both afterwards and exits with the command's status.

The suite's session fixtures start more servers of their own from the classes
here (a Redis and a RabbitMQ node to stop and start again on the same port,
with the same data), owned by the test process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Self

import port_for
from mirakuru import TCPExecutor
from pytest_redis.executor import RedisExecutor

HOST = "127.0.0.1"
# postgresql.conf settings of a cluster whose data may be lost at any time.
PG_OPTIONS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
# Many worker processes, each with a connection per database, plus the suite's.
PG_MAX_CONNECTIONS = 200
DATABASE_URL = "postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$PGDATABASE"


class RedisServer(RedisExecutor):
    """redis-server on a free port, appending to its own file (restarts keep data)."""

    def __init__(self, datadir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: `make services-tools`")
        super().__init__(
            binary,
            databases=16,
            redis_timeout=0,  # never drop an idle client (Celery keeps one)
            loglevel="notice",
            host=HOST,
            port=port_for.select_random(),
            appendonly="yes",
            datadir=datadir,
        )

    @property
    def url(self) -> str:
        """Return the URL of database 0."""
        return f"redis://{HOST}:{self.port}/0"


class RabbitMQ(TCPExecutor):
    """A RabbitMQ node that shares nothing with another on the machine.

    Its own node name, AMQP and distribution ports, Erlang port mapper (epmd),
    cookie, database and log folders, all under ``datadir``.
    """

    SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    def __init__(self, datadir: Path) -> None:
        if not Path(self.SCRIPT).exists():
            raise RuntimeError("rabbitmq-server is missing: `make services-tools`")
        port, dist_port, epmd_port = (port_for.select_random() for _ in range(3))
        conf = datadir / "rabbitmq.conf"
        conf.write_text(
            f"listeners.tcp.1 = {HOST}:{port}\n"
            "loopback_users.guest = true\n"
            # A test machine's disk may be nearly full; never block publishers.
            "disk_free_limit.absolute = 1MB\n"
        )
        (datadir / "enabled_plugins").write_text("[].\n")
        env = {
            "HOME": str(datadir),  # the Erlang cookie lives here
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_NODENAME": f"sagas-{os.getpid()}-{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_CONFIG_FILE": str(conf.with_suffix("")),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(datadir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(datadir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(datadir / "log"),
            "RABBITMQ_LOGS": str(datadir / "rabbitmq.log"),
        }
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        self.epmd = TCPExecutor(
            [epmd, "-port", str(epmd_port), "-address", HOST],
            HOST,
            epmd_port,
            envvars=env,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        super().__init__(
            [self.SCRIPT],
            HOST,
            port,
            envvars=env,
            cwd=str(datadir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )

    @property
    def url(self) -> str:
        """Return the broker URL (the default vhost; guest is loopback-only)."""
        return f"amqp://guest:guest@{HOST}:{self.port}//"

    def start(self) -> Self:
        """Start epmd, then the node; return once the node speaks AMQP."""
        self.epmd.start()
        return super().start()

    def stop(
        self, stop_signal: int | None = None, expected_returncode: int | None = None
    ) -> Self:
        """Stop the node, then its epmd."""
        super().stop(stop_signal, expected_returncode)
        self.epmd.stop()
        return self

    def after_start_check(self) -> bool:
        """Return whether the node answers the AMQP 0-9-1 protocol header."""
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                # Connection.Start: a method frame (type 1) on channel 0.
                return sock.recv(7)[:3] == b"\x01\x00\x00"
        except OSError:
            return False


def run(command: list[str]) -> int:
    """Run ``command`` against throwaway PostgreSQL and Redis; return its status."""
    pg_virtualenv = [
        "pg_virtualenv", "-t",  # its files in a temporary folder, even as root
        "-i", "--encoding=UTF8 --locale=C",
        *(arg for option in PG_OPTIONS for arg in ("-o", option)),
        "-o", f"max_connections={PG_MAX_CONNECTIONS}",
        "sh", "-c", f'DATABASE_URL="{DATABASE_URL}" exec "$@"', "sh",
    ]  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="sagas-redis-") as datadir,
        RedisServer(Path(datadir)) as redis,
    ):
        env = {
            **os.environ,
            # A port of its own: parallel runs never reach for the same one.
            "PGPORT": str(port_for.select_random()),
            "CELERY_BROKER_URL": redis.url,
        }
        child = subprocess.Popen([*pg_virtualenv, *command], env=env, process_group=0)

        def forward(signum: int, _frame: object) -> None:
            os.killpg(child.pid, signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, forward)
        code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} COMMAND [ARG...]")
    sys.exit(run(sys.argv[1:]))
