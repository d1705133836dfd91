"""Due process before a benefit ends: proposed actions, their states and what each step
sends, pure (no I/O); in the pipeline because the exchange answers with it. The ingester
(gateway/events/ingest.py) asks `on_turn` what a turned decision does; the sweep
(gateway/services/due_process.py) asks `settle` when a waiting action is carried out or
dropped; the exchange asks `overlay` what to answer meanwhile.

    change ends a benefit ──▶ pending ──notice over──────────────────────▶ confirmed
                                 │  └──household contests──▶ contested ──contest lost,
                                 │                              │          notice over──▶ confirmed
                                 │                              └──contest upheld──▶ kept
                                 └──facts turn back (a later change, a correction)──▶ withdrawn
    kept ──facts turn back──▶ released          confirmed ──facts turn back──▶ reversed

A change "ends a benefit" when it turns a household's decision for a programme from
eligible to not eligible and the programme gives notice (programmes.toml `notice_days` >
0). Instead of the eligibility change, subscribers receive `action.proposed`; the final
`eligibility.changed` (with the action's id) goes out when the notice is over and no
contest is open, i.e. at the later of the two. A contest the regulator upholds keeps the
benefit in place (`kept`) until the registry's own facts turn the decision back; any other
end of a contest (dismissed, the citizen accepting the answer or withdrawing) lets the
action proceed. While an action is pending or contested the household is still eligible,
paid or held as the programme says (`during_notice`), never silently stopped.

At most one action holds a household's benefit per programme at a time (`holding`); a
second change that would end it while one is pending adds nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from gateway.pb.jisr.v1.registry_pb2 import Payment, ReasonCode

DAY_US = 86_400 * 1_000_000

# States.
PENDING = "pending"
CONTESTED = "contested"
CONFIRMED = "confirmed"
WITHDRAWN = "withdrawn"
KEPT = "kept"
RELEASED = "released"
REVERSED = "reversed"
STATES = (PENDING, CONTESTED, CONFIRMED, WITHDRAWN, KEPT, RELEASED, REVERSED)
# States in which an action still speaks for the household's benefit.
WAITING = (PENDING, CONTESTED)
HOLDING = (PENDING, CONTESTED, KEPT, CONFIRMED)

# Why an action was withdrawn (ChangeEvent.withdrawn_because; also a kept action's
# resolution).
FACTS_RESTORED = "facts_restored"
CORRECTED = "corrected"
CONTEST_UPHELD = "contest_upheld"
# How a confirmed action came to be carried out.
NOTICE_OVER = "notice_over"
CONTEST_LOST = "contest_lost"

# The contest outcome (gateway/contests/cases.py) that stops the action; every other end
# of a contest lets it proceed.
UPHELD = "upheld"

NO_LIVING_MEMBER = ReasonCode.REASON_CODE_NO_LIVING_MEMBER


@dataclass(frozen=True, slots=True)
class ProposedAction:
    """One proposed end of a household's benefit under one programme, as stored."""

    action_id: str  # "<cause event id>/action/<programme>": replicas derive the same
    household_id: str
    programme: str
    cause: str  # the event id of the change that would end the benefit
    proposed_us: int
    notice_until_us: int
    state: str
    reasons: tuple[int, ...]  # the decision on the new facts
    previous_reasons: tuple[int, ...]  # the decision before the change
    threshold_version: str
    record_id: str = ""  # the audit record the household contests ("" until written)
    resolution: str = ""
    resolved_us: int = 0

    @property
    def waiting(self) -> bool:
        return self.state in WAITING


def action_id(cause: str, programme: str) -> str:
    """The action a change proposes for a programme: the same on every replica."""
    return f"{cause}/action/{programme}"


def propose(
    *,
    cause: str,
    household_id: str,
    programme: str,
    notice_days: float,
    now_us: int,
    reasons: tuple[int, ...],
    previous_reasons: tuple[int, ...],
    threshold_version: str,
) -> ProposedAction:
    """A new pending action, its notice running from now (when the household can learn of
    it), not from the change's effective date (which may be weeks before)."""
    return ProposedAction(
        action_id=action_id(cause, programme),
        household_id=household_id,
        programme=programme,
        cause=cause,
        proposed_us=now_us,
        notice_until_us=now_us + max(1, round(notice_days * DAY_US)),
        state=PENDING,
        reasons=reasons,
        previous_reasons=previous_reasons,
        threshold_version=threshold_version,
    )


