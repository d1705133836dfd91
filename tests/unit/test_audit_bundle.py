"""Evidence bundles: written streaming, read back, verified offline; what a bad one says."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import bundle, chain
from gateway.audit.bundle import (
    CHECKPOINTS,
    JWKS,
    MANIFEST,
    RECORDS,
    BundleError,
    read_bundle,
    verify_bundle,
    write_bundle,
)
from gateway.audit.chain import BUNDLE, CHECKPOINT, MALFORMED, MISSING, MODIFIED
from gateway.audit.record import AuditRecord, Checkpoint
from tests.unit.test_audit_chain import JWKS as GATEWAY_JWKS
from tests.unit.test_audit_chain import build, jwk, signed

META = {"from": "2027-01-15", "to": "2027-01-15", "requested_by": "DPO CNSS"}


def _trail() -> tuple[list[AuditRecord], list[Checkpoint]]:
    a, b = build("a", 30), build("b", 12)
    return a + b, [signed(a, 10), signed(a, 20), signed(a, 30), signed(b, 12)]


TRAIL = _trail()  # once: ECDSA signatures differ at each signing


def trail() -> tuple[list[AuditRecord], list[Checkpoint]]:
    return list(TRAIL[0]), list(TRAIL[1])


@pytest.fixture
def written(tmp_path: Path) -> Path:
    records, checkpoints = trail()
    path = tmp_path / "evidence"
    write_bundle(path, iter(records), checkpoints, GATEWAY_JWKS, META)
    return path


def edit_line(path: Path, number: int, edit: Any) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("".join(lines))


def reseal_manifest(path: Path) -> None:
    """What whoever edits a file can do too: update the manifest's hash of it."""
    manifest = json.loads((path / MANIFEST).read_text())
    for name in manifest["files"]:
        digest = hashlib.sha256((path / name).read_bytes()).hexdigest()
        manifest["files"][name]["sha256"] = digest
    (path / MANIFEST).write_text(json.dumps(manifest))


# --- writing and reading -------------------------------------------------------------


def test_a_bundle_is_a_directory_of_four_files(written: Path) -> None:
    assert sorted(p.name for p in written.iterdir()) == sorted(
        [MANIFEST, RECORDS, CHECKPOINTS, JWKS]
    )
    assert not list(written.parent.glob(".evidence.*"))


def test_a_bundle_reads_back_exactly_what_was_written(written: Path) -> None:
    records, checkpoints = trail()
    got, got_checkpoints, jwks, manifest = read_bundle(written)
    assert list(got) == records
    assert got_checkpoints == checkpoints
    assert jwks == GATEWAY_JWKS
    assert manifest["meta"] == META


def test_the_manifest_holds_counts_time_range_nodes_and_file_hashes(written: Path) -> None:
    records, _ = trail()
    manifest = json.loads((written / MANIFEST).read_text())
    assert (manifest["format"], manifest["version"]) == ("jisr-audit-bundle", 1)
    assert (manifest["records"], manifest["checkpoints"]) == (42, 4)
    assert manifest["time_range"]["from_us"] == min(r.at_us for r in records)
    assert manifest["time_range"]["to_us"] == max(r.at_us for r in records)
    assert [
        (n["node"], n["records"], n["first_seq"], n["last_seq"]) for n in manifest["nodes"]
    ] == [
        ("a", 30, 1, 30),
        ("b", 12, 1, 12),
    ]
    for name in (RECORDS, CHECKPOINTS, JWKS):
        digest = hashlib.sha256((written / name).read_bytes()).hexdigest()
        assert manifest["files"][name]["sha256"] == digest


def test_each_record_is_one_json_object_with_every_field(written: Path) -> None:
    first = json.loads((written / RECORDS).read_text().splitlines()[0])
    assert list(first) == list(bundle.RECORD_FIELDS)
    assert (first["node"], first["seq"], first["prev_hash"]) == ("a", 1, "")


