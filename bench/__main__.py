"""Run the benchmark suite: ``python -m bench`` (``make bench`` starts the services)."""

from __future__ import annotations

from bench.main import main

raise SystemExit(main())
