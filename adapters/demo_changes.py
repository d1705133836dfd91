"""A month of synthetic registry changes behind `jisr demo-data --changes`.

`jisr registry apply` and the change events behind it need input that looks like a real
month of a registry: a few deaths, rather more births, households rescored around the
programme thresholds, coverage starting and ending, the odd correction. This module reads
a registry that `jisr demo-data` made and writes such a month as change lines
(docs/events.md, "A file of changes"). Every line is SYNTHETIC: it changes synthetic
persons and households, new persons get names from demo_data's short lists, and it refuses
a registry whose meta table does not say `synthetic = true`. Never present it as real.

Each line is checked against the registry as the earlier lines leave it, so the generator
keeps a model of what it changed: flat arrays of machine numbers, one entry per person and
per household (a million households, 4.4 million persons: ~150 MB), updated as each line
is written. The output is a pure function of (registry content, month, seed, count): one
seeded random.Random drives every choice, in a fixed order. Lines are streamed, day by day.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import re
import sqlite3
import tempfile
import time
from array import array
from bisect import bisect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO

# demo_data's private tables: the changes keep the shapes the registry was drawn with.
from adapters.demo_data import (
    _FEMALE_NAMES,
    _MALE_NAMES,
    _REGIONS,
    _SCHEMES,
    AMOT_THRESHOLD,
)
from gateway.base.identifiers import make_idcs
from gateway.pb.jisr.v1 import records_pb2 as rec

_YEAR = 365.2425
_TRIES = 64  # draws before a slot gives up; a pool with any candidate left succeeds
_GIVE_UP = 3  # slots of a kind failing in a row: its pool is exhausted for the month
_FLUSH = 8192  # lines buffered between writes

_MALE = int(rec.SEX_MALE)
_ALIVE = int(rec.VITAL_STATUS_ALIVE)
_DECLARANT = int(rec.RELATIONSHIP_DECLARANT)
_SPOUSE = int(rec.RELATIONSHIP_SPOUSE)
_URBAN = int(rec.AREA_URBAN)
_RURAL = int(rec.AREA_RURAL)
# Members who may leave to found a household elsewhere: never the declarant; spouses and
# parents stay (a divorce or a move to another child's home is not modelled).
_LEAVERS = frozenset(
    int(r)
    for r in (
        rec.RELATIONSHIP_CHILD,
        rec.RELATIONSHIP_SIBLING,
        rec.RELATIONSHIP_GRANDCHILD,
        rec.RELATIONSHIP_OTHER_RELATIVE,
        rec.RELATIONSHIP_UNRELATED,
    )
)
_REGION_NAMES = {
    n: rec.Region.Name(rec.Region.ValueType(n)).removeprefix("REGION_") for n in _REGIONS
}
_AREA_NAMES = {_URBAN: "URBAN", _RURAL: "RURAL"}

DIED = "person.died"
BORN = "person.born"
JOINED = "member.joined"
LEFT = "member.left"
RESCORED = "household.rescored"
REGION = "household.region_changed"
STARTED = "coverage.started"
ENDED = "coverage.ended"
CORRECTION = "correction"
SOURCES = {
    DIED: "RNP",
    BORN: "RNP",
    JOINED: "RSU",
    LEFT: "RSU",
    RESCORED: "RSU",
    REGION: "RSU",
    STARTED: "CNSS",
    ENDED: "CNSS",
}


@dataclass(frozen=True)
class Rate:
    """A kind of change per month: `rate` of `base` ("living" persons or "households")."""

    kind: str
    rate: float
    base: str
    lines: int  # a birth writes two: person.born, then member.joined a few days later


# Monthly rates; docs/registry-data.md, "A month of changes", says why these figures.
RATES = (
    Rate(DIED, 0.0004, "living", 1),
    Rate(BORN, 0.0015, "living", 2),
    Rate(LEFT, 0.001, "living", 1),
    Rate(JOINED, 0.0003, "living", 1),
    Rate(RESCORED, 0.02, "households", 1),
    Rate(REGION, 0.001, "households", 1),
    Rate(STARTED, 0.003, "living", 1),
    Rate(ENDED, 0.002, "living", 1),
)
WRONG_DEATHS = 0.02  # of the month's deaths: registered for the wrong person, then corrected
WRONG_RESCORES = 0.005  # of the month's rescorings: a gross error, then corrected
RESCORE_SD = 0.1  # noise of an ordinary rescoring: ~11% of them cross AMOT or ASD
WRONG_SD = 1.5  # noise of a wrong one

# (lowest age, weight) bands. Deaths: annual probability, the shape of a recent Moroccan
# life table, rounded (infants, then a rise from 45). Births: per 1000 women-years of
# declarants and spouses aged 15-49. Leaving: relative odds, most at 25-34.
_DEATH_BANDS = (
    (0, 0.015), (1, 0.001), (5, 0.0004), (15, 0.001), (30, 0.002),
    (45, 0.006), (60, 0.015), (70, 0.04), (80, 0.12),
)  # fmt: skip
_BIRTH_BANDS = ((15, 20.0), (20, 90.0), (25, 120.0), (30, 110.0), (35, 70.0), (40, 25.0), (45, 5.0))
_LEAVE_BANDS = ((18, 1.0), (25, 3.0), (35, 1.5), (45, 0.5))
_MOTHER_MAX_AGE = 50  # the youngest mothers are the first birth band's
_MAX_MEMBERS = 50  # adapters/registry_changes.py refuses a member.joined beyond
_SPOUSE_AGES = (18, 60)  # an unregistered person marrying into a household
_DECLARANT_AGES = (18, 70)  # the declarant they marry

_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


class DemoChangesError(Exception):
    """The registry or the month cannot give a month of changes (one line, for the CLI)."""


@dataclass(frozen=True)
class ChangesSummary:
    """What a run wrote: lines per event type (corrections under `correction`)."""

    month: str
    lines: int
    by_type: dict[str, int]
    households: int
    persons: int
    substituted: int  # slots whose pool ran dry (a small registry, a big count): rescorings
    seconds: float

    def line(self) -> str:
        """The per-type counts, in the order of docs/events.md's table."""
        order = [*SOURCES, CORRECTION]
        return ", ".join(f"{t} {self.by_type[t]:,}" for t in order if self.by_type.get(t))


