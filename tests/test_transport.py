"""The embedded broker under concurrent senders: no torn and no lost messages.

kombu's stock filesystem transport creates a message file, then writes it; a
consumer polling in between claims the empty file (kombu#1551). On a busy
machine the sender is descheduled in that gap now and then; here the gap is
widened deterministically by pausing each sender right after it created its
file (at kombu's file lock, which both transports take at that point).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import filesystem
from kombu.utils.imports import symbol_by_name

STOCK = "kombu.transport.filesystem:Transport"
ATOMIC = "sagas.transport:Transport"

SENDERS = 4
PER_SENDER = 40


def _connection(transport: str, folder: Path) -> Connection:
    return Connection(
        "filesystem://localhost/",
        transport=transport,
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "polling_interval": 0.001,
        },
    )


@pytest.fixture
def descheduled_senders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pause every sender for 3 ms between creating a message file and writing it."""
    real_lock = filesystem.lock

    def lock(f: Any, flags: int) -> None:
        if flags == filesystem.LOCK_EX:  # type: ignore[attr-defined]
            time.sleep(0.003)
        real_lock(f, flags)

    monkeypatch.setattr(filesystem, "lock", lock)


def _race(transport: str, folder: Path) -> tuple[set[int], int]:
    """Send from several threads while one consumer drains; return (got, torn)."""
    folder.mkdir()
    # kombu caches queue bindings per transport class and process; a new
    # folder needs them written again.
    symbol_by_name(transport).global_state.clear()
    received: set[int] = set()
    torn = 0
    senders_done = threading.Event()

    def send(sender: int) -> None:
        with _connection(transport, folder) as conn:
            queue = conn.SimpleQueue("race")
            for n in range(PER_SENDER):
                queue.put({"n": sender * PER_SENDER + n})
            queue.close()

    with _connection(transport, folder) as conn:
        consumer = conn.SimpleQueue("race")
        threads = [threading.Thread(target=send, args=(s,)) for s in range(SENDERS)]
        for thread in threads:
            thread.start()

        def mark_done() -> None:
            for thread in threads:
                thread.join()
            senders_done.set()

        threading.Thread(target=mark_done).start()
        idle_since = None
        while True:
            try:
                message = consumer.get(timeout=0.05)
            except consumer.Empty:
                if not senders_done.is_set():
                    continue
                # Drained for a while after the last send: nothing more will come.
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 0.5:
                    break
                continue
            except ValueError:
                # JSONDecodeError: the consumer read a message file still empty.
                torn += 1
                continue
            idle_since = None
            message.ack()
            received.add(message.payload["n"])
        consumer.close()
    return received, torn


@pytest.mark.usefixtures("descheduled_senders")
def test_stock_filesystem_transport_hands_out_torn_messages(tmp_path: Path) -> None:
    # given senders that pause between creating a message file and writing it
    # when a consumer drains the queue on kombu's stock transport
    received, torn = _race(STOCK, tmp_path / "broker")
    # then it reads empty files, and the messages in them are gone
    assert torn > 0
    assert len(received) < SENDERS * PER_SENDER


@pytest.mark.usefixtures("descheduled_senders")
def test_atomic_transport_delivers_every_message_whole(tmp_path: Path) -> None:
    # given the same paused senders
    # when a consumer drains the queue on the atomic transport
    received, torn = _race(ATOMIC, tmp_path / "broker")
    # then every message arrives exactly once, and none is torn
    assert torn == 0
    assert received == set(range(SENDERS * PER_SENDER))


def test_atomic_transport_leaves_no_temporary_or_claimed_files(tmp_path: Path) -> None:
    # given messages sent and consumed on the atomic transport
    folder = tmp_path / "broker"
    received, _ = _race(ATOMIC, folder)
    assert len(received) == SENDERS * PER_SENDER
    # then neither half-written nor claimed files are left behind
    leftovers = [
        p.name for p in [*folder.glob(".*.tmp"), *(folder / ".claimed").glob("*")]
    ]
    assert leftovers == []
