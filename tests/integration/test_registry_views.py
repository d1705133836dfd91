"""The embedded registry's narrow views (adapters/base.py, docs/policy.md, "views"): an
eligibility decision reads a person's vital status, a household's score and members, a
member's coverage scheme, and nothing else of them (DECISION); a household's score alone
when the programme reads no coverage (SCORE); the FULL view reads the whole record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import catalog
from adapters.base import (
    COVERAGE,
    DECISION,
    FULL,
    HOUSEHOLD,
    PERSON,
    SCORE,
    FetchContext,
    RecordMessage,
    View,
)
from adapters.registry_db import REGISTRY_FILE, Registry
from gateway.pb.jisr.v1.backend_pb2 import RecordKind
from gateway.pb.jisr.v1.records_pb2 import CoverageRecord, HouseholdRecord, PersonRecord
from tests.support import registry_rows

pytestmark = pytest.mark.integration
CTX = FetchContext(purpose="TEST")


@pytest.fixture
def registry(registry_dir: Path) -> Iterator[Registry]:
    opened = Registry(registry_dir / REGISTRY_FILE)
    yield opened
    opened.close()


def both_views(
    registry: Registry,
    institution: str,
    kind: RecordKind.ValueType,
    keys: list[str],
    view: View = DECISION,
) -> list[tuple[RecordMessage, RecordMessage]]:
    """Each key's record read whole and read in `view`, by the embedded adapter."""
    adapter = catalog.embedded(institution, registry)
    whole = adapter.fetch(kind, keys, CTX, FULL)
    lean = adapter.fetch(kind, keys, CTX, view)
    assert set(lean) == set(whole) == set(keys)
    return [(whole[key], lean[key]) for key in keys]


def test_a_person_read_for_a_decision_holds_its_vital_status_and_no_name_or_date(
    registry: Registry, registry_dir: Path
) -> None:
    keys = registry_rows.subjects(registry_dir).member_idcs[:20]
    for full, lean in both_views(registry, "RNP", PERSON, keys):
        assert isinstance(full, PersonRecord)
        assert lean == PersonRecord(idcs=full.idcs, vital_status=full.vital_status)
        assert full.given_name  # what the view leaves out
        assert full.HasField("birth_date")


def test_a_household_read_for_a_decision_holds_its_score_and_members_ids_only(
    registry: Registry, registry_dir: Path
) -> None:
    keys = registry_rows.subjects(registry_dir).household_ids[:20]
    for full, lean in both_views(registry, "RSU", HOUSEHOLD, keys):
        assert isinstance(full, HouseholdRecord)
        expected = HouseholdRecord(household_id=full.household_id, score=full.score)
        for member in full.members:
            expected.members.add(idcs=member.idcs)
        assert lean == expected
        assert full.region  # what the view leaves out
        assert full.HasField("registered_on")


def test_a_household_read_for_its_score_holds_its_id_and_score_only(
    registry: Registry, registry_dir: Path
) -> None:
    keys = registry_rows.subjects(registry_dir).household_ids[:20]
    for full, lean in both_views(registry, "RSU", HOUSEHOLD, keys, SCORE):
        assert isinstance(full, HouseholdRecord)
        assert lean == HouseholdRecord(household_id=full.household_id, score=full.score)
        assert full.members  # what the view leaves out


def test_a_coverage_read_for_a_decision_holds_its_scheme_and_no_date(
    registry: Registry, registry_dir: Path
) -> None:
    members = registry_rows.subjects(registry_dir).member_idcs
    covered = list(catalog.embedded("CNSS", registry).fetch(COVERAGE, members, CTX, FULL))[:20]
    assert covered
    for full, lean in both_views(registry, "CNSS", COVERAGE, covered):
        assert isinstance(full, CoverageRecord)
        assert lean == CoverageRecord(idcs=full.idcs, scheme=full.scheme)
        assert full.HasField("since")  # what the view leaves out


def test_a_view_without_a_reader_of_its_own_is_read_by_the_next_one_that_holds_more(
    registry: Registry, registry_dir: Path
) -> None:
    keys = registry_rows.subjects(registry_dir).member_idcs[:20]
    for full, lean in both_views(registry, "RNP", PERSON, keys, SCORE):  # no SCORE reader
        assert isinstance(full, PersonRecord)
        assert lean == PersonRecord(idcs=full.idcs, vital_status=full.vital_status)
