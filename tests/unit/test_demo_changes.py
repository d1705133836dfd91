"""A month of synthetic changes (adapters/demo_changes.py): deterministic, at the rates of
docs/registry-data.md, every line as docs/events.md specifies it, and consistent with the
registry as the earlier lines leave it. Consistency is checked by a replay written here
from the spec, against the registry's own tables, not by the generator's model."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapters.demo_changes import ChangesSummary, DemoChangesError, generate_changes
from adapters.demo_data import AMOT_THRESHOLD, ASD_THRESHOLD, generate
from gateway.base.identifiers import is_valid_household_id, is_valid_idcs
from gateway.cli.main import main

HOUSEHOLDS = 4_000
SEED = 5
MONTH = "2026-11"
BUSY = 30_000  # lines: every rate about 100 times its monthly figure

COMMON = {"id", "source", "type", "effective"}
MEMBERS = {
    "person.died": {"idcs"},
    "person.born": {"idcs", "given_name", "family_name", "sex"},
    "member.joined": {"idcs", "household_id", "relationship"},
    "member.left": {"idcs", "household_id"},
    "household.rescored": {"household_id", "score"},
    "household.region_changed": {"household_id", "region", "area"},
    "coverage.started": {"idcs", "scheme"},
    "coverage.ended": {"idcs"},
    "correction": {"corrects"},
}
SOURCE = {
    "person.died": "RNP",
    "person.born": "RNP",
    "member.joined": "RSU",
    "member.left": "RSU",
    "household.rescored": "RSU",
    "household.region_changed": "RSU",
    "coverage.started": "CNSS",
    "coverage.ended": "CNSS",
}
RELATIONSHIPS = {
    "SPOUSE",
    "CHILD",
    "PARENT",
    "SIBLING",
    "GRANDCHILD",
    "OTHER_RELATIVE",
    "UNRELATED",
}
REGIONS = {
    "TANGER_TETOUAN_AL_HOCEIMA", "ORIENTAL", "FES_MEKNES", "RABAT_SALE_KENITRA",
    "BENI_MELLAL_KHENIFRA", "CASABLANCA_SETTAT", "MARRAKECH_SAFI", "DRAA_TAFILALET",
    "SOUSS_MASSA", "GUELMIM_OUED_NOUN", "LAAYOUNE_SAKIA_EL_HAMRA", "DAKHLA_OUED_ED_DAHAB",
}  # fmt: skip
DECLARANT, SPOUSE, ALIVE = 1, 2, 1
ID = re.compile(r"(RNP|RSU|CNSS)-2026-11-([0-9]{6,})")


@dataclass
class Replay:
    """The registry's tables as dictionaries, each line checked and applied in turn; a
    broken rule is an AssertionError naming the line."""

    alive: dict[str, bool]
    born: dict[str, str]  # idcs -> birth date
    home: dict[str, tuple[str, int]]  # idcs -> (household, relationship)
    members: dict[str, set[str]]
    score: dict[str, float]
    covered: set[str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)  # event id -> the value it replaced
    last: dict[str, str] = field(default_factory=dict)  # record -> last event id naming it
    corrected: set[str] = field(default_factory=set)
    newborns: dict[str, str] = field(default_factory=dict)  # idcs -> birth date, to join
    seq: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, path: Path) -> Replay:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            people = db.execute("SELECT idcs, vital_status, birth_date FROM person").fetchall()
            home = {
                i: (h, r)
                for i, h, r in db.execute("SELECT idcs, household_id, relationship FROM membership")
            }
            score = dict(db.execute("SELECT household_id, score FROM household").fetchall())
            covered = {row[0] for row in db.execute("SELECT idcs FROM coverage")}
        finally:
            db.close()
        members: dict[str, set[str]] = {h: set() for h in score}
        for idcs, (household, _) in home.items():
            members[household].add(idcs)
        return cls(
            alive={i: v == ALIVE for i, v, _ in people},
            born={i: b for i, _, b in people},
            home=home,
            members=members,
            score=score,
            covered=covered,
        )

    def run(self, text: str) -> Replay:
        for number, raw in enumerate(text.splitlines(), 1):
            line = json.loads(raw)
            assert isinstance(line, dict), number
            try:
                self.line(line)
            except AssertionError as exc:
                raise AssertionError(f"line {number}: {raw}: {exc}") from None
        assert not self.newborns, "a newborn never joined a household"
        return self

    def line(self, line: dict[str, Any]) -> None:
        type_ = line.get("type")
        assert type_ in MEMBERS, "unknown type"
        assert set(line) == COMMON | MEMBERS[type_], "members"
        match = ID.fullmatch(line["id"])
        assert match, "id"
        assert match.group(1) == line["source"], "id"
        self.seq[line["source"]] += 1
        assert int(match.group(2)) == self.seq[line["source"]], "ids number 1, 2, 3... by source"
        assert line["effective"].startswith(MONTH + "-"), "effective in the month"
        assert not self.lines or self.lines[-1]["effective"] <= line["effective"], "date order"
        if type_ != "correction":
            assert line["source"] == SOURCE[type_], "source"
        getattr(self, type_.replace(".", "_"))(line)
        for record in self.records(line):
            self.last[record] = line["id"]
        self.lines.append(line)
        self.by_id[line["id"]] = line

    @staticmethod
    def records(line: dict[str, Any]) -> list[str]:
        return [line[k] for k in ("idcs", "household_id") if k in line]

    def living(self, idcs: str) -> None:
        assert self.alive.get(idcs) is True, "a living person"

    def person_died(self, line: dict[str, Any]) -> None:
        self.living(line["idcs"])
        self.alive[line["idcs"]] = False

    def person_born(self, line: dict[str, Any]) -> None:
        idcs = line["idcs"]
        assert is_valid_idcs(idcs), "a valid IDCS"
        assert idcs not in self.alive, "a new person"
        assert line["sex"] in ("F", "M")
        assert line["given_name"]
        assert line["family_name"]
        self.alive[idcs] = True
        self.born[idcs] = line["effective"]
        self.newborns[idcs] = line["effective"]

    def member_joined(self, line: dict[str, Any]) -> None:
        idcs, household = line["idcs"], line["household_id"]
        self.living(idcs)
        assert idcs not in self.home, "the joiner is in no household"
        assert household in self.members, "the household exists"
        assert line["relationship"] in RELATIONSHIPS
        assert len(self.members[household]) < 50, "at most 50 members"
        if line["relationship"] == "CHILD":
            assert self.newborns.pop(idcs, "9999") <= line["effective"], "a child of the month"
        else:
            assert line["relationship"] == "SPOUSE", "joiners marry in"
            rels = [self.home[i][1] for i in self.members[household]]
            assert SPOUSE not in rels, "the household has no spouse yet"
        self.home[idcs] = (household, SPOUSE if line["relationship"] == "SPOUSE" else 3)
        self.members[household].add(idcs)

    def member_left(self, line: dict[str, Any]) -> None:
        idcs, household = line["idcs"], line["household_id"]
        assert self.home.get(idcs, ("", 0))[0] == household, "the leaver is in the household"
        assert self.home[idcs][1] != DECLARANT, "never the declarant"
        del self.home[idcs]
        self.members[household].discard(idcs)

    def household_rescored(self, line: dict[str, Any]) -> None:
        household, score = line["household_id"], line["score"]
        assert household in self.score
        assert is_valid_household_id(household)
        assert isinstance(score, float)
        assert 0.0 <= score <= 20.0, "a score from 0 to 20"
        self.before[line["id"]] = self.score[household]
        self.score[household] = score

    def household_region_changed(self, line: dict[str, Any]) -> None:
        assert line["household_id"] in self.score
        assert line["region"] in REGIONS
        assert line["area"] in ("URBAN", "RURAL")

    def coverage_started(self, line: dict[str, Any]) -> None:
        self.living(line["idcs"])
        assert line["idcs"] not in self.covered, "not covered already"
        assert re.fullmatch(r"AMO_[A-Z]+", line["scheme"])
        self.covered.add(line["idcs"])

    def coverage_ended(self, line: dict[str, Any]) -> None:
        self.living(line["idcs"])
        assert line["idcs"] in self.covered, "covered"
        self.covered.discard(line["idcs"])

    def correction(self, line: dict[str, Any]) -> None:
        target = self.by_id.get(line["corrects"])
        assert target is not None, "corrects an earlier event"
        assert target["source"] == line["source"], "of the same source"
        assert target["type"] != "correction", "not a correction"
        assert target["id"] not in self.corrected, "not corrected already"
        for record in self.records(target):
            assert self.last[record] == target["id"], "nothing later touched the record"
        self.corrected.add(target["id"])
        if target["type"] == "person.died":
            self.alive[target["idcs"]] = True
        else:
            assert target["type"] == "household.rescored", "deaths and rescorings are corrected"
            self.score[target["household_id"]] = self.before[target["id"]]
        for record in self.records(target):
            self.last[record] = line["id"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("registry"), HOUSEHOLDS, SEED).path


def changes(registry: Path, **options: Any) -> tuple[str, ChangesSummary]:
    """The lines and summary of generate_changes, MONTH and seed 1 unless told."""
    out = io.StringIO()
    arguments: dict[str, Any] = {"month": MONTH, "seed": 1} | options
    summary = generate_changes(registry, out, **arguments)
    return out.getvalue(), summary


@pytest.fixture(scope="module")
def month(registry: Path) -> tuple[str, ChangesSummary]:
    return changes(registry)


@pytest.fixture(scope="module")
def busy(registry: Path) -> tuple[str, ChangesSummary]:
    return changes(registry, count=BUSY)


def test_the_same_arguments_give_the_same_bytes_and_another_seed_others(
    registry: Path, month: tuple[str, ChangesSummary], tmp_path: Path
) -> None:
    file = tmp_path / "changes.ndjson"
    generate_changes(registry, file, month=MONTH, seed=1)
    assert file.read_text(encoding="utf-8") == month[0] == changes(registry)[0]
    assert changes(registry, seed=2)[0] != month[0]


def test_a_month_replays_against_the_registry(
    registry: Path, month: tuple[str, ChangesSummary]
) -> None:
    replay = Replay.of(registry).run(month[0])
    assert len(replay.lines) == month[1].lines
    assert Counter(line["type"] for line in replay.lines) == month[1].by_type


def test_a_busy_month_replays_with_its_corrections(
    registry: Path, busy: tuple[str, ChangesSummary]
) -> None:
    replay = Replay.of(registry).run(busy[0])
    types = Counter(line["type"] for line in replay.lines)
    undone = Counter(
        replay.by_id[line["corrects"]]["type"]
        for line in replay.lines
        if line["type"] == "correction"
    )
    assert 0.01 <= undone["person.died"] / types["person.died"] <= 0.03
    assert 0 < undone["household.rescored"] <= 0.01 * types["household.rescored"]
    assert set(undone) == {"person.died", "household.rescored"}


def test_the_monthly_rates_scale_with_the_registry(
    registry: Path, month: tuple[str, ChangesSummary]
) -> None:
    replay = Replay.of(registry)
    living = sum(replay.alive.values())
    types = Counter(json.loads(line)["type"] for line in month[0].splitlines())
    joined_as_spouse = types["member.joined"] - types["person.born"]
    per_living = {
        "person.died": (0.0003, 0.0005),
        "person.born": (0.0012, 0.0018),
        "member.left": (0.0008, 0.0012),
        "coverage.started": (0.0025, 0.0035),
        "coverage.ended": (0.0015, 0.0025),
    }
    for type_, (low, high) in per_living.items():
        assert low <= types[type_] / living <= high, type_
    assert 0.0001 <= joined_as_spouse / living <= 0.0005
    assert 0.019 <= types["household.rescored"] / HOUSEHOLDS <= 0.021
    assert 0.0005 <= types["household.region_changed"] / HOUSEHOLDS <= 0.0015


def test_older_people_die_more_and_rescorings_cross_both_thresholds_both_ways(
    registry: Path, busy: tuple[str, ChangesSummary]
) -> None:
    replay = Replay.of(registry)
    start = date(2026, 11, 1)

    def age(idcs: str) -> float:
        return (start - date.fromisoformat(replay.born[idcs])).days / 365.2425

    lines = [json.loads(line) for line in busy[0].splitlines()]
    died = [age(line["idcs"]) for line in lines if line["type"] == "person.died"]
    everyone = [age(idcs) for idcs, alive in replay.alive.items() if alive]
    assert sum(died) / len(died) > sum(everyone) / len(everyone) + 15
    crossings: Counter[tuple[float, bool]] = Counter()
    rescorings = 0
    for line in lines:
        if line["type"] == "household.rescored":
            old, new = replay.score[line["household_id"]], line["score"]
            replay.score[line["household_id"]] = new
            rescorings += 1
            for threshold in (AMOT_THRESHOLD, ASD_THRESHOLD):
                if (old < threshold) != (new < threshold):
                    crossings[(threshold, new < threshold)] += 1
    assert len(crossings) == 4  # AMOT and ASD, each crossed downwards and upwards
    assert 0.03 <= sum(crossings.values()) / rescorings <= 0.25


def test_a_count_sets_the_number_of_lines(registry: Path, busy: tuple[str, ChangesSummary]) -> None:
    assert abs(busy[1].lines - BUSY) <= 0.01 * BUSY
    assert busy[1].substituted == 0 or busy[1].by_type["household.rescored"] > BUSY / 3
    small = changes(registry, count=500)[1]
    assert abs(small.lines - 500) <= 10


def test_a_registry_too_small_for_the_count_gives_rescorings_and_stays_consistent(
    tmp_path: Path,
) -> None:
    tiny = generate(tmp_path, 60, SEED).path
    text, summary = changes(tiny, count=5_000)
    Replay.of(tiny).run(text)
    assert summary.substituted > 0
    assert abs(summary.lines - 5_000) <= 50


def test_the_default_month_follows_the_registry(registry: Path) -> None:
    # A fresh registry's latest date is 2025-12-31 (demo_data's synthetic "today").
    assert changes(registry, month=None, count=50)[1].month == "2026-01"


@pytest.mark.parametrize(
    ("month", "said"),
    [
        ("2026-13", "is not a month"),
        ("26-11", "is not a month"),
        ("2025-12", "already has changes up to 2025-12-31"),
    ],
)
def test_a_bad_month_is_refused(registry: Path, month: str, said: str) -> None:
    with pytest.raises(DemoChangesError, match=said):
        changes(registry, month=month)


def test_only_a_synthetic_registry_is_changed(registry: Path, tmp_path: Path) -> None:
    copy = tmp_path / "registry.sqlite"
    copy.write_bytes(registry.read_bytes())
    db = sqlite3.connect(copy)
    db.execute("UPDATE meta SET value = 'false' WHERE key = 'synthetic'")
    db.commit()
    db.close()
    with pytest.raises(DemoChangesError, match="not a synthetic registry"):
        changes(copy)
    with pytest.raises(DemoChangesError, match="no registry at"):
        changes(tmp_path / "none" / "registry.sqlite")
    copy.write_bytes(b"not a database, but a file of the registry's name" * 100)
    with pytest.raises(DemoChangesError, match="not a Jisr registry"):
        changes(copy)


def test_the_cli_writes_a_file_or_stdout_and_says_what_it_wrote(
    registry: Path, month: tuple[str, ChangesSummary], capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(registry.parent)
    file = registry.parent / "changes.ndjson"
    assert main(["demo-data", "--changes", str(file), "--data-dir", data, "--month", MONTH]) == 0
    out = capsys.readouterr().out
    assert file.read_text(encoding="utf-8") == month[0]
    assert f"SYNTHETIC changes for {MONTH}" in out
    assert f"{month[1].lines:,} lines" in out
    assert main(["demo-data", "--changes", "-", "--data-dir", data, "--month", MONTH]) == 0
    written = capsys.readouterr()
    assert written.out == month[0]
    assert "SYNTHETIC changes" in written.err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--month", "2026-11"], "--month and --count need --changes FILE"),
        (["--changes", "-", "--households", "5"], "--households and --force are for making"),
        (["--changes", "-", "--month", "2026-1"], "is not a month"),
        (["--changes", "-", "--count", "0"], "--count must be at least 1"),
        (["--changes", "x/y/changes.ndjson"], "no directory"),
    ],
)
def test_the_cli_refuses_in_one_line_with_status_2(
    registry: Path, args: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo-data", "--data-dir", str(registry.parent), *args]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert err.count("\n") == 1


def test_the_cli_names_a_missing_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo-data", "--changes", "-", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"jisr demo-data: no registry at {tmp_path / 'registry.sqlite'}:"
        " make one with `jisr demo-data` first\n"
    )
