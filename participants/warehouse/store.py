"""The warehouse's own stock and reservations, in its own SQLite database.

Every operation is idempotent by the saga's key: a reservation made under a
key is returned again, a release of a key releases once, and a release that
comes before its reservation voids the key so a late reservation does nothing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, free INTEGER NOT NULL
    CHECK (free >= 0));
CREATE TABLE IF NOT EXISTS reservation (
    key TEXT PRIMARY KEY,
    -- reserved, released, refused, or void (released before it was made)
    state TEXT NOT NULL,
    items TEXT NOT NULL
);
"""


class OutOfStock(Exception):
    """Not enough free stock for the reservation."""


def path() -> str:
    return os.environ.get("WAREHOUSE_DB", "var/warehouse.sqlite3")


@contextlib.contextmanager
def transaction() -> Iterator[sqlite3.Connection]:
    """Yield a connection inside one write transaction (committed on success)."""
    connection = sqlite3.connect(path(), timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        connection.close()


def setup(stock: dict[str, int]) -> None:
    """Create the tables and set each SKU's free stock."""
    connection = sqlite3.connect(path(), timeout=30)
    with connection:
        connection.executescript(SCHEMA)
        connection.execute("PRAGMA journal_mode=WAL")
        for sku, free in stock.items():
            connection.execute(
                "INSERT INTO stock (sku, free) VALUES (?, ?) "
                "ON CONFLICT (sku) DO UPDATE SET free = excluded.free",
                (sku, free),
            )
    connection.close()


def reserve(key: str, items: list[tuple[str, int]]) -> str:
    """Reserve ``items`` under ``key``; return the state the key ends in."""
    encoded = ",".join(f"{sku}:{qty}" for sku, qty in items)
    with transaction() as db:
        row = db.execute(
            "SELECT state FROM reservation WHERE key = ?", (key,)
        ).fetchone()
        if row is not None:
            state: str = row[0]
            if state == "refused":
                raise OutOfStock(f"not enough stock for {encoded}")
            return state
        for sku, qty in items:
            free = db.execute("SELECT free FROM stock WHERE sku = ?", (sku,)).fetchone()
            if free is None or free[0] < qty:
                db.execute(
                    "INSERT INTO reservation (key, state, items) VALUES (?, ?, ?)",
                    (key, "refused", encoded),
                )
                refused = True
                break
        else:
            refused = False
            for sku, qty in items:
                db.execute("UPDATE stock SET free = free - ? WHERE sku = ?", (qty, sku))
            db.execute(
                "INSERT INTO reservation (key, state, items) VALUES (?, ?, ?)",
                (key, "reserved", encoded),
            )
    if refused:
        raise OutOfStock(f"not enough stock for {encoded}")
    return "reserved"


def release(key: str) -> str:
    """Release the reservation made under ``key``; return what happened."""
    with transaction() as db:
        row = db.execute(
            "SELECT state, items FROM reservation WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO reservation (key, state, items) VALUES (?, 'void', '')",
                (key,),
            )
            return "nothing to release"
        state, items = row
        if state != "reserved":
            return f"nothing to release ({state})"
        for part in items.split(","):
            sku, qty = part.rsplit(":", 1)
            db.execute(
                "UPDATE stock SET free = free + ? WHERE sku = ?", (int(qty), sku)
            )
        db.execute("UPDATE reservation SET state = 'released' WHERE key = ?", (key,))
    return "released"


def free_stock() -> dict[str, int]:
    """Return each SKU's free stock."""
    connection = sqlite3.connect(path(), timeout=30)
    try:
        return dict(connection.execute("SELECT sku, free FROM stock").fetchall())
    finally:
        connection.close()


def reservations() -> dict[str, str]:
    """Return each key's state."""
    connection = sqlite3.connect(path(), timeout=30)
    try:
        return dict(connection.execute("SELECT key, state FROM reservation").fetchall())
    finally:
        connection.close()
