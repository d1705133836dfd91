"""The one table from a failure's reason to the status a caller sees (docs/errors.md).

Domain code raises `ExchangeError(reason, message)` and never chooses a status: the code
follows from the reason here, so a reason cannot mean two things in two places. The
codes are google.rpc.Code numbers (a protobuf enum, no grpc import); the gRPC edge
(gateway/services/edge.py) turns them into grpc statuses, and a batch item carries the
same `google.rpc.Status` a unary call would have returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.base.errors import DOMAIN, ExchangeError, Reason

_TOKEN = (
    Reason.NO_CLIENT_CERTIFICATE,
    Reason.MISSING_SIGNATURE,
    Reason.MALFORMED_TOKEN,
    Reason.TOKEN_TOO_LARGE,
    Reason.WRONG_TOKEN_TYPE,
    Reason.UNKNOWN_KEY,
    Reason.KEY_REVOKED,
    Reason.ALGORITHM_NOT_ALLOWED,
    Reason.BAD_SIGNATURE,
    Reason.ISSUER_MISMATCH,
    Reason.WRONG_AUDIENCE,
    Reason.TOKEN_EXPIRED,
    Reason.TOKEN_NOT_YET_VALID,
    Reason.TOKEN_LIFETIME,
    Reason.METHOD_MISMATCH,
    Reason.BODY_MISMATCH,
    Reason.BATCH_MISMATCH,
    Reason.REPLAYED,
)
_ARGUMENT = (
    Reason.MALFORMED_REQUEST,
    Reason.MISSING_PURPOSE,
    Reason.INVALID_PURPOSE,
    Reason.MISSING_SUBJECT,
    Reason.INVALID_IDCS,
    Reason.INVALID_HOUSEHOLD_ID,
    Reason.UNKNOWN_PROGRAMME,
    Reason.INVALID_DATE,
    Reason.INVALID_FIELD_MASK,
    Reason.BATCH_TOO_LARGE,
    Reason.PURPOSE_MISMATCH,
    Reason.CONSENT_ARTEFACT_INVALID,
    Reason.UNKNOWN_GRANTEE,
    Reason.UNKNOWN_PURPOSE,
    Reason.INVALID_PAGE,
    Reason.INVALID_REASON,
    Reason.INVALID_RECORD_ID,
    Reason.CASE_TEXT_INVALID,
    Reason.CASE_FILTER_INVALID,
    Reason.INVALID_EVENT_TYPE,
    Reason.TOO_MANY_SUBJECTS,
    Reason.INVALID_MONTH,
)
_CONSENT = (
    Reason.CONSENT_MISSING,
    Reason.CONSENT_EXPIRED,
    Reason.CONSENT_REVOKED,
    Reason.CONSENT_SCOPE,
    Reason.CONSENT_USE_EXCEEDED,
    Reason.GRANTOR_NOT_ENTITLED,
)
_UNAVAILABLE = (
    Reason.BACKEND_UNAVAILABLE,
    Reason.BACKEND_TIMEOUT,
    Reason.BACKEND_INVALID,
    Reason.CONSENT_STORE_UNAVAILABLE,
    Reason.AUDIT_UNAVAILABLE,
    Reason.GATEWAY_STOPPING,
    Reason.EVENTS_UNAVAILABLE,
)

CODES: Mapping[Reason, int] = MappingProxyType(
    {
        **dict.fromkeys(_TOKEN, code_pb2.UNAUTHENTICATED),
        **dict.fromkeys(_ARGUMENT, code_pb2.INVALID_ARGUMENT),
        **dict.fromkeys(_CONSENT, code_pb2.FAILED_PRECONDITION),
        **dict.fromkeys(_UNAVAILABLE, code_pb2.UNAVAILABLE),
        Reason.PURPOSE_NOT_ALLOWED: code_pb2.PERMISSION_DENIED,
        Reason.NOT_A_CONSENT_COLLECTOR: code_pb2.PERMISSION_DENIED,
        Reason.NOT_AN_AUDITOR: code_pb2.PERMISSION_DENIED,
        Reason.CASE_NOT_YOURS: code_pb2.PERMISSION_DENIED,
        Reason.CASE_STATE: code_pb2.FAILED_PRECONDITION,
        Reason.SUBJECT_NOT_FOUND: code_pb2.NOT_FOUND,
        Reason.CONSENT_NOT_FOUND: code_pb2.NOT_FOUND,
        Reason.CASE_RECORD_NOT_FOUND: code_pb2.NOT_FOUND,
        Reason.PUBLICATION_NOT_FOUND: code_pb2.NOT_FOUND,
        Reason.CONSENT_CONFLICT: code_pb2.ALREADY_EXISTS,
        Reason.CONCURRENT_CHANGE: code_pb2.ABORTED,
        Reason.MESSAGE_TOO_LARGE: code_pb2.RESOURCE_EXHAUSTED,
        Reason.TOO_MANY_CALLS: code_pb2.RESOURCE_EXHAUSTED,
        Reason.GATEWAY_BUSY: code_pb2.RESOURCE_EXHAUSTED,
        Reason.RATE_LIMITED: code_pb2.RESOURCE_EXHAUSTED,
        Reason.QUOTA_EXCEEDED: code_pb2.RESOURCE_EXHAUSTED,
        Reason.STREAM_TOO_LONG: code_pb2.RESOURCE_EXHAUSTED,
        Reason.REQUEST_TIMEOUT: code_pb2.DEADLINE_EXCEEDED,
        Reason.RESPONSE_NOT_READ: code_pb2.DEADLINE_EXCEEDED,
        Reason.CALLER_DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
        Reason.CALLER_CANCELLED: code_pb2.CANCELLED,
        Reason.CURSOR_OUT_OF_RANGE: code_pb2.OUT_OF_RANGE,
        Reason.SUBSCRIPTION_NOT_FOUND: code_pb2.NOT_FOUND,
        Reason.SUBSCRIPTION_CANCELLED: code_pb2.FAILED_PRECONDITION,
        Reason.EVENT_TYPE_NOT_ALLOWED: code_pb2.PERMISSION_DENIED,
        Reason.INTERNAL: code_pb2.INTERNAL,
    }
)


def code_of(reason: Reason) -> int:
    """The google.rpc.Code of a reason."""
    return CODES[reason]


def code_name(reason: Reason) -> str:
    """The status's name, as logs and docs/errors.md write it (`INVALID_ARGUMENT`)."""
    return str(code_pb2.Code.Name(CODES[reason]))


