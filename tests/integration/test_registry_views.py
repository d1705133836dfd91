"""The embedded registry's DECISION view (adapters/base.py, docs/policy.md, "views"): an
eligibility decision reads a person's vital status and a household's score and members,
and nothing else of them; the FULL view reads the whole record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import catalog
from adapters.base import DECISION, FULL, HOUSEHOLD, PERSON, FetchContext
from adapters.registry_db import REGISTRY_FILE, Registry
from gateway.pb.jisr.v1.records_pb2 import HouseholdRecord, PersonRecord
from tests.support import registry_rows

pytestmark = pytest.mark.integration
CTX = FetchContext(purpose="TEST")


@pytest.fixture
def registry(registry_dir: Path) -> Iterator[Registry]:
    opened = Registry(registry_dir / REGISTRY_FILE)
    yield opened
    opened.close()


def test_a_person_read_for_a_decision_holds_its_vital_status_and_no_name_or_date(
    registry: Registry, registry_dir: Path
) -> None:
    keys = registry_rows.subjects(registry_dir).member_idcs[:20]
    rnp = catalog.embedded("RNP", registry)
    whole = rnp.fetch(PERSON, keys, CTX, FULL)
    lean = rnp.fetch(PERSON, keys, CTX, DECISION)
    assert set(lean) == set(whole) == set(keys)
    for key in keys:
        full = whole[key]
        assert isinstance(full, PersonRecord)
        assert lean[key] == PersonRecord(idcs=key, vital_status=full.vital_status)
        assert full.given_name  # what the view leaves out
        assert full.HasField("birth_date")


def test_a_household_read_for_a_decision_holds_its_score_and_members_ids_only(
    registry: Registry, registry_dir: Path
) -> None:
    keys = registry_rows.subjects(registry_dir).household_ids[:20]
    rsu = catalog.embedded("RSU", registry)
    whole = rsu.fetch(HOUSEHOLD, keys, CTX, FULL)
    lean = rsu.fetch(HOUSEHOLD, keys, CTX, DECISION)
    assert set(lean) == set(whole) == set(keys)
    for key in keys:
        full = whole[key]
        assert isinstance(full, HouseholdRecord)
        expected = HouseholdRecord(household_id=key, score=full.score)
        for member in full.members:
            expected.members.add(idcs=member.idcs)
        assert lean[key] == expected
        assert full.region  # what the view leaves out
        assert full.HasField("registered_on")
