"""The ContestCases servicer without the network: the read-time sweep and who sees a case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from adapters.base import FetchContext
from gateway.audit.recorder import AuditRecorder
from gateway.audit.store import AuditStore
from gateway.base.errors import ExchangeError, Reason
from gateway.contests import cases
from gateway.contests.store import ContestStore, open_contest_store
from gateway.pb.jisr.v1 import contests_pb2 as kpb
from gateway.security import policy
from gateway.services.contest_cases import ContestCasesService

DAY = cases.DAY_US
SUBJECT = "ab" * 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ContestStore]:
    opened = open_contest_store(None, tmp_path)
    yield opened
    opened.close()


def _service(store: ContestStore, now: list[int]) -> ContestCasesService:
    return ContestCasesService(
        store,
        cast(AuditRecorder, None),
        cast(AuditStore, None),
        policy.load_default(),
        clock=lambda: now[0],
    )


def _open(store: ContestStore) -> cases.Case:
    citizen = cases.Actor(cases.CITIZEN, "ANR", "ref-1")
    case, event = cases.open_case(
        "node-1:7",
        subject_hash=SUBJECT,
        institution="DEMO",
        portal="ANR",
        statement="Why?",
        actor=citizen,
        now_us=0,
    )
    store.create(case, event)
    return case


def _ctx(institution: str, sub: str) -> FetchContext:
    return FetchContext("CONTEST_HANDLING", None, institution, sub)


def test_reading_an_overdue_case_escalates_it_first(store: ContestStore) -> None:
    case = _open(store)
    now = [cases.ANSWER_DAYS * DAY]
    read = _service(store, now).get_case(
        kpb.GetCaseRequest(case_id=case.case_id), _ctx("DEMO", "officer-1")
    )
    assert (read.case.state, read.case.version) == ("escalated", 2)
    assert [e.actor_kind for e in read.history] == ["citizen", "system"]


def test_the_periodic_sweep_moves_only_overdue_cases(store: ContestStore) -> None:
    case = _open(store)
    now = [cases.ANSWER_DAYS * DAY - 1]
    service = _service(store, now)
    assert service.sweep() == 0
    now[0] += 1
    assert service.sweep() == 1
    moved = store.case(case.case_id)
    assert moved is not None
    assert moved.state == "escalated"


@pytest.mark.parametrize(
    ("institution", "sub"), [("CNSS", "officer-2"), ("ANR", "ref-2"), ("DEMO", "x y")]
)
def test_a_stranger_is_not_told_the_case_exists(
    store: ContestStore, institution: str, sub: str
) -> None:
    case = _open(store)
    service = _service(store, [1])
    for case_id in (case.case_id, "case-0000000000000000"):
        request: Any = kpb.AnswerCaseRequest(case_id=case_id, expected_version=1, text="No.")
        with pytest.raises(ExchangeError) as caught:
            service.answer_case(request, _ctx(institution, sub))
        assert caught.value.reason == Reason.CASE_NOT_YOURS