class Step(enum.Enum):
    """What a turned decision does, given the action holding the benefit (if any)."""

    PUBLISH = "publish"  # an eligibility.changed, as without due process
    PROPOSE = "propose"  # an action.proposed instead
    WITHDRAW = "withdraw"  # an action.withdrawn instead: the benefit never stopped
    RELEASE = "release"  # nothing sent: the benefit was kept by a contest, and stays
    REVERSE = "reverse"  # an eligibility.changed back to eligible, ending a confirmed action
    NOTHING = "nothing"  # an action is pending already


def on_turn(*, ends: bool, notice_days: float, holding: ProposedAction | None) -> Step:
    """The step for a decision that turned: `ends` from eligible to not eligible (else
    from not eligible to eligible)."""
    if ends:
        if holding is not None and holding.state != CONFIRMED:
            return Step.NOTHING
        return Step.PROPOSE if notice_days > 0 else Step.PUBLISH
    if holding is None:
        return Step.PUBLISH
    if holding.waiting:
        return Step.WITHDRAW
    return Step.RELEASE if holding.state == KEPT else Step.REVERSE


def withdrawn_because(action: ProposedAction, corrects: str | None) -> str:
    """A correction of the very change that proposed the action, or another change."""
    return CORRECTED if corrects and corrects == action.cause else FACTS_RESTORED


@dataclass(frozen=True, slots=True)
class Contest:
    """The latest contest case on an action's audit record, as the sweep needs it."""

    case_id: str
    closed: bool
    outcome: str  # one of gateway/contests/cases.py's OUTCOMES once closed, else ""


def settle(action: ProposedAction, contest: Contest | None, now_us: int) -> ProposedAction | None:
    """The action's next state, if it moves now: contested as soon as a case is open on
    it; kept when the regulator upholds the contest; confirmed once the notice is over and
    no contest is open. None while it waits."""
    if not action.waiting:
        return None
    if contest is not None and not contest.closed:
        return replace(action, state=CONTESTED) if action.state == PENDING else None
    if contest is not None and contest.outcome == UPHELD:
        return replace(action, state=KEPT, resolution=CONTEST_UPHELD, resolved_us=now_us)
    if now_us < action.notice_until_us:
        return None
    resolution = CONTEST_LOST if contest is not None else NOTICE_OVER
    return replace(action, state=CONFIRMED, resolution=resolution, resolved_us=now_us)


# What a paying operator does (jisr.v1.Payment): pay, hold, nothing to pay.
DUE = Payment.PAYMENT_DUE
HELD = Payment.PAYMENT_HELD
NONE = Payment.PAYMENT_NONE


@dataclass(frozen=True, slots=True)
class Standing:
    """What the exchange answers for a household and programme, given its action."""

    eligible: bool
    reasons: tuple[int, ...]
    payment: Payment.ValueType
    pending: ProposedAction | None  # set while the action waits


def overlay(
    eligible: bool,
    reasons: tuple[int, ...],
    action: ProposedAction | None,
    during_notice: str,
) -> Standing:
    """The decision to answer: the facts' own, unless an action holds the benefit.

    - waiting (pending or contested) while the facts say not eligible: still eligible,
      with the reasons of before the change; paid or held as the programme says;
    - waiting for want of a living member (which the registry's household records do not
      show, so the facts still say eligible): the same;
    - kept (a contest upheld): still eligible, paid;
    - confirmed for want of a living member: not eligible, whatever the score says.
    """
    if action is None:
        return Standing(eligible, reasons, DUE if eligible else NONE, None)
    emptied = NO_LIVING_MEMBER in action.reasons
    if action.waiting and (not eligible or emptied):
        held = during_notice == "hold"
        kept = reasons if eligible else action.previous_reasons
        return Standing(True, kept, HELD if held else DUE, action)
    if action.state == KEPT and not eligible:
        return Standing(True, action.previous_reasons, DUE, None)
    if action.state == CONFIRMED and eligible and emptied:
        return Standing(False, action.reasons, NONE, None)
    return Standing(eligible, reasons, DUE if eligible else NONE, None)
