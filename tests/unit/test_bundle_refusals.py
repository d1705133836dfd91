"""What an offline verifier says about a bundle that is damaged, incomplete or not one at all,
and what reading one refuses; large and empty exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import bundle
from gateway.audit.bundle import (
    CHECKPOINTS,
    JWKS,
    MANIFEST,
    RECORDS,
    BundleError,
    checkpoint_from_json,
    read_bundle,
    record_from_json,
    verify_bundle,
    write_bundle,
)
from gateway.audit.chain import BUNDLE, MALFORMED
from tests.unit.test_audit_bundle import edit_line, reseal_manifest, trail
from tests.unit.test_audit_chain import JWKS as GATEWAY_JWKS
from tests.unit.test_audit_chain import build, signed


@pytest.fixture
def written(tmp_path: Path) -> Path:
    records, checkpoints = trail()
    path = tmp_path / "evidence"
    write_bundle(path, iter(records), checkpoints, GATEWAY_JWKS, {})
    return path


def file_findings(path: Path) -> list[tuple[str, str]]:
    """(where, detail) of each finding about the bundle's files, in order."""
    return [(f.where, f.detail) for f in verify_bundle(path).findings if f.kind == BUNDLE]


def edit_manifest(path: Path, edit: Any) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    edit(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def a_record() -> dict[str, Any]:
    records, _ = trail()
    line = json.loads(bundle._record_line(records[0]))
    assert isinstance(line, dict)
    return line


def a_checkpoint() -> dict[str, Any]:
    _, checkpoints = trail()
    line = json.loads(bundle._checkpoint_line(checkpoints[0]))
    assert isinstance(line, dict)
    return line


# --- one line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda r: r.pop("purpose"), "field 'purpose' is missing"),
        (lambda r: r.update(subjects=["a", 1]), "subjects must be an array of strings"),
        (lambda r: r.update(fields="composition"), "fields must be an array of strings"),
        (lambda r: r.update(at_us=1.5), "at_us must be an integer"),
        (lambda r: r.update(decision=None), "decision must be a string"),
        (lambda r: r.update(note="x", extra=1), "unknown field(s) 'extra', 'note'"),
    ],
)
def test_a_record_line_says_which_field_is_wrong(edit: Any, why: str) -> None:
    record = a_record()
    edit(record)
    with pytest.raises(ValueError, match=f"^{re.escape(why)}$"):
        record_from_json(record)


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        ([1], "not a JSON object"),
        ({"node": "a"}, "fields missing"),
    ],
)
def test_a_checkpoint_line_that_is_no_checkpoint_is_refused(obj: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        checkpoint_from_json(obj)


def test_a_checkpoint_line_with_an_unknown_field_names_it() -> None:
    with pytest.raises(ValueError, match=r"unknown \['note'\]"):
        checkpoint_from_json(a_checkpoint() | {"note": "x"})


@pytest.mark.parametrize(
    ("name", "value", "kind"), [("seq", "20", "an integer"), ("hash", 7, "a string")]
)
def test_a_checkpoint_line_with_a_wrongly_typed_field_names_it(
    name: str, value: Any, kind: str
) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be {kind}$"):
        checkpoint_from_json(a_checkpoint() | {name: value})


# --- reading -------------------------------------------------------------------------


def test_reading_a_manifest_that_is_not_json_names_it(written: Path) -> None:
    (written / MANIFEST).write_text("{")
    with pytest.raises(BundleError, match=r"^manifest\.json: not valid JSON"):
        read_bundle(written)


def test_reading_a_manifest_of_another_format_is_refused(written: Path) -> None:
    edit_manifest(written, lambda m: m.update(format="tarball"))
    with pytest.raises(BundleError, match=r"^manifest\.json: not a jisr-audit-bundle manifest$"):
        read_bundle(written)


def test_reading_a_jwks_without_keys_is_refused(written: Path) -> None:
    (written / JWKS).write_text('{"kids": []}')
    with pytest.raises(BundleError, match=r"^gateway\.jwks\.json: a JWKS needs a 'keys' array$"):
        read_bundle(written)


def test_reading_a_malformed_checkpoint_line_names_the_line(written: Path) -> None:
    edit_line(written / CHECKPOINTS, 2, lambda _: "{not json\n")
    with pytest.raises(BundleError, match=r"^checkpoints\.jsonl:2: not valid JSON"):
        read_bundle(written)


def test_reading_a_bundle_without_records_names_the_file(written: Path) -> None:
    (written / RECORDS).unlink()
    with pytest.raises(BundleError, match=r"^records\.jsonl: missing from the bundle$"):
        read_bundle(written)


# --- verifying: the manifest ---------------------------------------------------------


def test_a_manifest_that_is_not_json_is_a_finding(written: Path) -> None:
    (written / MANIFEST).write_text("not json")
    report = verify_bundle(written)
    assert not report.ok
    assert report.findings[0].where == MANIFEST
    assert report.findings[0].detail.startswith("manifest.json: not valid JSON")


def test_a_manifest_of_another_format_is_a_finding(written: Path) -> None:
    edit_manifest(written, lambda m: m.update(format="other"))
    assert file_findings(written) == [(MANIFEST, "manifest.json: not a jisr-audit-bundle manifest")]


def test_a_manifest_of_another_version_is_a_finding(written: Path) -> None:
    edit_manifest(written, lambda m: m.update(version=2))
    assert file_findings(written) == [(MANIFEST, "manifest.json: version 2 is not 1")]


def test_a_manifest_without_file_hashes_is_a_finding(written: Path) -> None:
    edit_manifest(written, lambda m: m.pop("files"))
    assert file_findings(written) == [(MANIFEST, "manifest.json: has no 'files' object")]


def test_a_manifest_missing_one_files_hash_names_it(written: Path) -> None:
    edit_manifest(written, lambda m: m["files"].pop(CHECKPOINTS))
    assert file_findings(written) == [
        (MANIFEST, "manifest.json: lists no SHA-256 for checkpoints.jsonl")
    ]


@pytest.mark.parametrize("name", ["../records.jsonl", ""])
def test_a_manifest_entry_naming_a_path_outside_the_bundle_is_a_finding(
    written: Path, name: str
) -> None:
    edit_manifest(written, lambda m: m["files"].update({name: {"sha256": "0" * 64}}))
    assert file_findings(written) == [(MANIFEST, f"manifest.json: files[{name!r}] is not valid")]


def test_a_manifest_entry_without_a_hash_is_a_finding(written: Path) -> None:
    edit_manifest(written, lambda m: m["files"].update({JWKS: {"md5": "x"}}))
    assert file_findings(written) == [
        (MANIFEST, "manifest.json: files['gateway.jwks.json'] is not valid"),
        (MANIFEST, "manifest.json: lists no SHA-256 for gateway.jwks.json"),
    ]


# --- verifying: the other files ------------------------------------------------------


def test_a_changed_checkpoints_file_is_named_as_altered(written: Path) -> None:
    with (written / CHECKPOINTS).open("a") as file:
        file.write("\n")
    findings = verify_bundle(written).findings
    assert findings[0].where == CHECKPOINTS
    assert findings[0].detail.startswith("checkpoints.jsonl: its SHA-256 is not the one")


def test_a_malformed_checkpoint_line_is_named_and_the_records_still_verified(
    written: Path,
) -> None:
    edit_line(written / CHECKPOINTS, 1, lambda _: '{"node": "a"}\n')
    reseal_manifest(written)
    report = verify_bundle(written)
    assert [(f.kind, f.where) for f in report.findings] == [(MALFORMED, "checkpoints.jsonl:1")]
    assert report.records == 42


def test_a_jwks_that_is_not_json_is_a_finding(written: Path) -> None:
    (written / JWKS).write_text("{")
    reseal_manifest(written)
    report = verify_bundle(written)
    assert report.findings[0].where == JWKS
    assert report.findings[0].detail.startswith("gateway.jwks.json: not valid JSON")


def test_a_jwks_without_keys_is_a_finding_and_no_checkpoint_verifies(written: Path) -> None:
    (written / JWKS).write_text("[]")
    reseal_manifest(written)
    findings = verify_bundle(written).findings
    assert (findings[0].where, findings[0].detail) == (
        JWKS,
        "gateway.jwks.json: a JWKS needs a 'keys' array",
    )
    assert len(findings) > 1  # the checkpoints signed by keys it does not hold


# --- verifying: record lines ---------------------------------------------------------


def test_an_empty_record_line_is_named(written: Path) -> None:
    edit_line(written / RECORDS, 42, lambda line: line + "\n")
    reseal_manifest(written)
    malformed = [f for f in verify_bundle(written).findings if f.kind == MALFORMED]
    assert [(f.where, f.detail) for f in malformed] == [
        ("records.jsonl:43", "records.jsonl:43: empty line")
    ]


def test_a_record_line_that_is_not_utf8_is_named(written: Path) -> None:
    raw = (written / RECORDS).read_bytes().splitlines(keepends=True)
    raw[5] = raw[5].replace(b'"CNSS"', b'"CN\xffSS"')
    (written / RECORDS).write_bytes(b"".join(raw))
    reseal_manifest(written)
    malformed = [f for f in verify_bundle(written).findings if f.kind == MALFORMED]
    assert [(f.where, f.detail) for f in malformed] == [
        ("records.jsonl:6", "records.jsonl:6: not UTF-8")
    ]


def test_a_record_line_missing_a_field_names_its_node_and_seq(written: Path) -> None:
    edit_line(written / RECORDS, 9, lambda line: line.replace('"part":0,', ""))
    reseal_manifest(written)
    malformed = [f for f in verify_bundle(written).findings if f.kind == MALFORMED]
    assert [(f.node, f.seq, f.detail) for f in malformed] == [
        ("a", 9, "records.jsonl:9: field 'part' is missing")
    ]


# --- sizes ---------------------------------------------------------------------------


def test_an_empty_export_has_no_time_range_and_verifies(tmp_path: Path) -> None:
    summary = write_bundle(tmp_path / "empty", [], [], GATEWAY_JWKS, {})
    manifest = json.loads((tmp_path / "empty" / MANIFEST).read_text())
    assert (summary.records, summary.from_us, summary.to_us) == (0, None, None)
    assert manifest["time_range"] == {"from_us": None, "to_us": None, "from": None, "to": None}
    assert verify_bundle(tmp_path / "empty").ok


def test_a_large_export_is_written_and_verified_with_progress_every_10000_records(
    tmp_path: Path,
) -> None:
    records = build("a", 10_001)
    written: list[int] = []
    checked: list[int] = []
    write_bundle(
        tmp_path / "large",
        records,
        [signed(records, 10_001)],
        GATEWAY_JWKS,
        {},
        progress=written.append,
    )
    report = verify_bundle(tmp_path / "large", progress=checked.append)
    assert report.ok, report.findings
    assert written == checked == [10_000, 10_001]
