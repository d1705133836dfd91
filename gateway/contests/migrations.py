"""The contest store's tables: versioned migrations per backend, and how a row maps to a value.

Each backend applies the versions its database lacks when it opens, one migration per
transaction, recording each in `contest_schema_migrations` (the runner is
gateway/storage/migrations.py). Never edit a released migration: append one.

Tables:
- `contest_case`: one row per case, its latest state; updated only through `apply`, which
  matches the version read (optimistic concurrency).
- `contest_event`: the history, one row per step, keyed (case_id, seq). Append-only: a
  trigger refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL), so that what a DPO
  answered or when a case was escalated cannot be rewritten behind the store's back.

The row mappings live here, beside the columns they depend on, so that both backends
share them without importing gateway/contests/store.py (which imports the backends).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.contests.cases import STATES, Case, CaseEvent
from gateway.storage.migrations import Migration, VersionLine

MIGRATIONS_TABLE = "contest_schema_migrations"

# Columns in the order of the dataclasses' fields, so a row maps to a value positionally.
CASE_COLUMNS = (
    "case_id",
    "record_id",
    "subject_hash",
    "institution",
    "portal",
    "state",
    "opened_us",
    "answer_due_us",
    "appeal_due_us",
    "updated_us",
    "version",
    "statement",
    "answer",
    "decision",
    "outcome",
)
# What a transition may change; the rest is fixed when the case is opened.
MUTABLE_COLUMNS = (
    "state",
    "appeal_due_us",
    "updated_us",
    "version",
    "answer",
    "decision",
    "outcome",
)
EVENT_COLUMNS = (
    "case_id",
    "seq",
    "at_us",
    "actor_kind",
    "actor_institution",
    "actor_id",
    "action",
    "from_state",
    "to_state",
    "text",
)
CASE_LIST = ", ".join(CASE_COLUMNS)
EVENT_LIST = ", ".join(EVENT_COLUMNS)
_STATE_CHECK = f"CHECK (state IN ({', '.join(repr(s) for s in STATES)}))"

# Indexes serve the queues: a DPO's (institution, state, due), a citizen's (subject,
# portal), the regulator's (escalated, by time) and the sweep's (open, by due).
_INDEXES = (
    "CREATE INDEX contest_case_by_institution"
    " ON contest_case (institution, state, answer_due_us, case_id)",
    "CREATE INDEX contest_case_by_subject ON contest_case (subject_hash, portal, opened_us)",
    "CREATE INDEX contest_case_by_state ON contest_case (state, updated_us, case_id)",
    "CREATE INDEX contest_case_by_due ON contest_case (state, answer_due_us, case_id)",
)

# Due process: the sweep finds the contest of a proposed action by its audit record.
_BY_RECORD = "CREATE INDEX contest_case_by_record ON contest_case (record_id, opened_us)"

SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "contest cases and their append-only history",
        (
            f"""
            CREATE TABLE contest_case (
                case_id TEXT PRIMARY KEY,
                record_id TEXT NOT NULL,
                subject_hash TEXT NOT NULL,
                institution TEXT NOT NULL,
                portal TEXT NOT NULL,
                state TEXT NOT NULL {_STATE_CHECK},
                opened_us INTEGER NOT NULL,
                answer_due_us INTEGER NOT NULL,
                appeal_due_us INTEGER,
                updated_us INTEGER NOT NULL,
                version INTEGER NOT NULL CHECK (version >= 1),
                statement TEXT NOT NULL,
                answer TEXT NOT NULL,
                decision TEXT NOT NULL,
                outcome TEXT NOT NULL
            ) WITHOUT ROWID
            """,
            *_INDEXES,
            """
            CREATE TABLE contest_event (
                case_id TEXT NOT NULL,
                seq INTEGER NOT NULL CHECK (seq >= 1),
                at_us INTEGER NOT NULL,
                actor_kind TEXT NOT NULL,
                actor_institution TEXT NOT NULL,
                actor_id TEXT NOT NULL,
                action TEXT NOT NULL,
                from_state TEXT NOT NULL,
                to_state TEXT NOT NULL,
                text TEXT NOT NULL,
                PRIMARY KEY (case_id, seq)
            ) WITHOUT ROWID
            """,
            """
            CREATE TRIGGER contest_event_no_update BEFORE UPDATE ON contest_event
            BEGIN SELECT RAISE(ABORT, 'contest_event is append-only: UPDATE refused'); END
            """,
            """
            CREATE TRIGGER contest_event_no_delete BEFORE DELETE ON contest_event
            BEGIN SELECT RAISE(ABORT, 'contest_event is append-only: DELETE refused'); END
            """,
        ),
    ),
    Migration(2, "cases by audit record (due process)", (_BY_RECORD,)),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "contest cases and their append-only history",
        (
            # case_id sorts bytewise (COLLATE "C"), as in SQLite, so queues with equal
            # times come in the same order on both backends whatever the locale.
            f"""
            CREATE TABLE contest_case (
                case_id text COLLATE "C" PRIMARY KEY,
                record_id text NOT NULL,
                subject_hash text NOT NULL,
                institution text NOT NULL,
                portal text NOT NULL,
                state text NOT NULL {_STATE_CHECK},
                opened_us bigint NOT NULL,
                answer_due_us bigint NOT NULL,
                appeal_due_us bigint,
                updated_us bigint NOT NULL,
                version integer NOT NULL CHECK (version >= 1),
                statement text NOT NULL,
                answer text NOT NULL,
                decision text NOT NULL,
                outcome text NOT NULL
            )
            """,
            *_INDEXES,
            """
            CREATE TABLE contest_event (
                case_id text COLLATE "C" NOT NULL,
                seq integer NOT NULL CHECK (seq >= 1),
                at_us bigint NOT NULL,
                actor_kind text NOT NULL,
                actor_institution text NOT NULL,
                actor_id text NOT NULL,
                action text NOT NULL,
                from_state text NOT NULL,
                to_state text NOT NULL,
                text text NOT NULL,
                PRIMARY KEY (case_id, seq)
            )
            """,
            """
            CREATE FUNCTION contest_event_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'contest_event is append-only: % refused', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """,
            """
            CREATE TRIGGER contest_event_append_only
                BEFORE UPDATE OR DELETE ON contest_event
                FOR EACH ROW EXECUTE FUNCTION contest_event_append_only()
            """,
            """
            CREATE TRIGGER contest_event_no_truncate
                BEFORE TRUNCATE ON contest_event
                FOR EACH STATEMENT EXECUTE FUNCTION contest_event_append_only()
            """,
        ),
    ),
    Migration(2, "cases by audit record (due process)", (_BY_RECORD,)),
)

SQLITE_LINE = VersionLine("contest", MIGRATIONS_TABLE, SQLITE)
POSTGRES_LINE = VersionLine("contest", MIGRATIONS_TABLE, POSTGRES)


def check_step(case: Case, event: CaseEvent, expected_version: int) -> None:
    """ValueError unless `event` is the step that took a case from `expected_version` to
    `case` (as cases.py's transitions make them): a caller's bug, never a race."""
    if (
        event.case_id != case.case_id
        or case.version != expected_version + 1
        or event.seq != case.version
        or event.to_state != case.state
    ):
        raise ValueError(
            f"case {case.case_id} v{case.version} and event {event.case_id}#{event.seq} "
            f"are not one step from version {expected_version}"
        )


def check_limit(limit: int) -> None:
    """ValueError for a queue's limit below 1 (SQLite would read a negative one as none)."""
    if limit < 1:
        raise ValueError(f"limit must be 1 or more, not {limit}")


def check_states(states: Sequence[str]) -> None:
    """ValueError for a state filter naming no state of cases.py."""
    unknown = sorted(set(states) - set(STATES))
    if unknown:
        raise ValueError(f"unknown case states {unknown}: states are {STATES}")


def case_row(case: Case) -> tuple[Any, ...]:
    """The case's values in CASE_COLUMNS order."""
    return tuple(getattr(case, c) for c in CASE_COLUMNS)


def mutable_row(case: Case) -> tuple[Any, ...]:
    """The case's values in MUTABLE_COLUMNS order."""
    return tuple(getattr(case, c) for c in MUTABLE_COLUMNS)


def case_from_row(row: Sequence[Any]) -> Case:
    """A case from a row in CASE_COLUMNS order."""
    (
        case_id, record_id, subject_hash, institution, portal, state, opened_us,
        answer_due_us, appeal_due_us, updated_us, version, statement, answer, decision,
        outcome,
    ) = row  # fmt: skip
    return Case(
        case_id=str(case_id),
        record_id=str(record_id),
        subject_hash=str(subject_hash),
        institution=str(institution),
        portal=str(portal),
        state=str(state),
        opened_us=int(opened_us),
        answer_due_us=int(answer_due_us),
        appeal_due_us=None if appeal_due_us is None else int(appeal_due_us),
        updated_us=int(updated_us),
        version=int(version),
        statement=str(statement),
        answer=str(answer),
        decision=str(decision),
        outcome=str(outcome),
    )


def event_row(event: CaseEvent) -> tuple[Any, ...]:
    """The event's values in EVENT_COLUMNS order."""
    return tuple(getattr(event, c) for c in EVENT_COLUMNS)


def event_from_row(row: Sequence[Any]) -> CaseEvent:
    """An event from a row in EVENT_COLUMNS order."""
    case_id, seq, at_us, kind, institution, actor_id, action, from_state, to_state, text = row
    return CaseEvent(
        str(case_id),
        int(seq),
        int(at_us),
        str(kind),
        str(institution),
        str(actor_id),
        str(action),
        str(from_state),
        str(to_state),
        str(text),
    )
