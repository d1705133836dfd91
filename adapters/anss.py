"""ANSS (Agence Nationale du Soutien Social): households enrolled in its programmes."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from adapters.base import ENROLMENT, Reader, RecordMessage
from adapters.registry_db import chunks, iso_to_date, placeholders
from gateway.pb.jisr.v1.records_pb2 import EnrolmentRecord

INSTITUTION = "ANSS"


def read_enrolments(conn: sqlite3.Connection, keys: Sequence[str]) -> Mapping[str, RecordMessage]:
    """Enrolments by household id, in programme order."""
    found: dict[str, EnrolmentRecord] = {}
    for part in chunks(keys):
        rows = conn.execute(
            "SELECT household_id, programme, since FROM enrolment"
            f" WHERE household_id IN ({placeholders(len(part))}) ORDER BY household_id, programme",
            part,
        )
        for household_id, programme, since in rows:
            record = found.setdefault(household_id, EnrolmentRecord(household_id=household_id))
            record.enrolments.add(programme=programme, since=iso_to_date(since))
    return dict(found)


READERS: dict[int, Reader] = {ENROLMENT: read_enrolments}
