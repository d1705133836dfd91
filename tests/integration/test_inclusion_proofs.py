"""A citizen's access report proves each entry (docs/audit-format.md §9): `jisr audit
report --proofs` from a running gateway, `jisr audit check-proof` offline against the
gateway's published keys, and against the observatory's countersignatures once it has
witnessed the trail. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.sdk.client import Credentials, JisrClient
from tests.support import databases, processes, registry_rows

pytestmark = pytest.mark.integration

PURPOSE = "ASD_ELIGIBILITY"
WAIT_S = 30.0


@dataclass
class Site:
    """A gateway that served ANSS's checks of `household` among others'."""

    proc: processes.Proc
    env: dict[str, str]
    pki_dir: Path
    household: str
    folder: Path

    def jisr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, **self.env},
        )

    def report(self, proofs: Path) -> subprocess.CompletedProcess[str]:
        return self.jisr(
            "audit", "--pki-dir", str(self.pki_dir), "report", self.household,
            "--target", self.proc.target, "--proofs", str(proofs),
        )  # fmt: skip

    def check(self, proofs: Path, *witness: str) -> subprocess.CompletedProcess[str]:
        keys = self.folder / "gateway.jwks.json"
        if not keys.exists():
            keys.write_text(self.jisr("keys", "--dir", str(self.pki_dir), "export").stdout)
        return self.jisr("audit", "check-proof", str(proofs), "--jwks", str(keys), *witness)


@pytest.fixture(params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> Iterator[Site]:
    hids = [h.household_id for h in registry_rows.households(registry_dir, 12)]
    database = databases.postgres_schema() if request.param == "postgresql" else nullcontext()
    with database as url:
        env = {
            "JISR_STATE_DIR": str(tmp_path / "state"),
            "JISR_PKI_DIR": str(pki_dir),
            "JISR_AUDIT_CHECKPOINT_EVERY": "4",
            "JISR_AUDIT_CHECKPOINT_SECONDS": "0.2",
        }
        if url:
            env["JISR_DATABASE_URL"] = url
        args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
        proc = processes.start(
            [*args, "--pki-dir", str(pki_dir)], tmp_path / "gateway.log", env=env
        )
        try:
            with JisrClient(proc.target, Credentials.from_pki(pki_dir, "ANSS")) as anss:
                list(anss.verify_batches(PURPOSE, "ASD", [[hids[1], hids[0]]]))  # one record
                for hid in [hids[0], *hids, hids[0]]:
                    anss.verify(PURPOSE, hid, "ASD")
            yield Site(proc, env, pki_dir, hids[0], tmp_path)
        finally:
            proc.stop()


def _proved(site: Site, path: Path) -> list[dict[str, object]]:
    """The report's proofs once a checkpoint seals ANSS's three checks of the household
    (and so its batch before them)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        done = site.report(path)
        assert done.returncode == 0, done.stderr
        proofs: list[dict[str, object]] = json.loads(path.read_text())["proofs"]
        if sum(p["record"]["requester"] == "ANSS" for p in proofs) >= 3:  # type: ignore[index]
            return proofs
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.3)


def test_each_entry_of_a_report_proves_it_is_in_the_signed_trail(
    site: Site, tmp_path: Path
) -> None:
    proofs = _proved(site, tmp_path / "proofs.json")
    checked = site.check(tmp_path / "proofs.json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("included in checkpoint") == len(proofs)
    assert f"{len(proofs)} of {len(proofs)} proof(s) hold" in checked.stdout


def test_a_proof_names_no_other_subject_of_the_trail(site: Site, tmp_path: Path) -> None:
    proofs = _proved(site, tmp_path / "proofs.json")
    text = (tmp_path / "proofs.json").read_text()
    assert site.household not in text  # subjects are keyed hashes
    assert all(len(p["record"]["subjects"]) == 1 for p in proofs)  # type: ignore[index]


def test_an_entry_about_other_persons_too_comes_without_a_proof(site: Site, tmp_path: Path) -> None:
    proofs = _proved(site, tmp_path / "proofs.json")
    listed = site.report(tmp_path / "again.json")
    listing = site.jisr(
        "audit", "--pki-dir", str(site.pki_dir), "report", site.household,
        "--target", site.proc.target, "--json",
    )  # fmt: skip
    entries = [json.loads(line) for line in listing.stdout.splitlines()]
    records = [p["record"] for p in proofs]
    proved = {f"{r['node']}:{r['seq']}" for r in records}  # type: ignore[index]
    anss = [e for e in entries if e["institution"] == "ANSS"]
    unproved = [e for e in anss if e["record_id"] not in proved]
    assert (len(anss), len(unproved)) == (4, 1)  # the batch, sealed since the checks after it
    assert "about other persons too" in listed.stderr


def test_an_entry_altered_after_the_report_does_not_hold(site: Site, tmp_path: Path) -> None:
    path = tmp_path / "proofs.json"
    proofs = _proved(site, path)
    proofs[0]["record"]["purpose"] = "SOMETHING_ELSE"  # type: ignore[index]
    path.write_text(json.dumps({"proofs": proofs}))
    checked = site.check(path)
    assert checked.returncode == 1
    assert "DOES NOT HOLD" in checked.stdout
    assert "was altered" in checked.stdout


def test_a_proofs_file_that_is_not_json_is_refused_naming_it(site: Site, tmp_path: Path) -> None:
    path = tmp_path / "proofs.json"
    path.write_text("{not json")
    checked = site.check(path)
    assert checked.returncode == 2
    assert f"PROOFS: {path}: not readable as JSON" in checked.stderr
    path.write_text("[" * 100_000 + "]" * 100_000)
    deep = site.check(path)
    assert deep.returncode == 2
    assert f"PROOFS: {path}: nested too deeply to be read" in deep.stderr


def test_proofs_hold_against_the_observatory_once_it_witnessed_the_trail(
    site: Site, tmp_path: Path
) -> None:
    path = tmp_path / "proofs.json"
    _proved(site, path)
    ondh = str(site.pki_dir / "trust" / "ONDH.jwks.json")
    log = tmp_path / "ondh-witness.jsonl"
    log.touch()
    unwitnessed = site.check(path, "--witness-log", str(log), "--witness-jwks", ondh)
    assert unwitnessed.returncode == 1
    assert "NOT WITNESSED" in unwitnessed.stdout
    today = time.strftime("%Y-%m-%d", time.gmtime())
    bundle = tmp_path / "bundle"
    exported = site.jisr("audit", "export", "--from", today, "--to", today, "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    keys = site.folder / "gateway.jwks.json"
    site.check(path)  # writes the gateway's keys
    witnessed = site.jisr(
        "audit", "--pki-dir", str(site.pki_dir), "witness", str(bundle), "--jwks", str(keys),
        "--log", str(log),
    )  # fmt: skip
    assert witnessed.returncode == 0, witnessed.stdout + witnessed.stderr
    checked = site.check(path, "--witness-log", str(log), "--witness-jwks", ondh)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "countersigned by ONDH" in checked.stdout