def test_a_checkpoint_without_a_tree_is_written_as_before_trees_existed(
    tmp_path: Path,
) -> None:
    """A verifier older than Merkle roots still reads checkpoints that sign none."""
    records, checkpoints = trail()
    treed = signed(records[:30], 30, root="ab" * 32, root_first=21)
    path = tmp_path / "evidence"
    write_bundle(path, iter(records), [*checkpoints[:2], treed], GATEWAY_JWKS, META)
    lines = [json.loads(x) for x in (path / CHECKPOINTS).read_text().splitlines()]
    assert ["root" in x for x in lines] == [False, False, True]
    assert [x.get("root_first") for x in lines] == [None, None, 21]


def test_writing_streams_records_and_reports_progress(tmp_path: Path) -> None:
    records, checkpoints = trail()
    seen: list[int] = []

    def stream() -> Iterator[AuditRecord]:
        yield from records

    summary = write_bundle(
        tmp_path / "b", stream(), checkpoints, GATEWAY_JWKS, {}, progress=seen.append
    )
    assert (summary.records, summary.checkpoints, summary.nodes) == (42, 4, ["a", "b"])
    assert seen[-1] == 42


def test_writing_refuses_an_existing_path(written: Path) -> None:
    with pytest.raises(FileExistsError):
        write_bundle(written, [], [], GATEWAY_JWKS, {})


def test_a_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    def failing() -> Iterator[AuditRecord]:
        yield build("a", 1)[0]
        raise OSError("store went away")

    with pytest.raises(OSError, match="store went away"):
        write_bundle(tmp_path / "b", failing(), [], GATEWAY_JWKS, {})
    assert list(tmp_path.iterdir()) == []


def test_reading_a_malformed_record_line_names_the_file_and_line(written: Path) -> None:
    edit_line(written / RECORDS, 3, lambda _: "[1, 2]\n")
    records, _, _, _ = read_bundle(written)
    with pytest.raises(BundleError, match=r"^records\.jsonl:3: not a JSON object$"):
        list(records)


def test_reading_a_bundle_without_checkpoints_names_the_file(written: Path) -> None:
    (written / CHECKPOINTS).unlink()
    with pytest.raises(BundleError, match=r"checkpoints\.jsonl: missing"):
        read_bundle(written)


# --- verifying -----------------------------------------------------------------------


def test_an_untouched_bundle_verifies(written: Path) -> None:
    progress: list[int] = []
    report = verify_bundle(written, progress=progress.append)
    assert report.ok, report.findings
    assert (report.records, report.checkpoints, report.nodes) == (42, 4, 2)
    assert progress[-1] == 42


def test_an_edited_record_line_is_caught_naming_the_file_line_and_record(written: Path) -> None:
    edit_line(written / RECORDS, 7, lambda line: line.replace('"permit"', '"deny"'))
    report = verify_bundle(written)
    assert [(f.kind, f.where) for f in report.findings] == [
        (BUNDLE, RECORDS),
        (MODIFIED, "records.jsonl:7"),
    ]
    assert "records.jsonl: its SHA-256 is not the one in manifest.json" in report.findings[0].detail
    modified = report.findings[1]
    assert (modified.node, modified.seq) == ("a", 7)
    assert modified.detail.startswith("records.jsonl:7: record a:7 was modified")


def test_an_edited_record_is_caught_even_with_the_manifest_updated(written: Path) -> None:
    edit_line(written / RECORDS, 35, lambda line: line.replace('"CNSS"', '"ANSS"'))
    reseal_manifest(written)
    report = verify_bundle(written)
    assert [(f.node, f.seq, f.kind, f.where) for f in report.findings] == [
        ("b", 5, MODIFIED, "records.jsonl:35")
    ]


def test_a_deleted_record_line_is_named_as_missing(written: Path) -> None:
    edit_line(written / RECORDS, 5, lambda _: "")
    reseal_manifest(written)
    report = verify_bundle(written)
    assert [(f.node, f.seq, f.kind) for f in report.findings] == [
        ("", 0, BUNDLE),  # the manifest's count
        ("a", 5, MISSING),
    ]


