"""`jisr registry apply` as an operator runs it: the real command in its own process (exit
status, FILE:LINE: MEMBER: messages that never show a value, progress and summary), and a
running gateway that answers with a change applied while it serves."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.demo_data import generate
from gateway.pb.jisr.v1.records_pb2 import VitalStatus
from gateway.sdk.client import Credentials, JisrClient
from tests.support import processes, registry_rows

PURPOSE = "AMO_ENROLMENT"


def jisr(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        input=stdin,
        timeout=120,
        check=False,
        env=processes.environment(),
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    generate(tmp_path / "data", 30, 4)
    return tmp_path / "data"


def living(data_dir: Path) -> str:
    return registry_rows.one(
        data_dir,
        "SELECT p.idcs FROM person p JOIN membership m USING (idcs)"
        " WHERE p.vital_status = 1 ORDER BY p.idcs LIMIT 1",
    )


def died(idcs: str, event_id: str = "RNP-2026-11-000001") -> dict[str, Any]:
    return {
        "id": event_id,
        "source": "RNP",
        "type": "person.died",
        "effective": "2026-11-03",
        "idcs": idcs,
    }


def write(path: Path, *lines: dict[str, Any] | str) -> Path:
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("".join(f"{line}\n" for line in text), encoding="utf-8")
    return path


def apply(data_dir: Path, file: Path | str, stdin: bytes | None = None) -> Any:
    return jisr("registry", "apply", str(file), "--data-dir", str(data_dir), stdin=stdin)


def test_a_valid_file_is_applied_with_a_summary(data_dir: Path, tmp_path: Path) -> None:
    changes = write(tmp_path / "changes.ndjson", died(living(data_dir)))
    result = apply(data_dir, changes)
    assert result.returncode == 0, result.stderr
    assert f"{changes}: 1 lines, 1 events journaled, 0 skipped" in result.stdout
    assert "RNP  person.died" in result.stdout


def test_a_file_applied_twice_is_skipped_the_second_time(data_dir: Path, tmp_path: Path) -> None:
    changes = write(tmp_path / "changes.ndjson", died(living(data_dir)))
    apply(data_dir, changes)
    again = apply(data_dir, changes)
    assert again.returncode == 0, again.stderr
    assert "0 events journaled, 1 skipped (already applied)" in again.stdout


def test_a_wrong_file_exits_1_naming_file_line_and_member_never_the_value(
    data_dir: Path, tmp_path: Path
) -> None:
    idcs = living(data_dir)
    bad_check = idcs[:9] + str((int(idcs[9]) + 1) % 10)
    changes = write(
        tmp_path / "changes.ndjson",
        died(idcs, "RNP-1"),
        died(idcs, "RNP-2"),
        died(bad_check, "RNP-3"),
    )
    result = apply(data_dir, changes)
    assert result.returncode == 1
    assert f"{changes}:2: idcs: the person is deceased" in result.stderr
    assert f"{changes}:3: idcs: check digit does not match" in result.stderr
    assert "2 wrong line(s) of 3; nothing applied" in result.stderr
    assert idcs not in result.stderr + result.stdout
    assert bad_check not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    status = f"SELECT vital_status FROM person WHERE idcs = '{idcs}'"
    assert registry_rows.one(data_dir, status) == str(VitalStatus.VITAL_STATUS_ALIVE)


def test_past_20_wrong_lines_the_rest_are_counted(data_dir: Path, tmp_path: Path) -> None:
    changes = write(tmp_path / "changes.ndjson", *["{}"] * 25)
    result = apply(data_dir, changes)
    assert result.returncode == 1
    assert result.stderr.count(": type: missing") == 20
    assert f"{changes}: ... and 5 more wrong lines" in result.stderr


def test_a_missing_file_exits_2_in_one_line(data_dir: Path, tmp_path: Path) -> None:
    result = apply(data_dir, tmp_path / "nowhere.ndjson")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"jisr registry apply: {tmp_path / 'nowhere.ndjson'}: No such file or directory"
    ]


def test_a_missing_registry_exits_2_in_one_line(tmp_path: Path) -> None:
    changes = write(tmp_path / "changes.ndjson", "{}")
    result = apply(tmp_path / "empty", changes)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert str(tmp_path / "empty" / "registry.sqlite") in line
    assert "jisr demo-data" in line


def test_a_dash_reads_the_changes_from_stdin(data_dir: Path) -> None:
    result = apply(data_dir, "-", stdin=(json.dumps(died(living(data_dir))) + "\n").encode())
    assert result.returncode == 0, result.stderr
    assert "<stdin>: 1 lines, 1 events journaled" in result.stdout


def test_progress_goes_to_stderr_every_100000_lines(data_dir: Path, tmp_path: Path) -> None:
    changes = write(tmp_path / "changes.ndjson", *[""] * 200_000, died(living(data_dir)))
    result = apply(data_dir, changes)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "jisr registry apply: 100,000 lines checked",
        "jisr registry apply: 200,000 lines checked",
    ]


# --- a running gateway ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Path]:
    """A registry of its own, served by `jisr serve` (mTLS, every institution embedded)."""
    data_dir = tmp_path_factory.mktemp("applied-registry")
    generate(data_dir, 30, 6)
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
    proc = processes.start([*args, "--pki-dir", str(pki_dir)], data_dir / "gateway.log")
    try:
        (data_dir / "target").write_text(proc.target)
        yield data_dir
    finally:
        proc.stop()


@contextmanager
def _reading(data_dir: Path) -> Iterator[None]:
    """Another reader in the middle of a read, as the gateway's threads often are: the
    apply's commit then stays in the WAL (it cannot be copied into the file under that
    reader), so only a reader that reads the WAL sees it, not one that ignores it."""
    db = registry_rows.connect(data_dir)
    try:
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM person").fetchone()
        yield
    finally:
        db.rollback()
        db.close()


def test_a_running_gateway_sees_a_death_applied_while_it_serves(
    served: Path, demo: Credentials, tmp_path: Path
) -> None:
    idcs = living(served)
    with (
        JisrClient((served / "target").read_text(), demo, timeout=30) as client,
        _reading(served),
    ):
        before = client.person_status(PURPOSE, idcs).message.person
        assert before.vital_status == VitalStatus.VITAL_STATUS_ALIVE
        result = apply(served, write(tmp_path / "death.ndjson", died(idcs)))
        assert result.returncode == 0, result.stderr
        after = client.person_status(PURPOSE, idcs).message.person
    assert after.vital_status == VitalStatus.VITAL_STATUS_DECEASED
    assert (after.death_date.year, after.death_date.month, after.death_date.day) == (2026, 11, 3)
