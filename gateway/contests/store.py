"""Where contest cases and their histories are kept: one interface, an SQLite and a
PostgreSQL backend.

Several gateway replicas, the console and the escalation sweep move the same cases at
once, so every change is `apply(case, event, expected_version)`: in one transaction, the
case is replaced only if its stored version is still the one the caller read, and its
history gains the event. A caller that loses (False) reads the case again and decides
anew: an officer's answer racing the citizen's withdrawal never overwrites it. The tables
and their migrations are gateway/contests/migrations.py; this module adds the interface
the services code against and `open_contest_store`, the one module importing the backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from gateway.contests.cases import Case, CaseEvent, DuplicateCaseError, Step

__all__ = ["FILE_NAME", "ContestStore", "DuplicateCaseError", "open_contest_store"]

FILE_NAME = "contests.sqlite"


class ContestStore(Protocol):
    """Contest cases and their append-only histories, shared by the gateway's processes."""

    def create(self, case: Case, event: CaseEvent) -> None:
        """Store a new case (version 1) and its opening event, in one transaction;
        DuplicateCaseError if its id is taken, ValueError if the event is not its first."""
        ...

    def apply(self, case: Case, event: CaseEvent, expected_version: int) -> bool:
        """Replace the stored case by `case` and append `event`, in one transaction, only
        if the stored version is `expected_version`; False (nothing written) otherwise: a
        concurrent change, or no such case. Only the fields a transition changes are
        written. ValueError if `case` and `event` are not one step from that version."""
        ...

    def case(self, case_id: str) -> Case | None:
        """The case, or None if there is none with that id."""
        ...

    def cases_for_institution(
        self, institution: str, states: Sequence[str], limit: int
    ) -> list[Case]:
        """A DPO's queue: the institution's cases in `states`, oldest due first."""
        ...

    def cases_for_subject(self, subject_hash: str, portal: str) -> list[Case]:
        """A citizen's cases opened through `portal`, newest first."""
        ...

    def latest_for_records(self, record_ids: Sequence[str]) -> dict[str, Case]:
        """Per audit record, the case last opened on it (records without one: absent)."""
        ...

    def escalated(self, limit: int) -> list[Case]:
        """The regulator's queue: ESCALATED cases, longest waiting first."""
        ...

    def overdue(self, now_us: int, limit: int) -> list[Case]:
        """OPEN cases due at or before `now_us` (cases.overdue), oldest due first: what the
        escalation sweep moves."""
        ...

    def steps_between(self, since_us: int, until_us: int) -> list[Step]:
        """Every step taken in [since_us, until_us), oldest first, each with its case's
        institution, opening time and subject hash (for the transparency indicators)."""
        ...

    def history(self, case_id: str) -> list[CaseEvent]:
        """The case's events by seq (empty for an unknown case)."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


def open_contest_store(database_url: str | None, state_dir: Path) -> ContestStore:
    """PostgreSQL when `database_url` is a postgresql:// URL (replicas share it), else the
    SQLite file state_dir/contests.sqlite. Migrates the schema before returning; raises
    ValueError for another URL scheme."""
    if database_url and database_url.startswith(("postgresql://", "postgres://")):
        # Imported here so that an embedded gateway never loads the PostgreSQL driver.
        from gateway.contests.store_postgres import PostgresContestStore  # noqa: PLC0415

        return PostgresContestStore(database_url)
    if database_url:
        scheme = database_url.split(":", 1)[0]
        raise ValueError(f"unsupported contest database URL scheme: {scheme!r}")
    from gateway.contests.store_sqlite import SQLiteContestStore  # noqa: PLC0415

    return SQLiteContestStore(state_dir / FILE_NAME)
