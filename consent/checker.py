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
from gateway.base.errors import Reason


@dataclass(frozen=True, slots=True)
class Need:
    """What an exchange asks of a consent."""

    grantee: str
    purpose: str
    scopes: frozenset[str]
    now: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The covering consent and the scopes it covers, or the reason there is none.

    A refusal keeps its `evidence`, the consent whose state it names (the widest active one
    for CONSENT_SCOPE, the latest revoked or expired one), so the message can say what is
    wrong with it: which scopes it lacks, when it was revoked or ended.
    """

    consent: ConsentRecord | None
    covered: frozenset[str]
    reason: Reason | None
    evidence: ConsentRecord | None = None


def choose(records: Iterable[ConsentRecord], need: Need, *, partial: bool) -> Verdict:
    """The best consent for `need`: full cover first, then (if allowed) the widest partial.

    Among consents for this grantee and purpose the refusal names the most telling state:
    an active one too narrow (CONSENT_SCOPE), else a revoked one, else an expired one;
    with none for this purpose, CONSENT_MISSING.
    """
    best: ConsentRecord | None = None
    best_cover: frozenset[str] = frozenset()
    by_state: dict[Status, list[ConsentRecord]] = {}
    for record in records:
        if record.grantee != need.grantee or need.purpose not in record.purposes:
            continue
        state = record.status_at(need.now)
        by_state.setdefault(state, []).append(record)
        if state != Status.ACTIVE:
            continue
        cover = need.scopes & frozenset(record.scopes)
        if cover == need.scopes:
            return Verdict(record, cover, None)
        if len(cover) > len(best_cover) or (best is None and cover):
            best, best_cover = record, cover
    if partial and best is not None:
        return Verdict(best, best_cover, None)
    if Status.ACTIVE in by_state:
        widest = best or by_state[Status.ACTIVE][0]
        return Verdict(None, frozenset(), Reason.CONSENT_SCOPE, widest)
    if Status.REVOKED in by_state:
        latest = max(by_state[Status.REVOKED], key=lambda r: r.recorded_at)
        return Verdict(None, frozenset(), Reason.CONSENT_REVOKED, latest)
    if Status.EXPIRED in by_state:
        telling = _telling(by_state[Status.EXPIRED], need.now)
        return Verdict(None, frozenset(), Reason.CONSENT_EXPIRED, telling)
    return Verdict(None, frozenset(), Reason.CONSENT_MISSING)


def _telling(outside: list[ConsentRecord], now: int) -> ConsentRecord:
    """Among consents outside their window, the one a caller can act on: the next to
    start, else the last to have ended."""
    future = [r for r in outside if r.valid_from > now]
    if future:
        return min(future, key=lambda r: r.valid_from)
    return max(outside, key=lambda r: r.valid_until)


def window_start(record: ConsentRecord, now: int) -> int | None:
    """Start of the use-cap window holding `now` (None if the consent has no cap)."""
    cap = record.use_cap
    if cap is None:
        return None
    return record.valid_from + (now - record.valid_from) // cap.period_s * cap.period_s
