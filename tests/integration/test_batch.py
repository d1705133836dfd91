"""VerifyEligibilityBatch: bulk decisions in order, bad items failed one by one."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import JisrClient, JisrError
from tests.support import registry_rows

PURPOSE = "RECERTIFICATION"
BATCHES = 100
BATCH = 1000
MALFORMED = "12345"  # every 97th subject
UNKNOWN = "1234567897"  # well-formed, in no registry: every 89th subject


def _subjects(registry_dir: Path) -> list[str]:
    """Household ids and member IDCS from the registry, cycled, with bad items mixed in."""
    with registry_rows.connect(registry_dir) as db:
        hids = [r[0] for r in db.execute("SELECT household_id FROM household ORDER BY 1")]
        members = [r[0] for r in db.execute("SELECT idcs FROM membership ORDER BY 1 LIMIT 5000")]
    good = itertools.cycle(itertools.chain.from_iterable(zip(hids, members, strict=False)))
    subjects = []
    for i in range(BATCHES * BATCH):
        if i % 97 == 96:
            subjects.append(MALFORMED)
        elif i % 89 == 88:
            subjects.append(UNKNOWN)
        else:
            subjects.append(next(good))
    return subjects


def _reason(status: object) -> str:
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)  # type: ignore[attr-defined]
    return str(info.reason)


def test_hundred_thousand_subjects_come_back_in_order_with_bad_items_failed_alone(
    client: JisrClient, registry_dir: Path
) -> None:
    subjects = _subjects(registry_dir)
    batches = [subjects[i : i + BATCH] for i in range(0, len(subjects), BATCH)]
    responses = list(client.verify_batches(PURPOSE, "ASD", batches, timeout=600))

    assert [r.batch_index for r in responses] == list(range(BATCHES))
    results = [result for r in responses for result in r.results]
    assert len(results) == len(subjects)
    for subject, result in zip(subjects, results, strict=True):
        if subject == MALFORMED:
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert _reason(result.error) == "INVALID_IDCS"
        elif subject == UNKNOWN:
            assert result.error.code == grpc.StatusCode.NOT_FOUND.value[0]
            assert _reason(result.error) == "SUBJECT_NOT_FOUND"
        else:
            assert result.WhichOneof("result") == "decision"
            assert result.decision.programme == "ASD"


def test_batch_results_equal_unary_decisions(client: JisrClient, registry_dir: Path) -> None:
    subjects = _subjects(registry_dir)[:300]
    (response,) = client.verify_batches(PURPOSE, "AMOT", [subjects])
    for subject, result in zip(subjects, response.results, strict=True):
        assert _unary_outcome(client, subject) == _outcome(result)


def _unary_outcome(client: JisrClient, subject: str) -> pb.EligibilityDecision | str:
    try:
        return client.verify(PURPOSE, subject, "AMOT").message.decision
    except JisrError as err:
        return err.reason


def _outcome(result: pb.EligibilityResult) -> pb.EligibilityDecision | str:
    return result.decision if result.HasField("decision") else _reason(result.error)


def _batches(*sizes: int) -> Iterator[list[str]]:
    for size in sizes:
        yield ["H000000001"] * size


def test_batch_over_the_limit_ends_the_stream_with_invalid_argument(client: JisrClient) -> None:
    with pytest.raises(JisrError) as err:
        list(client.verify_batches(PURPOSE, "ASD", _batches(10, 1001)))
    assert (err.value.code, err.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BATCH_TOO_LARGE",
    )


def test_batch_for_a_purpose_without_a_grant_is_permission_denied(client: JisrClient) -> None:
    with pytest.raises(JisrError) as err:
        list(client.verify_batches("SCHOOL_SUPPORT", "ASD", _batches(3)))
    assert (err.value.code, err.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PURPOSE_NOT_ALLOWED",
    )


def test_empty_batch_gets_an_empty_answer(client: JisrClient) -> None:
    (response,) = client.verify_batches(PURPOSE, "ASD", _batches(0))
    assert (response.batch_index, len(response.results)) == (0, 0)


def test_a_caller_that_waits_for_each_answer_before_its_next_batch_gets_each_at_once(
    client: JisrClient, registry_dir: Path
) -> None:
    """The gateway sends a batch's answer without waiting for the next batch: the answer
    goes once its record is durable, whatever the caller sends next."""
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    answered, held_back, received = threading.Event(), list[int](), list[int]()

    def batches() -> Iterator[list[str]]:
        for k in range(3):
            yield [hid]
            if not answered.wait(20):  # an answer held until the next batch came
                held_back.append(k)
            answered.clear()

    for results in client.verify_batches(PURPOSE, "ASD", batches(), timeout=120):
        received.append(results.batch_index)
        answered.set()
    assert received == [0, 1, 2]
    assert held_back == []


def test_the_batches_answered_before_a_refused_one_all_come_back_first(
    client: JisrClient, registry_dir: Path
) -> None:
    """A refusal of the stream (here a batch over the limit) comes after the answers of
    the batches recorded before it, never instead of them."""
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    received: list[int] = []

    def answers() -> None:
        for results in client.verify_batches(PURPOSE, "ASD", [[hid], [hid], [hid] * 1001]):
            received.append(results.batch_index)

    with pytest.raises(JisrError) as err:
        answers()
    assert err.value.reason == "BATCH_TOO_LARGE"
    assert received == [0, 1]
