"""`jisr registry apply` without the command line (adapters/registry_changes.py): each
type's effect on the registry's tables and its journal row, seq per source, a file applied
whole or not at all, idempotence, corrections, the schema-1 upgrade, and the journal as
the gateway reads it (adapters/registry_db.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from adapters import registry_changes as rc
from adapters.demo_data import generate
from adapters.registry_db import REGISTRY_FILE, JournalRow, Registry, RegistryError
from adapters.rnp import read_persons
from gateway.base.identifiers import make_idcs
from gateway.pb.jisr.v1 import records_pb2 as rec

HOUSEHOLDS = 40
SEED = 9
NOW = dt.datetime(2026, 11, 5, 8, 30, 0, 250000, tzinfo=dt.UTC)
DAY = "2026-11-03"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    generate(tmp_path, HOUSEHOLDS, SEED)
    return tmp_path / REGISTRY_FILE


@pytest.fixture
def reader(registry: Path) -> Iterator[Registry]:
    opened = Registry(registry)
    yield opened
    opened.close()


def apply(registry: Path, *lines: dict[str, Any] | str) -> rc.Summary:
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    return rc.apply_changes(registry, text, now=NOW)


def refused(registry: Path, *lines: dict[str, Any] | str) -> rc.InvalidFileError:
    with pytest.raises(rc.InvalidFileError) as caught:
        apply(registry, *lines)
    return caught.value


def one(registry: Path, sql: str, *params: Any) -> Any:
    with sqlite3.connect(registry) as db:
        row = db.execute(sql, params).fetchone()
    return None if row is None else (row[0] if len(row) == 1 else row)


def journal(registry: Path) -> list[JournalRow]:
    opened = Registry(registry)
    try:
        return [row for s in ("RNP", "RSU", "CNSS") for row in opened.journal_after(s, 0, 100)]
    finally:
        opened.close()


def living_member(registry: Path) -> tuple[str, str]:
    """(idcs, household id) of a living, uncovered member who is not the declarant."""
    found = one(
        registry,
        "SELECT p.idcs, m.household_id FROM person p JOIN membership m USING (idcs)"
        " WHERE p.vital_status = 1 AND m.relationship != 1"
        " AND p.idcs NOT IN (SELECT idcs FROM coverage) ORDER BY p.idcs LIMIT 1",
    )
    assert found is not None
    return str(found[0]), str(found[1])


def outsider(registry: Path) -> str:
    """A living person in no household."""
    return str(
        one(
            registry,
            "SELECT idcs FROM person WHERE vital_status = 1"
            " AND idcs NOT IN (SELECT idcs FROM membership) ORDER BY idcs LIMIT 1",
        )
    )


def a_household(registry: Path, n: int = 0) -> str:
    return str(one(registry, "SELECT household_id FROM household ORDER BY 1 LIMIT 1 OFFSET ?", n))


def covered(registry: Path) -> str:
    return str(one(registry, "SELECT idcs FROM coverage ORDER BY idcs LIMIT 1"))


def declarant(registry: Path) -> tuple[str, str]:
    found = one(registry, "SELECT idcs, household_id FROM membership WHERE relationship = 1")
    return str(found[0]), str(found[1])


def new_idcs(registry: Path) -> str:
    body = 100
    while one(registry, "SELECT 1 FROM person WHERE idcs = ?", make_idcs(f"{body:09d}")):
        body += 1
    return make_idcs(f"{body:09d}")


def died(idcs: str, event_id: str = "RNP-1") -> dict[str, Any]:
    return {"id": event_id, "source": "RNP", "type": "person.died", "effective": DAY, "idcs": idcs}


def rescored(household: str, score: float, event_id: str = "RSU-1") -> dict[str, Any]:
    return {
        "id": event_id,
        "source": "RSU",
        "type": "household.rescored",
        "effective": DAY,
        "household_id": household,
        "score": score,
    }


def correction(corrects: str, source: str, event_id: str = "FIX-1") -> dict[str, Any]:
    return {
        "id": event_id,
        "source": source,
        "type": "correction",
        "effective": "2026-11-10",
        "corrects": corrects,
    }


def members(registry: Path, household: str) -> int:
    return int(one(registry, "SELECT count(*) FROM membership WHERE household_id = ?", household))


# --- each type ------------------------------------------------------------------------


def test_person_died_marks_the_person_deceased_and_journals_before_and_after(
    registry: Path,
) -> None:
    idcs, _ = living_member(registry)
    apply(registry, died(idcs))
    person = "SELECT vital_status, death_date FROM person WHERE idcs = ?"
    assert one(registry, person, idcs) == (rec.VITAL_STATUS_DECEASED, DAY)
    [row] = journal(registry)
    assert (row.source, row.seq, row.event_id, row.type) == ("RNP", 1, "RNP-1", "person.died")
    assert (row.idcs, row.household_id, row.effective, row.corrects) == (idcs, None, DAY, None)
    assert row.before == {"vital_status": "ALIVE", "death_date": None}
    assert row.after == {"vital_status": "DECEASED", "death_date": DAY}


def test_person_born_adds_a_single_living_person(registry: Path) -> None:
    idcs = new_idcs(registry)
    born = {"id": "RNP-7", "source": "RNP", "type": "person.born", "effective": DAY}
    apply(registry, {**born, "idcs": idcs, "given_name": "Nour", "family_name": "Tazi", "sex": "F"})
    row = one(registry, "SELECT * FROM person WHERE idcs = ?", idcs)
    single, alive = rec.CIVIL_STATUS_SINGLE, rec.VITAL_STATUS_ALIVE
    assert row == (idcs, "Nour", "Tazi", rec.SEX_FEMALE, DAY, single, alive, None)
    [entry] = journal(registry)
    assert entry.before == {}
    assert entry.after["birth_date"] == DAY
    assert entry.after["sex"] == "F"


def test_member_joined_adds_the_membership_and_a_composition_row(registry: Path) -> None:
    idcs, household = outsider(registry), a_household(registry)
    count = members(registry, household)
    top = one(registry, "SELECT max(position) FROM membership WHERE household_id = ?", household)
    apply(
        registry,
        {
            "id": "RSU-9",
            "source": "RSU",
            "type": "member.joined",
            "effective": DAY,
            "idcs": idcs,
            "household_id": household,
            "relationship": "GRANDCHILD",
        },
    )
    membership = "SELECT household_id, relationship, position FROM membership WHERE idcs = ?"
    assert one(registry, membership, idcs) == (household, rec.RELATIONSHIP_GRANDCHILD, top + 1)
    joined, composition = journal(registry)
    assert (joined.seq, joined.idcs, joined.household_id) == (1, idcs, household)
    assert joined.before == {"household_id": None, "relationship": None, "position": None}
    assert joined.after == {
        "household_id": household,
        "relationship": "GRANDCHILD",
        "position": top + 1,
    }
    assert (composition.seq, composition.event_id) == (2, "RSU-9/composition")
    assert (composition.type, composition.idcs, composition.household_id) == (
        "household.composition_changed",
        None,
        household,
    )
    assert (composition.before, composition.after) == ({"members": count}, {"members": count + 1})


def test_member_left_removes_the_membership_and_journals_the_count(registry: Path) -> None:
    idcs, household = living_member(registry)
    count = members(registry, household)
    left = {"id": "RSU-2", "source": "RSU", "type": "member.left", "effective": DAY}
    apply(registry, {**left, "idcs": idcs, "household_id": household})
    assert one(registry, "SELECT 1 FROM membership WHERE idcs = ?", idcs) is None
    row, composition = journal(registry)
    assert row.before["household_id"] == household
    assert row.after == {"household_id": None, "relationship": None, "position": None}
    assert composition.after == {"members": count - 1}


def test_household_rescored_sets_the_score_and_the_scoring_date(registry: Path) -> None:
    household = a_household(registry)
    old = one(registry, "SELECT score, scored_on FROM household WHERE household_id = ?", household)
    apply(registry, rescored(household, 9.81))
    now = one(registry, "SELECT score, scored_on FROM household WHERE household_id = ?", household)
    assert now == (9.81, DAY)
    [row] = journal(registry)
    assert row.before == {"score": old[0], "scored_on": old[1]}
    assert row.after == {"score": 9.81, "scored_on": DAY}


def test_household_region_changed_sets_region_and_area(registry: Path) -> None:
    household = a_household(registry)
    moved = {"id": "RSU-3", "source": "RSU", "type": "household.region_changed", "effective": DAY}
    apply(registry, {**moved, "household_id": household, "region": "ORIENTAL", "area": "RURAL"})
    where = "SELECT region, area FROM household WHERE household_id = ?"
    assert one(registry, where, household) == (rec.REGION_ORIENTAL, rec.AREA_RURAL)
    [row] = journal(registry)
    assert row.after == {"region": "ORIENTAL", "area": "RURAL"}


def test_coverage_started_and_ended_add_and_remove_the_coverage(registry: Path) -> None:
    idcs, _ = living_member(registry)
    base = {"source": "CNSS", "effective": DAY, "idcs": idcs}
    started = {**base, "id": "CNSS-1", "type": "coverage.started", "scheme": "AMO_TNS"}
    apply(registry, started)
    assert one(registry, "SELECT scheme, since FROM coverage WHERE idcs = ?", idcs) == (
        "AMO_TNS",
        DAY,
    )
    apply(registry, {**base, "id": "CNSS-2", "type": "coverage.ended"})
    assert one(registry, "SELECT 1 FROM coverage WHERE idcs = ?", idcs) is None
    start, end = journal(registry)
    assert start.after == end.before == {"scheme": "AMO_TNS", "since": DAY}
    assert end.after == {"scheme": None, "since": None}


# --- the journal ------------------------------------------------------------------------


def test_each_source_counts_its_own_seq_1_2_3(registry: Path) -> None:
    idcs, _ = living_member(registry)
    apply(
        registry,
        rescored(a_household(registry, 0), 9.1, "RSU-1"),
        died(idcs, "RNP-1"),
        rescored(a_household(registry, 1), 9.2, "RSU-2"),
        rescored(a_household(registry, 2), 9.3, "RSU-3"),
    )
    apply(registry, rescored(a_household(registry, 3), 9.4, "RSU-4"))
    seqs = [(row.source, row.seq, row.event_id) for row in journal(registry)]
    assert seqs == [
        ("RNP", 1, "RNP-1"),
        ("RSU", 1, "RSU-1"),
        ("RSU", 2, "RSU-2"),
        ("RSU", 3, "RSU-3"),
        ("RSU", 4, "RSU-4"),
    ]


def test_recorded_is_the_apply_time_in_utc(registry: Path) -> None:
    apply(registry, rescored(a_household(registry), 9.5))
    assert [row.recorded for row in journal(registry)] == ["2026-11-05T08:30:00.250000Z"]


def test_journal_heads_are_the_highest_seq_per_source(registry: Path, reader: Registry) -> None:
    assert reader.journal_heads() == {}
    apply(
        registry,
        rescored(a_household(registry, 0), 9.1, "A"),
        rescored(a_household(registry, 1), 9.2, "B"),
    )
    assert reader.journal_heads() == {"RSU": 2}


def test_journal_after_reads_a_source_from_a_seq(registry: Path, reader: Registry) -> None:
    lines = [rescored(a_household(registry, n), 9.0 + n / 10, f"RSU-{n}") for n in range(5)]
    apply(registry, *lines)
    assert [row.seq for row in reader.journal_after("RSU", 2, 2)] == [3, 4]
    assert reader.journal_after("RNP", 0, 10) == []


def test_a_correction_row_carries_the_corrected_type(registry: Path, reader: Registry) -> None:
    apply(registry, rescored(a_household(registry), 9.5, "RSU-1"))
    apply(registry, correction("RSU-1", "RSU"))
    fix = reader.journal_after("RSU", 1, 1)[0]
    assert (fix.type, fix.corrects, fix.corrected_type) == (
        "correction",
        "RSU-1",
        "household.rescored",
    )


def test_a_reader_opened_before_the_apply_sees_the_change(registry: Path, reader: Registry) -> None:
    idcs, _ = living_member(registry)
    person = read_persons(reader.connection(), [idcs])[idcs]
    assert isinstance(person, rec.PersonRecord)
    assert person.vital_status == rec.VITAL_STATUS_ALIVE
    apply(registry, died(idcs))
    person = read_persons(reader.connection(), [idcs])[idcs]
    assert isinstance(person, rec.PersonRecord)
    assert person.vital_status == rec.VITAL_STATUS_DECEASED
    assert (person.death_date.year, person.death_date.month, person.death_date.day) == (2026, 11, 3)


# --- whole or not at all ----------------------------------------------------------------


def test_a_bad_line_applies_nothing(registry: Path) -> None:
    household = a_household(registry)
    score = one(registry, "SELECT score FROM household WHERE household_id = ?", household)
    refused(registry, rescored(household, 9.81), "{not json")
    assert one(registry, "SELECT score FROM household WHERE household_id = ?", household) == score
    assert journal(registry) == []


def test_every_wrong_line_is_reported_with_its_number_and_member(registry: Path) -> None:
    household = a_household(registry)
    bad = rescored(household, 21.0, "RSU-2")
    lines = [rescored(household, 9.5), bad, {**bad, "household_id": "H1"}]
    lines += [{**bad, "id": f"RSU-{n}"} for n in range(3, 30)]
    error = refused(registry, *lines)
    assert (error.count, error.lines) == (29, 30)
    assert len(error.shown) == rc.MAX_SHOWN
    assert error.shown[:2] == [
        rc.BadLine(2, "score", "outside 0 to 20"),
        rc.BadLine(3, "household_id", "not 'H' and 9 digits"),
    ]


def test_lines_are_checked_against_the_registry_as_earlier_lines_leave_it(
    registry: Path,
) -> None:
    idcs, _ = living_member(registry)
    error = refused(registry, died(idcs, "RNP-1"), died(idcs, "RNP-2"))
    assert error.shown == [rc.BadLine(2, "idcs", "the person is deceased")]


IMPOSSIBLE = {
    "unknown person dies": ("died-unknown", "idcs", "no such person"),
    "deceased person dies": ("died-dead", "idcs", "deceased"),
    "existing person is born": ("born-existing", "idcs", "already in the registry"),
    "member joins a second household": ("join-member", "idcs", "in a household already"),
    "unknown household": ("join-nowhere", "household_id", "no such household"),
    "declarant leaves": ("leave-declarant", "idcs", "declarant cannot leave"),
    "leaves another household": ("leave-other", "household_id", "not the household"),
    "outsider leaves": ("leave-outsider", "idcs", "in no household"),
    "covered person starts coverage": ("start-covered", "idcs", "covered already"),
    "uncovered person ends coverage": ("end-uncovered", "idcs", "no coverage"),
    "unknown household rescored": ("rescore-nowhere", "household_id", "no such household"),
}


def impossible_line(registry: Path, case: str) -> dict[str, Any]:
    """A well-formed line this registry cannot apply."""
    head = {"id": "EV-1", "effective": DAY}
    member, household = living_member(registry)
    boss, boss_household = declarant(registry)
    rnp, rsu, cnss = ({**head, "source": s} for s in ("RNP", "RSU", "CNSS"))
    dead = one(registry, "SELECT idcs FROM person WHERE vital_status = 2 LIMIT 1")
    return {
        "died-unknown": {**rnp, "type": "person.died", "idcs": new_idcs(registry)},
        "died-dead": {**rnp, "type": "person.died", "idcs": dead},
        "born-existing": {
            **rnp,
            "type": "person.born",
            "idcs": member,
            "given_name": "A",
            "family_name": "B",
            "sex": "M",
        },
        "join-member": {
            **rsu,
            "type": "member.joined",
            "idcs": member,
            "household_id": household,
            "relationship": "CHILD",
        },
        "join-nowhere": {
            **rsu,
            "type": "member.joined",
            "idcs": outsider(registry),
            "household_id": "H999999999",
            "relationship": "CHILD",
        },
        "leave-declarant": {
            **rsu,
            "type": "member.left",
            "idcs": boss,
            "household_id": boss_household,
        },
        "leave-other": {
            **rsu,
            "type": "member.left",
            "idcs": member,
            "household_id": next(
                a_household(registry, n) for n in range(3) if a_household(registry, n) != household
            ),
        },
        "leave-outsider": {
            **rsu,
            "type": "member.left",
            "idcs": outsider(registry),
            "household_id": household,
        },
        "start-covered": {
            **cnss,
            "type": "coverage.started",
            "idcs": covered(registry),
            "scheme": "AMO_TNS",
        },
        "end-uncovered": {**cnss, "type": "coverage.ended", "idcs": member},
        "rescore-nowhere": rescored("H999999999", 9.0, "EV-1"),
    }[case]


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_an_impossible_change_is_refused_naming_the_member(registry: Path, case: str) -> None:
    key, member, words = IMPOSSIBLE[case]
    line = impossible_line(registry, key)
    [bad] = refused(registry, line).shown
    assert (bad.line, bad.member) == (1, member)
    assert words in bad.message
    assert all(str(v) not in bad.message for k, v in line.items() if k in ("idcs", "household_id"))


def test_blank_lines_are_ignored(registry: Path) -> None:
    summary = apply(registry, "", "   \n", rescored(a_household(registry), 9.5))
    assert (summary.lines, sum(summary.applied.values())) == (3, 1)


def test_a_line_too_long_is_refused_without_reading_it_whole(registry: Path) -> None:
    huge = b'{"id": "' + b"x" * (rc.MAX_LINE_BYTES + 10) + b'"}\n'
    after = json.dumps(rescored(a_household(registry), 9.5)).encode() + b"\n"
    cut = list(rc.read_lines(io.BytesIO(huge + after)))
    assert [len(line) for line in cut] == [rc.MAX_LINE_BYTES + 1, len(after)]
    with pytest.raises(rc.InvalidFileError) as caught:
        rc.apply_changes(registry, cut, now=NOW)
    assert caught.value.shown == [rc.BadLine(1, "line", "longer than 64 KiB")]


def test_a_line_not_utf8_is_refused(registry: Path) -> None:
    with pytest.raises(rc.InvalidFileError) as caught:
        rc.apply_changes(registry, [b'{"id": "\xff"}\n'], now=NOW)
    assert caught.value.shown == [rc.BadLine(1, "line", "not UTF-8 text")]


def test_a_missing_registry_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no registry file"):
        rc.apply_changes(tmp_path / REGISTRY_FILE, [])


def test_a_registry_another_writer_holds_is_busy(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rc, "BUSY_TIMEOUT_S", 0.05)
    other = sqlite3.connect(registry, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(RegistryError, match="busy"):
            apply(registry, rescored(a_household(registry), 9.5))
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_progress_is_reported_every_100000_lines(registry: Path) -> None:
    seen: list[int] = []
    rc.apply_changes(registry, ["\n"] * 250_000, progress=seen.append, now=NOW)
    assert seen == [100_000, 200_000]


# --- idempotence ------------------------------------------------------------------------


def test_applying_a_file_twice_changes_nothing(registry: Path) -> None:
    idcs, _ = living_member(registry)
    lines = [died(idcs), rescored(a_household(registry), 9.5)]
    apply(registry, *lines)
    before = journal(registry)
    again = apply(registry, *lines)
    assert (again.skipped, sum(again.applied.values())) == (2, 0)
    assert journal(registry) == before


def test_a_known_id_with_other_content_is_refused(registry: Path) -> None:
    household = a_household(registry)
    apply(registry, rescored(household, 9.5, "RSU-1"))
    [bad] = refused(registry, rescored(household, 9.6, "RSU-1")).shown
    assert (bad.member, bad.message) == ("id", "already in the journal with other content")


# --- corrections ------------------------------------------------------------------------


def test_a_correction_undoes_a_death(registry: Path) -> None:
    idcs, _ = living_member(registry)
    apply(registry, died(idcs, "RNP-1"))
    apply(registry, correction("RNP-1", "RNP"))
    person = "SELECT vital_status, death_date FROM person WHERE idcs = ?"
    assert one(registry, person, idcs) == (rec.VITAL_STATUS_ALIVE, None)
    fix = journal(registry)[1]
    assert (fix.seq, fix.type, fix.corrects, fix.idcs) == (2, "correction", "RNP-1", idcs)
    assert fix.before == {"vital_status": "DECEASED", "death_date": DAY}
    assert fix.after == {"vital_status": "ALIVE", "death_date": None}


def test_a_correction_undoes_a_rescoring(registry: Path) -> None:
    household = a_household(registry)
    where = "SELECT score, scored_on FROM household WHERE household_id = ?"
    old = one(registry, where, household)
    apply(registry, rescored(household, 9.81, "RSU-1"), correction("RSU-1", "RSU"))
    assert one(registry, where, household) == old


def test_a_correction_of_a_join_removes_the_member_and_journals_the_count(
    registry: Path,
) -> None:
    idcs, household = outsider(registry), a_household(registry)
    count = members(registry, household)
    joined = {"id": "RSU-1", "source": "RSU", "type": "member.joined", "effective": DAY}
    apply(registry, {**joined, "idcs": idcs, "household_id": household, "relationship": "CHILD"})
    apply(registry, correction("RSU-1", "RSU"))
    assert members(registry, household) == count
    composition = journal(registry)[-1]
    assert (composition.event_id, composition.after) == ("FIX-1/composition", {"members": count})


def test_a_correction_is_refused_after_a_later_change_of_the_same_record(
    registry: Path,
) -> None:
    household = a_household(registry)
    apply(registry, rescored(household, 9.5, "RSU-1"), rescored(household, 9.6, "RSU-2"))
    [bad] = refused(registry, correction("RSU-1", "RSU")).shown
    assert bad.member == "corrects"
    assert "later event" in bad.message


def test_a_correction_is_allowed_once_the_later_change_is_corrected(registry: Path) -> None:
    household = a_household(registry)
    old = one(registry, "SELECT score FROM household WHERE household_id = ?", household)
    apply(registry, rescored(household, 9.5, "RSU-1"), rescored(household, 9.6, "RSU-2"))
    apply(registry, correction("RSU-2", "RSU", "FIX-2"), correction("RSU-1", "RSU", "FIX-1"))
    assert one(registry, "SELECT score FROM household WHERE household_id = ?", household) == old


def test_a_later_change_of_another_record_does_not_block_a_correction(registry: Path) -> None:
    apply(
        registry,
        rescored(a_household(registry, 0), 9.5, "RSU-1"),
        rescored(a_household(registry, 1), 9.6, "RSU-2"),
    )
    apply(registry, correction("RSU-1", "RSU"))
    assert journal(registry)[-1].corrects == "RSU-1"


@pytest.mark.parametrize(
    ("corrects", "source", "words"),
    [
        ("NOPE-1", "RSU", "no event with this id"),
        ("RSU-1", "RNP", "another source"),
        ("FIX-1", "RSU", "a correction cannot be corrected"),
        ("RSU-1", "RSU", "corrected already"),
    ],
)
def test_a_correction_is_refused_by_the_spec_rules(
    registry: Path, corrects: str, source: str, words: str
) -> None:
    apply(registry, rescored(a_household(registry), 9.5, "RSU-1"), correction("RSU-1", "RSU"))
    [bad] = refused(registry, correction(corrects, source, "FIX-2")).shown
    assert (bad.member, words in bad.message) == ("corrects", True)


# --- schema 1 ---------------------------------------------------------------------------


def make_schema_1(registry: Path) -> None:
    """The registry as `jisr demo-data` made it before the journal existed."""
    with sqlite3.connect(registry) as db:
        db.execute("DROP TABLE change_journal")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")


def test_a_schema_1_registry_is_read_without_a_journal(registry: Path) -> None:
    make_schema_1(registry)
    opened = Registry(registry)
    try:
        assert (opened.journal_heads(), opened.journal_after("RSU", 0, 10)) == ({}, [])
    finally:
        opened.close()


def test_a_schema_1_registry_is_upgraded_by_the_first_apply(registry: Path) -> None:
    make_schema_1(registry)
    summary = apply(registry, rescored(a_household(registry), 9.5))
    assert summary.upgraded
    assert one(registry, "SELECT value FROM meta WHERE key = 'schema_version'") == "2"
    assert [row.event_id for row in journal(registry)] == ["RSU-1"]


def test_a_refused_file_leaves_a_schema_1_registry_as_it_was(registry: Path) -> None:
    make_schema_1(registry)
    refused(registry, "[]")
    assert one(registry, "SELECT value FROM meta WHERE key = 'schema_version'") == "1"
    assert one(registry, "SELECT 1 FROM sqlite_master WHERE name = 'change_journal'") is None


def test_the_registry_file_is_in_wal_mode(registry: Path) -> None:
    assert one(registry, "PRAGMA journal_mode") == "wal"


def _living_in(registry: Path, household: str) -> list[str]:
    with closing(sqlite3.connect(registry)) as db:
        rows = db.execute(
            "SELECT m.idcs FROM membership m JOIN person p USING (idcs)"
            " WHERE m.household_id = ? AND p.vital_status = 1 ORDER BY m.idcs",
            (household,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_a_death_journals_how_many_members_are_still_alive(registry: Path) -> None:
    idcs, household = living_member(registry)
    alive = len(_living_in(registry, household))
    apply(registry, died(idcs))
    [row] = journal(registry)
    assert row.facts is not None
    assert (row.facts["household_id"], row.facts["living"]) == (household, alive - 1)


def test_the_last_death_in_a_household_journals_no_living_member(registry: Path) -> None:
    _, household = living_member(registry)
    people = _living_in(registry, household)
    apply(registry, *(died(p, f"RNP-{i}") for i, p in enumerate(people, 1)))
    assert journal(registry)[-1].facts["living"] == 0  # type: ignore[index]


def test_a_rescoring_journals_no_living_count(registry: Path) -> None:
    apply(registry, rescored(a_household(registry), 9.5))
    [row] = journal(registry)
    assert row.facts is not None
    assert "living" not in row.facts
