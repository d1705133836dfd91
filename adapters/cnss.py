"""CNSS (Caisse Nationale de Sécurité Sociale): AMO health-insurance coverage by IDCS."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from adapters.base import COVERAGE, Reader, RecordMessage
from adapters.registry_db import chunks, iso_to_date, placeholders
from gateway.pb.jisr.v1.records_pb2 import CoverageRecord

INSTITUTION = "CNSS"


def read_coverage(conn: sqlite3.Connection, keys: Sequence[str]) -> Mapping[str, RecordMessage]:
    """Coverage records by IDCS; persons without AMO coverage are absent."""
    found: dict[str, RecordMessage] = {}
    for part in chunks(keys):
        rows = conn.execute(
            f"SELECT idcs, scheme, since FROM coverage WHERE idcs IN ({placeholders(len(part))})",
            part,
        )
        for idcs, scheme, since in rows:
            found[idcs] = CoverageRecord(idcs=idcs, scheme=scheme, since=iso_to_date(since))
    return found


def read_schemes(conn: sqlite3.Connection, keys: Sequence[str]) -> Mapping[str, RecordMessage]:
    """Coverage records by IDCS with their scheme only (the DECISION view): a decision
    asks which scheme covers a member, never since when."""
    found: dict[str, RecordMessage] = {}
    for part in chunks(keys):
        rows = conn.execute(
            f"SELECT idcs, scheme FROM coverage WHERE idcs IN ({placeholders(len(part))})", part
        )
        for idcs, scheme in rows:
            found[idcs] = CoverageRecord(idcs=idcs, scheme=scheme)
    return found


READERS: dict[int, Reader] = {COVERAGE: read_coverage}
DECISION_READERS: dict[int, Reader] = {COVERAGE: read_schemes}
