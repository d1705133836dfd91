"""ContestCases through a real gateway, on SQLite and on PostgreSQL: a citizen's portal
contests one recorded access, the accessing institution's DPO answers, the citizen takes
it to the regulator, which decides; each step audited and answered with a receipt."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from gateway.base.wire import CONTEST_CASES, method_path
from gateway.contests.store import open_contest_store
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.contests import CITIZEN_PURPOSE, UPHELD, Contests
from gateway.sdk.trail import AccessQuery, Trail
from tests.support import databases, processes, registry_rows

ACCESS_PURPOSE = "ASD_ELIGIBILITY"
DESKS = ("DEMO", "CNSS", "ANR", "CNDP")
_subs = itertools.count(1)


@dataclass
class Gateway:
    """A gateway and one client per institution, with the households not yet accessed."""

    proc: processes.Proc
    state_dir: Path
    url: str | None
    clients: dict[str, JisrClient]
    households: Iterator[registry_rows.Household]
    stack: ExitStack = field(default_factory=ExitStack)

    def desk(self, institution: str, sub: str, purpose: str = "CONTEST_HANDLING") -> Contests:
        return Contests(self.clients[institution].acting_as(sub), purpose)

    def portal(self, sub: str) -> Contests:
        return self.desk("ANR", sub, CITIZEN_PURPOSE)

    def accessed(self) -> tuple[registry_rows.Household, str]:
        """A fresh household that DEMO has just accessed, and that access's record id."""
        household = next(self.households)
        answer = self.clients["DEMO"].verify(ACCESS_PURPOSE, household.household_id, "ASD")
        return household, str(answer.receipt["audit"])


