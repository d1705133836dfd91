"""Where consent revisions live: one interface, an SQLite and a PostgreSQL backend.

Revisions are appended, never changed (a consent's history is a hash chain that DPOs
verify), so the store's one write is `append`, guarded by optimistic concurrency: two
replicas revoking the same consent at once both name the same next revision and the same
`prev_hash`; exactly one insert wins and the other raises `ConsentConflictError`.
The table layout, migrations and durability choices are in docs/consent-storage.md.

What the backends share is in `consent/store_common.py`; this module adds the interface
the gateway codes against and `open_store`, the one module importing the backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from consent.model import ConsentRecord, SubjectKind
from consent.store_common import CHANGES_PER_CALL, ConsentConflictError

__all__ = ["ConsentConflictError", "ConsentStore", "open_store"]


class ConsentStore(Protocol):
    """Append-only storage of consent revisions, shared by every gateway replica."""

    def append(self, record: ConsentRecord) -> None:
        """Store the next revision of a consent (sealed; revision 1 has prev_hash "")."""
        ...

    def latest(self, consent_id: str) -> ConsentRecord | None:
        """The consent's newest revision, or None if unknown."""
        ...

    def history(self, consent_id: str) -> list[ConsentRecord]:
        """Every revision of the consent, oldest first (what verify_history takes)."""
        ...

    def for_subjects(
        self, subjects: Sequence[tuple[SubjectKind, str]], grantee: str
    ) -> list[ConsentRecord]:
        """Latest revisions of the grantee's consents about any of `subjects`, in one
        query per 2,000 subjects (the exchange's hot path), ordered by consent_id."""
        ...

    def list_by_subject(
        self, kind: SubjectKind, subject: str, page_size: int, page_token: str = ""
    ) -> tuple[list[ConsentRecord], str]:
        """One page of a subject's consents (latest revisions, by consent_id) and the next
        page's token, "" after the last page."""
        ...

    def count_use(self, consent_id: str, window_start: int) -> int:
        """Atomically count one more use in the window and return the new count."""
        ...

    def changed_since(self, cursor: int, limit: int = CHANGES_PER_CALL) -> tuple[list[str], int]:
        """Consents with a revision appended after `cursor`, and the cursor to pass next;
        replicas poll it to drop cached consents revoked through another replica."""
        ...

    def revisions_between(self, since_s: int, until_s: int) -> list[ConsentRecord]:
        """Every revision recorded in [since_s, until_s) (grants, revocations), by time:
        what the transparency indicators count."""
        ...

    def expiring_between(self, since_s: int, until_s: int) -> list[ConsentRecord]:
        """Latest revisions still active whose validity ends in [since_s, until_s)."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


def open_store(url: str | None, data_dir: Path) -> ConsentStore:
    """PostgreSQL when `url` is a postgresql:// URL (replicas share it), else the embedded
    SQLite file data_dir/consent.sqlite. Migrates the schema before returning."""
    if url and url.startswith(("postgresql://", "postgres://")):
        # Imported here so that an embedded deployment never loads the PostgreSQL driver.
        from consent.store_postgres import PostgresConsentStore  # noqa: PLC0415

        return PostgresConsentStore(url)
    if url:
        raise ValueError(f"unsupported consent database URL scheme: {url.split(':', 1)[0]!r}")
    from consent.store_sqlite import SQLiteConsentStore  # noqa: PLC0415

    return SQLiteConsentStore(data_dir / "consent.sqlite")
