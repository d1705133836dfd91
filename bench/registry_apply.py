"""`jisr registry apply` at scale: N valid synthetic change lines on a copy of a demo
registry, the apply timed (docs/events.md; the target is 1,000,000 lines in 60 s).

The lines are made here from the registry's own rows, not by adapters/demo_changes.py:
rescorings and region changes of households, coverage started for uncovered living
persons and ended for covered ones, deaths, members leaving and unregistered persons
joining. Each subject is used once, so every line is valid whatever the order.

    .venv/bin/python -m bench.registry_apply --lines 1000000 --data-dir /tmp/jisr-apply
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.demo_data import generate
from adapters.registry_changes import apply_changes, read_lines
from adapters.registry_db import REGISTRY_FILE

HOUSEHOLDS = 100_000
SEED = 7
# Share of each kind of line, per 100.
MIX = {"rescored": 58, "region": 10, "started": 10, "ended": 10, "died": 10, "left": 1, "joined": 1}
_REGIONS = ("CASABLANCA_SETTAT", "RABAT_SALE_KENITRA", "SOUSS_MASSA", "ORIENTAL")


def _column(db: sqlite3.Connection, sql: str) -> list[str]:
    return [row[0] for row in db.execute(sql)]


def _subjects(path: Path) -> dict[str, list[str]]:
    """Who each kind of line may name, read from the registry, disjoint where it matters."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        uncovered = _column(
            db,
            "SELECT idcs FROM person WHERE vital_status = 1 AND idcs NOT IN"
            " (SELECT idcs FROM coverage) AND idcs IN (SELECT idcs FROM membership)",
        )
        half = len(uncovered) // 2
        return {
            "households": _column(db, "SELECT household_id FROM household"),
            "started": uncovered[:half],
            "died": uncovered[half:],
            "ended": _column(db, "SELECT idcs FROM coverage"),
            "left": _column(db, "SELECT idcs FROM membership WHERE relationship != 1"),
            "joined": _column(
                db,
                "SELECT idcs FROM person WHERE vital_status = 1"
                " AND idcs NOT IN (SELECT idcs FROM membership)",
            ),
        }
    finally:
        db.close()


def changes(path: Path, lines: int, seed: int = SEED) -> Iterator[dict[str, Any]]:
    """`lines` valid changes on the registry at `path`, in a seeded random order."""
    rng = random.Random(seed)
    who = _subjects(path)
    households = who["households"]
    kinds = [k for k, share in MIX.items() for _ in range(share)]
    taken = dict.fromkeys(MIX, 0)
    for n in range(lines):
        kind = kinds[rng.randrange(len(kinds))]
        day = f"2026-{1 + n * 12 // lines:02d}-{1 + n % 28:02d}"
        if kind in ("rescored", "region"):
            line: dict[str, Any] = {"source": "RSU", "household_id": rng.choice(households)}
            if kind == "rescored":
                line |= {"type": "household.rescored", "score": round(rng.uniform(8, 11.5), 7)}
            else:
                area = rng.choice(("URBAN", "RURAL"))
                line |= {"type": "household.region_changed", "region": rng.choice(_REGIONS)}
                line["area"] = area
        else:
            pool = who[kind]
            if taken[kind] >= len(pool):
                raise ValueError(f"not enough subjects for {lines:,} lines: use more households")
            idcs = pool[taken[kind]]
            taken[kind] += 1
            line = _person_change(kind, idcs, households, rng)
        yield {"id": f"BENCH-{n:09d}", "effective": day, **line}


def _person_change(kind: str, idcs: str, households: list[str], rng: random.Random) -> Any:
    if kind == "started":
        return {"source": "CNSS", "type": "coverage.started", "idcs": idcs, "scheme": "AMO_TNS"}
    if kind == "ended":
        return {"source": "CNSS", "type": "coverage.ended", "idcs": idcs}
    if kind == "died":
        return {"source": "RNP", "type": "person.died", "idcs": idcs}
    if kind == "left":
        return {"source": "RSU", "type": "member.left", "idcs": idcs, "household_id": None}
    hid = rng.choice(households)
    return {"source": "RSU", "type": "member.joined", "idcs": idcs, "household_id": hid,
            "relationship": "OTHER_RELATIVE"}  # fmt: skip


def households_of(path: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT idcs, household_id FROM membership").fetchall())
    finally:
        db.close()


def measure(data_dir: Path, lines: int, households: int = HOUSEHOLDS) -> dict[str, Any]:
    """Apply `lines` synthetic changes to a copy of data_dir's registry (made if absent);
    the apply's seconds and lines per second, the file's making untimed."""
    source = data_dir / REGISTRY_FILE
    if not source.is_file():
        generate(data_dir, households, SEED)
    with tempfile.TemporaryDirectory(dir=data_dir) as work:
        registry = Path(work) / REGISTRY_FILE
        shutil.copyfile(source, registry)
        changes_file = Path(work) / "changes.ndjson"
        member_of = households_of(registry)
        with changes_file.open("w", encoding="utf-8") as out:
            for change in changes(registry, lines):
                if change["type"] == "member.left":
                    change["household_id"] = member_of[change["idcs"]]
                out.write(json.dumps(change) + "\n")
        started = time.perf_counter()
        with changes_file.open("rb") as stream:
            summary = apply_changes(registry, read_lines(stream))
        seconds = time.perf_counter() - started
    return {
        "lines": summary.lines,
        "journal_rows": sum(summary.applied.values()),
        "seconds": round(seconds, 2),
        "lines_per_second": round(summary.lines / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-apply"))
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    result = measure(args.data_dir, args.lines)
    print(
        f"registry apply: {result['lines']:,} lines ({result['journal_rows']:,} journal rows)"
        f" in {result['seconds']} s, {result['lines_per_second']:,} lines/s"
    )


if __name__ == "__main__":
    main()