class _Bands:
    """Indices grouped by band, drawn with weight rate times size: weighted sampling by age
    without a scan, and without storing a weight per person."""

    def __init__(self, bands: tuple[tuple[int, float], ...]) -> None:
        self.lows = [low for low, _ in bands]
        self.rates = [rate for _, rate in bands]
        self.members = [array("i") for _ in bands]
        self.cum: list[float] = []

    def add(self, age: int, index: int) -> None:
        """File person `index` under its age band (ages below the first band: nowhere)."""
        band = bisect(self.lows, age) - 1
        if band >= 0:
            self.members[band].append(index)

    def freeze(self) -> None:
        """Cumulative weights of the bands as loaded (the month's changes barely move them)."""
        total = 0.0
        self.cum = []
        for rate, members in zip(self.rates, self.members, strict=True):
            total += rate * len(members)
            self.cum.append(total)

    def pick(self, r: Callable[[], float]) -> int:
        """A random member, band by weight; -1 when every band is empty."""
        if not self.cum or self.cum[-1] <= 0:
            return -1
        band = min(bisect(self.cum, r() * self.cum[-1]), len(self.cum) - 1)
        members = self.members[band]
        return members[int(r() * len(members))] if members else -1


# idcs, sex, birth date, vital status, family name (declarants and spouses only),
# household index (None: in no household), relationship, covered.
_PersonRow = tuple[str, int, str, int, str | None, int | None, int | None, int]


