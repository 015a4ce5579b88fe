"""``python -m participants.warehouse SKU=QTY ...``: set up the warehouse's stock."""

from __future__ import annotations

import sys

from participants.warehouse import store


def main(argv: list[str]) -> int:
    stock = {}
    for arg in argv:
        sku, _, qty = arg.partition("=")
        stock[sku] = int(qty)
    store.setup(stock)
    print(store.free_stock())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
