"""Where audit records live: one interface, an SQLite and a PostgreSQL backend.

Every gateway process (node) appends to its own hash chain through one `AuditWriter`
(gateway/audit/writer.py), which hands the store a batch of linked records per commit:
`append_batch` is one transaction, durable when it returns. The unique index on
(requester, jti, part) makes that durable write also the replay check shared by every
replica: a second use of a token's jti fails with `ReplayError`, and then nothing of the
batch is written. Records are never changed; only retention (`prune_before`) deletes the
oldest records of a chain. Tables, indexes and durability: docs/audit-storage.md.

What the backends share is in `gateway/audit/store_common.py`; this module adds the
interface the gateway codes against and `open_audit_store`, the one module importing the
backends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.audit.record import AuditRecord, Checkpoint
from gateway.audit.store_common import (
    STREAM_BATCH,
    AuditSchemaTooOldError,
    AuditTrailMissingError,
    ChainConflictError,
    Query,
    ReplayError,
)

__all__ = [
    "AuditSchemaTooOldError",
    "AuditStore",
    "AuditTrailMissingError",
    "ChainConflictError",
    "Query",
    "ReplayError",
    "open_audit_store",
]


class AuditStore(Protocol):
    """Storage of every node's audit chain and checkpoints, shared by every replica."""

    def append_batch(self, records: Sequence[AuditRecord]) -> None:
        """Store linked, sealed records in ONE transaction, durable on return. Raises
        ReplayError (index of the first offender) if a (requester, jti, part) with jti != ""
        is taken, by the database or earlier in the batch; ChainConflictError if the first
        record does not follow the node's stored head. Either way nothing is written."""
        ...

    def append_checkpoint(self, cp: Checkpoint) -> None:
        """Store a (signed) checkpoint, durable on return."""
        ...

    def head(self, node: str) -> tuple[int, str]:
        """(seq, hash) of the node's last record, (0, "") if it has none."""
        ...

    def records(
        self, node: str | None = None, after_seq: int = 0, batch: int = STREAM_BATCH
    ) -> Iterator[AuditRecord]:
        """Records with seq > after_seq, of one node or of all (by node, then seq), read
        `batch` at a time (one query each, no long-lived transaction)."""
        ...

    def record_rows(self, node: str) -> Iterator[tuple[Any, ...]]:
        """The node's records as stored rows (store_common.COLUMNS), in ascending seq, read
        by one statement: the whole-trail verification's fast path (store_common.row_links),
        which would otherwise pay for a query per page and a record per row."""
        ...

    def checkpoints(self, node: str | None = None) -> list[Checkpoint]:
        """Checkpoints of one node or of all, by node, then in the order written."""
        ...

    def tree_start(self, node: str) -> int:
        """The first seq the node's next checkpoint's Merkle tree covers: after its last
        checkpoint that signs a tree, else after its last checkpoint (those signed before
        trees existed cover what precedes), else 1."""
        ...

    def covering(self, node: str, seq: int) -> Checkpoint | None:
        """The first checkpoint whose Merkle tree covers node:seq (None if none does yet:
        the record is after the node's last checkpoint, or before trees existed)."""
        ...

    def count_calls_since(self, requester: str, at_us: int) -> int:
        """How many calls `requester` made at or after `at_us`, every node together: its
        calls' own records (part 0), not their batches' or notifications', nor the
        gateway's records of proposed actions (an institution's daily quota)."""
        ...

    def nodes(self) -> list[str]:
        """Every node with a record or a checkpoint, sorted (bytewise)."""
        ...

    def query(
        self, q: Query, page_size: int, page_token: str = ""
    ) -> tuple[list[AuditRecord], str]:
        """One page of matching records, newest first (at_us, then node and seq, all
        descending), and the next page's token ("" after the last page)."""
        ...

    def prune_before(self, at_us: int, node: str) -> tuple[int, int, str]:
        """Delete the node's records that precede its first record with at_us >= `at_us`
        (never its last record), oldest first, so the chain stays contiguous. Returns
        (deleted, first kept seq, its prev_hash), (0, 0, "") for a node without records.
        The caller then writes a signed "prune" checkpoint with those values."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


def open_audit_store(url: str | None, state_dir: Path, *, read_only: bool = False) -> AuditStore:
    """PostgreSQL when `url` is a postgresql:// URL (replicas share it), else the embedded
    SQLite file state_dir/audit.sqlite. Migrates the schema before returning, unless
    `read_only`: then the trail must exist at the current schema version, or
    AuditTrailMissingError / AuditSchemaTooOldError is raised, and nothing is created."""
    if url and url.startswith(("postgresql://", "postgres://")):
        # Imported here so that an embedded deployment never loads the PostgreSQL driver.
        from gateway.audit.store_postgres import PostgresAuditStore  # noqa: PLC0415

        return PostgresAuditStore(url, read_only=read_only)
    if url:
        raise ValueError(f"unsupported audit database URL scheme: {url.split(':', 1)[0]!r}")
    from gateway.audit.store_sqlite import SQLiteAuditStore  # noqa: PLC0415

    return SQLiteAuditStore(state_dir / "audit.sqlite", read_only=read_only)
