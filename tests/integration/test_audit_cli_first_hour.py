"""`jisr audit` as a new DPO first types it: a mistyped directory or bundle path is an
error naming it (exit 2), never an empty trail that verifies or a trail reported ALTERED;
reading commands create nothing; a prune deletes only when confirmed; every bad flag value
is one line naming the flag, exit 2. Each test runs the real `jisr` as a subprocess."""

from __future__ import annotations

import argparse
import os
import pty
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.audit import chain
from gateway.audit.record import GENESIS, AuditRecord, Checkpoint, link
from gateway.audit.store import open_audit_store
from gateway.cli import main as cli
from gateway.security import pki
from tests.support import databases

DAY_US = 86_400 * 1_000_000
NODE = "host-w0"


def jisr(
    *args: str, env: dict[str, str] | None = None, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """`jisr ARGS`, stdin not a terminal unless a pty is given."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        stdin=stdin,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def on_a_terminal(*args: str, typed: str) -> subprocess.CompletedProcess[str]:
    """`jisr ARGS` with a terminal as stdin, on which `typed` is already waiting."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, typed.encode())
        return jisr(*args, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)


def draft(i: int, at_us: int) -> AuditRecord:
    return AuditRecord(
        node=NODE,
        seq=0,
        at_us=at_us,
        trace_id=f"{i:032x}",
        requester="CNSS",
        requester_sub="officer-7",
        method="/jisr.v1.RegistryExchange/GetHouseholdStatus",
        purpose="ASD_ELIGIBILITY",
        basis="loi-72-18-art-5",
        subjects=(f"{i:064x}",),
        fields=("composition",),
        decision="permit",
        reason="",
        rh=f"rh-{i}",
        sh=f"sh-{i}",
        jti=f"jti-{i}",
        part=0,
        latency_us=900,
    )


def write_trail(state_dir: Path, pki_dir: Path, url: str | None, ages_days: list[int]) -> None:
    """One chain, a record per age (oldest first), each followed by a signed checkpoint,
    as a gateway would have left it."""
    key, kid = pki.load_gateway_signing_key(pki_dir)
    now = int(time.time() * 1_000_000)
    store = open_audit_store(url, state_dir)
    try:
        prev = GENESIS
        for i, age in enumerate(ages_days):
            record = link(i, prev, draft(i + 1, now - age * DAY_US - (len(ages_days) - i)))
            store.append_batch([record])
            prev = record.hash
            checkpoint = Checkpoint(NODE, record.seq, record.hash, record.at_us)
            store.append_checkpoint(chain.sign_checkpoint(checkpoint, key, kid))
    finally:
        store.close()


def record_count(state_dir: Path) -> int:
    db = sqlite3.connect(f"{(state_dir / 'audit.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM audit_record").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def trail(tmp_path: Path, pki_dir: Path) -> Path:
    """A data directory holding a trail of 15 records: 10 from 40 days ago, 5 of today."""
    data_dir = tmp_path / "var"
    write_trail(data_dir, pki_dir, None, [40] * 10 + [0] * 5)
    return data_dir


def export_all(audit: list[str], data_dir: Path, out: Path) -> Path:
    """Export every record of the trail in `data_dir` (up to today) to `out`."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    exported = jisr(
        *audit, "--data-dir", str(data_dir), "export", "--from", "2000-01-01", "--to", today,
        "--out", str(out),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    return out


@pytest.fixture
def audit(pki_dir: Path) -> list[str]:
    return ["audit", "--pki-dir", str(pki_dir)]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with databases.postgres_schema() as url:
        yield url


# --- reading commands never create or migrate a store (point 2) -------------------------


def test_verify_of_a_directory_without_a_trail_exits_2_naming_the_missing_file(
    audit: list[str], tmp_path: Path
) -> None:
    result = jisr(*audit, "--data-dir", str(tmp_path / "typo"), "verify")
    assert result.returncode == 2, result.stdout
    missing = tmp_path / "typo" / "audit.sqlite"
    assert result.stderr == f"jisr audit verify: no audit trail at {missing}: no such file\n"


def test_verify_of_a_directory_without_a_trail_creates_nothing(
    audit: list[str], tmp_path: Path
) -> None:
    jisr(*audit, "--data-dir", str(tmp_path / "typo"), "verify")
    assert not (tmp_path / "typo").exists()


def test_export_of_a_directory_without_a_trail_exits_2_and_creates_nothing(
    audit: list[str], tmp_path: Path
) -> None:
    result = jisr(
        *audit, "--data-dir", str(tmp_path / "typo"), "export",
        "--from", "2026-12-01", "--to", "2026-12-05", "--out", str(tmp_path / "bundle"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("jisr audit export: no audit trail at ")
    assert not (tmp_path / "typo").exists()
    assert not (tmp_path / "bundle").exists()


def test_verify_of_a_database_file_without_audit_tables_exits_2_and_adds_none(
    audit: list[str], tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "audit.sqlite")
    other.execute("CREATE TABLE unrelated (x)")
    other.close()
    result = jisr(*audit, "--data-dir", str(tmp_path), "verify")
    assert result.returncode == 2
    assert result.stderr.endswith("audit.sqlite: the file holds no audit tables\n")
    db = sqlite3.connect(tmp_path / "audit.sqlite")
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    db.close()
    assert tables == ["unrelated"]


def test_verify_of_an_existing_trail_reads_it_and_prints_valid(
    audit: list[str], trail: Path
) -> None:
    result = jisr(*audit, "--data-dir", str(trail), "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(
        f"jisr audit: audit store {trail / 'audit.sqlite'}: VALID — 15 records in 1 chains,"
    )


def test_verify_of_a_postgres_schema_without_audit_tables_exits_2_and_creates_none(
    audit: list[str], postgres_url: str
) -> None:
    result = jisr(*audit, "verify", env={"JISR_DATABASE_URL": postgres_url})
    assert result.returncode == 2
    assert result.stderr.startswith("jisr audit verify: no audit trail at ")
    assert result.stderr.endswith(": no audit tables\n")
    with psycopg.connect(postgres_url, autocommit=True) as pg:
        row = pg.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        assert row.fetchone() == (0,)


def test_verify_of_a_postgres_trail_prints_valid(
    audit: list[str], pki_dir: Path, tmp_path: Path, postgres_url: str
) -> None:
    write_trail(tmp_path, pki_dir, postgres_url, [0] * 3)
    result = jisr(*audit, "verify", env={"JISR_DATABASE_URL": postgres_url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALID — 3 records in 1 chains" in result.stdout


# --- verify's exit codes: 0 valid, 1 altered, 2 nothing verified (point 3) --------------


def test_verify_of_a_mistyped_bundle_path_exits_2_naming_it(
    audit: list[str], tmp_path: Path
) -> None:
    result = jisr(*audit, "verify", str(tmp_path / "evidnce-2026-11"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"jisr audit verify: {tmp_path / 'evidnce-2026-11'}: no such bundle directory\n"
    )


def test_verify_of_a_directory_without_a_manifest_exits_2(audit: list[str], tmp_path: Path) -> None:
    result = jisr(*audit, "verify", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.endswith(": not a bundle: it holds no manifest.json\n")


def test_verify_of_an_archive_file_exits_2_saying_to_unpack_it(
    audit: list[str], tmp_path: Path
) -> None:
    archive = tmp_path / "evidence.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    result = jisr(*audit, "verify", str(archive))
    assert result.returncode == 2
    assert result.stderr == (
        f"jisr audit verify: {archive}: not a bundle directory (unpack an archived bundle first)\n"
    )


def test_verify_with_a_missing_jwks_file_exits_2_naming_the_flag(
    audit: list[str], trail: Path, tmp_path: Path
) -> None:
    out = export_all(audit, trail, tmp_path / "evidence")
    result = jisr(*audit, "verify", str(out), "--jwks", str(tmp_path / "jwks.jsn"))
    assert result.returncode == 2
    assert result.stderr == f"jisr audit verify: --jwks: {tmp_path / 'jwks.jsn'}: no such file\n"


def test_verify_of_an_altered_bundle_exits_1(audit: list[str], trail: Path, tmp_path: Path) -> None:
    out = export_all(audit, trail, tmp_path / "evidence")
    records = out / "records.jsonl"
    records.write_text(records.read_text().replace("ASD_ELIGIBILITY", "FORGED", 1))
    result = jisr(*audit, "verify", str(out))
    assert result.returncode == 1
    assert "ALTERED" in result.stdout


def test_verify_help_lists_the_exit_codes(audit: list[str]) -> None:
    result = jisr(*audit, "verify", "--help")
    assert result.returncode == 0
    assert "exit status:\n  0  VALID" in result.stdout
    assert "\n  1  ALTERED" in result.stdout
    assert "\n  2  nothing verified" in result.stdout


# --- prune asks first and keeps a real retention period (point 9) -----------------------


@pytest.mark.parametrize("days", ["0", "-1", "1.5", "ten"])
def test_prune_refuses_a_period_that_is_not_a_whole_number_of_days_from_1(
    audit: list[str], trail: Path, days: str
) -> None:
    result = jisr(*audit, "--data-dir", str(trail), "prune", "--older-than-days", days, "--yes")
    assert result.returncode == 2
    assert result.stderr == (
        f"jisr audit prune: --older-than-days: {days!r} is not a whole number of days"
        " of at least 1\n"
    )
    assert record_count(trail) == 15


def test_prune_without_yes_and_without_a_terminal_refuses_and_deletes_nothing(
    audit: list[str], trail: Path
) -> None:
    result = jisr(*audit, "--data-dir", str(trail), "prune", "--older-than-days", "30")
    assert result.returncode == 2
    assert result.stderr == (
        "jisr audit prune: deleting audit records needs confirmation: pass --yes\n"
    )
    assert record_count(trail) == 15


def test_prune_with_yes_deletes_the_older_records_and_the_trail_still_verifies(
    audit: list[str], trail: Path
) -> None:
    result = jisr(*audit, "--data-dir", str(trail), "prune", "--older-than-days", "30", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jisr audit: pruned 10 records older than 30 days\n"
    verified = jisr(*audit, "--data-dir", str(trail), "verify")
    assert verified.returncode == 0, verified.stdout
    assert "VALID — 5 records in 1 chains" in verified.stdout


def test_prune_with_yes_on_postgres_deletes_the_older_records_and_the_trail_still_verifies(
    audit: list[str], pki_dir: Path, tmp_path: Path, postgres_url: str
) -> None:
    write_trail(tmp_path, pki_dir, postgres_url, [40] * 10 + [0] * 5)
    env = {"JISR_DATABASE_URL": postgres_url}
    result = jisr(*audit, "prune", "--older-than-days", "30", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jisr audit: pruned 10 records older than 30 days\n"
    verified = jisr(*audit, "verify", env=env)
    assert verified.returncode == 0, verified.stdout
    assert "VALID — 5 records in 1 chains" in verified.stdout


def test_prune_on_a_terminal_asks_and_an_answer_other_than_yes_deletes_nothing(
    audit: list[str], trail: Path
) -> None:
    result = on_a_terminal(
        *audit, "--data-dir", str(trail), "prune", "--older-than-days", "30", typed="\n"
    )
    assert result.returncode == 2
    assert "Delete every audit record older than 30 days" in result.stderr
    assert result.stderr.endswith("[y/N] jisr audit prune: not confirmed: nothing deleted\n")
    assert record_count(trail) == 15


def test_prune_on_a_terminal_deletes_once_the_user_types_y(audit: list[str], trail: Path) -> None:
    result = on_a_terminal(
        *audit, "--data-dir", str(trail), "prune", "--older-than-days", "30", typed="y\n"
    )
    assert result.returncode == 0, result.stderr
    assert "older than 30 days" in result.stderr
    assert "[y/N] " in result.stderr
    assert record_count(trail) == 5


def test_prune_of_a_directory_without_a_trail_exits_2_and_creates_nothing(
    audit: list[str], tmp_path: Path
) -> None:
    result = jisr(
        *audit, "--data-dir", str(tmp_path / "typo"), "prune", "--older-than-days", "30", "--yes"
    )
    assert result.returncode == 2
    assert result.stderr.startswith("jisr audit prune: no audit trail at ")
    assert not (tmp_path / "typo").exists()


# --- export checks its dates and range (point 9) ---------------------------------------


@pytest.mark.parametrize(("flag", "value"), [("--from", "yesterday"), ("--to", "01/12/2026")])
def test_export_refuses_a_date_that_is_not_yyyy_mm_dd_naming_the_flag(
    audit: list[str], trail: Path, tmp_path: Path, flag: str, value: str
) -> None:
    dates = {"--from": "2026-12-01", "--to": "2026-12-05", flag: value}
    result = jisr(
        *audit, "--data-dir", str(trail), "export", "--from", dates["--from"],
        "--to", dates["--to"], "--out", str(tmp_path / "bundle"),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        2,
        f"jisr audit export: {flag}: {value!r} is not a date (YYYY-MM-DD)\n",
    )


def test_export_refuses_from_after_to_naming_both_and_writes_nothing(
    audit: list[str], trail: Path, tmp_path: Path
) -> None:
    result = jisr(
        *audit, "--data-dir", str(trail), "export", "--from", "2026-12-05",
        "--to", "2026-12-01", "--out", str(tmp_path / "bundle"),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        2,
        "jisr audit export: --from 2026-12-05 is after --to 2026-12-01\n",
    )
    assert not (tmp_path / "bundle").exists()


def test_export_to_an_existing_directory_exits_2_naming_out(
    audit: list[str], trail: Path, tmp_path: Path
) -> None:
    result = jisr(
        *audit, "--data-dir", str(trail), "export", "--from", "2026-12-01",
        "--to", "2026-12-05", "--out", str(tmp_path),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        2,
        f"jisr audit export: --out: {tmp_path} already exists (name a new directory)\n",
    )


# --- help (point 12) ------------------------------------------------------------------


def _audit_parsers() -> Iterator[argparse.ArgumentParser]:
    top = cli.parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    audit = commands.choices["audit"]
    yield audit
    actions = next(a for a in audit._actions if isinstance(a, argparse._SubParsersAction))
    yield from actions.choices.values()


def test_every_option_of_the_audit_commands_has_help_text() -> None:
    undocumented = [
        f"{parser.prog} {action.dest}"
        for parser in _audit_parsers()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert undocumented == []
