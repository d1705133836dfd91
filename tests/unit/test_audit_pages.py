"""QueryAccess pages fit a client's message limit, however many subjects records name."""

from __future__ import annotations

from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.services.audit_trail import MAX_MESSAGE_BYTES, _messages


def _record(seq: int, subjects: int) -> apb.AccessRecord:
    return apb.AccessRecord(
        record_id=f"n:{seq}", seq=seq, subject_hashes=[f"{i:064x}" for i in range(subjects)]
    )


def test_a_page_of_large_records_is_split_into_messages_under_the_limit() -> None:
    records = [_record(seq, 2_000) for seq in range(20)]  # ~2.7 MB in all
    messages = list(_messages(records, "next"))
    assert len(messages) > 1
    assert all(m.ByteSize() <= MAX_MESSAGE_BYTES + 1024 for m in messages)
    assert [r.seq for m in messages for r in m.records] == list(range(20))
    assert {m.next_page_token for m in messages} == {"next"}


def test_a_small_page_is_one_message() -> None:
    messages = list(_messages([_record(1, 3), _record(2, 3)], ""))
    assert [len(m.records) for m in messages] == [2]


def test_an_empty_page_is_one_empty_message_with_its_token() -> None:
    (message,) = _messages([], "")
    assert list(message.records) == []
