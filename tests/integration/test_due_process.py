"""Due process before a benefit ends, end to end with real processes (docs/events.md, "Due
process" and "Payments"): a change that would end a benefit is first a proposed action;
the household stays eligible (paid or held) during the notice, may contest the action
through the citizen portal, and the final change goes out only when the notice is over
and no contest is open. On SQLite and on PostgreSQL shared by two replicas.

The gateways run with ASD's notice at ten minutes (an action stays pending for the whole
test) and AMO Tadamon's at one second (its actions are carried out while the test waits).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import JisrError
from gateway.sdk.contests import CITIZEN_PURPOSE, UPHELD, Contests
from gateway.sdk.events import Events
from gateway.sdk.trail import REPORT_PURPOSE, Trail
from tests.support import registry_rows
from tests.support.event_site import AMO, ASD, WAIT_S, Site, read, started_site

pytestmark = pytest.mark.integration

NOTICE_S = {"ASD": 600.0, "AMOT": 1.0}
PAYMENT = "ASD_PAYMENT"
_lines = itertools.count(1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("due")
    with started_site(request.param, 1, pki_dir, folder, NOTICE_S) as started:
        yield started


@pytest.fixture(scope="module")
def replicas(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("due-replicas")
    with started_site("postgresql", 2, pki_dir, folder, NOTICE_S) as started:
        yield started


def _eligible(site: Site) -> registry_rows.Household:
    """A household eligible for ASD and AMO Tadamon (low score, no other coverage), whose
    members are all alive."""
    return next(
        h
        for h in site.households
        if h.score < 9.3 and not h.schemes and all(site.alive(m) for m in h.members)
    )


def _rescore(household: str, score: float = 12.0) -> dict[str, object]:
    return {
        "id": f"RSU-DP-{next(_lines)}",
        "source": "RSU",
        "type": "household.rescored",
        "effective": "2026-11-04",
        "household_id": household,
        "score": score,
    }


def _wait(found: Callable[[], list[epb.ChangeEvent]]) -> list[epb.ChangeEvent]:
    deadline = time.monotonic() + WAIT_S
    while True:
        got = found()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _about(
    events: Events, sid: str, household: str, kind: int, programme: str
) -> Callable[[], list[epb.ChangeEvent]]:
    """A reader of the subscription's events of one type about one household and programme."""

    def found() -> list[epb.ChangeEvent]:
        return [
            n.event
            for n in read(events, sid)
            if n.event.type == kind
            and n.event.household_id == household
            and n.event.programme == programme
        ]

    return found


def _proposed(site: Site, household: str, programme: str = "ASD") -> epb.ChangeEvent:
    """Rescore the household above every threshold and wait for the programme's action."""
    anss = Events(site.client("DEMO"), ASD)
    sid = anss.create(["action.proposed"], [household]).message.subscription.subscription_id
    site.apply(_rescore(household))
    got = _wait(_about(anss, sid, household, epb.EVENT_TYPE_ACTION_PROPOSED, programme))
    assert got, f"no action.proposed for {programme}"
    return got[0]


def _decision(site: Site, who: str, institution: str = "ANSS") -> pb.EligibilityDecision:
    return site.client(institution).verify(ASD, who, "ASD").message.decision


def test_a_change_that_would_end_a_benefit_is_proposed_first(site: Site) -> None:
    household = _eligible(site).household_id
    line = _rescore(household)
    events = Events(site.client("ANSS"), ASD)
    sid = events.create(["action.proposed"], [household]).message.subscription.subscription_id
    site.apply(line)
    (action,) = _wait(_about(events, sid, household, epb.EVENT_TYPE_ACTION_PROPOSED, "ASD"))
    assert (action.action_id, action.cause, action.source) == (
        f"{line['id']}/action/ASD",
        line["id"],
        "JISR",
    )
    assert (action.previous_eligible, action.eligible) == (True, False)
    assert list(action.reasons) == [pb.REASON_CODE_SCORE_ABOVE_THRESHOLD]
    assert list(action.previous_reasons) == [pb.REASON_CODE_SCORE_BELOW_THRESHOLD]
    assert action.notice_until.year >= 2026


