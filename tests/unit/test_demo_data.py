"""The synthetic registry generator: determinism, identifiers, coverage of edge cases."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.demo_data import AMOT_THRESHOLD, ASD_THRESHOLD, Summary, generate
from adapters.registry_db import REGISTRY_FILE, SCHEMA_VERSION
from gateway.base.identifiers import is_valid_household_id, is_valid_idcs
from gateway.pb.jisr.v1 import records_pb2 as rec
from gateway.pipeline.programmes import load_default

HOUSEHOLDS = 2_000
SEED = 11

ORDERED = {
    "meta": "key",
    "person": "idcs",
    "household": "household_id",
    "membership": "idcs",
    "coverage": "idcs",
    "enrolment": "household_id, programme",
}


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> Summary:
    return generate(tmp_path_factory.mktemp("registry"), HOUSEHOLDS, SEED)


@pytest.fixture
def db(summary: Summary) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{summary.path}?mode=ro", uri=True)
    yield conn
    conn.close()


def content_digest(path: Path) -> str:
    """SHA-256 over every table's rows in key order."""
    digest = hashlib.sha256()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for table, key in ORDERED.items():
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY {key}"):
                digest.update(repr(row).encode())
    finally:
        conn.close()
    return digest.hexdigest()


def scalar(db: sqlite3.Connection, sql: str) -> int:
    value: int = db.execute(sql).fetchone()[0]
    return value


def test_same_seed_gives_identical_content(summary: Summary, tmp_path: Path) -> None:
    again = generate(tmp_path, HOUSEHOLDS, SEED)
    assert content_digest(again.path) == content_digest(summary.path)


def test_different_seed_gives_different_content(summary: Summary, tmp_path: Path) -> None:
    other = generate(tmp_path, HOUSEHOLDS, SEED + 1)
    assert content_digest(other.path) != content_digest(summary.path)


def test_every_idcs_is_valid_and_unique(db: sqlite3.Connection, summary: Summary) -> None:
    ids = [row[0] for row in db.execute("SELECT idcs FROM person")]
    assert len(ids) == summary.persons
    assert len(set(ids)) == len(ids)
    assert all(is_valid_idcs(idcs) for idcs in ids)


def test_every_household_id_is_valid_and_unique(db: sqlite3.Connection) -> None:
    ids = [row[0] for row in db.execute("SELECT household_id FROM household")]
    assert len(ids) == HOUSEHOLDS
    assert len(set(ids)) == len(ids)
    assert all(is_valid_household_id(h) for h in ids)


def test_every_household_has_exactly_one_declarant_at_position_zero(
    db: sqlite3.Connection,
) -> None:
    rows = db.execute(
        "SELECT h.household_id, count(m.idcs), min(m.position) FROM household h"
        " LEFT JOIN membership m ON m.household_id = h.household_id"
        " AND m.relationship = ? GROUP BY h.household_id",
        (rec.RELATIONSHIP_DECLARANT,),
    ).fetchall()
    assert len(rows) == HOUSEHOLDS
    assert all(count == 1 and position == 0 for _, count, position in rows)


def test_every_member_exists_in_person(db: sqlite3.Connection) -> None:
    missing = "SELECT count(*) FROM membership WHERE idcs NOT IN (SELECT idcs FROM person)"
    assert scalar(db, missing) == 0


def test_children_are_younger_than_the_declarant(db: sqlite3.Connection) -> None:
    older = scalar(
        db,
        "SELECT count(*) FROM membership c JOIN person pc ON pc.idcs = c.idcs"
        " JOIN membership d ON d.household_id = c.household_id AND d.relationship = 1"
        " JOIN person pd ON pd.idcs = d.idcs"
        " WHERE c.relationship = 3 AND pc.birth_date <= pd.birth_date",
    )
    assert older == 0


def test_all_regions_and_both_areas_are_present(db: sqlite3.Connection) -> None:
    regions = {row[0] for row in db.execute("SELECT DISTINCT region FROM household")}
    areas = {row[0] for row in db.execute("SELECT DISTINCT area FROM household")}
    assert regions == set(range(1, 13))
    assert areas == {rec.AREA_URBAN, rec.AREA_RURAL}


