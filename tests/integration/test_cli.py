"""The `jisr` command as an operator at a counter uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import processes, registry_rows


def jisr(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def test_call_eligibility_prints_the_decision_as_json(
    gateway: processes.Proc, registry_dir: Path, pki_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household ORDER BY score")
    result = jisr(
        "call",
        "--target",
        gateway.target,
        "--pki-dir",
        str(pki_dir),
        "--purpose",
        "AMO_ENROLMENT",
        "eligibility",
        hid,
        "--programme",
        "ASD",
    )
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)["decision"]
    assert decision["eligible"] is True
    assert decision["reasons"] == ["REASON_CODE_SCORE_BELOW_THRESHOLD"]


def test_call_error_prints_code_and_reason_and_exits_1(
    gateway: processes.Proc, pki_dir: Path
) -> None:
    result = jisr(
        "call",
        "--target",
        gateway.target,
        "--pki-dir",
        str(pki_dir),
        "--purpose",
        "AMO_ENROLMENT",
        "person",
        "1234567890",
    )
    assert result.returncode == 1
    assert "INVALID_ARGUMENT INVALID_IDCS" in result.stderr


def test_call_batch_reads_subjects_from_stdin_one_result_per_line(
    gateway: processes.Proc, registry_dir: Path, pki_dir: Path
) -> None:
    hid = registry_rows.one(registry_dir, "SELECT household_id FROM household LIMIT 1")
    result = jisr(
        "call",
        "--target",
        gateway.target,
        "--pki-dir",
        str(pki_dir),
        "--purpose",
        "RECERTIFICATION",
        "batch",
        "-",
        "--programme",
        "ASD",
        "--batch-size",
        "2",
        stdin=f"{hid}\n12\n{hid}\n",
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert ["decision" in line for line in lines] == [True, False, True]


def test_demo_data_shows_progress_and_a_summary(tmp_path: Path) -> None:
    result = jisr("demo-data", "--households", "300", "--seed", "2", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "households (99%)" in result.stderr
    assert "SYNTHETIC registry" in result.stdout
    again = jisr("demo-data", "--households", "300", "--data-dir", str(tmp_path))
    assert again.returncode == 1
    assert "registry.sqlite" in again.stderr


def test_programmes_check_names_the_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "programmes.toml"
    bad.write_text('[[score_band]]\ncode = "A"\nbelow = "x"\n[[score_band]]\ncode = "B"\n')
    result = jisr("programmes", "check", str(bad))
    assert result.returncode == 2
    assert f"{bad}: score_band[0].below: must be a finite number" in result.stderr


def test_serve_without_a_registry_explains_how_to_make_one(tmp_path: Path, pki_dir: Path) -> None:
    result = jisr(
        "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--pki-dir", str(pki_dir)
    )
    assert result.returncode == 2
    assert "jisr demo-data" in result.stderr


def test_samples_prints_a_subject_of_each_kind(registry_dir: Path) -> None:
    result = jisr("samples", "--data-dir", str(registry_dir))
    assert result.returncode == 0, result.stderr
    kinds = [line.split()[0] for line in result.stdout.splitlines()]
    assert kinds == ["amot-eligible", "above-thresholds", "declarant", "deceased", "unregistered"]
    assert "(none" not in result.stdout


def test_sample_of_one_kind_prints_only_its_value(
    gateway: processes.Proc, registry_dir: Path, pki_dir: Path
) -> None:
    result = jisr("samples", "--data-dir", str(registry_dir), "--kind", "amot-eligible")
    household = result.stdout.strip()
    decision = jisr(
        "call",
        "--target",
        gateway.target,
        "--pki-dir",
        str(pki_dir),
        "--purpose",
        "AMO_ENROLMENT",
        "eligibility",
        household,
        "--programme",
        "AMOT",
    )
    assert json.loads(decision.stdout)["decision"]["eligible"] is True


def test_consent_grant_list_show_and_revoke_at_the_counter(
    gateway: processes.Proc, registry_dir: Path, pki_dir: Path
) -> None:
    hid, declarant = registry_rows.one(
        registry_dir,
        "SELECT household_id || ' ' || idcs FROM membership WHERE relationship = 1"
        " ORDER BY household_id DESC LIMIT 1",
    ).split()
    common = ["consent", "--target", gateway.target, "--pki-dir", str(pki_dir)]
    granted = jisr(
        *common,
        "grant",
        hid,
        "--grantor",
        declarant,
        "--grantee",
        "MEN",
        "--purposes",
        "SCHOOL_SUPPORT",
        "--scopes",
        "composition,situation",
    )
    assert granted.returncode == 0, granted.stderr
    consent_id = json.loads(granted.stdout)["consent"]["consent_id"]
    listed = json.loads(jisr(*common, "list", hid).stdout)
    assert [c["consent_id"] for c in listed["consents"]] == [consent_id]
    revoked = jisr(*common, "revoke", consent_id, "--grantor", declarant)
    assert json.loads(revoked.stdout)["consent"]["status"] == "CONSENT_STATUS_REVOKED"
    shown = json.loads(jisr(*common, "show", consent_id, "--history").stdout)
    assert (len(shown["history"]), shown["history_verified"]) == (2, True)
