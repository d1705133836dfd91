"""What both consent store backends share: the conflict error, limits, the mapping of a
record to a `consent_revision` row and back, and page tokens.

Both backends import it and nothing imports them but `consent/store.py` (the interface and
its factory), so the modules form no cycle. It is on the exchange's hot path: `from_row`
turns up to thousands of rows into records per call.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Sequence
from typing import Any

from consent.model import ConsentRecord, Status, SubjectKind, UseCap

MAX_PAGE_SIZE = 500
# Subjects per for_subjects statement: a batch of 1,000 people can name 2,000 subjects
# (each person and their household); larger inputs are split, never looped one by one.
SUBJECTS_PER_QUERY = 2_000
CHANGES_PER_CALL = 10_000

# The columns of `consent_revision` a record maps to, in `to_row` order (`seq` is the
# store's, not the record's).
COLUMNS = (
    "consent_id",
    "revision",
    "subject_kind",
    "subject",
    "grantor",
    "grantee",
    "purposes",
    "scopes",
    "valid_from",
    "valid_until",
    "use_cap_max_uses",
    "use_cap_period_s",
    "status",
    "collected_by",
    "collection_method",
    "artefact",
    "recorded_at",
    "prev_hash",
    "hash",
)
COLUMN_LIST = ", ".join(COLUMNS)


class ConsentConflictError(Exception):
    """The revision does not follow the stored latest one (it exists already, skips one,
    or its prev_hash is not the latest hash): someone else appended first; re-read."""


def check_appendable(record: ConsentRecord) -> None:
    """Reject what could never be a valid stored revision, before touching the database."""
    if record.revision < 1:
        raise ValueError(f"consent {record.consent_id}: revision must be >= 1")
    if record.status not in (Status.ACTIVE, Status.REVOKED):
        raise ValueError(f"consent {record.consent_id}: only ACTIVE or REVOKED are stored")
    if not record.hash or record.sealed().hash != record.hash:
        raise ValueError(
            f"consent {record.consent_id} revision {record.revision}: not sealed "
            "(hash missing or not the hash of its fields)"
        )
    if record.revision == 1 and record.prev_hash:
        raise ConsentConflictError(
            f"consent {record.consent_id}: revision 1 cannot follow a previous hash"
        )


def check_page(page_size: int, page_token: str) -> str:
    """Validate a page request and return the consent_id to continue after."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
    if not page_token:
        return ""
    try:
        after = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("invalid page token") from exc
    if not after:
        raise ValueError("invalid page token")
    return after


def page_of(records: list[ConsentRecord], page_size: int) -> tuple[list[ConsentRecord], str]:
    """Cut a page_size + 1 fetch into the page and the token of the next one (opaque:
    base64url of the last consent_id, so callers cannot depend on its form)."""
    if len(records) <= page_size:
        return records, ""
    page = records[:page_size]
    token = base64.urlsafe_b64encode(page[-1].consent_id.encode()).decode().rstrip("=")
    return page, token


def unique_subjects(subjects: Sequence[tuple[SubjectKind, str]]) -> list[tuple[str, str]]:
    """Deduplicated (kind value, subject) pairs: a repeated subject must not repeat rows."""
    return list(dict.fromkeys((SubjectKind(k).value, s) for k, s in subjects))


def chunks(items: list[tuple[str, str]], size: int) -> list[list[tuple[str, str]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def to_row(record: ConsentRecord) -> tuple[Any, ...]:
    """The record as `COLUMNS` values: tuples as JSON arrays, the use cap as two ints."""
    cap = record.use_cap
    return (
        record.consent_id,
        record.revision,
        record.subject_kind.value,
        record.subject,
        record.grantor,
        record.grantee,
        json.dumps(list(record.purposes), separators=(",", ":")),
        json.dumps(list(record.scopes), separators=(",", ":")),
        record.valid_from,
        record.valid_until,
        None if cap is None else cap.max_uses,
        None if cap is None else cap.period_s,
        record.status.value,
        record.collected_by,
        record.collection_method,
        record.artefact,
        record.recorded_at,
        record.prev_hash,
        record.hash,
    )


_KINDS = {k.value: k for k in SubjectKind}
_STATUSES = {s.value: s for s in Status}


@functools.lru_cache(maxsize=4096)
def _strings(text: str) -> tuple[str, ...]:
    """A stored JSON array as a tuple; cached because few distinct purpose and scope sets
    recur across thousands of rows, and parsing them was most of from_row's cost."""
    return tuple(json.loads(text))


@functools.lru_cache(maxsize=1024)
def _use_cap(max_uses: int | None, period_s: int | None) -> UseCap | None:
    return None if max_uses is None or period_s is None else UseCap(max_uses, period_s)


def from_row(row: Sequence[Any]) -> ConsentRecord:
    """Inverse of `to_row`: the record equal (==) to the one appended (on the hot path:
    for_subjects turns up to thousands of rows into records per call)."""
    return ConsentRecord(
        consent_id=row[0],
        revision=row[1],
        subject_kind=_KINDS[row[2]],
        subject=row[3],
        grantor=row[4],
        grantee=row[5],
        purposes=_strings(row[6]),
        scopes=_strings(row[7]),
        valid_from=row[8],
        valid_until=row[9],
        use_cap=_use_cap(row[10], row[11]),
        status=_STATUSES[row[12]],
        collected_by=row[13],
        collection_method=row[14],
        artefact=row[15],
        recorded_at=row[16],
        prev_hash=row[17],
        hash=row[18],
    )


def new_cursor(cursor: int, rows: Sequence[Sequence[Any]]) -> tuple[list[str], int]:
    """(seq, consent_id) rows in seq order -> distinct consent_ids and the last seq."""
    if not rows:
        return [], cursor
    return list(dict.fromkeys(str(r[1]) for r in rows)), int(rows[-1][0])