class _Model:
    """The registry as the lines written so far leave it, one array entry per record.

    Households come in household-id order, persons in IDCS order; a person's `home` is its
    household's index, -1 for none. Newborns are not in it: nothing but their own
    member.joined touches them within the month.
    """

    def __init__(self) -> None:
        self.idcs = array("q")
        self.birth = array("i")  # day ordinal
        self.male = bytearray()
        self.alive = bytearray()
        self.covered = bytearray()
        self.rel = bytearray()
        self.home = array("i")
        self.household = array("q")  # the number of H + 9 digits
        self.score = array("d")
        self.region = bytearray()
        self.area = bytearray()
        self.declarant = array("i")
        self.has_spouse = bytearray()
        self.members = array("H")  # members now and newborns due to join
        self.family = array("H")  # index into self.names: the children's family name
        self.family_rank = bytearray()  # who gave it (see household_role)
        self.names: list[str] = []
        self.codes: dict[str, int] = {}
        self.dying = _Bands(_DEATH_BANDS)
        self.mothers = _Bands(_BIRTH_BANDS)
        self.leaving = _Bands(_LEAVE_BANDS)
        self.singles = {True: array("i"), False: array("i")}  # adults in no household, by sex
        self.living = 0

    def add_household(self, household_id: str, region: int, area: int, score: float) -> None:
        """Append one household, its declarant and family name to come with its members."""
        self.household.append(int(household_id[1:]))
        self.score.append(score)
        self.region.append(region)
        self.area.append(area)
        self.declarant.append(-1)
        self.has_spouse.append(0)
        self.members.append(0)
        self.family.append(0)
        self.family_rank.append(0)

    def add_person(self, row: _PersonRow, birth: int, start: int) -> None:
        """Append one person, born on day ordinal `birth`, filed by its age on `start`."""
        idcs, sex, _, vital, family, home, rel, covered = row
        if home is None or rel is None:
            home, rel = -1, 0
        index = len(self.idcs)
        male = sex == _MALE
        self.idcs.append(int(idcs))
        self.birth.append(birth)
        self.male.append(male)
        self.alive.append(vital == _ALIVE)
        self.covered.append(covered)
        self.rel.append(rel)
        self.home.append(home)
        if home >= 0:
            self.members[home] += 1
        if home >= 0 and family is not None:
            self.household_role(home, index, rel, male, family)
        if vital == _ALIVE:
            self.file(index, int((start - birth) / _YEAR), home, rel, male)

    def household_role(self, h: int, index: int, rel: int, male: bool, family: str) -> None:
        """Note a declarant or spouse. Children take their father's family name: the male
        declarant's, else the male spouse's, else the declarant's (members come in IDCS
        order, so the rank decides, not the order)."""
        if rel == _DECLARANT:
            self.declarant[h] = index
        elif rel == _SPOUSE:
            self.has_spouse[h] = 1
        rank = 2 * male + (rel == _DECLARANT) + 1
        if rank > self.family_rank[h]:
            self.family_rank[h] = rank
            code = self.codes.get(family)
            if code is None:
                code = self.codes[family] = len(self.names)
                self.names.append(family)
            self.family[h] = code

    def file(self, index: int, age: int, home: int, rel: int, male: bool) -> None:
        """Put a living person in the pools the month draws from."""
        self.living += 1
        self.dying.add(age, index)
        if home < 0:
            if _SPOUSE_AGES[0] <= age < _SPOUSE_AGES[1]:
                self.singles[male].append(index)
        elif rel in _LEAVERS:
            self.leaving.add(age, index)
        elif not male and rel in (_DECLARANT, _SPOUSE) and age < _MOTHER_MAX_AGE:
            self.mothers.add(age, index)

    def age(self, index: int, day: int) -> int:
        """Whole years of person `index` on day ordinal `day`."""
        return int((day - self.birth[index]) / _YEAR)


_HOUSEHOLDS = "SELECT household_id, region, area, score FROM household ORDER BY household_id"
# Household id -> index in the model, in a temporary table: looked up by SQLite while it
# reads the persons, instead of a Python dict of a million keys.
_HOUSEHOLD_INDEX = """
CREATE TEMP TABLE demo_household_index (n INTEGER PRIMARY KEY, h INTEGER NOT NULL);
INSERT INTO temp.demo_household_index
    SELECT CAST(substr(household_id, 2) AS INTEGER),
           row_number() OVER (ORDER BY household_id) - 1
    FROM household;
"""
# Persons, memberships and coverage all have the IDCS as primary key: read in that order,
# each lookup lands next to the previous one (in household order, they were random reads
# and took twice as long on a million households).
_PERSONS = """
SELECT p.idcs, p.sex, p.birth_date, p.vital_status,
       CASE WHEN m.relationship IN (1, 2) THEN p.family_name END,
       x.h, m.relationship, c.idcs IS NOT NULL
FROM person p
LEFT JOIN membership m ON m.idcs = p.idcs
LEFT JOIN temp.demo_household_index x ON x.n = CAST(substr(m.household_id, 2) AS INTEGER)
LEFT JOIN coverage c ON c.idcs = p.idcs
ORDER BY p.idcs
"""


