"""RNP (Registre National de la Population, run by ANR): persons by IDCS."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from adapters.base import PERSON, Reader, RecordMessage
from adapters.registry_db import chunks, iso_to_date, placeholders
from gateway.pb.jisr.v1.records_pb2 import PersonRecord

INSTITUTION = "RNP"


def read_persons(conn: sqlite3.Connection, keys: Sequence[str]) -> Mapping[str, RecordMessage]:
    """Person records by IDCS."""
    found: dict[str, RecordMessage] = {}
    for part in chunks(keys):
        rows = conn.execute(
            "SELECT idcs, given_name, family_name, sex, birth_date, civil_status,"
            f" vital_status, death_date FROM person WHERE idcs IN ({placeholders(len(part))})",
            part,
        )
        for idcs, given, family, sex, born, civil, vital, died in rows:
            found[idcs] = PersonRecord(
                idcs=idcs,
                given_name=given,
                family_name=family,
                sex=sex,
                birth_date=iso_to_date(born),
                civil_status=civil,
                vital_status=vital,
                death_date=iso_to_date(died),
            )
    return found


def read_vital_statuses(
    conn: sqlite3.Connection, keys: Sequence[str]
) -> Mapping[str, RecordMessage]:
    """Person records by IDCS with their vital status only (the DECISION view): an
    eligibility decision reads no name, sex or date of birth."""
    found: dict[str, RecordMessage] = {}
    for part in chunks(keys):
        rows = conn.execute(
            f"SELECT idcs, vital_status FROM person WHERE idcs IN ({placeholders(len(part))})",
            part,
        )
        for idcs, vital in rows:
            found[idcs] = PersonRecord(idcs=idcs, vital_status=vital)
    return found


READERS: dict[int, Reader] = {PERSON: read_persons}
DECISION_READERS: dict[int, Reader] = {PERSON: read_vital_statuses}
