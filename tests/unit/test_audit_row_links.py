"""A stored row hashes exactly as its record does: the verification's fast path
(store_common.row_links) gives the digest, or the error, that the record's own canonical
encoding gives, whatever the row holds."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.audit import chain
from gateway.audit.record import GENESIS, AuditRecord, link
from gateway.audit.store_common import from_row, row_links, to_row


def _record(**changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "node": "gw-1",
        "seq": 0,
        "at_us": 1_764_000_000_000_000,
        "trace_id": "",
        "requester": "DEMO",
        "requester_sub": "svc-eligibility",
        "method": "/jisr.v1.RegistryExchange/VerifyEligibility",
        "purpose": "ASD_ELIGIBILITY",
        "basis": "Loi 58-23, art. 7",
        "subjects": ("a" * 64,),
        "fields": ("programme", "eligible"),
        "decision": "permit",
        "reason": "",
        "rh": "rh",
        "sh": "sh",
        "jti": "jti-1",
        "part": 0,
        "latency_us": 1234,
    }
    fields.update(changes)
    return link(0, GENESIS, AuditRecord(**fields))


def _digest_of_row(row: tuple[Any, ...]) -> str | Exception:
    [(_, _, _, digest)] = list(row_links([row]))
    return digest


def _digest_of_record(record: AuditRecord) -> str | Exception:
    [(_, _, _, digest)] = list(chain.record_links([record]))
    return digest


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"subjects": ()},
        {"fields": ()},
        {"subjects": tuple(f"{i:064x}" for i in range(1_000))},
        {"subjects": ("",)},
        {"subjects": ("", "")},
        {"requester_sub": 'a "quoted", sub'},
        {"subjects": ('one","two',)},
        {"subjects": ("é",), "basis": "قانون 09-08"},
        {"fields": ("back\\slash",)},
        {"part": 17, "decision": "deny", "reason": "NO_CONSENT", "sh": ""},
    ],
    ids=lambda changes: ",".join(changes) or "plain",
)
def test_a_stored_row_hashes_as_its_record(changes: dict[str, Any]) -> None:
    record = _record(**changes)
    digest = _digest_of_row(to_row(record))
    assert digest == record.hash
    assert digest == _digest_of_record(record)


def _tampered(index: int, value: Any, *more: tuple[int, Any]) -> tuple[Any, ...]:
    row = list(to_row(_record()))
    for at, changed in ((index, value), *more):
        row[at] = changed
    return tuple(row)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (4, "DE\0MO"),  # a NUL inside a token
        (9, '["a\\u0000b"]'),  # a NUL inside a subject, escaped in the JSON
        (9, '["a", "b"]'),  # a JSON array written with spaces
        (10, "not json"),
        (9, 42),  # a value of another type
        (5, b"bytes"),
        (1, "1"),  # seq stored as text
        (2, 1.5),
        (9, '[","]'),  # brackets that overlap the separator
        (9, '","x'),
        (9, '["a","]'),
        (10, '[","]'),
    ],
)
def test_a_tampered_row_gives_what_its_record_gives(index: int, value: Any) -> None:
    row = _tampered(index, value)
    fast = _digest_of_row(row)
    try:
        slow: str | Exception = _digest_of_record(from_row(row))
    except (ValueError, TypeError) as exc:
        slow = exc
    if isinstance(slow, Exception):
        assert type(fast) is type(slow)
        assert str(fast) == str(slow)
    else:
        assert fast == slow


def test_links_carry_seq_and_the_stored_hashes() -> None:
    record = _record()
    [(seq, prev_hash, stored, _)] = list(row_links([to_row(record)]))
    assert (seq, prev_hash, stored) == (1, GENESIS, record.hash)


@pytest.mark.parametrize("subjects", ['[","]', '","x', '["a","]', '[""]', '["a\u0000"]'])
def test_a_nul_elsewhere_is_not_hidden_by_an_odd_subjects_array(subjects: str) -> None:
    """A stray NUL in one field and an array whose brackets overlap its separators: the
    fast path's token count must not absorb the NUL (the record has no canonical form)."""
    row = _tampered(9, subjects, (4, "DE\0MO"))
    fast, slow = _digest_of_row(row), _digest_of_record(from_row(row))
    assert isinstance(fast, ValueError)
    assert isinstance(slow, ValueError)
    assert str(fast) == str(slow)