def _load(conn: sqlite3.Connection, start: int) -> _Model:
    """Read the registry into a model, pools filed by age on day ordinal `start`.

    Two scans in key order (households, then persons with their membership and coverage):
    memory is the model's arrays, a few bytes per record.
    """
    model = _Model()
    for household in conn.execute(_HOUSEHOLDS):
        model.add_household(*household)
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.executescript(_HOUSEHOLD_INDEX)
    births: dict[str, int] = {}  # a registry has few distinct birth dates
    try:
        for row in conn.execute(_PERSONS):
            birth = births.get(row[2])
            if birth is None:
                birth = births[row[2]] = date.fromisoformat(row[2]).toordinal()
            model.add_person(row, birth, start)
    finally:
        conn.execute("DROP TABLE temp.demo_household_index")
    for pool in (model.dying, model.mothers, model.leaving):
        pool.freeze()
    return model


@dataclass(frozen=True, slots=True)
class _Join:
    """A newborn's member.joined, due a few days after the birth."""

    idcs: str
    home: int


@dataclass(frozen=True, slots=True)
class _Undo:
    """A correction, due a few days after the wrong event; what it puts back."""

    source: str
    event_id: str
    person: int  # a wrong death's person, else -1
    home: int  # a wrong rescoring's household, else -1
    score: float


class _Out:
    """Numbers, formats and streams the lines; counts them per type."""

    def __init__(self, stream: IO[str], month: str) -> None:
        self.stream = stream
        self.month = month
        self.seq = {"RNP": 0, "RSU": 0, "CNSS": 0}
        self.by_type: dict[str, int] = {}
        self.buffer: list[str] = []
        self.lines = 0

    def emit(self, type_: str, source: str, day: str, members: str) -> str:
        """Write one line (`members`: its type's members as JSON text); its event id."""
        self.seq[source] += 1
        event_id = f"{source}-{self.month}-{self.seq[source]:06d}"
        self.buffer.append(
            f'{{"id": "{event_id}", "source": "{source}", "type": "{type_}",'
            f' "effective": "{day}"{members}}}\n'
        )
        self.by_type[type_] = self.by_type.get(type_, 0) + 1
        self.lines += 1
        if len(self.buffer) >= _FLUSH:
            self.flush()
        return event_id

    def flush(self) -> None:
        """Write the buffered lines."""
        self.stream.writelines(self.buffer)
        self.buffer.clear()


