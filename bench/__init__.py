"""Benchmarks: the engine's cost measured against raw Celery in the same run.

Run with ``python -m bench`` against PostgreSQL and Redis (``make bench`` starts
both). Nothing here asserts: it prints each figure beside its target.
"""