def test_scores_fall_below_between_and_above_the_thresholds(db: sqlite3.Connection) -> None:
    below = scalar(db, f"SELECT count(*) FROM household WHERE score < {AMOT_THRESHOLD}")
    between = scalar(
        db,
        f"SELECT count(*) FROM household WHERE score > {AMOT_THRESHOLD}"
        f" AND score < {ASD_THRESHOLD}",
    )
    above = scalar(db, f"SELECT count(*) FROM household WHERE score > {ASD_THRESHOLD}")
    assert min(below, between, above) > HOUSEHOLDS // 10


def test_some_scores_equal_each_threshold_exactly(db: sqlite3.Connection) -> None:
    for threshold in (AMOT_THRESHOLD, ASD_THRESHOLD):
        assert scalar(db, f"SELECT count(*) FROM household WHERE score = {threshold}") > 0


def test_thresholds_match_the_shipped_programme_catalogue() -> None:
    programmes = load_default().programmes
    assert programmes["AMOT"].thresholds[-1].value == AMOT_THRESHOLD
    assert programmes["ASD"].thresholds[-1].value == ASD_THRESHOLD


def test_deceased_persons_have_a_death_date_after_birth(
    db: sqlite3.Connection, summary: Summary
) -> None:
    deceased = scalar(db, "SELECT count(*) FROM person WHERE vital_status = 2")
    assert deceased == summary.deceased > 0
    bad = "SELECT count(*) FROM person WHERE vital_status = 2 AND NOT death_date > birth_date"
    assert scalar(db, bad) == 0
    assert scalar(db, "SELECT count(*) FROM person WHERE vital_status = 1 AND death_date") == 0


def test_unregistered_persons_exist(db: sqlite3.Connection, summary: Summary) -> None:
    outside = "SELECT count(*) FROM person WHERE idcs NOT IN (SELECT idcs FROM membership)"
    assert scalar(db, outside) == summary.unregistered_persons > 0


def test_coverage_schemes_are_present(db: sqlite3.Connection) -> None:
    schemes = {row[0] for row in db.execute("SELECT DISTINCT scheme FROM coverage")}
    assert schemes == {"AMO_SALARIES", "AMO_TNS", "AMO_FONCTIONNAIRES", "AMO_TADAMON"}


def test_tadamon_only_below_the_amot_threshold(db: sqlite3.Connection) -> None:
    above = scalar(
        db,
        "SELECT count(*) FROM coverage c JOIN membership m ON m.idcs = c.idcs"
        " JOIN household h ON h.household_id = m.household_id"
        f" WHERE c.scheme = 'AMO_TADAMON' AND h.score >= {AMOT_THRESHOLD}",
    )
    assert above == 0


def test_asd_enrolments_are_below_the_threshold(db: sqlite3.Connection) -> None:
    enrolled = scalar(db, "SELECT count(*) FROM enrolment WHERE programme = 'ASD'")
    not_below = scalar(
        db,
        "SELECT count(*) FROM enrolment e JOIN household h USING (household_id)"
        f" WHERE h.score >= {ASD_THRESHOLD}",
    )
    assert enrolled > 0
    assert not_below == 0


def test_existing_file_without_force_raises(summary: Summary) -> None:
    with pytest.raises(FileExistsError, match=REGISTRY_FILE):
        generate(summary.path.parent, 10, SEED)


def test_force_replaces_an_existing_file(tmp_path: Path) -> None:
    generate(tmp_path, 10, SEED)
    assert generate(tmp_path, 20, SEED, force=True).households == 20
    assert [p.name for p in tmp_path.iterdir()] == [REGISTRY_FILE]


def test_zero_households_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="households"):
        generate(tmp_path, 0, SEED)


def test_progress_ends_with_the_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate(tmp_path, 500, SEED, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (500, 500)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) >= 50


def test_meta_says_synthetic(db: sqlite3.Connection, summary: Summary) -> None:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    assert meta["synthetic"] == "true"
    assert "SYNTHETIC" in meta["notice"]
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["seed"] == str(SEED)
    assert meta["households"] == str(HOUSEHOLDS)
    assert meta["persons"] == str(summary.persons)
