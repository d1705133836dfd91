"""What a consent refusal tells the caller: one message per reason, in the caller's words.

Programs branch on the reason code; a clerk at a counter reads the message. Each message
says what is wrong and, where the caller can act on it, when that changes. Messages name
the institution, the purpose, field groups, dates and use caps: never the subject, its
grantor or anything read from a registry (docs/errors.md).
"""

from __future__ import annotations

import datetime as dt

from consent.checker import Need, Verdict
from consent.model import ConsentRecord, UseCap
from gateway.base.errors import Reason

DAY_S = 86_400
HOUR_S = 3_600


def when(seconds: int) -> str:
    """A moment as a clerk reads it: UTC, to the minute."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: int) -> str:
    """A use-cap period in whole days or hours where it is one, else in seconds."""
    for unit, name in ((DAY_S, "day"), (HOUR_S, "hour")):
        if seconds % unit == 0:
            count = seconds // unit
            return f"{count} {name}" if count == 1 else f"{count} {name}s"
    return f"{seconds} s"


def _consent(need: Need) -> str:
    return f"the consent to {need.grantee} for {need.purpose}"


def refused(verdict: Verdict, need: Need) -> str:
    """The message of the checker's refusal (every consent reason but the use cap)."""
    evidence = verdict.evidence
    if evidence is None or verdict.reason == Reason.CONSENT_MISSING:
        return (
            f"no consent of the citizen (or of their household) lets {need.grantee} receive"
            f" data for {need.purpose}"
        )
    if verdict.reason == Reason.CONSENT_SCOPE:
        missing = ", ".join(sorted(need.scopes - frozenset(evidence.scopes)))
        return f"{_consent(need)} does not cover {missing}, which this exchange would disclose"
    if verdict.reason == Reason.CONSENT_REVOKED:
        return f"{_consent(need)} was revoked on {when(evidence.recorded_at)}"
    if evidence.valid_from > need.now:
        return f"{_consent(need)} is not valid before {when(evidence.valid_from)}"
    return f"{_consent(need)} expired on {when(evidence.valid_until)}"


def used_up(need: Need, record: ConsentRecord, cap: UseCap, window_start: int) -> str:
    """The message of CONSENT_USE_EXCEEDED: the cap, and when the next period starts."""
    uses = "1 use" if cap.max_uses == 1 else f"{cap.max_uses} uses"
    allows = f"{_consent(need)} allows {uses} every {duration(cap.period_s)}, all used"
    renewed = window_start + cap.period_s
    if renewed >= record.valid_until:
        return f"{allows}; it ends on {when(record.valid_until)} without another period"
    return f"{allows}; the next period starts on {when(renewed)}"
