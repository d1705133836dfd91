"""An outside witness pins the audit trail's history (docs/audit-format.md, "Witnessed
checkpoints"): what it countersigned, a rewritten chain cannot match, even one the
gateway's own key re-signed."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import chain, witness
from gateway.audit.record import AuditRecord, Checkpoint
from gateway.audit.witness import WITNESS, Signer
from tests.unit.test_audit_chain import JWKS, build, jwk, relink, signed

NOW = dt.datetime(2027, 1, 20, tzinfo=dt.UTC)
ONDH_KEY = ec.generate_private_key(ec.SECP256R1())
ONDH = Signer(ONDH_KEY, "ondh-1", "ES256", "ONDH")
ONDH_JWKS: dict[str, Any] = {"keys": [jwk(ONDH_KEY, "ondh-1")]}


def _trail() -> tuple[list[AuditRecord], list[Checkpoint]]:
    records = build("a", 20)
    return records, [signed(records, 10), signed(records, 20)]


def _witnessed() -> tuple[list[AuditRecord], list[witness.Witnessed]]:
    records, checkpoints = _trail()
    return records, [witness.countersign(cp, ONDH, NOW) for cp in checkpoints]


def _rewritten(records: list[AuditRecord]) -> tuple[list[AuditRecord], list[Checkpoint]]:
    """What a gateway holding its own key can do: change an old record, recompute every
    hash after it, and sign new checkpoints with its key."""
    changed = [*records[:4], replace(records[4], purpose="SOMETHING_ELSE"), *records[5:]]
    again = [*changed[:4], *relink(changed[4:])]
    return again, [signed(again, 10), signed(again, 20)]


def test_countersigned_checkpoints_verify_with_the_witness_keys() -> None:
    _, log = _witnessed()
    assert witness.check_signatures(log, ONDH_JWKS) == []
    assert [(w.node, w.seq, w.witness) for w in log] == [("a", 10, "ONDH"), ("a", 20, "ONDH")]


def test_the_chain_as_witnessed_agrees_with_its_witness() -> None:
    records, log = _witnessed()
    assert witness.against_records(log, records) == []


def test_a_rewritten_chain_re_signed_by_the_gateway_still_fails_against_the_witness() -> None:
    records, log = _witnessed()
    rewritten, checkpoints = _rewritten(records)
    # The gateway's own evidence is consistent: its key signed the new history.
    assert chain.verify(rewritten, checkpoints, JWKS).ok
    findings = witness.against_records(log, rewritten)
    assert [(f.node, f.seq, f.kind) for f in findings] == [("a", 10, WITNESS), ("a", 20, WITNESS)]
    assert "rewritten" in findings[0].detail


def test_the_witness_refuses_a_checkpoint_that_contradicts_its_log() -> None:
    records, log = _witnessed()
    _, checkpoints = _rewritten(records)
    said = witness.contradictions(log, checkpoints)
    assert len(said) == 2
    assert said[0].startswith("a:10: the gateway now signs another hash")


def test_a_log_entry_changed_after_it_was_countersigned_is_named() -> None:
    _, log = _witnessed()
    forged = [replace(log[0], hash="0" * 64), log[1]]
    findings = witness.check_signatures(forged, ONDH_JWKS)
    assert [(f.node, f.seq) for f in findings] == [("a", 10)]


def test_a_countersignature_by_another_key_is_named() -> None:
    _, log = _witnessed()
    other = {"keys": [jwk(ec.generate_private_key(ec.SECP256R1()), "ondh-1")]}
    assert len(witness.check_signatures(log, other)) == 2


def test_the_log_reads_back_what_was_written(tmp_path: Path) -> None:
    _, log = _witnessed()
    path = tmp_path / "witness.jsonl"
    path.write_text("".join(w.line() + "\n" for w in log), encoding="utf-8")
    assert witness.read_log(path) == log


def test_an_unreadable_log_line_names_the_file_and_line(tmp_path: Path) -> None:
    _, log = _witnessed()
    path = tmp_path / "witness.jsonl"
    path.write_text(log[0].line() + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"witness.jsonl:2: not a witnessed checkpoint"):
        witness.read_log(path)


@pytest.mark.parametrize(
    ("member", "value"),
    [("seq", 1e400), ("seq", "7"), ("at_us", True), ("node", 3), ("token", None)],
)
def test_a_log_line_with_a_member_of_the_wrong_type_names_its_line(
    tmp_path: Path, member: str, value: object
) -> None:
    _, log = _witnessed()
    line = json.loads(log[0].line()) | {member: value}
    path = tmp_path / "witness.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"witness.jsonl:1: not a witnessed checkpoint"):
        witness.read_log(path)


def test_a_log_line_nested_beyond_reason_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "witness.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"witness.jsonl:1: not a witnessed checkpoint"):
        witness.read_log(path)


def test_a_bundle_with_nothing_witnessed_in_it_is_not_vouched_for() -> None:
    _, log = _witnessed()
    other = build("b", 5)
    findings = witness.against_bundle(log, other, [signed(other, 5)])
    assert [(f.kind, f.detail) for f in findings] == [
        (
            WITNESS,
            "no witnessed checkpoint falls in this bundle: the witness vouches for none of it",
        )
    ]


def test_an_entry_whose_signed_time_differs_is_named() -> None:
    _, log = _witnessed()
    moved = [replace(log[0], at_us=log[0].at_us + 1), log[1]]
    assert [(f.node, f.seq) for f in witness.check_signatures(moved, ONDH_JWKS)] == [("a", 10)]


def test_keys_that_are_not_a_jwks_are_refused_in_words() -> None:
    _, log = _witnessed()
    with pytest.raises(ValueError, match="not a usable JWKS"):
        witness.check_signatures(log, {"keys": []})


def test_appending_to_a_log_without_a_final_newline_keeps_both_lines(tmp_path: Path) -> None:
    _, log = _witnessed()
    path = tmp_path / "witness.jsonl"
    path.write_text(log[0].line(), encoding="utf-8")  # no newline at the end
    witness.append_log(path, [log[1]])
    assert witness.read_log(path) == log