class _Month:
    """Draws the month's changes day by day, checking each against the model."""

    def __init__(
        self,
        model: _Model,
        conn: sqlite3.Connection,
        rng: random.Random,
        *,
        out: _Out,
        days: list[str],
        plan: _Plan,
    ) -> None:
        self.m = model
        self.conn = conn  # to keep newborns' IDCS out of the registry's
        self.rng = rng
        self.r = rng.random
        self.out = out
        self.days = days
        self.first = date.fromisoformat(days[0]).toordinal()
        self.locked: set[int] = set()  # households with a wrong rescoring not yet corrected
        self.joins_due: dict[int, int] = {}  # household -> newborns' member.joined pending
        self.mothers_this_month: set[int] = set()
        self.newborns: set[int] = set()
        self.pending: list[tuple[int, int, _Join | _Undo]] = []
        self.order = 0
        self.failed: dict[str, int] = {}
        self.substituted = 0
        # kind -> [wrong ones still to draw, slots of the kind still to fill]
        self.wrong = {kind: [n, plan.totals[kind]] for kind, n in plan.wrong.items()}
        self.regions = list(_REGIONS)
        self.scheme_names = [name for name, _, _ in _SCHEMES]
        self.scheme_weights = [weight for _, weight, _ in _SCHEMES]

    # The day loop -------------------------------------------------------------------

    def run(self, plan: _Plan, tick: Callable[[int], None]) -> None:
        """Write each day's due events and drawn slots, in day order; `tick(lines)` often."""
        handlers: dict[str, Callable[[int], bool]] = {
            DIED: self.died,
            BORN: self.born,
            LEFT: self.left,
            JOINED: self.joined,
            RESCORED: self.rescored,
            REGION: self.region_changed,
            STARTED: self.coverage_started,
            ENDED: self.coverage_ended,
        }
        tick(0)  # the registry is read: a long run says so before its first lines
        done = 0
        for day, counts in enumerate(plan.days):
            self.due(day)
            slots = [kind for kind, n in counts.items() for _ in range(n)]
            self.rng.shuffle(slots)
            for kind in slots:
                self.slot(kind, day, handlers)
                done += 1
                if done % 8192 == 0:
                    tick(self.out.lines)
            self.due(day)
        tick(self.out.lines)

    def slot(self, kind: str, day: int, handlers: dict[str, Callable[[int], bool]]) -> None:
        """Fill one slot. A kind whose pool ran dry (a small registry, a big count) gives
        its lines to rescorings, which never run dry, so that `count` holds."""
        if kind in self.wrong:
            self.wrong[kind][1] -= 1
        if self.failed.get(kind, 0) < _GIVE_UP:
            if handlers[kind](day):
                self.failed[kind] = 0
                return
            self.failed[kind] = self.failed.get(kind, 0) + 1
        for _ in range(2 if kind == BORN else 1):
            if kind != RESCORED and self.rescored(day):
                self.substituted += 1

    def due(self, day: int) -> None:
        """Write the newborns' joins and the corrections due by `day`."""
        while self.pending and self.pending[0][0] <= day:
            _, _, event = heapq.heappop(self.pending)
            if isinstance(event, _Join):
                self.joins_due[event.home] -= 1
                self.emit(JOINED, day, self.membership(event.idcs, event.home, "CHILD"))
            else:
                self.undo(event, day)

    def later(self, day: int, lo: int, hi: int, event: _Join | _Undo) -> None:
        """Schedule `event` lo..hi days after `day`, on the month's last day at the latest."""
        when = min(day + self.rng.randint(lo, hi), len(self.days) - 1)
        self.order += 1
        heapq.heappush(self.pending, (when, self.order, event))

    def emit(self, type_: str, day: int, members: str) -> str:
        return self.out.emit(type_, SOURCES[type_], self.days[day], members)

    def find(self, pick: Callable[[], int], ok: Callable[[int], bool]) -> int:
        """Draw until `ok`; -1 after _TRIES draws (the pool is, in effect, empty)."""
        for _ in range(_TRIES):
            index = pick()
            if index >= 0 and ok(index):
                return index
        return -1

    def any_person(self) -> int:
        n = len(self.m.idcs)
        return int(self.r() * n) if n else -1

    def any_household(self) -> int:
        n = len(self.m.household)
        return int(self.r() * n) if n else -1

    def idcs(self, index: int) -> str:
        return f"{self.m.idcs[index]:010d}"

    def household_id(self, home: int) -> str:
        return f"H{self.m.household[home]:09d}"

    def membership(self, idcs: str, home: int, relationship: str) -> str:
        return (
            f', "idcs": "{idcs}", "household_id": "{self.household_id(home)}",'
            f' "relationship": "{relationship}"'
        )

    def is_wrong(self, kind: str) -> bool:
        """Selection sampling: exactly the planned share of the kind's slots is wrong."""
        left, slots = self.wrong[kind]
        if left > 0 and self.r() * (slots + 1) < left:
            self.wrong[kind][0] -= 1
            return True
        return False

    # RNP ------------------------------------------------------------------------------

    def died(self, day: int) -> bool:
        """A death, older people likelier; 2% registered for the wrong person, undone later."""
        m = self.m
        i = self.find(lambda: m.dying.pick(self.r), lambda i: bool(m.alive[i]))
        if i < 0:
            return False
        m.alive[i] = 0
        event_id = self.emit(DIED, day, f', "idcs": "{self.idcs(i)}"')
        if self.is_wrong(DIED):
            self.later(day, 2, 7, _Undo("RNP", event_id, i, -1, 0.0))
        return True

    def born(self, day: int) -> bool:
        """A birth to a declarant or spouse aged 15-49; the child joins her household as
        CHILD 2-10 days later (the RSU learns of a birth after the civil registry)."""
        m = self.m

        def ok(i: int) -> bool:
            home = m.home[i]
            return (
                bool(m.alive[i])
                and home >= 0
                and home not in self.locked
                and m.members[home] < _MAX_MEMBERS
                and i not in self.mothers_this_month
            )

        mother = self.find(lambda: m.mothers.pick(self.r), ok)
        if mother < 0:
            return False
        self.mothers_this_month.add(mother)
        home = m.home[mother]
        idcs = self.new_idcs()
        male = self.r() < 0.51
        names = _MALE_NAMES if male else _FEMALE_NAMES
        given = names[int(self.r() * len(names))]
        family = m.names[m.family[home]]
        self.emit(
            BORN,
            day,
            f', "idcs": "{idcs}", "given_name": {json.dumps(given)},'
            f' "family_name": {json.dumps(family)}, "sex": "{"M" if male else "F"}"',
        )
        self.joins_due[home] = self.joins_due.get(home, 0) + 1
        m.members[home] += 1
        self.later(day, 2, 10, _Join(idcs, home))
        return True

    def new_idcs(self) -> str:
        """A random IDCS in neither the registry nor this month's births."""
        while True:
            body = self.rng.randrange(10**9)
            if body in self.newborns:
                continue
            idcs = make_idcs(f"{body:09d}")
            if self.conn.execute("SELECT 1 FROM person WHERE idcs = ?", (idcs,)).fetchone():
                continue
            self.newborns.add(body)
            return idcs

    # RSU ------------------------------------------------------------------------------

    def left(self, day: int) -> bool:
        """An adult child, sibling or other member leaving to found a household elsewhere."""
        m = self.m

        def ok(i: int) -> bool:
            return bool(m.alive[i]) and m.home[i] >= 0 and m.home[i] not in self.locked

        i = self.find(lambda: m.leaving.pick(self.r), ok)
        if i < 0:
            return False
        home = m.home[i]
        m.home[i] = -1
        m.members[home] -= 1
        self.emit(
            LEFT, day, f', "idcs": "{self.idcs(i)}", "household_id": "{self.household_id(home)}"'
        )
        return True

    def joined(self, day: int) -> bool:
        """A person in no household marrying a declarant who has no spouse: joins as SPOUSE."""
        m = self.m
        today = self.first + day

        def open_household(h: int) -> bool:
            d = m.declarant[h]
            return (
                d >= 0
                and not m.has_spouse[h]
                and m.members[h] < _MAX_MEMBERS
                and h not in self.locked
                and bool(m.alive[d])
                and _DECLARANT_AGES[0] <= m.age(d, today) < _DECLARANT_AGES[1]
            )

        home = self.find(self.any_household, open_household)
        if home < 0:
            return False
        pool = m.singles[not m.male[m.declarant[home]]]
        i = self.find(
            lambda: pool[int(self.r() * len(pool))] if pool else -1,
            lambda i: bool(m.alive[i]) and m.home[i] < 0,
        )
        if i < 0:
            return False
        m.home[i] = home
        m.rel[i] = _SPOUSE
        m.has_spouse[home] = 1
        m.members[home] += 1
        self.emit(JOINED, day, self.membership(self.idcs(i), home, "SPOUSE"))
        return True

    def rescored(self, day: int) -> bool:
        """A new score near the old one (some cross a threshold); 0.5% wrong, undone later.

        Only a household with no newborn's join pending can get a wrong score: nothing
        may touch the household between the wrong score and its correction."""
        m = self.m
        h = self.find(self.any_household, lambda h: h not in self.locked)
        if h < 0:
            return False
        old = m.score[h]
        wrong = not self.joins_due.get(h) and self.is_wrong(RESCORED)
        noise = self.rng.gauss(0.0, WRONG_SD if wrong else RESCORE_SD)
        m.score[h] = round(min(max(old + noise, 0.0), 20.0), 7)
        event_id = self.emit(
            RESCORED,
            day,
            f', "household_id": "{self.household_id(h)}", "score": {m.score[h]!r}',
        )
        if wrong:
            self.locked.add(h)
            self.later(day, 1, 5, _Undo("RSU", event_id, -1, h, old))
        return True

    def region_changed(self, day: int) -> bool:
        """A household moving to another region, weighted by population; area by its
        urban share."""
        m = self.m
        h = self.find(self.any_household, lambda h: h not in self.locked)
        if h < 0:
            return False
        others = [n for n in self.regions if n != m.region[h]]
        region = self.rng.choices(others, [_REGIONS[n][0] for n in others])[0]
        area = _URBAN if self.r() < _REGIONS[region][1] else _RURAL
        m.region[h], m.area[h] = region, area
        self.emit(
            REGION,
            day,
            f', "household_id": "{self.household_id(h)}", "region": "{_REGION_NAMES[region]}",'
            f' "area": "{_AREA_NAMES[area]}"',
        )
        return True

    # CNSS -----------------------------------------------------------------------------

    def coverage_started(self, day: int) -> bool:
        """Coverage for an uncovered person: Tadamon for half of those below AMOT, else a
        contributory scheme (a new job)."""
        m = self.m
        i = self.find(self.any_person, lambda i: bool(m.alive[i]) and not m.covered[i])
        if i < 0:
            return False
        home = m.home[i]
        if home >= 0 and m.score[home] < AMOT_THRESHOLD and self.r() < 0.5:
            scheme = "AMO_TADAMON"
        else:
            scheme = self.rng.choices(self.scheme_names, self.scheme_weights)[0]
        m.covered[i] = 1
        self.emit(STARTED, day, f', "idcs": "{self.idcs(i)}", "scheme": "{scheme}"')
        return True

    def coverage_ended(self, day: int) -> bool:
        """The end of a living person's coverage (a job lost, a scheme left)."""
        m = self.m
        i = self.find(self.any_person, lambda i: bool(m.alive[i]) and bool(m.covered[i]))
        if i < 0:
            return False
        m.covered[i] = 0
        self.emit(ENDED, day, f', "idcs": "{self.idcs(i)}"')
        return True

    # Corrections ----------------------------------------------------------------------

    def undo(self, event: _Undo, day: int) -> None:
        """Correct a wrong event. Its record was left alone since: a wrongly dead person is
        in no pool (only the living are drawn), a wrongly scored household is locked."""
        if event.person >= 0:
            self.m.alive[event.person] = 1
        else:
            self.m.score[event.home] = event.score
            self.locked.discard(event.home)
        self.out.emit(CORRECTION, event.source, self.days[day], f', "corrects": "{event.event_id}"')


