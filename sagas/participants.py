"""Replies from participants that are not Python: ``POST /api/participants/replies/``.

Each participant has a shared secret (``SAGAS_PARTICIPANTS``: name -> secret).
A request carries ``X-Saga-Participant``, ``X-Saga-Timestamp`` (Unix seconds)
and ``X-Saga-Signature``: the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under
that secret. A timestamp older than ``SAGAS_REPLY_MAX_AGE`` seconds, a bad
signature or a signature seen before is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta
from typing import Any, Literal
from uuid import UUID

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema
from ninja.errors import HttpError

from sagas import conf, engine
from sagas.models import ReplyReceipt


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the signature a participant sends with ``body`` at ``timestamp``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def participant_signature(request: HttpRequest) -> str | None:
    """Return the participant a request is signed by, or None (401)."""
    name = request.headers.get("X-Saga-Participant", "")
    secret = dict(conf.value("SAGAS_PARTICIPANTS")).get(name)
    stamp = request.headers.get("X-Saga-Timestamp", "")
    signature = request.headers.get("X-Saga-Signature", "")
    if not secret or not stamp.isdigit() or not signature:
        return None
    max_age = conf.get("SAGAS_REPLY_MAX_AGE")
    if abs(time.time() - int(stamp)) > max_age:
        return None
    if not hmac.compare_digest(sign(secret, int(stamp), request.body), signature):
        return None
    try:
        with transaction.atomic():
            ReplyReceipt.objects.create(participant=name, signature=signature)
    except IntegrityError:
        raise HttpError(409, "this signed reply was already received") from None
    # Receipts older than the window can never match a fresh timestamp.
    ReplyReceipt.objects.filter(
        received_at__lt=timezone.now() - timedelta(seconds=2 * max_age)
    ).delete()
    return name


class ReplyIn(Schema):
    saga_id: UUID
    attempt_id: int
    status: Literal["completed", "failed"]
    result: dict[str, Any] | None = None
    error: str = ""
    transient: bool = False
    partial: bool = False


class ReplyOut(Schema):
    # "ignored": the step no longer waits for this reply (late or duplicate).
    outcome: Literal["completed", "failed", "ignored"]


class ErrorOut(Schema):
    detail: str


router = Router(tags=["participants"])


@router.post(
    "/replies/",
    auth=participant_signature,
    response={200: ReplyOut, 401: ErrorOut, 409: ErrorOut},
    summary="Reply to a remote saga step",
)
def reply(request: HttpRequest, body: ReplyIn) -> dict[str, str]:
    """Complete or fail the remote step attempt the reply answers."""
    outcome = engine.step_reply(
        body.saga_id,
        body.attempt_id,
        status=body.status,
        result=body.result,
        error=body.error,
        transient=body.transient,
        partial=body.partial,
        participant=str(request.auth),  # type: ignore[attr-defined]
    )
    return {"outcome": outcome}