def _start(
    registry_dir: Path, pki_dir: Path, folder: Path, url: str | None, env: dict[str, str]
) -> Gateway:
    state = folder / "state"
    state.mkdir()
    env = {"JISR_STATE_DIR": str(state), **env}
    if url:
        env["JISR_DATABASE_URL"] = url
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    proc = processes.start([*args, "--pki-dir", str(pki_dir)], folder / "gateway.log", env=env)
    gateway = Gateway(proc, state, url, {}, iter(registry_rows.households(registry_dir, 200)))
    for name in DESKS:
        client = JisrClient(proc.target, Credentials.from_pki(pki_dir, name), timeout=30)
        gateway.clients[name] = gateway.stack.enter_context(client)
    return gateway


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(
    request: pytest.FixtureRequest,
    registry_dir: Path,
    pki_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    database = databases.postgres_schema() if request.param == "postgresql" else nullcontext()
    with database as url:
        started = _start(registry_dir, pki_dir, tmp_path_factory.mktemp("contests"), url, {})
        try:
            yield started
        finally:
            started.stack.close()
            assert started.proc.stop() == 0


def _opened(gateway: Gateway, sub: str) -> tuple[str, str]:
    """A case the portal opened for a fresh household: (household id, case id)."""
    household, record = gateway.accessed()
    opened = gateway.portal(sub).open(household.household_id, record, "I did not consent.")
    return household.household_id, opened.message.case.case_id


def _error(run: object) -> JisrError:
    with pytest.raises(JisrError) as caught:
        run()  # type: ignore[operator]
    return caught.value


def test_portal_opens_a_case_on_a_record_about_its_citizen(gateway: Gateway) -> None:
    household, record = gateway.accessed()
    answer = gateway.portal("citizen-ref-1").open(
        household.household_id, record, "Why did you look at my household?"
    )
    case = answer.message.case
    assert (case.state, case.version, case.record_id) == ("open", 1, record)
    assert (case.institution, case.portal) == ("DEMO", "ANR")
    assert household.household_id not in str(answer.message)
    assert answer.receipt["method"] == method_path(CONTEST_CASES, "OpenCase")
    assert answer.receipt["decision"] == "permit"
    assert answer.receipt["audit"]


def test_a_person_contests_an_access_to_their_household(gateway: Gateway) -> None:
    household, record = gateway.accessed()
    person = household.members[0]
    opened = gateway.portal("citizen-ref-2").open(person, record, "That is my household.")
    listed = gateway.portal("citizen-ref-2").list(who=person)
    assert [c.case_id for c in listed.message.cases] == [opened.message.case.case_id]


def test_a_record_about_someone_else_is_refused(gateway: Gateway) -> None:
    _, record = gateway.accessed()
    stranger, _ = gateway.accessed()
    portal = gateway.portal("citizen-ref-3")
    other = _error(lambda: portal.open(stranger.household_id, record, "Not me."))
    missing = _error(lambda: portal.open(stranger.household_id, "nowhere:99", "Not me."))
    for refused in (other, missing):
        assert refused.code == grpc.StatusCode.NOT_FOUND
        assert refused.reason == "CASE_RECORD_NOT_FOUND"
    assert other.message == missing.message


def test_the_routed_dpo_sees_the_case_in_its_queue_and_answers(gateway: Gateway) -> None:
    _, case_id = _opened(gateway, "citizen-ref-4")
    dpo = gateway.desk("DEMO", "officer-4")
    queue = dpo.list(states=["open"], limit=1000).message.cases
    assert case_id in [c.case_id for c in queue]
    answered = dpo.answer(case_id, 1, "Your household applied for ASD; we checked it.")
    assert (answered.message.case.state, answered.message.case.version) == ("answered", 2)
    assert answered.receipt["method"] == method_path(CONTEST_CASES, "AnswerCase")


def test_another_institutions_dpo_is_refused(gateway: Gateway) -> None:
    _, case_id = _opened(gateway, "citizen-ref-5")
    other = gateway.desk("CNSS", "officer-5")
    for refused in (
        _error(lambda: other.answer(case_id, 1, "Not ours.")),
        _error(lambda: other.get(case_id)),
    ):
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED
        assert refused.reason == "CASE_NOT_YOURS"
    assert case_id not in [c.case_id for c in other.list().message.cases]


def test_the_citizen_escalates_and_the_regulator_decides(gateway: Gateway) -> None:
    who, case_id = _opened(gateway, "citizen-ref-6")
    gateway.desk("DEMO", "officer-6").answer(case_id, 1, "It was lawful.")
    portal = gateway.portal("citizen-ref-6")
    escalated = portal.escalate(case_id, 2, who, "It was not: I never applied.")
    assert escalated.message.case.state == "escalated"
    cndp = gateway.desk("CNDP", "inspector-6")
    assert case_id in [c.case_id for c in cndp.list().message.cases]
    decided = cndp.decide(case_id, 3, UPHELD, "The access had no basis.")
    assert (decided.message.case.state, decided.message.case.outcome) == ("closed", "upheld")
    history = portal.get(case_id, who).message.history
    assert [e.action for e in history] == ["open", "answer", "escalate", "uphold"]
    assert [e.actor_id for e in history] == [
        "citizen-ref-6",
        "officer-6",
        "citizen-ref-6",
        "inspector-6",
    ]


def test_a_stale_version_is_aborted(gateway: Gateway) -> None:
    _, case_id = _opened(gateway, "citizen-ref-7")
    dpo = gateway.desk("DEMO", "officer-7")
    dpo.answer(case_id, 1, "First answer.")
    refused = _error(lambda: dpo.answer(case_id, 1, "Second answer, from a stale page."))
    assert refused.code == grpc.StatusCode.ABORTED
    assert refused.reason == "CONCURRENT_CHANGE"
    assert dpo.get(case_id).message.case.answer == "First answer."


def test_each_step_leaves_an_audit_record_naming_its_actor(gateway: Gateway) -> None:
    sub = f"citizen-ref-audit-{next(_subs)}"
    who, case_id = _opened(gateway, sub)
    officer = f"officer-audit-{next(_subs)}"
    answered = gateway.desk("DEMO", officer).answer(case_id, 1, "Answered.")
    withdrawn = gateway.portal(sub).withdraw(case_id, 2, who)
    trail = Trail(gateway.clients["CNDP"])
    seen = {}
    for name, actor in (("OpenCase", sub), ("AnswerCase", officer), ("WithdrawCase", sub)):
        records = trail.query(AccessQuery(method=method_path(CONTEST_CASES, name)), limit=500)
        seen[name] = {r.record_id: r for r in records if r.requester_sub == actor}
        assert seen[name], name
    assert str(answered.receipt["audit"]) in seen["AnswerCase"]
    assert str(withdrawn.receipt["audit"]) in seen["WithdrawCase"]
    record = seen["WithdrawCase"][str(withdrawn.receipt["audit"])]
    assert (record.requester, record.decision) == ("ANR", "permit")


def test_bad_text_is_invalid_naming_the_field(gateway: Gateway) -> None:
    household, record = gateway.accessed()
    portal = gateway.portal("citizen-ref-8")
    empty = _error(lambda: portal.open(household.household_id, record, "   "))
    assert (empty.code, empty.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CASE_TEXT_INVALID")
    assert empty.metadata["field"] == "statement"
    _, case_id = _opened(gateway, "citizen-ref-8")
    control = _error(lambda: gateway.desk("DEMO", "officer-8").answer(case_id, 1, "a\x00b"))
    assert control.reason == "CASE_TEXT_INVALID"
    assert control.metadata["field"] == "text"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_unanswered_case_goes_to_the_regulator_when_due(
    backend: str, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    # About 0.9 s to answer; a sweep every 0.2 s.
    env = {"JISR_CONTEST_ANSWER_DAYS": "0.00001", "JISR_CONTEST_SWEEP_SECONDS": "0.2"}
    database = databases.postgres_schema() if backend == "postgresql" else nullcontext()
    with database as url:
        gateway = _start(registry_dir, pki_dir, tmp_path, url, env)
        try:
            _, case_id = _opened(gateway, "citizen-ref-9")
            store = open_contest_store(url, gateway.state_dir)
            try:
                deadline = time.monotonic() + 15
                while (case := store.case(case_id)) is not None and case.state == "open":
                    assert time.monotonic() < deadline, "the sweep did not escalate the case"
                    time.sleep(0.1)
                history = store.history(case_id)
            finally:
                store.close()
            assert case is not None
            assert case.state == "escalated"
            assert (history[-1].action, history[-1].actor_kind) == ("escalate_overdue", "system")
            late = _error(lambda: gateway.desk("DEMO", "officer-9").answer(case_id, 2, "Late."))
            assert (late.code, late.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CASE_STATE")
            queue = gateway.desk("CNDP", "inspector-9").list().message.cases
            assert case_id in [c.case_id for c in queue]
        finally:
            gateway.stack.close()
            assert gateway.proc.stop() == 0