def parse_month(text: str) -> tuple[int, int]:
    """(year, month) of 'YYYY-MM'; DemoChangesError naming the flag otherwise."""
    match = _MONTH.fullmatch(text)
    if match is None or int(match.group(1)) < 1900:
        raise DemoChangesError(f"--month {text!r} is not a month: write YYYY-MM, e.g. 2026-11")
    return int(match.group(1)), int(match.group(2))


def _month_days(year: int, month: int) -> list[str]:
    first = date(year, month, 1)
    days = []
    while first.month == month:
        days.append(first.isoformat())
        first += timedelta(days=1)
    return days


def _reference(conn: sqlite3.Connection) -> str:
    """The registry's latest date (births, deaths, scoring, coverage, enrolment, journal):
    a month of changes starts after it, so no change predates what it changes."""
    queries = [
        "SELECT max(birth_date) FROM person",
        "SELECT max(death_date) FROM person",
        "SELECT max(scored_on) FROM household",
        "SELECT max(since) FROM coverage",
        "SELECT max(since) FROM enrolment",
    ]
    journal = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'change_journal'"
    ).fetchone()
    if journal:
        queries.append("SELECT max(effective) FROM change_journal")
    found = [conn.execute(q).fetchone()[0] for q in queries]
    return max([d for d in found if d], default="1900-01-01")


