"""The only code that changes a saga's or a step attempt's status.

Every change goes through the transition tables in ``sagas.states``, is written
as a ``SagaEvent`` in the same transaction, and is logged once committed.

- ``core``: the transaction recorder, starting a saga, creating attempts;
- ``execution``: running a step and deciding what its outcome means;
- ``sweeper``: due backoffs, lapsed leases and overdue attempts;
- ``operators``: retry, resume, compensate, resolve.
"""

from __future__ import annotations

from sagas.engine.core import saga_start
from sagas.engine.execution import step_execute
from sagas.engine.operators import (
    saga_compensate,
    saga_resolve,
    saga_resume,
    saga_retry,
)
from sagas.engine.sweeper import sweep
from sagas.errors import IllegalTransition, OperatorActionRefused

__all__ = [
    "IllegalTransition",
    "OperatorActionRefused",
    "saga_compensate",
    "saga_resolve",
    "saga_resume",
    "saga_retry",
    "saga_start",
    "step_execute",
    "sweep",
]
