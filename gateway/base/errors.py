"""Errors partners see: a stable reason and a message, whatever the transport.

Every failure the gateway reports is an `ExchangeError` naming its `Reason`; the status
code follows from the reason alone (gateway/base/status.py, the table of docs/errors.md)
and the transport's edge turns both into a gRPC status with `google.rpc.ErrorInfo`
(domain `jisr.v1`). Messages never name the subject of the request.
"""

from __future__ import annotations

from enum import StrEnum

DOMAIN = "jisr.v1"
# A call that ended this close to its deadline ended by the deadline: grpc's deadline timer
# and a reading of the clock differ by a few milliseconds.
DEADLINE_SLACK_S = 0.1


class Reason(StrEnum):
    """Stable ErrorInfo reasons; partners branch on these, so they are never renamed."""

    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    MISSING_PURPOSE = "MISSING_PURPOSE"
    INVALID_PURPOSE = "INVALID_PURPOSE"
    MISSING_SUBJECT = "MISSING_SUBJECT"
    INVALID_IDCS = "INVALID_IDCS"
    INVALID_HOUSEHOLD_ID = "INVALID_HOUSEHOLD_ID"
    UNKNOWN_PROGRAMME = "UNKNOWN_PROGRAMME"
    INVALID_DATE = "INVALID_DATE"
    INVALID_FIELD_MASK = "INVALID_FIELD_MASK"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    SUBJECT_NOT_FOUND = "SUBJECT_NOT_FOUND"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    BACKEND_TIMEOUT = "BACKEND_TIMEOUT"
    # A backend answered, but with values outside the contract (UNAVAILABLE): never a
    # decision made from them.
    BACKEND_INVALID = "BACKEND_INVALID"
    # Limits a caller hit (RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED): no partner may hold
    # what the others need.
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    TOO_MANY_CALLS = "TOO_MANY_CALLS"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    RESPONSE_NOT_READ = "RESPONSE_NOT_READ"
    # A batch stream open longer than `max_stream_seconds` (RESOURCE_EXHAUSTED): the
    # batches answered stand; open another stream for the rest.
    STREAM_TOO_LONG = "STREAM_TOO_LONG"
    GATEWAY_BUSY = "GATEWAY_BUSY"
    # The institution's rate in the policy ([limits]) is spent (RESOURCE_EXHAUSTED, with
    # RetryInfo saying when a call will be admitted again).
    RATE_LIMITED = "RATE_LIMITED"
    # The institution's daily quota in the policy is used up (RESOURCE_EXHAUSTED, with
    # RetryInfo for the next UTC midnight).
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    # The gateway stopped (UNAVAILABLE) before the call could end: retry elsewhere or later.
    GATEWAY_STOPPING = "GATEWAY_STOPPING"
    # The caller ended its own call (CANCELLED / DEADLINE_EXCEEDED): not a gateway fault.
    CALLER_CANCELLED = "CALLER_CANCELLED"
    CALLER_DEADLINE_EXCEEDED = "CALLER_DEADLINE_EXCEEDED"
    # Identity and request tokens (UNAUTHENTICATED).
    NO_CLIENT_CERTIFICATE = "NO_CLIENT_CERTIFICATE"
    MISSING_SIGNATURE = "MISSING_SIGNATURE"
    MALFORMED_TOKEN = "MALFORMED_TOKEN"
    TOKEN_TOO_LARGE = "TOKEN_TOO_LARGE"
    WRONG_TOKEN_TYPE = "WRONG_TOKEN_TYPE"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    KEY_REVOKED = "KEY_REVOKED"
    ALGORITHM_NOT_ALLOWED = "ALGORITHM_NOT_ALLOWED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    ISSUER_MISMATCH = "ISSUER_MISMATCH"
    WRONG_AUDIENCE = "WRONG_AUDIENCE"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    TOKEN_NOT_YET_VALID = "TOKEN_NOT_YET_VALID"
    TOKEN_LIFETIME = "TOKEN_LIFETIME"
    METHOD_MISMATCH = "METHOD_MISMATCH"
    BODY_MISMATCH = "BODY_MISMATCH"
    BATCH_MISMATCH = "BATCH_MISMATCH"
    REPLAYED = "REPLAYED"
    PURPOSE_MISMATCH = "PURPOSE_MISMATCH"
    # Policy (PERMISSION_DENIED).
    PURPOSE_NOT_ALLOWED = "PURPOSE_NOT_ALLOWED"
    # Consent (FAILED_PRECONDITION for exchanges; INVALID_ARGUMENT/PERMISSION_DENIED for
    # the ConsentRegistry's own calls).
    CONSENT_MISSING = "CONSENT_MISSING"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    CONSENT_REVOKED = "CONSENT_REVOKED"
    CONSENT_SCOPE = "CONSENT_SCOPE"
    CONSENT_USE_EXCEEDED = "CONSENT_USE_EXCEEDED"
    CONSENT_ARTEFACT_INVALID = "CONSENT_ARTEFACT_INVALID"
    NOT_A_CONSENT_COLLECTOR = "NOT_A_CONSENT_COLLECTOR"
    CONSENT_NOT_FOUND = "CONSENT_NOT_FOUND"
    CONSENT_CONFLICT = "CONSENT_CONFLICT"
    # The consent changed under this call (ABORTED): read it again and retry.
    CONCURRENT_CHANGE = "CONCURRENT_CHANGE"
    GRANTOR_NOT_ENTITLED = "GRANTOR_NOT_ENTITLED"
    # A consent naming a grantee, or a purpose, that the policy gives no consent-based
    # grant (INVALID_ARGUMENT): it could never be used, so it is not recorded.
    UNKNOWN_GRANTEE = "UNKNOWN_GRANTEE"
    UNKNOWN_PURPOSE = "UNKNOWN_PURPOSE"
    CONSENT_STORE_UNAVAILABLE = "CONSENT_STORE_UNAVAILABLE"
    INVALID_PAGE = "INVALID_PAGE"
    # An audit query's reason filter that is no reason of this table (INVALID_ARGUMENT).
    INVALID_REASON = "INVALID_REASON"
    # An audit query's record id that is not "<node>:<seq>" (INVALID_ARGUMENT).
    INVALID_RECORD_ID = "INVALID_RECORD_ID"
    # The access could not be recorded durably (UNAVAILABLE): fail closed.
    AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"
    # Audit trail queries.
    NOT_AN_AUDITOR = "NOT_AN_AUDITOR"
    # Contest cases (gateway/contests/cases.py): an actor who may not move this case
    # (PERMISSION_DENIED), a step its state or deadline does not allow (FAILED_PRECONDITION),
    # a statement, answer or decision out of bounds (INVALID_ARGUMENT).
    CASE_NOT_YOURS = "CASE_NOT_YOURS"
    CASE_STATE = "CASE_STATE"
    CASE_TEXT_INVALID = "CASE_TEXT_INVALID"
    # A contest naming an audit record that does not exist or is not about the citizen
    # (NOT_FOUND): the two are one answer, so a portal learns nothing of others' records.
    CASE_RECORD_NOT_FOUND = "CASE_RECORD_NOT_FOUND"
    # A ListCases filter out of bounds: an unknown state, a combination the caller's
    # role cannot ask (INVALID_ARGUMENT).
    CASE_FILTER_INVALID = "CASE_FILTER_INVALID"
    # Registry events (docs/events.md): a cursor before the retention window or beyond the
    # log's head (OUT_OF_RANGE, with the oldest cursor in the metadata); a subscription that
    # is not the caller's or does not exist, one answer (NOT_FOUND); one that was cancelled
    # (FAILED_PRECONDITION); a type the caller's Subscribe grant does not allow
    # (PERMISSION_DENIED); a type or a subject list out of bounds (INVALID_ARGUMENT); the
    # event log out of reach (UNAVAILABLE).
    CURSOR_OUT_OF_RANGE = "CURSOR_OUT_OF_RANGE"
    SUBSCRIPTION_NOT_FOUND = "SUBSCRIPTION_NOT_FOUND"
    SUBSCRIPTION_CANCELLED = "SUBSCRIPTION_CANCELLED"
    EVENT_TYPE_NOT_ALLOWED = "EVENT_TYPE_NOT_ALLOWED"
    INVALID_EVENT_TYPE = "INVALID_EVENT_TYPE"
    TOO_MANY_SUBJECTS = "TOO_MANY_SUBJECTS"
    EVENTS_UNAVAILABLE = "EVENTS_UNAVAILABLE"
    # Transparency (docs/transparency.md): a month that is not YYYY-MM (INVALID_ARGUMENT);
    # one that was not published (NOT_FOUND).
    INVALID_MONTH = "INVALID_MONTH"
    PUBLICATION_NOT_FOUND = "PUBLICATION_NOT_FOUND"
    # A fault of the gateway itself, never of the request.
    INTERNAL = "INTERNAL"


class ExchangeError(Exception):
    """A failure to report to the caller with `reason` (its status follows from it)."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        metadata: dict[str, str] | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}
        # When to retry, if not the reason's usual delay (gateway/base/status.py).
        self.retry_after_s = retry_after_s


def invalid(reason: Reason, message: str, field: str | None = None) -> ExchangeError:
    """INVALID_ARGUMENT naming the offending request field."""
    return ExchangeError(reason, message, {"field": field} if field else None)


def not_found(message: str) -> ExchangeError:
    """NOT_FOUND for a subject the registries do not know."""
    return ExchangeError(Reason.SUBJECT_NOT_FOUND, message)


def caller_ended(remaining: float | None) -> ExchangeError:
    """The caller cancelled, or its deadline passed (`remaining`: the call's time left
    when it was found gone): its doing, not a gateway fault."""
    if remaining is not None and remaining <= DEADLINE_SLACK_S:
        return ExchangeError(Reason.CALLER_DEADLINE_EXCEEDED, "the caller's deadline passed")
    return ExchangeError(Reason.CALLER_CANCELLED, "the caller cancelled the call")