# Seconds after which a retry may succeed, for the reasons a retry can cure: sent as a
# google.rpc.RetryInfo beside the ErrorInfo (an error's own `retry_after_s` wins, e.g. the
# time until a rate limit's next token or a backend's circuit half-opens).
RETRY_AFTER_S: Mapping[Reason, float] = MappingProxyType(
    {
        Reason.TOO_MANY_CALLS: 0.5,
        Reason.GATEWAY_BUSY: 1.0,
        Reason.RATE_LIMITED: 1.0,
        Reason.GATEWAY_STOPPING: 1.0,
        Reason.AUDIT_UNAVAILABLE: 1.0,
        Reason.CONSENT_STORE_UNAVAILABLE: 1.0,
        Reason.EVENTS_UNAVAILABLE: 1.0,
        Reason.BACKEND_UNAVAILABLE: 1.0,
        Reason.BACKEND_TIMEOUT: 1.0,
    }
)


def retry_after(error: ExchangeError) -> float | None:
    """Seconds the caller should wait before retrying, or None if a retry cannot help."""
    if error.retry_after_s is not None:
        return max(0.0, error.retry_after_s)
    return RETRY_AFTER_S.get(error.reason)


def rich_status(error: ExchangeError) -> status_pb2.Status:
    """The google.rpc.Status carried in the trailers (and in batch item results)."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason.value, domain=DOMAIN, metadata=error.metadata
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    delay = retry_after(error)
    if delay is not None:
        wait = duration_pb2.Duration()
        wait.FromNanoseconds(round(delay * 1e9))
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=wait))
        details.append(retry)
    return status_pb2.Status(code=CODES[error.reason], message=error.message, details=details)
