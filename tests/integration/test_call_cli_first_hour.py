"""`jisr call` as a newcomer meets it: it shows only what was disclosed, names withheld
fields in snake_case, prints every receipt (batches too), accepts `--receipt` where the
docs write it, and names the file and line of a bad batch input. Each test runs the real
`jisr` command against the session gateway."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import parser
from tests.support import processes, registry_rows


def jisr(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        input=stdin,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


@pytest.fixture
def call(gateway: processes.Proc, pki_dir: Path) -> list[str]:
    return ["call", "--target", gateway.target, "--pki-dir", str(pki_dir)]


@pytest.fixture
def household(registry_dir: Path) -> str:
    return registry_rows.one(registry_dir, "SELECT household_id FROM household ORDER BY 1")


@pytest.fixture
def living_declarant(registry_dir: Path) -> str:
    """A living person with every PersonStatus field set, death date aside."""
    return registry_rows.one(
        registry_dir,
        "SELECT p.idcs FROM person p JOIN membership m USING (idcs)"
        " WHERE m.relationship = 1 AND p.vital_status = 1 ORDER BY 1 LIMIT 1",
    )


def receipts_on_stderr(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("receipt verified")]


# --- 4: only what was disclosed, snake_case everywhere -------------------------------


def test_call_shows_no_field_the_grant_withheld(call: list[str], living_declarant: str) -> None:
    result = jisr(
        *call, "--institution", "CNSS", "--purpose", "AMO_ENROLMENT", "person", living_declarant
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["person"] == {"vital_status": "VITAL_STATUS_ALIVE"}


def test_call_lists_withheld_fields_as_snake_case_paths(call: list[str], household: str) -> None:
    result = jisr(*call, "--purpose", "RECERTIFICATION", "household", household)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["withheld"] == ["members.birth_date"]
    assert [m for m in answer["household"]["members"] if "birth_date" in m] == []


def test_call_batch_results_show_no_field_the_grant_withheld(
    call: list[str], household: str
) -> None:
    result = jisr(
        *call, "--institution", "CNSS", "--purpose", "AMO_ENROLMENT",
        "batch", "-", "--programme", "AMOT",
        stdin=f"{household}\n".encode(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert "score_band" not in json.loads(line)["decision"]


# --- 7: receipts of batches; --receipt before or after the method --------------------


def test_call_batch_prints_each_batch_receipt_then_the_closing_receipt(
    call: list[str], household: str
) -> None:
    result = jisr(
        *call, "--purpose", "RECERTIFICATION", "batch", "-", "--programme", "ASD",
        "--batch-size", "2",
        stdin=f"{household}\n{household}\n{household}\n".encode(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split(": decision ")[0] for line in receipts_on_stderr(result)] == [
        "receipt verified: batch 0 (lines 1-2)",
        "receipt verified: batch 1 (line 3)",
        "receipt verified: stream of 2 batches",
    ]


def test_call_batch_with_receipt_prints_jws_that_receipt_verify_accepts(
    call: list[str], household: str, pki_dir: Path, tmp_path: Path
) -> None:
    result = jisr(
        *call, "--purpose", "RECERTIFICATION", "batch", "-", "--programme", "ASD",
        "--batch-size", "1", "--receipt",
        stdin=f"{household}\n{household}\n".encode(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tokens = [line for line in result.stdout.splitlines() if not line.startswith("{")]
    assert len(tokens) == 3  # two batches, then the stream
    jwks = tmp_path / "jwks.json"
    jwks.write_text(jisr("keys", "--dir", str(pki_dir), "export").stdout)
    checked = [jisr("receipt", "verify", token, "--jwks", str(jwks)) for token in tokens]
    assert [(c.returncode, c.stderr) for c in checked] == [(0, "jisr receipt: valid\n")] * 3
    assert [json.loads(c.stdout).get("batches") for c in checked] == [None, None, 2]


@pytest.mark.parametrize("where", ["before", "after"])
def test_receipt_flag_is_accepted_before_or_after_the_method(
    call: list[str], living_declarant: str, where: str
) -> None:
    method = ["person", living_declarant]
    args = [*method, "--receipt"] if where == "after" else ["--receipt", *method]
    result = jisr(*call, "--purpose", "AMO_ENROLMENT", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n").rsplit("\n", 1)[-1].count(".") == 2


# --- 10: batch input errors name the file and line -----------------------------------


def test_call_batch_of_a_file_that_is_not_utf8_names_its_line_and_exits_2(
    call: list[str], household: str, tmp_path: Path
) -> None:
    subjects = tmp_path / "subjects.bin"
    subjects.write_bytes(f"{household}\n\n".encode() + b"\xff\xfe\x00\x01\n")
    result = jisr(
        *call, "--purpose", "RECERTIFICATION", "batch", str(subjects), "--programme", "ASD"
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"jisr call batch: {subjects}:3: not UTF-8 text\n"


@pytest.mark.parametrize("content", [b"", b"\n  \n\n"], ids=["empty", "blank-lines"])
def test_call_batch_of_input_without_a_subject_names_the_file_and_exits_2(
    call: list[str], tmp_path: Path, content: bytes
) -> None:
    subjects = tmp_path / "subjects.txt"
    subjects.write_bytes(content)
    result = jisr(
        *call, "--purpose", "RECERTIFICATION", "batch", str(subjects), "--programme", "ASD"
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"jisr call batch: {subjects}: no subject")


def test_call_batch_names_each_result_and_failed_subject_by_its_line(
    call: list[str], household: str, tmp_path: Path
) -> None:
    subjects = tmp_path / "subjects.txt"
    subjects.write_text(f"{household}\n\n12345\n")
    result = jisr(
        *call, "--purpose", "RECERTIFICATION", "batch", str(subjects), "--programme", "ASD"
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["line"] for line in result.stdout.splitlines()] == [1, 3]
    assert f"jisr call batch: {subjects}:3: INVALID_ARGUMENT INVALID_IDCS: " in result.stderr


# --- 12: help text -------------------------------------------------------------------


def _options_without_help(command: argparse.ArgumentParser, name: str) -> list[str]:
    missing = []
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{name} {sub_name}")
        elif not action.help:
            missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_and_argument_of_every_command_has_help_text() -> None:
    assert _options_without_help(parser(), "jisr") == []