def test_no_final_change_goes_out_while_the_notice_runs(site: Site) -> None:
    household = _eligible(site).household_id
    events = Events(site.client("ANSS"), ASD)
    sid = events.create(["eligibility.changed"], [household]).message.subscription.subscription_id
    _proposed(site, household)
    time.sleep(1.0)  # AMO Tadamon's one-second notice is over: its final change is out
    amot = _wait(_about(events, sid, household, epb.EVENT_TYPE_ELIGIBILITY_CHANGED, "AMOT"))
    asd = _about(events, sid, household, epb.EVENT_TYPE_ELIGIBILITY_CHANGED, "ASD")()
    assert len(amot) == 1
    assert asd == []


def test_during_the_notice_the_household_is_eligible_and_its_payment_held(site: Site) -> None:
    household = _eligible(site).household_id
    action = _proposed(site, household)
    decision = _decision(site, household)
    assert (decision.eligible, decision.payment) == (True, pb.PAYMENT_HELD)
    assert list(decision.reasons) == [pb.REASON_CODE_SCORE_BELOW_THRESHOLD]
    assert decision.pending_action.action_id == action.action_id
    assert decision.pending_action.contested is False
    assert decision.pending_action.notice_until == action.notice_until


def test_the_notice_over_the_final_change_carries_the_action_id(site: Site) -> None:
    household = _eligible(site).household_id
    events = Events(site.client("CNSS"), AMO)
    sid = events.create(["eligibility.changed"], [household]).message.subscription.subscription_id
    action = _proposed(site, household, "AMOT")
    (final,) = _wait(_about(events, sid, household, epb.EVENT_TYPE_ELIGIBILITY_CHANGED, "AMOT"))
    assert (final.action_id, final.cause) == (action.action_id, action.cause)
    assert (final.previous_eligible, final.eligible) == (True, False)
    decision = site.client("CNSS").verify(AMO, household, "AMOT").message.decision
    assert (decision.eligible, decision.payment) == (False, pb.PAYMENT_NONE)
    assert not decision.HasField("pending_action")


def test_a_correction_of_the_change_withdraws_the_action(site: Site) -> None:
    household = _eligible(site).household_id
    action = _proposed(site, household)
    events = Events(site.client("ANSS"), ASD)
    sid = events.create(["action.withdrawn"], [household]).message.subscription.subscription_id
    site.apply(
        {
            "id": f"RSU-DP-{next(_lines)}",
            "source": "RSU",
            "type": "correction",
            "effective": "2026-11-05",
            "corrects": action.cause,
        }
    )
    (gone,) = _wait(_about(events, sid, household, epb.EVENT_TYPE_ACTION_WITHDRAWN, "ASD"))
    assert (gone.action_id, gone.withdrawn_because) == (action.action_id, "corrected")
    decision = _decision(site, household)
    assert (decision.eligible, decision.payment) == (True, pb.PAYMENT_DUE)
    assert not decision.HasField("pending_action")


def test_the_payer_sees_whether_to_pay_and_nothing_else(site: Site) -> None:
    pending = _eligible(site).household_id
    _proposed(site, pending)
    paid = _eligible(site).household_id
    unpaid = next(h for h in site.households if h.score > 10.5).household_id
    payer = site.client("PAYER")
    (results,) = list(payer.verify_batches(PAYMENT, "ASD", [[pending, paid, unpaid]]))
    decisions = [r.decision for r in results.results]
    assert [(d.eligible, d.payment) for d in decisions] == [
        (True, pb.PAYMENT_HELD),
        (True, pb.PAYMENT_DUE),
        (False, pb.PAYMENT_NONE),
    ]
    assert all(not d.reasons and not d.score_band for d in decisions)
    assert not any(d.HasField("pending_action") for d in decisions)
    assert {"reasons", "score_band", "pending_action"} <= set(results.withheld.paths)


def test_the_payer_cannot_ask_for_another_purpose(site: Site) -> None:
    household = _eligible(site).household_id
    with pytest.raises(JisrError) as caught:
        site.client("PAYER").verify(ASD, household, "ASD")
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED


