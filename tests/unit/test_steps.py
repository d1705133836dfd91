"""Steps: a call's work that yields where it would wait, run to the end by `drive`."""

from __future__ import annotations

import threading

import pytest

from gateway.audit.record import AuditRecord
from gateway.audit.writer import AuditUnavailable, Pending
from gateway.engine.steps import OFFLOAD, Steps, Unary, drive


def _draft() -> AuditRecord:
    return AuditRecord(
        node="n", seq=0, at_us=0, trace_id="", requester="DEMO", requester_sub="", method="m",
        purpose="P", basis="", subjects=(), fields=(), decision="permit", reason="", rh="",
        sh="", jti="", part=0, latency_us=0,
    )  # fmt: skip


def _waits_for(pending: Pending) -> Steps[str]:
    yield OFFLOAD
    yield pending
    return pending.outcome().record_id


def test_drive_waits_for_a_record_settled_by_another_thread() -> None:
    pending = Pending(_draft())
    record = _draft()
    threading.Timer(0.05, pending.succeed, [record]).start()
    assert drive(_waits_for(pending)) == record.record_id


def test_a_failed_record_is_raised_where_the_steps_ask_for_it() -> None:
    pending = Pending(_draft())
    pending.fail(AuditUnavailable("store down"))
    with pytest.raises(AuditUnavailable, match="store down"):
        drive(_waits_for(pending))


def test_a_callback_learns_of_an_outcome_known_before_it_was_added() -> None:
    pending = Pending(_draft())
    pending.succeed(_draft())
    called: list[bool] = []
    pending.add_done_callback(lambda: called.append(True))
    assert called == [True]


def test_a_unary_behaviour_called_directly_runs_its_steps_on_this_thread() -> None:
    def steps(raw: bytes, context: object) -> Steps[bytes]:
        yield OFFLOAD
        return raw[::-1]

    assert Unary(steps)(b"abc", None) == b"cba"
