"""Does a consent cover this exchange? A pure choice among the subject's consents.

Given the latest revision of every consent the subject gave the calling institution, the
exchange's purpose, the field groups ("scopes") its grant would disclose and the time,
pick the consent that covers it, or say why none does. Use caps are counted by the caller
(they need the store); this module only says which cap applies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from consent.model import ConsentRecord, Status
from gateway.errors import Reason


@dataclass(frozen=True, slots=True)
class Need:
    """What an exchange asks of a consent."""

    grantee: str
    purpose: str
    scopes: frozenset[str]
    now: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The covering consent and the scopes it covers, or the reason there is none."""

    consent: ConsentRecord | None
    covered: frozenset[str]
    reason: Reason | None


def choose(records: Iterable[ConsentRecord], need: Need, *, partial: bool) -> Verdict:
    """The best consent for `need`: full cover first, then (if allowed) the widest partial.

    Among consents for this grantee and purpose the refusal names the most telling state:
    an active one too narrow (CONSENT_SCOPE), else a revoked one, else an expired one;
    with none for this purpose, CONSENT_MISSING.
    """
    best: ConsentRecord | None = None
    best_cover: frozenset[str] = frozenset()
    states: set[Status] = set()
    for record in records:
        if record.grantee != need.grantee or need.purpose not in record.purposes:
            continue
        state = record.status_at(need.now)
        states.add(state)
        if state != Status.ACTIVE:
            continue
        cover = need.scopes & frozenset(record.scopes)
        if cover == need.scopes:
            return Verdict(record, cover, None)
        if len(cover) > len(best_cover) or (best is None and cover):
            best, best_cover = record, cover
    if partial and best is not None:
        return Verdict(best, best_cover, None)
    if Status.ACTIVE in states:
        return Verdict(None, frozenset(), Reason.CONSENT_SCOPE)
    if Status.REVOKED in states:
        return Verdict(None, frozenset(), Reason.CONSENT_REVOKED)
    if Status.EXPIRED in states:
        return Verdict(None, frozenset(), Reason.CONSENT_EXPIRED)
    return Verdict(None, frozenset(), Reason.CONSENT_MISSING)


def window_start(record: ConsentRecord, now: int) -> int | None:
    """Start of the use-cap window holding `now` (None if the consent has no cap)."""
    cap = record.use_cap
    if cap is None:
        return None
    return record.valid_from + (now - record.valid_from) // cap.period_s * cap.period_s
