"""`jisr audit witness` and `jisr audit verify --witness-log`, as the observatory runs them
on an exported bundle with its own credentials (docs/audit-format.md, "Witnessed
checkpoints")."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gateway.audit.bundle import write_bundle
from tests.support import processes
from tests.unit.test_audit_chain import JWKS, build, signed
from tests.unit.test_audit_witness import _rewritten, _trail

pytestmark = pytest.mark.integration


def _jisr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        processes.jisr(*args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=processes.environment(),
    )


def _bundles(folder: Path) -> tuple[Path, Path, Path]:
    """(the bundle, the same trail rewritten and re-signed by the gateway's key, the
    gateway's keys)."""
    records, checkpoints = _trail()
    keys = folder / "gateway.jwks.json"
    keys.write_text(json.dumps(JWKS), encoding="utf-8")
    meta = {"from": "2027-01-15", "to": "2027-01-15"}
    write_bundle(folder / "bundle", iter(records), checkpoints, JWKS, meta)
    again, resigned = _rewritten(records)
    write_bundle(folder / "rewritten", iter(again), resigned, JWKS, meta)
    return folder / "bundle", folder / "rewritten", keys


def _witness(
    pki_dir: Path, bundle: Path, keys: Path, log: Path
) -> subprocess.CompletedProcess[str]:
    return _jisr(
        "audit", "--pki-dir", str(pki_dir), "witness", str(bundle), "--jwks", str(keys),
        "--log", str(log),
    )  # fmt: skip


def _verify(bundle: Path, keys: Path, log: Path, pki_dir: Path) -> subprocess.CompletedProcess[str]:
    ondh = pki_dir / "trust" / "ONDH.jwks.json"
    return _jisr(
        "audit", "verify", str(bundle), "--jwks", str(keys), "--witness-log", str(log),
        "--witness-jwks", str(ondh),
    )  # fmt: skip


def test_the_observatory_countersigns_a_verified_bundle_once(pki_dir: Path, tmp_path: Path) -> None:
    bundle, _, keys = _bundles(tmp_path)
    log = tmp_path / "witness.jsonl"
    first = _witness(pki_dir, bundle, keys, log)
    assert first.returncode == 0, first.stderr
    assert "2 checkpoint(s) countersigned by ONDH" in first.stdout
    again = _witness(pki_dir, bundle, keys, log)
    assert "0 checkpoint(s) countersigned by ONDH" in again.stdout
    assert "(2 already witnessed)" in again.stdout
    assert len(log.read_text(encoding="utf-8").splitlines()) == 2


def test_a_bundle_agreeing_with_its_witness_is_valid(pki_dir: Path, tmp_path: Path) -> None:
    bundle, _, keys = _bundles(tmp_path)
    log = tmp_path / "witness.jsonl"
    assert _witness(pki_dir, bundle, keys, log).returncode == 0
    done = _verify(bundle, keys, log, pki_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VALID" in done.stdout


def test_a_rewritten_history_fails_against_the_witnessed_checkpoints(
    pki_dir: Path, tmp_path: Path
) -> None:
    bundle, rewritten, keys = _bundles(tmp_path)
    log = tmp_path / "witness.jsonl"
    assert _witness(pki_dir, bundle, keys, log).returncode == 0
    done = _verify(rewritten, keys, log, pki_dir)
    assert done.returncode == 1
    assert "ALTERED" in done.stdout
    assert "witness: record a:10: the chain here is not the one the witness ONDH" in done.stdout
    refused = _witness(pki_dir, rewritten, keys, log)
    assert refused.returncode == 1
    assert "a:10: the chain here is not the one the witness ONDH countersigned" in refused.stderr
    assert "a:10: the gateway now signs another hash" in refused.stderr


def test_a_rewritten_slice_anchored_on_a_re_signed_checkpoint_fails_too(
    pki_dir: Path, tmp_path: Path
) -> None:
    bundle, _, keys = _bundles(tmp_path)
    log = tmp_path / "witness.jsonl"
    assert _witness(pki_dir, bundle, keys, log).returncode == 0
    records, _ = _trail()
    again, resigned = _rewritten(records)
    meta = {"from": "2027-01-15", "to": "2027-01-15"}
    write_bundle(tmp_path / "slice", iter(again[10:]), resigned, JWKS, meta)
    done = _verify(tmp_path / "slice", keys, log, pki_dir)
    assert done.returncode == 1
    assert "witness: record a:10: the gateway now signs another hash" in done.stdout


def test_a_bundle_the_witness_never_saw_is_not_vouched_for(pki_dir: Path, tmp_path: Path) -> None:
    bundle, _, keys = _bundles(tmp_path)
    log = tmp_path / "witness.jsonl"
    assert _witness(pki_dir, bundle, keys, log).returncode == 0
    other = build("b", 5)
    meta = {"from": "2027-01-15", "to": "2027-01-15"}
    write_bundle(tmp_path / "other", iter(other), [signed(other, 5)], JWKS, meta)
    done = _verify(tmp_path / "other", keys, log, pki_dir)
    assert done.returncode == 1
    assert "the witness vouches for none of it" in done.stdout
