"""RSU (Registre Social Unifié, run by ANR): households and who belongs to them."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from adapters.base import HOUSEHOLD, MEMBERSHIP, Reader, RecordMessage
from adapters.registry_db import chunks, iso_to_date, placeholders
from gateway.pb.jisr.v1.records_pb2 import HouseholdRecord, MembershipRecord

INSTITUTION = "RSU"


def read_memberships(conn: sqlite3.Connection, keys: Sequence[str]) -> Mapping[str, RecordMessage]:
    """Household membership by member IDCS."""
    found: dict[str, RecordMessage] = {}
    for part in chunks(keys):
        rows = conn.execute(
            "SELECT idcs, household_id, relationship FROM membership"
            f" WHERE idcs IN ({placeholders(len(part))})",
            part,
        )
        for idcs, household_id, relationship in rows:
            found[idcs] = MembershipRecord(
                idcs=idcs, household_id=household_id, relationship=relationship
            )
    return found


def read_households(conn: sqlite3.Connection, keys: Sequence[str]) -> Mapping[str, RecordMessage]:
    """Household records, with their members in declaration order, by household id."""
    found: dict[str, HouseholdRecord] = {}
    for part in chunks(keys):
        marks = placeholders(len(part))
        rows = conn.execute(
            "SELECT household_id, region, area, score, registered_on, scored_on"
            f" FROM household WHERE household_id IN ({marks})",
            part,
        )
        for household_id, region, area, score, registered, scored in rows:
            found[household_id] = HouseholdRecord(
                household_id=household_id,
                region=region,
                area=area,
                score=score,
                registered_on=iso_to_date(registered),
                scored_on=iso_to_date(scored),
            )
        members = conn.execute(
            "SELECT household_id, idcs, relationship FROM membership"
            f" WHERE household_id IN ({marks}) ORDER BY household_id, position",
            part,
        )
        for household_id, idcs, relationship in members:
            record = found.get(household_id)
            if record is not None:  # built in place: append would copy a new message
                record.members.add(idcs=idcs, relationship=relationship)
    return dict(found)


def read_household_scores(
    conn: sqlite3.Connection, keys: Sequence[str]
) -> Mapping[str, RecordMessage]:
    """Household records by id with their score alone (the SCORE view): a decision under
    a programme that reads no coverage needs no member, and the members were the largest
    part of a batch's registry reads (docs/performance.md, "The batch")."""
    return _scores(conn, keys)


def read_household_members(
    conn: sqlite3.Connection, keys: Sequence[str]
) -> Mapping[str, RecordMessage]:
    """Household records by id with their score and their members' IDCS only (the
    DECISION view): an eligibility decision reads no region, date or relationship."""
    found = _scores(conn, keys)
    for part in chunks(keys):
        members = conn.execute(
            "SELECT household_id, idcs FROM membership"
            f" WHERE household_id IN ({placeholders(len(part))}) ORDER BY household_id, position",
            part,
        )
        for household_id, idcs in members:
            record = found.get(household_id)
            if record is not None:  # built in place: append would copy a new message
                record.members.add(idcs=idcs)
    return dict(found)


def _scores(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, HouseholdRecord]:
    """Household records by id with their id and score, no more."""
    found: dict[str, HouseholdRecord] = {}
    for part in chunks(keys):
        rows = conn.execute(
            "SELECT household_id, score FROM household"
            f" WHERE household_id IN ({placeholders(len(part))})",
            part,
        )
        for household_id, score in rows:
            found[household_id] = HouseholdRecord(household_id=household_id, score=score)
    return found


READERS: dict[int, Reader] = {MEMBERSHIP: read_memberships, HOUSEHOLD: read_households}
DECISION_READERS: dict[int, Reader] = {HOUSEHOLD: read_household_members}
SCORE_READERS: dict[int, Reader] = {HOUSEHOLD: read_household_scores}
