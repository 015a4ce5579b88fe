"""The engine: the only code that changes a saga's or a step attempt's status.

- ``machine``: the state machine (locking, transitions, attempts, leases,
  dispatch, and what an outcome means); the one module that writes statuses;
- ``start``: starting a saga in the caller's transaction;
- ``execution``: running a step and recording whatever happens;
- ``sweeper``: due backoffs, lapsed leases, overdue attempts;
- ``operators``: retry, resume, compensate, skip a compensation, resolve,
  migrate to another version.
"""

from __future__ import annotations

from sagas.engine.execution import step_execute
from sagas.engine.operators import (
    saga_compensate,
    saga_migrate,
    saga_resolve,
    saga_resume,
    saga_retry,
    saga_skip_compensation,
)
from sagas.engine.outside import saga_approve, saga_reject, saga_signal, step_reply
from sagas.engine.start import saga_start
from sagas.engine.sweeper import sweep, sweep_pass
from sagas.errors import IllegalTransition, OperatorActionRefused

__all__ = [
    "IllegalTransition",
    "OperatorActionRefused",
    "saga_approve",
    "saga_compensate",
    "saga_migrate",
    "saga_reject",
    "saga_resolve",
    "saga_resume",
    "saga_retry",
    "saga_signal",
    "saga_skip_compensation",
    "saga_start",
    "step_execute",
    "step_reply",
    "sweep",
    "sweep_pass",
]
