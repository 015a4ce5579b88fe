"""Compare kombu's stock filesystem transport with the atomic one.

``python -m bench.broker`` prints, for each transport on the same folder
settings as the embedded default (20 ms polling): publish and drain rates with
their CPU cost, and the publish-to-receive latency of messages sent one at a
time to a consumer waiting in another thread. No services are needed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kombu import Connection
from kombu.utils.imports import symbol_by_name

TRANSPORTS = {
    "stock": "kombu.transport.filesystem:Transport",
    "atomic": "sagas.transport:Transport",
}


def _connection(transport: str, folder: Path, polling: float) -> Connection:
    return Connection(
        "filesystem://localhost/",
        transport=transport,
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "polling_interval": polling,
        },
    )


def _rates(transport: str, folder: Path, count: int) -> dict[str, float]:
    payload = {"args": ["00000000-0000-0000-0000-000000000000", 1], "pad": "x" * 600}
    with _connection(transport, folder, 0.02) as conn:
        queue = conn.SimpleQueue("bench")
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            queue.put(payload)
        put_wall, put_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            queue.get(timeout=5).ack()
        get_wall, get_cpu = time.perf_counter() - wall, time.process_time() - cpu
        queue.close()
    return {
        "publish/s": count / put_wall,
        "publish CPU ms/msg": put_cpu * 1000 / count,
        "drain/s": count / get_wall,
        "drain CPU ms/msg": get_cpu * 1000 / count,
    }


def _latency(transport: str, folder: Path, count: int) -> dict[str, float]:
    latencies: list[float] = []
    torn = 0
    ready = threading.Event()

    def consume() -> None:
        nonlocal torn
        with _connection(transport, folder, 0.02) as conn:
            queue = conn.SimpleQueue("latency")
            ready.set()
            while len(latencies) + torn < count:
                try:
                    message = queue.get(timeout=5)
                except ValueError:
                    torn += 1
                    continue
                latencies.append(time.perf_counter() - message.payload["sent"])
                message.ack()
            queue.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    ready.wait()
    with _connection(transport, folder, 0.02) as conn:
        queue = conn.SimpleQueue("latency")
        for _ in range(count):
            queue.put({"sent": time.perf_counter()})
            # One at a time, spaced like a saga's steps, out of phase with polling.
            time.sleep(0.013)
        queue.close()
    consumer.join(timeout=30)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "latency p50 ms": cuts[49] * 1000,
        "latency p95 ms": cuts[94] * 1000,
        "torn": float(torn),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--latency-messages", type=int, default=200)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, transport in TRANSPORTS.items():
            symbol_by_name(transport).global_state.clear()
            folder = Path(tmp) / name
            folder.mkdir()
            results[name] = {
                **_rates(transport, folder, args.messages),
                **_latency(transport, folder, args.latency_messages),
            }
    print(f"{'figure':<22}{'stock':>12}{'atomic':>12}")
    for figure in results["stock"]:
        row = "".join(f"{results[name][figure]:>12.2f}" for name in TRANSPORTS)
        print(f"{figure:<22}{row}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
