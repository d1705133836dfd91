"""A month of demo changes applied by the real commands, each in its own process, as
docs/events.md ("A month of demo changes") runs them: `jisr demo-data` makes a registry,
`jisr demo-data --changes` a month of changes for it, `jisr registry apply` applies every
line (and, given the file again, skips every line); the next month follows the first."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

from tests.support import processes

HOUSEHOLDS = 1_500
# `  RNP  person.died      17`: one row of the apply's summary per source and type.
ROW = re.compile(r"^\s+(RNP|RSU|CNSS)\s+(\S+)\s+([0-9,]+)$", re.MULTILINE)


def jisr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        processes.jisr(*args),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=processes.environment(),
    )


def journaled(summary: str) -> Counter[str]:
    """Events journaled per type (all sources), from the apply's summary rows."""
    found: Counter[str] = Counter()
    for _, type_, count in ROW.findall(summary):
        found[type_] += int(count.replace(",", ""))
    return found


def written(file: Path) -> Counter[str]:
    lines = file.read_text(encoding="utf-8").splitlines()
    return Counter(json.loads(line)["type"] for line in lines)


def test_a_month_of_demo_changes_applies_whole_then_is_skipped_whole(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    made = jisr("demo-data", "--households", str(HOUSEHOLDS), "--seed", "3", "--data-dir", data)
    assert made.returncode == 0, made.stderr
    file = tmp_path / "changes.ndjson"
    month = jisr("demo-data", "--changes", str(file), "--month", "2026-11", "--data-dir", data)
    assert month.returncode == 0, month.stderr
    types = written(file)
    lines = sum(types.values())
    assert f"SYNTHETIC changes for 2026-11 written to {file}: {lines:,} lines" in month.stdout

    applied = jisr("registry", "apply", str(file), "--data-dir", data)
    assert applied.returncode == 0, applied.stderr
    assert f"{lines:,} lines, " in applied.stdout
    assert " 0 skipped" in applied.stdout
    memberships = types["member.joined"] + types["member.left"]
    assert journaled(applied.stdout) == types + Counter(
        {"household.composition_changed": memberships}
    )

    again = jisr("registry", "apply", str(file), "--data-dir", data)
    assert again.returncode == 0, again.stderr
    assert f"{lines:,} lines, 0 events journaled, {lines:,} skipped" in again.stdout


def test_the_next_month_follows_an_applied_one_corrections_included(tmp_path: Path) -> None:
    """The default month is the one after the registry's latest change; a busy month
    (--count) has corrections of deaths and rescorings, which the applier accepts."""
    data = str(tmp_path / "data")
    assert jisr("demo-data", "--households", "300", "--data-dir", data).returncode == 0
    for month, asked in (("2026-11", ["--month", "2026-11"]), ("2026-12", [])):
        file = tmp_path / f"{month}.ndjson"
        made = jisr(
            "demo-data", "--changes", str(file), *asked, "--count", "4000", "--data-dir", data
        )
        assert made.returncode == 0, made.stderr
        assert f"SYNTHETIC changes for {month} " in made.stdout
        types = written(file)
        assert types["correction"] > 0
        applied = jisr("registry", "apply", str(file), "--data-dir", data)
        assert applied.returncode == 0, applied.stderr
        assert journaled(applied.stdout)["correction"] == types["correction"]