def _contested(site: Site, household: registry_rows.Household) -> tuple[Contests, str, int]:
    """The household contests its ASD action through the ANR portal: (the portal's contest
    client, the case id, its version)."""
    _proposed(site, household.household_id)
    member = household.members[0]
    trail = Trail(site.client("ANR"), REPORT_PURPOSE)

    def entries() -> list[str]:
        """The ASD proposal's records: the rescoring proposes AMO Tadamon's action too (in
        CNSS's name), and the two are written in no fixed order."""
        report = trail.report(member).message
        return [
            e.record_id
            for e in report.entries
            if e.purpose == "DUE_PROCESS" and e.institution == "ANSS"
        ]

    deadline = time.monotonic() + WAIT_S
    while not (records := entries()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert records, "the proposed ASD action is not in the household's access report"
    portal = Contests(site.client("ANR"), CITIZEN_PURPOSE)
    case = portal.open(member, records[0], "We still live on the same income.").message.case
    assert case.institution == "ANSS"
    return portal, case.case_id, case.version


def test_the_household_contests_the_action_through_the_portal(site: Site) -> None:
    household = _eligible(site)
    _contested(site, household)
    deadline = time.monotonic() + WAIT_S
    decision = _decision(site, household.household_id)
    while not decision.pending_action.contested and time.monotonic() < deadline:
        time.sleep(0.2)
        decision = _decision(site, household.household_id)
    assert decision.pending_action.contested is True
    assert (decision.eligible, decision.payment) == (True, pb.PAYMENT_HELD)


def test_a_contest_the_regulator_upholds_keeps_the_benefit(site: Site) -> None:
    household = _eligible(site)
    hid, member = household.household_id, household.members[0]
    portal, case_id, version = _contested(site, household)
    events = Events(site.client("ANSS"), ASD)
    sid = events.create(["action.withdrawn"], [hid]).message.subscription.subscription_id
    answered = Contests(site.client("ANSS")).answer(case_id, version, "The rescoring stands.")
    escalated = portal.escalate(
        case_id, answered.message.case.version, member, "The survey missed our debts."
    )
    Contests(site.client("CNDP")).decide(
        case_id, escalated.message.case.version, UPHELD, "The rescoring is not supported."
    )
    (gone,) = _wait(_about(events, sid, hid, epb.EVENT_TYPE_ACTION_WITHDRAWN, "ASD"))
    assert gone.withdrawn_because == "contest_upheld"
    decision = _decision(site, hid)
    assert (decision.eligible, decision.payment) == (True, pb.PAYMENT_DUE)
    assert not decision.HasField("pending_action")


def test_the_death_of_the_last_living_member_proposes_ending_the_benefit(site: Site) -> None:
    household = _eligible(site)
    hid = household.household_id
    events = Events(site.client("ANSS"), ASD)
    sid = events.create(["action.proposed"], [hid]).message.subscription.subscription_id
    deaths: list[dict[str, object]] = [
        {
            "id": f"RNP-DP-{next(_lines)}",
            "source": "RNP",
            "type": "person.died",
            "effective": "2026-11-06",
            "idcs": member,
        }
        for member in household.members
    ]
    site.apply(*deaths)
    (action,) = _wait(_about(events, sid, hid, epb.EVENT_TYPE_ACTION_PROPOSED, "ASD"))
    assert pb.REASON_CODE_NO_LIVING_MEMBER in action.reasons
    assert _decision(site, hid).pending_action.action_id == action.action_id


def test_two_replicas_propose_and_carry_out_an_action_once(replicas: Site) -> None:
    household = _eligible(replicas).household_id
    events = Events(replicas.client("DEMO", replica=1), AMO)
    kinds = ["action.proposed", "eligibility.changed"]
    sid = events.create(kinds, [household]).message.subscription.subscription_id
    replicas.apply(_rescore(household))
    final = _about(events, sid, household, epb.EVENT_TYPE_ELIGIBILITY_CHANGED, "AMOT")
    assert _wait(final)
    time.sleep(1.0)  # both replicas have swept several times since
    about = [
        (n.event.type, n.event.action_id) for n in read(events, sid) if n.event.programme == "AMOT"
    ]
    assert len(about) == 2
    assert {kind for kind, _ in about} == {
        epb.EVENT_TYPE_ACTION_PROPOSED,
        epb.EVENT_TYPE_ELIGIBILITY_CHANGED,
    }
    assert len({action for _, action in about}) == 1
