from __future__ import annotations

from django.db import models


class Effect(models.Model):
    """One execution of a test step's action or compensation that committed.

    Deliberately not idempotent: a second row for the same step and kind means
    the engine let a duplicate through.
    """

    saga_id = models.UUIDField(db_index=True)
    step = models.CharField(max_length=100)
    kind = models.CharField(max_length=16)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.step} {self.kind}"


class Fault(models.Model):
    """A failure budget for a test step, kept on the sandbox connection so that
    it survives the step's rollback: ``remaining`` calls of ``step``/``kind``
    fail (-1: all of them)."""

    sandbox_provider = True

    saga_id = models.UUIDField()
    step = models.CharField(max_length=100)
    kind = models.CharField(max_length=16)
    remaining = models.IntegerField()
    calls = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.step} {self.kind}: {self.remaining} left"
