"""The transparency indicators of one month, counted from what the gateway keeps: the
audit trail (exchanges, by decision and reason), contest cases (each step, and the time
to answer) and due process (proposed actions and how each ended). Pure: the stores'
readers hand the month's values in (gateway/transparency/sources.py), and what may be
published of each count is gateway/transparency/disclosure.py's business.

Every table counts events that happened in the month [start_us, end_us), by when they
happened: an exchange by its record's time, a contest step by the step's, an action's
proposal by its proposal and its end by its resolution. Dimensions are codes partners and
the observatory already know (institution ids, purpose codes, method names, reasons),
never a subject.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from consent.model import ConsentRecord, Status
from gateway.audit.record import AuditRecord
from gateway.contests.cases import ANSWER, CaseEvent
from gateway.pipeline.due_process import ProposedAction

DAY_US = 86_400 * 1_000_000
# Every table a publication holds, counts then durations (their titles are the console's
# words `transparency.table.<name>`).
TABLES = (
    "exchanges",
    "consents",
    "contest_steps",
    "due_process",
    "contest_answer_days",
    "death_to_end_days",
)
USE_CAP_REASON = "CONSENT_USE_EXCEEDED"
DUE_PROCESS_METHOD = "jisr.v1.DueProcess/ProposeAction"


@dataclass(frozen=True, slots=True)
class Month:
    """[start_us, end_us): a calendar month in UTC, e.g. "2026-11"."""

    label: str
    start_us: int
    end_us: int

    def holds(self, at_us: int) -> bool:
        return self.start_us <= at_us < self.end_us


@dataclass(frozen=True, slots=True)
class Counts:
    """One table of counts: its dimensions and a count per combination seen."""

    name: str
    description: str
    dimensions: tuple[str, ...]
    rows: dict[tuple[str, ...], int]


@dataclass(frozen=True, slots=True)
class Durations:
    """One table of durations in days: per group, every value seen (the median and the
    number are what may be published)."""

    name: str
    description: str
    dimensions: tuple[str, ...]
    values: dict[tuple[str, ...], list[float]]

    def medians(self) -> dict[tuple[str, ...], tuple[int, float]]:
        return {k: (len(v), statistics.median(v)) for k, v in self.values.items() if v}


def method_name(method: str) -> str:
    """ "VerifyEligibility" of "/jisr.v1.RegistryExchange/VerifyEligibility"."""
    return method.rsplit("/", 1)[-1]


def exchanges(records: Iterable[AuditRecord], month: Month) -> Counts:
    """Calls answered or refused: one per unary call or stream (a batch stream's parts are
    counted as the one call they belong to); the gateway's own records of proposed actions
    are due process's, not exchanges."""
    rows: Counter[tuple[str, ...]] = Counter()
    for r in records:
        if r.part != 0 or not month.holds(r.at_us) or r.method.endswith(DUE_PROCESS_METHOD):
            continue
        rows[(r.requester, r.purpose, method_name(r.method), r.decision, r.reason)] += 1
    return Counts(
        "exchanges",
        "Exchanges through the gateway: calls permitted and refused, by the institution "
        "that asked, its purpose, the method, the decision and the refusal's reason.",
        ("institution", "purpose", "method", "decision", "reason"),
        dict(rows),
    )


