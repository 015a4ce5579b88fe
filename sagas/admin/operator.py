"""Operator actions: what each one does, who may run it, and the reason form.

Each verb is one admin action, run from the saga list on the sagas selected
there or from the button on a saga's page on that one saga, and confirmed on
one page that asks for a reason. Every action goes through its engine verb,
which locks the saga, checks its state and records a timeline event naming
the operator; the admin only asks for a reason and reports the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import messages

from sagas import engine
from sagas.errors import DefinitionError, OperatorActionRefused
from sagas.models import Saga
from sagas.states import ACTIVE_SAGA_STATUSES, SagaStatus

# An action runs one engine transaction per saga while the operator waits:
# a larger selection belongs in a management command or a task.
BULK_LIMIT = 500
# Refusals named one by one in a report on many sagas; the rest are counted.
REFUSALS_NAMED = 10


@dataclass(frozen=True)
class OperatorAction:
    # The permission ``<app>.<name>_saga``, and the admin action ``<name>_selected``.
    name: str
    verb: Callable[..., Saga]
    label: str
    explanation: str
    # Statuses the button shows in; the engine still decides.
    offered_in: tuple[str, ...]
    done: str
    dangerous: bool = False
    # The confirmation form: a reason, and whatever else the verb needs.
    form_class: type[forms.Form] | None = None

    @property
    def codename(self) -> str:
        return f"{self.name}_saga"

    @property
    def admin_name(self) -> str:
        """Return the admin action's name, the ``action`` the saga list is posted."""
        return f"{self.name}_selected"

    def run(self, saga_id: UUID | str, *, actor: str, **fields: Any) -> Saga:
        """Apply the action through its engine verb, with the form's fields."""
        return self.verb(saga_id, actor=actor, **fields)

    def form(self, data: Any = None) -> forms.Form:
        """Return the confirmation form, bound to ``data`` if given."""
        return (self.form_class or ReasonForm)(data)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Recorded in the saga's timeline with your name.",
    )


class MigrateForm(ReasonForm):
    version = forms.IntegerField(
        min_value=1,
        help_text="The definition version to move the saga to. Every step the "
        "saga ran must exist there, in the same order.",
    )

    field_order = ("version", "reason")


ACTIONS: tuple[OperatorAction, ...] = (
    OperatorAction(
        name="retry",
        verb=engine.saga_retry,
        label="Retry",
        explanation=(
            "Run the step or compensation that failed again, as a new attempt. "
            "The saga goes back to running (or compensating) from there."
        ),
        offered_in=(SagaStatus.FAILED,),
        done="Retry started",
    ),
    OperatorAction(
        name="resume",
        verb=engine.saga_resume,
        label="Resume",
        explanation=(
            "Send the current attempt to the workers again now, instead of "
            "waiting for the sweeper. Steps are idempotent, so a duplicate is safe."
        ),
        offered_in=tuple(ACTIVE_SAGA_STATUSES),
        done="Resumed",
    ),
    OperatorAction(
        name="compensate",
        verb=engine.saga_compensate,
        label="Compensate (abort)",
        explanation=(
            "Abort the saga: cancel its current attempt and undo the steps it "
            "completed, in reverse order, including the current one."
        ),
        offered_in=(SagaStatus.PENDING, SagaStatus.RUNNING),
        done="Compensation started",
        dangerous=True,
    ),
    OperatorAction(
        name="resolve",
        verb=engine.saga_resolve,
        label="Mark resolved",
        explanation=(
            "Close the failed saga by hand: nothing runs. Say in the reason what "
            "was done outside the system to make things right."
        ),
        offered_in=(SagaStatus.FAILED,),
        done="Marked resolved",
    ),
    OperatorAction(
        name="skip",
        verb=engine.saga_skip_compensation,
        label="Skip compensation",
        explanation=(
            "Record the compensation that failed as done by hand (say how in the "
            "reason): it will not run again, and compensation goes on with the "
            "step before it."
        ),
        offered_in=(SagaStatus.FAILED,),
        done="Compensation skipped",
        dangerous=True,
    ),
    OperatorAction(
        name="approve",
        verb=engine.saga_approve,
        label="Approve",
        explanation=(
            "Approve the step waiting for a person's approval: the saga goes on "
            "with its next step."
        ),
        offered_in=(SagaStatus.RUNNING,),
        done="Approved",
    ),
    OperatorAction(
        name="reject",
        verb=engine.saga_reject,
        label="Reject",
        explanation=(
            "Reject the step waiting for a person's approval: the saga undoes "
            "the steps before it, in reverse order."
        ),
        offered_in=(SagaStatus.RUNNING,),
        done="Rejected",
        dangerous=True,
    ),
    OperatorAction(
        name="migrate",
        verb=engine.saga_migrate,
        label="Move to version",
        explanation=(
            "Move the saga to another version of its definition, for instance "
            "when its own version is no longer in the code. Steps are matched by "
            "name; the engine refuses a version the saga cannot map onto."
        ),
        offered_in=(*ACTIVE_SAGA_STATUSES, SagaStatus.FAILED),
        done="Moved",
        form_class=MigrateForm,
    ),
)

ACTIONS_BY_NAME = {action.name: action for action in ACTIONS}
ACTIONS_BY_ADMIN_NAME = {action.admin_name: action for action in ACTIONS}


@dataclass
class Outcome:
    applied: list[UUID]
    refused: list[tuple[UUID, str]]


def apply_to_many(
    action: OperatorAction, saga_ids: list[UUID], *, actor: str, **fields: Any
) -> Outcome:
    """Apply ``action`` to each saga in its own transaction; collect refusals."""
    outcome = Outcome(applied=[], refused=[])
    for saga_id in sorted(saga_ids):
        try:
            action.run(saga_id, actor=actor, **fields)
        except (OperatorActionRefused, DefinitionError) as exc:
            outcome.refused.append((saga_id, str(exc)))
        else:
            outcome.applied.append(saga_id)
    return outcome


def report(
    action: OperatorAction, outcome: Outcome, keys: dict[UUID, str]
) -> list[tuple[int, str]]:
    """Return the messages (level, text) telling an operator how the action went.

    On one saga they name it; on many they count and name the refusals.
    """
    if len(keys) == 1:
        [key] = keys.values()
        if outcome.applied:
            return [(messages.SUCCESS, f"{action.done}: {key}.")]
        [(_, reason)] = outcome.refused
        return [
            (messages.ERROR, f"{action.label} refused: {reason}. Nothing was changed.")
        ]
    report = []
    if outcome.applied:
        report.append(
            (messages.SUCCESS, f"{action.done} for {len(outcome.applied)} saga(s).")
        )
    if outcome.refused:
        named = "; ".join(
            f"{keys[saga_id]}: {reason}"
            for saga_id, reason in outcome.refused[:REFUSALS_NAMED]
        )
        more = len(outcome.refused) - REFUSALS_NAMED
        suffix = f"; and {more} more" if more > 0 else ""
        report.append(
            (
                messages.WARNING,
                f"{action.label} refused for {len(outcome.refused)} saga(s), "
                f"left unchanged: {named}{suffix}.",
            )
        )
    return report
