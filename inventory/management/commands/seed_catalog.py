from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from inventory.services import catalogue_seed


class Command(BaseCommand):
    help = "Create the sandbox catalogue (idempotent) and set each SKU's free stock."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--stock", type=int, default=100)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["stock"] < 0:
            raise CommandError("--stock must be >= 0")
        for product in catalogue_seed(stock=options["stock"]):
            if options["verbosity"]:
                self.stdout.write(f"{product.sku}: {product.stock_free} free")
