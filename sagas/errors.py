"""Exceptions a step raises to tell the engine how it failed."""

from __future__ import annotations


class SagaError(Exception):
    """Base class for the engine's own errors."""


class DefinitionError(SagaError):
    """A saga definition is invalid; raised at registration (start-up)."""


class IllegalTransition(SagaError):
    """A status change not allowed by the transition table was attempted."""


class OperatorActionRefused(SagaError):
    """An operator action does not apply to the saga in its current state."""


class StepError(Exception):
    """Base class for failures a step reports on purpose."""


class TransientError(StepError):
    """The step may succeed if tried again (timeouts, 5xx, lock contention)."""


class PermanentError(StepError):
    """The step cannot succeed; retrying is pointless (declined card, bad input).

    ``partial=True`` tells the engine the step may have left effects behind, so
    its own compensation runs too; by default a permanent failure means the step
    changed nothing and only the steps before it are compensated.
    """

    def __init__(self, message: str, *, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


class StepResultError(SagaError):
    """A step returned something the engine cannot store in the saga's context.

    A result is a mapping of new keys to JSON values (no NaN, no NUL), or None.
    """


class WorkerLost(BaseException):
    """The process running a step is going away mid-step.

    The engine records nothing: the step's transaction rolls back and its
    attempt stays dispatched, as when ``kill -9`` hits a worker, and the
    sweeper sends it again after the lease. ``sagas.testing.WorkerCrash`` is
    one; so are ``SystemExit`` and ``KeyboardInterrupt`` (a worker shutting
    down or cancelling the task). Every other exception a step raises,
    ``BaseException`` subclasses included, is recorded as a failed attempt.
    """