def default_month(reference: str) -> str:
    """The month after the registry's reference date: 2026-01 for a fresh registry."""
    year, month = int(reference[:4]), int(reference[5:7])
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return f"{year:04d}-{month:02d}"


@contextmanager
def _registry(path: Path) -> Iterator[sqlite3.Connection]:
    """The registry, read-only; refused unless jisr demo-data made it (synthetic = true)."""
    if not path.is_file():
        raise DemoChangesError(f"no registry at {path}: make one with `jisr demo-data` first")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DemoChangesError(f"{path}: cannot open the registry ({exc})") from None
    try:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'synthetic'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise DemoChangesError(f"{path}: not a Jisr registry ({exc})") from None
        if row is None or row[0] != "true":
            raise DemoChangesError(
                f"{path}: not a synthetic registry; demo changes are made only for the"
                " registries `jisr demo-data` generates"
            )
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True)
class _Plan:
    """The month's slots: per day, how many of each kind; how many of them are wrong."""

    days: list[dict[str, int]]
    totals: dict[str, int]
    wrong: dict[str, int]

    def lines(self) -> int:
        """Lines expected: a slot each, a birth's join, a correction per wrong slot."""
        return sum(self.totals.values()) + self.totals[BORN] + sum(self.wrong.values())


def _plan(model: _Model, rng: random.Random, days: int, count: int | None) -> _Plan:
    """How many slots of each kind on each day, and how many wrong ones to draw.

    The monthly rates give the expected lines; `count` scales every rate by the same
    factor. Fractions are rounded up with their own probability (unbiased, so small
    registries still see the odd death) and each slot gets a uniform day.
    """
    bases = {"living": model.living, "households": len(model.household)}
    expected = {r.kind: r.rate * bases[r.base] for r in RATES}
    lines = sum(expected[r.kind] * r.lines for r in RATES)
    lines += WRONG_DEATHS * expected[DIED] + WRONG_RESCORES * expected[RESCORED]
    scale = count / lines if count is not None and lines > 0 else 1.0

    def draw(x: float) -> int:
        whole = int(x)
        return whole + (rng.random() < x - whole)

    per_day: list[dict[str, int]] = [{r.kind: 0 for r in RATES} for _ in range(days)]
    totals = {}
    for r in RATES:
        totals[r.kind] = draw(expected[r.kind] * scale)
        for _ in range(totals[r.kind]):
            per_day[int(rng.random() * days)][r.kind] += 1
    wrong = {
        DIED: draw(WRONG_DEATHS * totals[DIED]),
        RESCORED: draw(WRONG_RESCORES * totals[RESCORED]),
    }
    return _Plan(per_day, totals, wrong)


