"""Independent reading of the registry file for tests and the bench: plain SQL, no gateway
code.

The oracle here re-derives eligibility from the rows with its own code so that a test can
compare it with what the gateway answers.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

AMOT_THRESHOLD = 9.3264284
ASD_THRESHOLD = 9.743001
AMOT_IGNORED = {"AMO_TADAMON"}


@dataclass(frozen=True)
class Household:
    household_id: str
    score: float
    members: tuple[str, ...]
    schemes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Subjects:
    household_ids: list[str]
    member_idcs: list[str]


def connect(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'registry.sqlite'}?mode=ro", uri=True)


def subjects(data_dir: Path) -> Subjects:
    """Every household id and every member IDCS of the registry."""
    with connect(data_dir) as db:
        households = [r[0] for r in db.execute("SELECT household_id FROM household")]
        members = [r[0] for r in db.execute("SELECT idcs FROM membership")]
    if not households or not members:
        raise ValueError(f"{data_dir}: no households or members in the registry")
    return Subjects(households, members)


def first_members(data_dir: Path, count: int) -> list[tuple[str, str]]:
    """(household id, the IDCS of its first member by position) of the first `count`
    households by id."""
    first: dict[str, str] = {}
    with connect(data_dir) as db:
        query = "SELECT household_id, idcs FROM membership ORDER BY household_id, position"
        for household, idcs in db.execute(query):
            first.setdefault(household, idcs)
            if len(first) == count:
                break
    return list(first.items())


def households(data_dir: Path, limit: int) -> list[Household]:
    """The first `limit` households by id, with members and their AMO schemes."""
    with connect(data_dir) as db:
        rows = db.execute(
            "SELECT household_id, score FROM household ORDER BY household_id LIMIT ?", (limit,)
        ).fetchall()
        members: dict[str, list[str]] = {hid: [] for hid, _ in rows}
        for hid, idcs in db.execute("SELECT household_id, idcs FROM membership"):
            if hid in members:
                members[hid].append(idcs)
        schemes = dict(db.execute("SELECT idcs, scheme FROM coverage").fetchall())
    return [
        Household(
            hid,
            score,
            tuple(members[hid]),
            tuple(schemes[m] for m in members[hid] if m in schemes),
        )
        for hid, score in rows
    ]


def expected(programme: str, household: Household) -> tuple[bool, list[str]]:
    """Eligibility and reason names, derived from DOMAIN.md's rules, not the gateway's."""
    if programme == "ASD":
        below = household.score < ASD_THRESHOLD
        return below, ["SCORE_BELOW_THRESHOLD" if below else "SCORE_ABOVE_THRESHOLD"]
    below = household.score < AMOT_THRESHOLD
    other = any(s not in AMOT_IGNORED for s in household.schemes)
    reasons = [
        "SCORE_BELOW_THRESHOLD" if below else "SCORE_ABOVE_THRESHOLD",
        "OTHER_AMO_COVERAGE" if other else "NO_OTHER_AMO_COVERAGE",
    ]
    return below and not other, reasons


def one(data_dir: Path, sql: str) -> str:
    """The first column of the first row of a query (for picking test subjects)."""
    with connect(data_dir) as db:
        row = db.execute(sql).fetchone()
    if row is None:
        raise LookupError(f"no row for: {sql}")
    return str(row[0])
