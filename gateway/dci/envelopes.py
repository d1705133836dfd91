"""The envelopes the facade sends: signed responses and callbacks, ACKs, error envelopes
(the shapes of the standard's schemas; tests check each against them)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.dci import signature
from gateway.dci.access import Issuer

VERSION = "1.0.0"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def timestamp(at: float) -> str:
    """RFC 3339 with a time zone, as the schemas' date-time requires."""
    moment = dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a message's processing came to, for its response header."""

    total: int
    completed: int
    rejected: tuple[str, str] | None = None  # (status_reason_code, message), or ("", why)
    meta: Mapping[str, Any] | None = None


def signed(
    issuer: Issuer,
    receiver: str,
    action: str,
    message: Mapping[str, Any],
    outcome: Outcome,
    *,
    now: float,
) -> dict[str, Any]:
    """A response or callback envelope (MsgCallbackHeader), signed with the gateway's key."""
    header: dict[str, Any] = {
        "version": VERSION,
        "message_id": new_id(),
        "message_ts": timestamp(now),
        "action": action,
        "status": "rjct" if outcome.rejected else "succ",
        "total_count": outcome.total,
        "completed_count": outcome.completed,
        "sender_id": issuer.gateway_id,
        "receiver_id": receiver,
        "is_msg_encrypted": False,
    }
    if outcome.rejected is not None:
        code, why = outcome.rejected
        if code:
            header["status_reason_code"] = code
        header["status_reason_message"] = why[:999]
    if outcome.meta:
        header["meta"] = dict(outcome.meta)
    value = signature.sign(
        header,
        dict(message),
        sender_id=issuer.gateway_id,
        kid=issuer.kid,
        key=issuer.key,
        created=int(now),
    )
    return {"signature": value, "header": header, "message": dict(message)}


def ack(correlation_id: str, now: float) -> Reply:
    """Received, checked; the answer follows as a callback (HTTP 202)."""
    body = {
        "message": {
            "ack_status": "ACK",
            "timestamp": timestamp(now),
            "correlation_id": correlation_id,
        }
    }
    return Reply(202, body)


def error(status: int, code: str, message: str, now: float) -> Reply:
    """The standard's error envelope: an ACK with ERR and the `err.*` code."""
    body = {
        "message": {
            "ack_status": "ERR",
            "timestamp": timestamp(now),
            "correlation_id": new_id(),
            "error": {"code": code, "message": message[:999]},
        }
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return Reply(status, body, headers)
