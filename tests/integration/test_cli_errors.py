"""The `jisr` command's other paths: refused arguments, `jisr call` variants against the
session gateway, consent errors at the counter, offline receipt checks, and the PKI and
programmes commands. Each runs `jisr` in this process (its `main`), as the shell would."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.sdk.client import Credentials
from tests.support import processes, registry_rows


class Run:
    """`jisr ARGS` with its exit code and what it printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        self.capsys.readouterr()
        self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def jisr(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    return Run(capsys, monkeypatch)


@pytest.fixture
def call(gateway: processes.Proc, pki_dir: Path) -> list[str]:
    return ["call", "--target", gateway.target, "--pki-dir", str(pki_dir)]


def first_household(registry_dir: Path) -> str:
    return registry_rows.one(registry_dir, "SELECT household_id FROM household ORDER BY 1")


# --- jisr call -----------------------------------------------------------------------


def test_call_household_prints_the_household_and_the_verified_receipt(
    jisr: Run, call: list[str], registry_dir: Path
) -> None:
    hid = first_household(registry_dir)
    code, out, err = jisr(*call, "--purpose", "ASD_ELIGIBILITY", "household", hid)
    assert code == 0, err
    assert json.loads(out)["household"]["household_id"] == hid
    assert err.startswith("receipt verified: decision permit, basis ")


def test_call_with_receipt_prints_a_jws_that_receipt_verify_accepts(
    jisr: Run, call: list[str], registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    hid = first_household(registry_dir)
    code, out, err = jisr(*call, "--receipt", "--purpose", "ASD_ELIGIBILITY", "household", hid)
    assert code == 0, err
    receipt = out.rstrip("\n").rsplit("\n", 1)[-1]
    assert receipt.count(".") == 2
    jwks = tmp_path / "jwks.json"
    _, exported, _ = jisr("keys", "--dir", str(pki_dir), "export")
    jwks.write_text(exported)
    code, out, err = jisr("receipt", "verify", "-", "--jwks", str(jwks), stdin=receipt + "\n")
    assert (code, err) == (0, "jisr receipt: valid\n")
    assert json.loads(out)["decision"] == "permit"


def test_call_with_a_bad_as_of_date_exits_2(jisr: Run, call: list[str]) -> None:
    code, _, err = jisr(
        *call, "--purpose", "AMO_ENROLMENT", "eligibility", "H1", "--programme", "ASD",
        "--as-of", "15/01/2027",
    )  # fmt: skip
    assert (code, err) == (2, "jisr call: --as-of: '15/01/2027' is not YYYY-MM-DD\n")


def test_call_as_an_institution_without_credentials_exits_2(jisr: Run, call: list[str]) -> None:
    code, _, err = jisr(
        *call, "--institution", "NOBODY", "--purpose", "AMO_ENROLMENT", "person", "1"
    )
    assert code == 2
    assert err.startswith("jisr call: credentials of NOBODY: ")


def test_call_eligibility_as_of_a_date_answers_for_that_date(
    jisr: Run, call: list[str], registry_dir: Path
) -> None:
    hid = first_household(registry_dir)
    code, out, err = jisr(
        *call, "--purpose", "AMO_ENROLMENT", "eligibility", hid, "--programme", "ASD",
        "--as-of", "2025-06-30",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["decision"]["as_of"] == {"year": 2025, "month": 6, "day": 30}


def test_call_batch_reads_subjects_from_a_file(
    jisr: Run, call: list[str], registry_dir: Path, tmp_path: Path
) -> None:
    hid = first_household(registry_dir)
    subjects = tmp_path / "subjects.txt"
    subjects.write_text(f"{hid}\n\n{hid}\n")
    code, out, err = jisr(
        *call, "--purpose", "RECERTIFICATION", "batch", str(subjects), "--programme", "AMOT"
    )
    assert code == 0, err
    assert [json.loads(line)["decision"]["programme"] for line in out.splitlines()] == [
        "AMOT",
        "AMOT",
    ]


# --- jisr consent --------------------------------------------------------------------


def test_consent_refused_prints_code_and_reason_and_exits_1(
    jisr: Run, gateway: processes.Proc, pki_dir: Path
) -> None:
    common = ["consent", "--target", gateway.target, "--pki-dir", str(pki_dir)]
    code, out, err = jisr(*common, "show", "C" + "e" * 24)
    assert (code, out) == (1, "")
    assert err.startswith("jisr consent: NOT_FOUND CONSENT_NOT_FOUND: ")


def test_consent_grant_with_a_use_cap_records_it(
    jisr: Run, gateway: processes.Proc, pki_dir: Path, registry_dir: Path
) -> None:
    hid, declarant = registry_rows.one(
        registry_dir,
        "SELECT household_id || ' ' || idcs FROM membership WHERE relationship = 1"
        " ORDER BY household_id DESC LIMIT 1 OFFSET 30",
    ).split()
    code, out, err = jisr(
        "consent", "--target", gateway.target, "--pki-dir", str(pki_dir),
        "grant", hid, "--grantor", declarant, "--grantee", "MEN",
        "--purposes", "SCHOOL_SUPPORT", "--scopes", "composition",
        "--max-uses", "3", "--period-days", "7", "--days", "2",
    )  # fmt: skip
    assert code == 0, err
    consent = json.loads(out)["consent"]
    assert consent["use_cap"] == {"max_uses": 3, "period_seconds": 7 * 86_400}
    assert consent["scopes"] == ["composition"]


# --- jisr receipt verify -------------------------------------------------------------


@pytest.fixture
def jwks_file(jisr: Run, pki_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(jisr("keys", "--dir", str(pki_dir), "export")[1])
    return path


def test_receipt_verify_refuses_text_that_is_no_jws(jisr: Run, jwks_file: Path) -> None:
    code, out, err = jisr("receipt", "verify", "not-a-receipt", "--jwks", str(jwks_file))
    assert (code, out) == (1, "")
    assert err.startswith("jisr receipt: INVALID: not a compact JWS")


def test_receipt_verify_refuses_a_jws_of_another_type(
    jisr: Run, jwks_file: Path, pki_dir: Path
) -> None:
    token = Credentials.from_pki(pki_dir, "ANSS").signer.request_token(
        "/jisr.v1.RegistryExchange/GetPersonStatus", "AMO_ENROLMENT", b"", jti="x"
    )
    code, _, err = jisr("receipt", "verify", token, "--jwks", str(jwks_file))
    assert code == 1
    assert err.startswith("jisr receipt: INVALID: typ is ")


def test_receipt_verify_refuses_a_receipt_signed_by_an_unpublished_key(
    jisr: Run, call: list[str], registry_dir: Path, tmp_path: Path
) -> None:
    hid = first_household(registry_dir)
    receipt = jisr(*call, "--receipt", "--purpose", "ASD_ELIGIBILITY", "household", hid)[1]
    other = tmp_path / "other"
    jisr("pki", "--dir", str(other), "init")
    jwks = tmp_path / "other.json"
    jwks.write_text(jisr("keys", "--dir", str(other), "export")[1])
    token = receipt.rstrip("\n").rsplit("\n", 1)[-1]
    code, _, err = jisr("receipt", "verify", token, "--jwks", str(jwks))
    assert (code, err) == (
        1,
        "jisr receipt: INVALID: signed by a key that is not in the gateway's JWKS\n",
    )


def test_receipt_verify_refuses_a_jwks_without_keys(jisr: Run, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"key": []}')
    code, _, err = jisr("receipt", "verify", "a.b.c", "--jwks", str(jwks))
    assert (code, err) == (1, "jisr: a JWKS needs a 'keys' array\n")


# --- jisr pki, programmes, demo-data, backend ----------------------------------------


def test_pki_init_issue_rotate_and_revoke_say_what_they_did(jisr: Run, tmp_path: Path) -> None:
    root = str(tmp_path / "pki")
    code, out, _ = jisr("pki", "--dir", root, "init")
    assert (code, out) == (0, f"jisr pki: CA, server certificate and receipt key in {root}\n")
    code, out, _ = jisr("pki", "--dir", root, "issue", "CNSS", "--alg", "EdDSA")
    assert code == 0
    assert out.startswith("jisr pki: CNSS: certificate ")
    first_kid = out.rsplit(" key ", 1)[1].strip()
    code, out, _ = jisr("pki", "--dir", root, "rotate", "CNSS")
    assert code == 0
    assert out.endswith("(old keys stay)\n")
    # As docs/pki.md writes it: `--` before a key id, which may start with "-" (1 in 64)
    code, out, _ = jisr("pki", "--dir", root, "revoke", "CNSS", "--", first_kid)
    assert (code, out) == (0, f"jisr pki: CNSS: key {first_kid} revoked (restart the gateway)\n")


def test_pki_revoke_of_an_unknown_key_exits_1(jisr: Run, tmp_path: Path) -> None:
    root = str(tmp_path / "pki")
    jisr("pki", "--dir", root, "init")
    jisr("pki", "--dir", root, "issue", "CNSS")
    code, out, err = jisr("pki", "--dir", root, "revoke", "CNSS", "no-such-kid")
    assert (code, out) == (1, "")
    assert err.startswith("jisr: ")
    assert "no-such-kid" in err


def test_pki_revoke_for_an_institution_never_issued_exits_1(jisr: Run, tmp_path: Path) -> None:
    root = str(tmp_path / "pki")
    jisr("pki", "--dir", root, "init")
    code, _, err = jisr("pki", "--dir", root, "revoke", "MEN", "k1")
    assert code == 1
    assert "no trusted keys for MEN (run `jisr pki issue MEN`)" in err


def test_programmes_check_lists_the_shipped_programmes(jisr: Run) -> None:
    code, out, _ = jisr("programmes", "check")
    lines = out.splitlines()
    assert code == 0
    assert {line.split(":")[0] for line in lines[:-1]} >= {"AMOT", "ASD"}
    assert lines[-1].endswith("programmes, valid")


def test_demo_data_needs_at_least_one_household(jisr: Run, tmp_path: Path) -> None:
    code, _, err = jisr("demo-data", "--households", "0", "--data-dir", str(tmp_path))
    assert (code, err) == (2, "jisr demo-data: --households must be at least 1\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("names", ["CNSS,NOPE", " , "])
def test_backend_for_unknown_institutions_exits_2(jisr: Run, tmp_path: Path, names: str) -> None:
    code, _, err = jisr("backend", "serve", "--institutions", names, "--data-dir", str(tmp_path))
    assert code == 2
    assert err.startswith("jisr backend: --institutions: unknown ")