def test_a_line_that_is_not_a_record_is_named_and_the_rest_still_verified(written: Path) -> None:
    edit_line(written / RECORDS, 3, lambda _: "not json\n")
    reseal_manifest(written)
    report = verify_bundle(written)
    assert [(f.kind, f.where, f.seq) for f in report.findings] == [
        (BUNDLE, RECORDS, 0),
        (MALFORMED, "records.jsonl:3", 0),
        (MISSING, "", 3),
    ]
    assert report.findings[1].detail.startswith("records.jsonl:3: not valid JSON")


def test_a_record_line_with_a_wrongly_typed_field_is_named(written: Path) -> None:
    edit_line(written / RECORDS, 4, lambda line: line.replace('"seq":4', '"seq":"4"'))
    report = verify_bundle(written)
    malformed = [f for f in report.findings if f.kind == MALFORMED]
    assert [(f.node, f.where, f.detail) for f in malformed] == [
        ("a", "records.jsonl:4", "records.jsonl:4: seq must be an integer")
    ]


@pytest.mark.parametrize("name", [RECORDS, CHECKPOINTS, JWKS, MANIFEST])
def test_a_missing_file_is_named(written: Path, name: str) -> None:
    (written / name).unlink()
    report = verify_bundle(written)
    assert not report.ok
    assert f"{name}: missing from the bundle" in [f.detail for f in report.findings]


def test_a_path_that_is_not_a_bundle_is_reported(tmp_path: Path) -> None:
    report = verify_bundle(tmp_path / "nowhere")
    assert not report.ok
    assert "not a bundle directory" in report.findings[0].detail


def test_an_edited_checkpoint_is_caught(written: Path) -> None:
    edit_line(written / CHECKPOINTS, 2, lambda line: line.replace('"seq":20', '"seq":21'))
    reseal_manifest(written)
    report = verify_bundle(written)
    assert [(f.node, f.seq, f.kind) for f in report.findings] == [("a", 21, CHECKPOINT)]


def test_a_bundle_re_signed_with_another_key_fails_against_the_published_jwks(
    tmp_path: Path,
) -> None:
    """The bundle's own JWKS proves consistency only: pin the gateway's published keys."""
    records, _ = trail()
    mallory = ec.generate_private_key(ec.SECP256R1())
    a = [r for r in records if r.node == "a"]
    forged = [signed(a, 30, key=mallory, kid="gw-2026-1")]
    path = tmp_path / "forged"
    write_bundle(path, a, forged, {"keys": [jwk(mallory, "gw-2026-1")]}, {})
    assert verify_bundle(path).ok
    report = verify_bundle(path, jwks=GATEWAY_JWKS)
    assert [(f.seq, f.kind) for f in report.findings] == [(30, CHECKPOINT)]


def test_a_time_slice_exported_from_its_anchor_checkpoint_verifies(tmp_path: Path) -> None:
    records = build("a", 40)
    checkpoints = [signed(records, s) for s in (10, 20, 30, 40)]
    # Range: records 15..25. The exporter extends it back to the last checkpoint at or
    # before its start (a:10), and includes the checkpoints from there to its last record.
    path = tmp_path / "slice"
    write_bundle(path, records[10:25], checkpoints[:2], GATEWAY_JWKS, {"slice": "a:15..a:25"})
    report = verify_bundle(path)
    assert report.ok, report.findings
    assert report.chains == [chain.ChainSummary("a", 15, 11, 25, chain.START_ANCHOR, 20)]


def test_a_slice_without_its_anchor_checkpoint_does_not_verify(tmp_path: Path) -> None:
    records = build("a", 40)
    path = tmp_path / "slice"
    write_bundle(path, records[10:25], [signed(records, 20)], GATEWAY_JWKS, {})
    report = verify_bundle(path)
    assert [(f.seq, f.kind) for f in report.findings] == [(1, MISSING)]