def generate_changes(
    registry_path: Path,
    out: IO[str] | Path,
    *,
    month: str | None,
    seed: int,
    count: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ChangesSummary:
    """Write a month of SYNTHETIC change lines for the registry at `registry_path`.

    `month` is 'YYYY-MM' (None: the month after the registry's latest date) and must
    start after that date. `count`, when given, scales every rate so that about that many
    lines are written. A Path is written whole or not at all (a temporary file renamed
    into place); a stream is written as lines are drawn. `progress(lines, expected)` is
    called once the registry is read (lines 0), then every few thousand lines. Raises
    DemoChangesError for a missing or non-synthetic registry, a malformed month or one
    that does not follow the registry.
    """
    started = time.perf_counter()
    if count is not None and count < 1:
        raise DemoChangesError(f"--count must be at least 1, not {count}")
    if isinstance(out, Path) and not out.absolute().parent.is_dir():
        raise DemoChangesError(f"--changes {out}: no directory {out.absolute().parent}")
    with _registry(registry_path) as conn:
        try:
            month, model, gen = _write_month(
                conn, out, month=month, seed=seed, count=count, progress=progress
            )
        except sqlite3.DatabaseError as exc:
            raise DemoChangesError(f"{registry_path}: cannot read the registry ({exc})") from None
    return ChangesSummary(
        month=month,
        lines=gen.out.lines,
        by_type=dict(gen.out.by_type),
        households=len(model.household),
        persons=len(model.idcs),
        substituted=gen.substituted,
        seconds=time.perf_counter() - started,
    )


def _write_month(
    conn: sqlite3.Connection,
    out: IO[str] | Path,
    *,
    month: str | None,
    seed: int,
    count: int | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[str, _Model, _Month]:
    """generate_changes' work on the open registry: the month, the model, the lines."""
    reference = _reference(conn)
    month = default_month(reference) if month is None else month
    year, mon = parse_month(month)
    if date(year, mon, 1).isoformat() <= reference:
        raise DemoChangesError(
            f"--month {month}: the registry already has changes up to {reference};"
            " choose a later month"
        )
    days = _month_days(year, mon)
    model = _load(conn, date.fromisoformat(days[0]).toordinal())
    rng = random.Random(f"jisr-demo-changes:{month}:{seed}")
    plan = _plan(model, rng, len(days), count)
    expected = plan.lines()

    def tick(lines: int) -> None:
        if progress is not None:
            progress(lines, max(expected, lines))

    with _output(out) as stream:
        writer = _Out(stream, month)
        gen = _Month(model, conn, rng, out=writer, days=days, plan=plan)
        gen.run(plan, tick)
        writer.flush()
    return month, model, gen


@contextmanager
def _output(out: IO[str] | Path) -> Iterator[IO[str]]:
    """A stream as it is; a Path through a temporary file renamed into place on success."""
    if not isinstance(out, Path):
        yield out
        return
    fd, name = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.absolute().parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as stream:
            yield stream
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