def consents(
    revisions: Iterable[ConsentRecord],
    expiring: Iterable[ConsentRecord],
    records: Iterable[AuditRecord],
    month: Month,
) -> Counts:
    """Citizens' consents, by the institution they allow (the grantee) and purpose: granted
    and revoked in the month (revisions recorded then, times in seconds), expired in the
    month (still active, validity ending then), and calls refused because a consent's use
    cap was reached (from the audit trail)."""
    rows: Counter[tuple[str, ...]] = Counter()
    start_s, end_s = month.start_us // 1_000_000, month.end_us // 1_000_000
    for r in revisions:
        if not start_s <= r.recorded_at < end_s:
            continue
        step = "granted" if r.revision == 1 else "revoked" if r.status == Status.REVOKED else ""
        for purpose in r.purposes if step else ():
            rows[(r.grantee, purpose, step)] += 1
    for r in expiring:
        if start_s <= r.valid_until < end_s:
            for purpose in r.purposes:
                rows[(r.grantee, purpose, "expired")] += 1
    for a in records:
        if a.part == 0 and a.reason == USE_CAP_REASON and month.holds(a.at_us):
            rows[(a.requester, a.purpose, "use_cap_reached")] += 1
    return Counts(
        "consents",
        "Citizens' consents by the institution they allow and the purpose: granted, revoked "
        "and expired in the month, and calls refused because a consent's use cap was "
        "reached (one consent naming several purposes counts once per purpose).",
        ("institution", "purpose", "step"),
        dict(rows),
    )


def contest_steps(steps: Iterable[tuple[str, CaseEvent]], month: Month) -> Counts:
    """Each step of a contest case taken in the month, by the institution whose DPO
    answers it: opened, answered, escalated (by the citizen, or by the system when
    overdue), and how it was closed."""
    rows: Counter[tuple[str, ...]] = Counter()
    for institution, step in steps:
        if month.holds(step.at_us):
            rows[(institution, step.action)] += 1
    return Counts(
        "contest_steps",
        "Contest cases: steps taken in the month by institution (open, answer, escalate, "
        "escalate_overdue, accept, withdraw, uphold, dismiss).",
        ("institution", "step"),
        dict(rows),
    )


def answer_days(steps: Iterable[tuple[str, CaseEvent, int]], month: Month) -> Durations:
    """Days from a case's opening to its answer, for answers given in the month, by
    institution. `steps`: (institution, step, the case's opening time)."""
    values: dict[tuple[str, ...], list[float]] = {}
    for institution, step, opened_us in steps:
        if step.action == ANSWER and month.holds(step.at_us):
            values.setdefault((institution,), []).append((step.at_us - opened_us) / DAY_US)
    return Durations(
        "contest_answer_days",
        "Days from a contest's opening to the institution's answer, for answers given in "
        "the month: how many, and the median.",
        ("institution",),
        values,
    )


def due_process(actions: Iterable[ProposedAction], month: Month) -> Counts:
    """Proposed actions by programme: proposed in the month, and how those that ended in
    the month ended (carried out, withdrawn and why, kept on contest)."""
    rows: Counter[tuple[str, ...]] = Counter()
    for a in actions:
        if month.holds(a.proposed_us):
            rows[(a.programme, "proposed")] += 1
        if a.resolved_us and month.holds(a.resolved_us) and a.state != "contested":
            ending = a.state if not a.resolution else f"{a.state}:{a.resolution}"
            rows[(a.programme, ending)] += 1
    return Counts(
        "due_process",
        "Proposed actions to end a benefit, by programme: proposed in the month, and each "
        "ending in the month (confirmed: carried out; withdrawn: the facts turned back or "
        "were corrected; kept: the regulator upheld the household's contest).",
        ("programme", "step"),
        dict(rows),
    )


def death_to_end_days(ended: Iterable[tuple[ProposedAction, int]], month: Month) -> Durations:
    """Days from a death's registration to the end of the benefit it caused, for benefits
    ended in the month, by programme. `ended`: (a carried-out action whose cause was a
    death, the time the source registry recorded the death)."""
    values: dict[tuple[str, ...], list[float]] = {}
    for action, registered_us in ended:
        if action.state == "confirmed" and month.holds(action.resolved_us):
            days = (action.resolved_us - registered_us) / DAY_US
            values.setdefault((action.programme,), []).append(days)
    return Durations(
        "death_to_end_days",
        "Days from a death's registration in civil status to the end of the benefit it "
        "caused (after the notice and any contest), for benefits ended in the month.",
        ("programme",),
        values,
    )
