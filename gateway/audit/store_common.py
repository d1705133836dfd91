"""What both audit store backends share: errors, limits, the query, the mapping of a
record to an `audit_record` row and back, the subject index's key, page tokens and the
query's SQL.

Both backends import it and nothing imports them but `gateway/audit/store.py` (the
interface and its factory), so the modules form no cycle. `from_row` is on the
verification path (millions of records), hence its unusual construction.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit.record import (
    ENCODING_TAG,
    SEPARATOR,
    AuditRecord,
    Checkpoint,
    digest_or_error,
)
from gateway.storage.migrations import VersionLine

MAX_PAGE_SIZE = 1_000
STREAM_BATCH = 10_000
# Records deleted per prune transaction: a long delete would hold the SQLite write lock
# (and the appends behind it) for seconds.
PRUNE_CHUNK = 5_000

# The columns of `audit_record`, in AuditRecord field order (`to_row` / `from_row`).
COLUMNS = (
    "node",
    "seq",
    "at_us",
    "trace_id",
    "requester",
    "requester_sub",
    "method",
    "purpose",
    "basis",
    "subjects",
    "fields",
    "decision",
    "reason",
    "rh",
    "sh",
    "jti",
    "part",
    "latency_us",
    "prev_hash",
    "hash",
)
COLUMN_LIST = ", ".join(COLUMNS)
R_COLUMN_LIST = ", ".join(f"r.{c}" for c in COLUMNS)
CHECKPOINT_COLUMNS = (
    "node",
    "seq",
    "hash",
    "at_us",
    "kind",
    "first_seq",
    "first_prev_hash",
    "root",
    "root_first",
    "signature",
)
CHECKPOINT_COLUMN_LIST = ", ".join(CHECKPOINT_COLUMNS)
# AuditStore.tree_start and .covering, `{p}` the driver's placeholder. The newest checkpoint
# by seq that signs a tree is found walking audit_checkpoint_by_seq backwards. A writer's
# trees are disjoint and contiguous, so the one tree that can hold a seq is the last to
# start at or before it (audit_checkpoint_by_tree); the caller checks that it reaches it.
TREE_START_SQL = """SELECT coalesce(
    (SELECT seq FROM audit_checkpoint WHERE node = {p} AND root <> '' ORDER BY seq DESC LIMIT 1),
    (SELECT max(seq) FROM audit_checkpoint WHERE node = {p}),
    0) + 1"""
COVERING_SQL = f"""SELECT {CHECKPOINT_COLUMN_LIST} FROM audit_checkpoint
    WHERE node = {{p}} AND root <> '' AND root_first <= {{p}}
    ORDER BY root_first DESC, seq DESC LIMIT 1"""


class ReplayError(Exception):
    """(requester, jti, part) is recorded already: the token was used before, through this
    replica or another. `index` is the offending record's position in the batch given to
    `append_batch` (nothing of that batch was written)."""

    def __init__(self, requester: str, jti: str, part: int, index: int = 0) -> None:
        super().__init__(requester, jti, part, index)
        self.requester = requester
        self.jti = jti
        self.part = part
        self.index = index

    def __str__(self) -> str:
        return (
            f"replayed request: {self.requester} jti {self.jti!r} part {self.part} "
            f"is recorded already (batch index {self.index})"
        )


class ChainConflictError(Exception):
    """The batch does not follow the node's stored head (its first record's seq - 1 is not
    stored with hash == its prev_hash, or its seqs are taken): another writer uses the
    node's name, or the caller holds a stale head. Nothing was written; re-read `head` and
    link again. (The store checks linkage, not hashes: the chain verifier does that.)"""


@dataclass(frozen=True, slots=True)
class Query:
    """What a DPO asks for; empty filters match everything. Times are microseconds since
    the epoch: since_us <= at_us < until_us (0: unbounded)."""

    subject: str = ""  # a keyed subject hash (subject_hash): records whose subjects hold it
    requester: str = ""
    purpose: str = ""
    method: str = ""
    decision: str = ""
    since_us: int = 0
    until_us: int = 0
    trace_id: str = ""
    nodes: frozenset[str] | None = None  # None: every node; empty: nothing
    # A refusal's reason: records with it as their reason, or among a batch part's
    # comma-separated item reasons.
    reason: str = ""
    # One record by its id (node, seq); ("", 0): any.
    record: tuple[str, int] = ("", 0)


class AuditTrailMissingError(LookupError):
    """A read-only open found no audit trail where it looked (no file, or no audit tables).

    Reading tools (`jisr audit verify`, `export`) must never create or migrate a store: a
    mistyped directory or database URL would otherwise yield an empty trail that verifies
    as VALID. The message names where it looked (a path, or host/database and schema)."""


class AuditSchemaTooOldError(RuntimeError):
    """A read-only open found a trail at an older schema version than this code reads;
    migrating it is a write, left to the gateway (or `jisr audit prune`)."""


def check_readable(line: VersionLine, current: int, where: str) -> None:
    """A read-only open's schema check: refuse a trail this code cannot read as it is
    (newer: SchemaTooNewError; older: AuditSchemaTooOldError)."""
    line.check_known(current, where)
    if current < line.latest:
        raise AuditSchemaTooOldError(
            f"audit trail at {where} is at schema version {current}, older than this Jisr's "
            f"{line.latest}: start the gateway on it once to migrate it, then read it"
        )


def check_batch(records: Sequence[AuditRecord]) -> None:
    """Reject what could never be a stored chain segment, before touching the database:
    one node, consecutive seqs, each record linked to the previous one and sealed."""
    if not records:
        return
    first = records[0]
    for i, r in enumerate(records):
        if not r.hash:
            raise ValueError(f"audit record {r.record_id}: not sealed (no hash)")
        if r.node != first.node or r.seq != first.seq + i or r.seq < 1:
            raise ValueError(
                f"audit batch: record {i} is {r.record_id}, expected {first.node}:{first.seq + i}"
            )
        if i and r.prev_hash != records[i - 1].hash:
            raise ValueError(f"audit record {r.record_id}: prev_hash is not the previous hash")


def first_replay(records: Sequence[AuditRecord], taken: set[tuple[str, str, int]]) -> int:
    """Index of the first record whose (requester, jti, part) is in `taken` or repeats an
    earlier one of the batch; -1 if none."""
    seen: set[tuple[str, str, int]] = set()
    for i, r in enumerate(records):
        if not r.jti:
            continue
        key = (r.requester, r.jti, r.part)
        if key in taken or key in seen:
            return i
        seen.add(key)
    return -1


def replay_error(records: Sequence[AuditRecord], index: int) -> ReplayError:
    r = records[index]
    return ReplayError(r.requester, r.jti, r.part, index)


def _json(items: tuple[str, ...]) -> str:
    return json.dumps(list(items), separators=(",", ":"))


def _strings(text: str) -> tuple[str, ...]:
    """A stored JSON array of strings as a tuple. Without a backslash the array has no
    escapes (json.dumps escapes every quote and non-ASCII character), so '","' can only
    separate elements: a split is exact there and four times faster than json.loads."""
    if text == "[]":
        return ()
    if "\\" in text:
        return tuple(json.loads(text))
    return tuple(text[2:-2].split('","'))


def to_row(r: AuditRecord) -> tuple[Any, ...]:
    """The record as `COLUMNS` values: subjects and fields as JSON arrays."""
    return (
        r.node,
        r.seq,
        r.at_us,
        r.trace_id,
        r.requester,
        r.requester_sub,
        r.method,
        r.purpose,
        r.basis,
        _json(r.subjects),
        _fields_json(r.fields),
        r.decision,
        r.reason,
        r.rh,
        r.sh,
        r.jti,
        r.part,
        r.latency_us,
        r.prev_hash,
        r.hash,
    )


@functools.lru_cache(maxsize=1024)
def _fields_json(fields: tuple[str, ...]) -> str:
    """Few distinct field sets recur across millions of records."""
    return _json(fields)


_fields = functools.lru_cache(maxsize=1024)(_strings)

# Records are built without AuditRecord.__init__, whose frozen-dataclass setattr per field
# was half of from_row's cost: object.__new__, then each slot set directly (2 µs less per
# record; verification reads millions). AuditRecord is plain data (no __post_init__), and
# its fields must be COLUMNS in order, which is checked here, at import.
if tuple(f.name for f in dataclasses.fields(AuditRecord)) != COLUMNS or hasattr(
    AuditRecord, "__post_init__"
):
    raise ImportError("gateway.audit.store_common: AuditRecord's fields no longer match COLUMNS")
_SET = tuple(getattr(AuditRecord, name).__set__ for name in COLUMNS)
(
    _set_node,
    _set_seq,
    _set_at_us,
    _set_trace_id,
    _set_requester,
    _set_requester_sub,
    _set_method,
    _set_purpose,
    _set_basis,
    _set_subjects,
    _set_fields,
    _set_decision,
    _set_reason,
    _set_rh,
    _set_sh,
    _set_jti,
    _set_part,
    _set_latency_us,
    _set_prev_hash,
    _set_hash,
) = _SET
_new = object.__new__


def from_row(row: Sequence[Any]) -> AuditRecord:
    """Inverse of `to_row`: the record equal (==) to the one appended."""
    r: AuditRecord = _new(AuditRecord)
    _set_node(r, row[0])
    _set_seq(r, row[1])
    _set_at_us(r, row[2])
    _set_trace_id(r, row[3])
    _set_requester(r, row[4])
    _set_requester_sub(r, row[5])
    _set_method(r, row[6])
    _set_purpose(r, row[7])
    _set_basis(r, row[8])
    _set_subjects(r, _strings(row[9]))
    _set_fields(r, _fields(row[10]))
    _set_decision(r, row[11])
    _set_reason(r, row[12])
    _set_rh(r, row[13])
    _set_sh(r, row[14])
    _set_jti(r, row[15])
    _set_part(r, row[16])
    _set_latency_us(r, row[17])
    _set_prev_hash(r, row[18])
    _set_hash(r, row[19])
    return r


def subject_key(subject: str) -> int:
    """The subject index's key: the first 8 bytes of SHA-256(subject), a signed 64-bit
    integer (PostgreSQL's audit_subject_key(text) computes the same). Two subjects may
    share a key (odds 2^-64 per pair): queries also match the record's subjects text."""
    return int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big", signed=True)


def subject_rows(records: Sequence[AuditRecord]) -> list[tuple[int, str, int]]:
    """(subject_key, node, seq) rows of the subject index, each key once per record."""
    return [
        (k, r.node, r.seq) for r in records for k in dict.fromkeys(map(subject_key, r.subjects))
    ]


def checkpoint_row(cp: Checkpoint) -> tuple[Any, ...]:
    return (
        cp.node,
        cp.seq,
        cp.hash,
        cp.at_us,
        cp.kind,
        cp.first_seq,
        cp.first_prev_hash,
        cp.root,
        cp.root_first,
        cp.signature,
    )


def checkpoint_from_row(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(*row)


def covering_of(row: Sequence[Any] | None, seq: int) -> Checkpoint | None:
    """COVERING_SQL's answer for `seq`: its checkpoint if that tree reaches seq."""
    cp = None if row is None else checkpoint_from_row(row)
    return cp if cp is not None and cp.seq >= seq else None


def check_page(page_size: int, page_token: str) -> tuple[int, str, int] | None:
    """Validate a page request; the (at_us, node, seq) to continue after, None at start."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
    if not page_token:
        return None
    try:
        raw = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4))
        at_us, node, seq = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValueError("invalid page token") from exc
    if not (isinstance(at_us, int) and isinstance(node, str) and isinstance(seq, int)):
        raise ValueError("invalid page token")
    return at_us, node, seq


def page_of(records: list[AuditRecord], page_size: int) -> tuple[list[AuditRecord], str]:
    """Cut a page_size + 1 fetch into the page and the next page's token (opaque:
    base64url of the last record's [at_us, node, seq])."""
    if len(records) <= page_size:
        return records, ""
    page = records[:page_size]
    last = page[-1]
    raw = json.dumps([last.at_us, last.node, last.seq], separators=(",", ":")).encode()
    return page, base64.urlsafe_b64encode(raw).decode().rstrip("=")


# The subject index's rows for one key, from both its tiers (a row is in one of them).
SUBJECT_ROWS = """(SELECT node, seq FROM audit_subject WHERE subject_key = ?
    UNION ALL SELECT node, seq FROM audit_subject_recent WHERE subject_key = ?)"""
# Rows of the recent tier at which a store moves them into the large one, in key order
# (migration 4): its pages stay few enough that a batch's 1,000 keys share them, and a
# move writes each page of the large tier once for many rows.
MERGE_ROWS = 50_000
# "The record's subjects hold ?": exact, run only on the rows the subject key found.
SQLITE_HAS_SUBJECT = "EXISTS (SELECT 1 FROM json_each(r.subjects) AS j WHERE j.value = ?)"
POSTGRES_HAS_SUBJECT = (
    "EXISTS (SELECT 1 FROM json_array_elements_text(r.subjects::json) AS j(v) WHERE j.v = ?)"
)


def query_sql(
    q: Query, after: tuple[int, str, int] | None, limit: int, has_subject: str
) -> tuple[str, list[Any]]:
    """The page's SELECT with `?` placeholders (PostgreSQL swaps them for %s).

    With a subject, the subject index drives (a household is looked at a few hundred times
    at most, so the sort is small); otherwise the planner picks the time, requester or
    trace index, the first two already in (newest first) order.
    """
    where: list[str] = []
    params: list[Any] = []
    if q.subject:
        # CROSS JOIN: SQLite must loop over the subject's index rows, not over records.
        source = f"{SUBJECT_ROWS} AS s CROSS JOIN audit_record AS r"
        where.append(f"r.node = s.node AND r.seq = s.seq AND {has_subject}")
        key = subject_key(q.subject)
        params.extend((key, key, q.subject))
    else:
        source = "audit_record AS r"
    for column, value in (
        ("requester", q.requester),
        ("purpose", q.purpose),
        ("method", q.method),
        ("decision", q.decision),
        ("trace_id", q.trace_id),
    ):
        if value:
            where.append(f"r.{column} = ?")
            params.append(value)
    if q.trace_id:  # lets the planner use the partial index (trace_id <> '')
        where.append("r.trace_id <> ''")
    if q.reason:
        where.append("(r.reason = ? OR ',' || r.reason || ',' LIKE ? ESCAPE '!')")
        literal = q.reason.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        params.extend((q.reason, f"%,{literal},%"))
    if q.record[0]:
        where.append("r.node = ? AND r.seq = ?")
        params.extend(q.record)
    if q.since_us:
        where.append("r.at_us >= ?")
        params.append(q.since_us)
    if q.until_us:
        where.append("r.at_us < ?")
        params.append(q.until_us)
    if q.nodes is not None:
        names = sorted(q.nodes)
        where.append(f"r.node IN ({', '.join('?' for _ in names)})")
        params.extend(names)
    if after is not None:
        where.append("(r.at_us, r.node, r.seq) < (?, ?, ?)")
        params.extend(after)
    sql = f"SELECT {R_COLUMN_LIST} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY r.at_us DESC, r.node DESC, r.seq DESC LIMIT ?"
    params.append(limit)
    return sql, params


def row_links(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, Any, Any, str | Exception]]:
    """chain.Link of each stored row (COLUMNS order), without building its record.

    The canonical encoding is made from the row itself: a JSON array without a backslash
    holds its strings verbatim, '","' between them (see `_strings`), so the array's inner
    text with each '","' turned into the separator IS its tokens joined. Any other row (a
    backslash, a separator inside a token, a value of another type) takes the record's
    own path, `canonical_bytes(from_row(row))`, so both give the same digest or the same
    error; a unit test holds them equal. ~2 µs a row: verification reads millions."""
    sha256 = hashlib.sha256
    join = SEPARATOR.join
    arrays: dict[str, tuple[int, str]] = {}  # the few distinct field lists, tokenized once
    for row in rows:
        try:
            subjects, fields = row[9], row[10]
            listed = _array_tokens(subjects)  # a record's own: not worth keeping
            shown = arrays.get(fields)
            if shown is None:
                shown = _array_tokens(fields)
                if len(arrays) < _ARRAYS_KEPT:
                    arrays[fields] = shown
            text = join(
                (
                    ENCODING_TAG,
                    row[0],
                    str(row[1]),
                    str(row[2]),
                    row[3],
                    row[4],
                    row[5],
                    row[6],
                    row[7],
                    row[8],
                    listed[1],
                    shown[1],
                    row[11],
                    row[12],
                    row[13],
                    row[14],
                    row[15],
                    str(row[16]),
                    str(row[17]),
                    row[18],
                )
            )
            if text.count(SEPARATOR) != 19 + listed[0] + shown[0]:
                raise _SlowPathError
            digest: str | Exception = sha256(text.encode()).hexdigest()
        except Exception:  # any oddity: the record's own path says what is wrong
            digest = _slow_digest(row)
        yield row[1], row[18], row[19], digest


_ARRAYS_KEPT = 1024
_COMMA = '","'


def _array_tokens(text: str) -> tuple[int, str]:
    """A stored JSON array of strings as (its length, its count and strings joined by the
    separator): the canonical tokens. _SlowPathError if it has escapes."""
    if text == "[]":
        return 0, "0"
    if "\\" in text:
        raise _SlowPathError
    body = text[2:-2]  # what `_strings` splits: the count must be of the same text
    n = body.count(_COMMA) + 1
    return n, f"{n}{SEPARATOR}{body.replace(_COMMA, SEPARATOR)}"


class _SlowPathError(Exception):
    """A row `row_links` leaves to the record's own encoding."""


def _slow_digest(row: Sequence[Any]) -> str | Exception:
    try:
        record = from_row(row)
    except (ValueError, TypeError, IndexError) as exc:  # a subjects or fields column askew
        return exc
    return digest_or_error(record)
