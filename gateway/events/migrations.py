"""The event store's tables: versioned migrations per backend, and how a row maps to a value.

Each backend applies the versions its database lacks when it opens, one migration per
transaction, recording each in `event_schema_migrations` (the runner is
gateway/storage/migrations.py). Never edit a released migration: append one.

Tables:
- `event_log`: one row per event, keyed by its `position`, which the store assigns itself
  (head + 1, +2... under the log's write lock) rather than leaving it to a sequence or
  AUTOINCREMENT: a sequence hands out numbers at insert, not at commit, so a reader could
  see N+1 before a slower transaction commits N and move its cursor past it for good.
  `household_id` and `idcs` are '' when the event has no such subject, never NULL, so that
  they compare like the values do.
- `event_source`: the highest source sequence appended per source. Kept apart from the
  log because pruning removes events but must not forget how far each source got: the
  next event of a source follows its head whether or not older events are still there.
- `event_log_meta`: one row, the log's floor (the highest position pruned), so that the
  bounds are right, and positions are never reused, even when every event was pruned.
- `event_subscription` and `event_subscription_subject`: durable subscriptions, their
  acknowledged cursors and the subjects ("p" person, "h" household) they are restricted to.
- `proposed_action` (version 2): due process (gateway/pipeline/due_process.py), one row per
  action, written with the event that proposes, withdraws or carries it out, so that the
  two never disagree; reasons as comma-separated ReasonCode numbers. `record_id` is the
  action's audit record, '' before it is written, or `claim:...` while one sweep writes it
  (`claimed_us`: since when; a claim older than the sweep's timeout may be taken over).

The index `event_log_by_type` serves `page`: per type, the positions in order, with the
subject columns beside them (covering on SQLite, INCLUDE on PostgreSQL), so that a page
reads the index alone until it has its events, whichever subjects it is restricted to.

The row mappings live here, beside the columns they depend on, so that both backends
share them without importing gateway/events/store.py (which imports the backends).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gateway.events.model import (
    DERIVED_SOURCES,
    HOUSEHOLD,
    PERSON,
    NewEvent,
    NumberTakenError,
    StoredEvent,
    Subscription,
)
from gateway.pipeline.due_process import HOLDING, STATES, ProposedAction
from gateway.storage.migrations import Migration, VersionLine

MIGRATIONS_TABLE = "event_schema_migrations"

# Columns in the order of the dataclasses' fields, so a row maps to a value positionally.
EVENT_COLUMNS = (
    "position",
    "source",
    "source_seq",
    "event_id",
    "type",
    "idcs",
    "household_id",
    "recorded_us",
    "ingested_us",
    "payload",
    "detail",
)
SUBSCRIPTION_COLUMNS = (
    "subscription_id",
    "institution",
    "purpose",
    "types",
    "subjects",
    "start_cursor",
    "acknowledged",
    "created_us",
    "cancelled_us",
)
ACTION_COLUMNS = (
    "action_id",
    "household_id",
    "programme",
    "cause",
    "proposed_us",
    "notice_until_us",
    "state",
    "reasons",
    "previous_reasons",
    "threshold_version",
    "record_id",
    "resolution",
    "resolved_us",
)
EVENT_LIST = ", ".join(EVENT_COLUMNS)
ACTION_LIST = ", ".join(ACTION_COLUMNS)
_STATE_CHECK = f"CHECK (state IN ({', '.join(repr(s) for s in STATES)}))"
SUBSCRIPTION_LIST = ", ".join(SUBSCRIPTION_COLUMNS)
SUBJECT_KINDS = (PERSON, HOUSEHOLD)
_KIND_CHECK = f"CHECK (kind IN ({', '.join(repr(k) for k in SUBJECT_KINDS)}))"

_PRUNE_INDEX = "CREATE INDEX event_log_by_ingested ON event_log (ingested_us)"
_FLOOR_ROW = "INSERT INTO event_log_meta (id, floor) VALUES (1, 0)"
_ACTION_BY_HOUSEHOLD = (
    "CREATE INDEX proposed_action_by_household ON proposed_action (household_id, programme)"
)
_ACTION_BY_STATE = "CREATE INDEX proposed_action_by_state ON proposed_action (state)"

SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "event log, source heads, floor, subscriptions and their subjects",
        (
            # position is the rowid (INTEGER PRIMARY KEY), always given by the store.
            """
            CREATE TABLE event_log (
                position INTEGER PRIMARY KEY CHECK (position >= 1),
                source TEXT NOT NULL,
                source_seq INTEGER NOT NULL CHECK (source_seq >= 1),
                event_id TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL,
                idcs TEXT NOT NULL,
                household_id TEXT NOT NULL,
                recorded_us INTEGER NOT NULL,
                ingested_us INTEGER NOT NULL,
                payload BLOB NOT NULL,
                detail TEXT NOT NULL,
                UNIQUE (source, source_seq)
            )
            """,
            """
            CREATE INDEX event_log_by_type
                ON event_log (type, position, household_id, idcs)
            """,
            _PRUNE_INDEX,
            """
            CREATE TABLE event_source (
                source TEXT PRIMARY KEY,
                head INTEGER NOT NULL CHECK (head >= 1)
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE event_log_meta (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                floor INTEGER NOT NULL CHECK (floor >= 0)
            )
            """,
            _FLOOR_ROW,
            """
            CREATE TABLE event_subscription (
                subscription_id TEXT PRIMARY KEY,
                institution TEXT NOT NULL,
                purpose TEXT NOT NULL,
                types TEXT NOT NULL,
                subjects INTEGER NOT NULL CHECK (subjects >= 0),
                start_cursor INTEGER NOT NULL,
                acknowledged INTEGER NOT NULL,
                created_us INTEGER NOT NULL,
                cancelled_us INTEGER
            ) WITHOUT ROWID
            """,
            f"""
            CREATE TABLE event_subscription_subject (
                subscription_id TEXT NOT NULL,
                kind TEXT NOT NULL {_KIND_CHECK},
                value TEXT NOT NULL,
                PRIMARY KEY (subscription_id, kind, value)
            ) WITHOUT ROWID
            """,
        ),
    ),
    Migration(
        2,
        "proposed actions (due process)",
        (
            f"""
            CREATE TABLE proposed_action (
                action_id TEXT PRIMARY KEY,
                household_id TEXT NOT NULL,
                programme TEXT NOT NULL,
                cause TEXT NOT NULL,
                proposed_us INTEGER NOT NULL,
                notice_until_us INTEGER NOT NULL,
                state TEXT NOT NULL {_STATE_CHECK},
                reasons TEXT NOT NULL,
                previous_reasons TEXT NOT NULL,
                threshold_version TEXT NOT NULL,
                record_id TEXT NOT NULL,
                resolution TEXT NOT NULL,
                resolved_us INTEGER NOT NULL,
                claimed_us INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID
            """,
            _ACTION_BY_HOUSEHOLD,
            _ACTION_BY_STATE,
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "event log, source heads, floor, subscriptions and their subjects",
        (
            # Text compares bytewise (COLLATE "C"), as in SQLite: the type index orders and
            # the subject matches are the same on both backends whatever the locale.
            """
            CREATE TABLE event_log (
                position bigint PRIMARY KEY CHECK (position >= 1),
                source text COLLATE "C" NOT NULL,
                source_seq bigint NOT NULL CHECK (source_seq >= 1),
                event_id text COLLATE "C" NOT NULL UNIQUE,
                type text COLLATE "C" NOT NULL,
                idcs text COLLATE "C" NOT NULL,
                household_id text COLLATE "C" NOT NULL,
                recorded_us bigint NOT NULL,
                ingested_us bigint NOT NULL,
                payload bytea NOT NULL,
                detail text NOT NULL,
                UNIQUE (source, source_seq)
            )
            """,
            """
            CREATE INDEX event_log_by_type
                ON event_log (type, position) INCLUDE (household_id, idcs)
            """,
            _PRUNE_INDEX,
            """
            CREATE TABLE event_source (
                source text COLLATE "C" PRIMARY KEY,
                head bigint NOT NULL CHECK (head >= 1)
            )
            """,
            """
            CREATE TABLE event_log_meta (
                id integer PRIMARY KEY CHECK (id = 1),
                floor bigint NOT NULL CHECK (floor >= 0)
            )
            """,
            _FLOOR_ROW,
            """
            CREATE TABLE event_subscription (
                subscription_id text COLLATE "C" PRIMARY KEY,
                institution text NOT NULL,
                purpose text NOT NULL,
                types text NOT NULL,
                subjects integer NOT NULL CHECK (subjects >= 0),
                start_cursor bigint NOT NULL,
                acknowledged bigint NOT NULL,
                created_us bigint NOT NULL,
                cancelled_us bigint
            )
            """,
            f"""
            CREATE TABLE event_subscription_subject (
                subscription_id text COLLATE "C" NOT NULL,
                kind text COLLATE "C" NOT NULL {_KIND_CHECK},
                value text COLLATE "C" NOT NULL,
                PRIMARY KEY (subscription_id, kind, value)
            )
            """,
        ),
    ),
    Migration(
        2,
        "proposed actions (due process)",
        (
            f"""
            CREATE TABLE proposed_action (
                action_id text COLLATE "C" PRIMARY KEY,
                household_id text COLLATE "C" NOT NULL,
                programme text COLLATE "C" NOT NULL,
                cause text NOT NULL,
                proposed_us bigint NOT NULL,
                notice_until_us bigint NOT NULL,
                state text COLLATE "C" NOT NULL {_STATE_CHECK},
                reasons text NOT NULL,
                previous_reasons text NOT NULL,
                threshold_version text NOT NULL,
                record_id text NOT NULL,
                resolution text NOT NULL,
                resolved_us bigint NOT NULL,
                claimed_us bigint NOT NULL DEFAULT 0
            )
            """,
            _ACTION_BY_HOUSEHOLD,
            _ACTION_BY_STATE,
        ),
    ),
)

SQLITE_LINE = VersionLine("event", MIGRATIONS_TABLE, SQLITE)
POSTGRES_LINE = VersionLine("event", MIGRATIONS_TABLE, POSTGRES)


# -- the log ----------------------------------------------------------------------------


def positioned(
    events: Sequence[NewEvent], heads: Mapping[str, int], head: int, now_us: int
) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """The rows (EVENT_COLUMNS order) of the events the log lacks, at positions head + 1,
    + 2..., and the sources' new heads. An event at or below its source's head is skipped:
    the log holds it, or held it before a prune; so is a derived event whose cause was not
    added by this call. ValueError if an event would leave a gap
    (its seq is not its source's head + 1 once the earlier ones of the call are in); the
    message names the source and the sequences, never a subject."""
    running = dict(heads)
    rows: list[tuple[Any, ...]] = []
    added: set[tuple[str, int]] = set()
    for event in events:
        if event.cause is not None and event.cause not in added:
            continue  # its change was held already: whoever added it derived this
        if event.source_seq < 1:
            raise ValueError(f"event source {event.source}: sequence {event.source_seq} is below 1")
        last = running.get(event.source, 0)
        if event.source_seq <= last:
            continue
        if event.source_seq != last + 1:
            raise ValueError(
                f"event source {event.source}: sequence {event.source_seq} does not follow "
                f"the log's head {last} (a gap: {last + 1} expected); nothing was appended"
            )
        running[event.source] = event.source_seq
        added.add((event.source, event.source_seq))
        head += 1
        rows.append(
            (
                head,
                event.source,
                event.source_seq,
                event.event_id,
                event.type,
                event.idcs,
                event.household_id,
                event.recorded_us,
                now_us,
                event.payload,
                event.detail,
            )
        )
    changed = {source: seq for source, seq in running.items() if heads.get(source) != seq}
    return rows, changed


def skipped_derived(
    events: Sequence[NewEvent], rows: Sequence[tuple[Any, ...]]
) -> dict[tuple[str, int], str]:
    """The derived events `positioned` skipped as held ((source, seq) -> event id): a
    registry's own events at a held number are the same events, but the gateway's derived
    ones are numbered by whoever derives them, so the log must hold those very events."""
    added = {(row[1], row[2]) for row in rows}
    return {
        (e.source, e.source_seq): e.event_id
        for e in events
        if e.source in DERIVED_SOURCES
        and (e.source, e.source_seq) not in added
        and (e.cause is None or e.cause in added)
    }


def check_held(skipped: Mapping[tuple[str, int], str], held: Mapping[tuple[str, int], str]) -> None:
    """NumberTakenError if a skipped derived event's number holds another event (a pruned
    one is taken as held: it was delivered, or its retention passed)."""
    for key, event_id in skipped.items():
        if held.get(key, event_id) != event_id:
            raise NumberTakenError(
                f"event source {key[0]}: sequence {key[1]} holds another event (a replica "
                "numbered its derived events at the same time); nothing was appended"
            )


def duplicate_event_id(rows: Sequence[tuple[Any, ...]]) -> ValueError:
    """The error for an event id the log holds already under another (source, seq), or
    given twice in one call: a source's bug. Names the call's sources and sequences only
    (an event id is the source's to choose; it is not repeated in a log line)."""
    spans: dict[str, list[int]] = {}
    for row in rows:
        spans.setdefault(row[1], []).append(row[2])
    where = ", ".join(f"{s} {min(q)}..{max(q)}" for s, q in sorted(spans.items()))
    return ValueError(
        f"an event id among sequences {where} is in the log already under another source "
        "sequence (or twice in the call); nothing was appended"
    )


def check_limit(limit: int) -> None:
    """ValueError for a limit below 1 (SQLite would read a negative one as none, PostgreSQL
    refuse it: the backends must agree)."""
    if limit < 1:
        raise ValueError(f"limit must be 1 or more, not {limit}")


def check_page(after: int, through: int, limit: int) -> None:
    """ValueError for a page the caller cannot mean: a limit below 1 (SQLite would read a
    negative one as none) or an upper bound below the cursor."""
    if limit < 1:
        raise ValueError(f"limit must be 1 or more, not {limit}")
    if through < after:
        raise ValueError(f"a page through {through} cannot start after {after}")


def read_page(
    window: Callable[[int, int, int], list[StoredEvent]], after: int, through: int, limit: int
) -> tuple[list[StoredEvent], int]:
    """A page's events and cursor, read by `window(low, high, need)` (the first `need`
    matching events in (low, high], in position order) over windows that double from
    `limit` positions: the cursor is the last event's position when `limit` came (there
    may be more before `through`), else `through` (the range was read to its end).

    Why windows: each type's positions are read in order from the type index, which is
    quick when a type is rare in a big range, but a type with no match left in the range
    would be read to `through` on every page of a catch-up. Windows read a page's range
    once, never much past its last event (the last window is at most as wide as all the
    earlier ones together), whatever the mix of types; a rare type costs one index probe
    per window (about log2(range / limit) of them)."""
    events: list[StoredEvent] = []
    low, width = after, limit
    while low < through and len(events) < limit:
        high = min(through, low + width)
        events += window(low, high, limit - len(events))
        low, width = high, width * 2
    cursor = events[-1].position if len(events) >= limit else through
    return events, cursor


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    """An event from a row in EVENT_COLUMNS order."""
    (
        position, source, source_seq, event_id, type_, idcs, household_id, recorded_us,
        ingested_us, payload, detail,
    ) = row  # fmt: skip
    return StoredEvent(
        position=int(position),
        source=str(source),
        source_seq=int(source_seq),
        event_id=str(event_id),
        type=str(type_),
        idcs=str(idcs),
        household_id=str(household_id),
        recorded_us=int(recorded_us),
        ingested_us=int(ingested_us),
        payload=bytes(payload),
        detail=str(detail),
    )


# -- subscriptions ----------------------------------------------------------------------


def subscription_rows(
    subscription: Subscription, subjects: Iterable[tuple[str, str]]
) -> tuple[tuple[Any, ...], list[tuple[str, str, str]]]:
    """The subscription's row (SUBSCRIPTION_COLUMNS order) and its subjects' rows.
    ValueError (no subject value in the message) for a type that cannot be stored joined
    by commas, a subject kind other than "p" or "h", an empty subject, or a subject count
    that is not the number of distinct subjects given (0: all subjects)."""
    types = subscription.types
    if not types or any(not t or "," in t for t in types):
        raise ValueError(
            f"subscription {subscription.subscription_id}: types must be one or more "
            "non-empty names without commas"
        )
    unique = sorted(set(subjects))
    if any(kind not in SUBJECT_KINDS or not value for kind, value in unique):
        raise ValueError(
            f"subscription {subscription.subscription_id}: a subject's kind must be one of "
            f"{SUBJECT_KINDS} and its value non-empty"
        )
    if subscription.subjects != len(unique):
        raise ValueError(
            f"subscription {subscription.subscription_id} counts {subscription.subjects} "
            f"subjects but {len(unique)} distinct ones were given"
        )
    row = (
        subscription.subscription_id,
        subscription.institution,
        subscription.purpose,
        ",".join(types),
        subscription.subjects,
        subscription.start_cursor,
        subscription.acknowledged,
        subscription.created_us,
        subscription.cancelled_us,
    )
    return row, [(subscription.subscription_id, kind, value) for kind, value in unique]


def subscription_from_row(row: Sequence[Any]) -> Subscription:
    """A subscription from a row in SUBSCRIPTION_COLUMNS order."""
    (
        subscription_id, institution, purpose, types, subjects, start_cursor, acknowledged,
        created_us, cancelled_us,
    ) = row  # fmt: skip
    return Subscription(
        subscription_id=str(subscription_id),
        institution=str(institution),
        purpose=str(purpose),
        types=tuple(str(types).split(",")) if types else (),
        subjects=int(subjects),
        start_cursor=int(start_cursor),
        acknowledged=int(acknowledged),
        created_us=int(created_us),
        cancelled_us=None if cancelled_us is None else int(cancelled_us),
    )


# -- proposed actions -------------------------------------------------------------------


def _codes(reasons: Sequence[int]) -> str:
    return ",".join(str(int(r)) for r in reasons)


def _uncodes(text: str) -> tuple[int, ...]:
    return tuple(int(r) for r in text.split(",")) if text else ()


CLAIM = "claim:"


def action_row(action: ProposedAction) -> tuple[Any, ...]:
    """The action's row, in ACTION_COLUMNS order."""
    return (
        action.action_id,
        action.household_id,
        action.programme,
        action.cause,
        action.proposed_us,
        action.notice_until_us,
        action.state,
        _codes(action.reasons),
        _codes(action.previous_reasons),
        action.threshold_version,
        action.record_id,
        action.resolution,
        action.resolved_us,
    )


def action_from_row(row: Sequence[Any]) -> ProposedAction:
    """An action from a row in ACTION_COLUMNS order."""
    (
        action_id, household_id, programme, cause, proposed_us, notice_until_us, state,
        reasons, previous_reasons, threshold_version, record_id, resolution, resolved_us,
    ) = row  # fmt: skip
    return ProposedAction(
        action_id=str(action_id),
        household_id=str(household_id),
        programme=str(programme),
        cause=str(cause),
        proposed_us=int(proposed_us),
        notice_until_us=int(notice_until_us),
        state=str(state),
        reasons=_uncodes(str(reasons)),
        previous_reasons=_uncodes(str(previous_reasons)),
        threshold_version=str(threshold_version),
        record_id=str(record_id),
        resolution=str(resolution),
        resolved_us=int(resolved_us),
    )


def latest_holding(actions: Iterable[ProposedAction]) -> dict[tuple[str, str], ProposedAction]:
    """Per (household, programme), the newest action that holds its benefit."""
    found: dict[tuple[str, str], ProposedAction] = {}
    for action in actions:
        if action.state not in HOLDING:
            continue
        key = (action.household_id, action.programme)
        held = found.get(key)
        if held is None or (action.proposed_us, action.action_id) > (
            held.proposed_us,
            held.action_id,
        ):
            found[key] = action
    return found
