"""A citizen's access-report entry proves itself (docs/audit-format.md §9): its record's
hash, a Merkle path to the root a signed checkpoint seals, and the observatory's
countersignature of that checkpoint. Checkpoints that sign a root are checked against the
chain when a DPO verifies it."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import chain, inclusion, merkle, witness
from gateway.audit.chain import CHECKPOINT
from gateway.audit.record import AuditRecord, Checkpoint
from gateway.audit.witness import Signer
from tests.unit.test_audit_chain import JWKS, OTHER_KEY, build, jwk, relink, signed

ONDH_KEY = ec.generate_private_key(ec.SECP256R1())
ONDH = Signer(ONDH_KEY, "ondh-1", "ES256", "ONDH")
ONDH_JWKS: dict[str, Any] = {"keys": [jwk(ONDH_KEY, "ondh-1")]}
NOW = dt.datetime(2027, 1, 20, tzinfo=dt.UTC)


def _sealed(records: list[AuditRecord], first: int, seq: int, **changes: Any) -> Checkpoint:
    """The checkpoint a writer signs at `seq`: the root of records first..seq."""
    leaves = [r.hash for r in records if first <= r.seq <= seq]
    return signed(records, seq, root=merkle.root(leaves), root_first=first, **changes)


def _trail() -> tuple[list[AuditRecord], list[Checkpoint]]:
    """Twenty records, sealed by trees over 1..7 and 8..20."""
    records = build("a", 20)
    return records, [_sealed(records, 1, 7), _sealed(records, 8, 20)]


def _proof(seq: int) -> tuple[inclusion.Proof, Checkpoint]:
    records, (early, late) = _trail()
    cp = early if seq <= early.seq else late
    leaves = [r.hash for r in records if cp.root_first <= r.seq <= cp.seq]
    return inclusion.build(records[seq - 1], cp, leaves), cp


def test_a_proof_of_every_record_holds_with_the_gateway_keys() -> None:
    for seq in range(1, 21):
        proof, _ = _proof(seq)
        assert inclusion.check(proof, JWKS).ok, seq


def test_a_proof_names_only_hashes_of_other_records() -> None:
    proof, _ = _proof(12)
    others = {r.hash for r in build("a", 20)} - {proof.record.hash}
    assert len(proof.path) <= 4
    assert not set(proof.path) & {*others, proof.record.hash}  # interior hashes only


def test_an_altered_record_does_not_hold() -> None:
    proof, _ = _proof(12)
    altered = replace(proof, record=replace(proof.record, purpose="SOMETHING_ELSE"))
    (problem,) = inclusion.check(altered, JWKS).problems
    assert "was altered" in problem


def test_a_record_rehashed_after_its_change_does_not_reach_the_signed_root() -> None:
    proof, _ = _proof(12)
    (rehashed,) = relink([replace(proof.record, purpose="SOMETHING_ELSE")])
    (problem,) = inclusion.check(replace(proof, record=rehashed), JWKS).problems
    assert "does not lead from a:12 to the root checkpoint a:20 signs" in problem


def test_a_path_altered_or_for_another_place_does_not_hold() -> None:
    proof, _ = _proof(12)
    bad = replace(proof, path=(proof.path[0][::-1], *proof.path[1:]))
    assert not inclusion.check(bad, JWKS).ok
    moved = replace(proof, leaf_index=proof.leaf_index + 1)
    assert "is not a:12's place" in inclusion.check(moved, JWKS).problems[0]


def test_a_checkpoint_that_does_not_cover_the_record_does_not_hold() -> None:
    proof, _ = _proof(3)
    _, (_, late) = _trail()
    (problem,) = inclusion.check(replace(proof, checkpoint=late.signature), JWKS).problems
    assert problem == "checkpoint a:20 does not cover a:3"


def test_a_checkpoint_signed_by_another_key_does_not_hold() -> None:
    records, _ = _trail()
    leaves = [r.hash for r in records if r.seq >= 8]
    forged = signed(records, 20, key=OTHER_KEY, root=merkle.root(leaves), root_first=8)
    proof = inclusion.build(records[11], forged, leaves)
    (problem,) = inclusion.check(proof, JWKS).problems
    assert problem.startswith("checkpoint a:20: the signature does not verify")


def test_a_proof_survives_its_json_form() -> None:
    proof, _ = _proof(9)
    again = inclusion.from_json(inclusion.to_json(proof))
    assert again == proof
    assert inclusion.check(again, JWKS).ok


@pytest.mark.parametrize(
    ("member", "value", "said"),
    [
        ("leaf_index", -1, "leaf_index: not a whole number"),
        ("tree_size", "13", "tree_size: not a whole number"),
        ("path", "ab", "path: not a list of hashes"),
        ("checkpoint", None, "checkpoint: not a compact JWS"),
    ],
)
def test_a_malformed_proof_file_names_the_member_at_fault(
    member: str, value: object, said: str
) -> None:
    proof, _ = _proof(9)
    with pytest.raises(ValueError, match=said):
        inclusion.from_json(inclusion.to_json(proof) | {member: value})


def test_a_checkpoint_that_is_not_a_jws_is_reported_not_raised() -> None:
    proof, _ = _proof(9)
    (problem,) = inclusion.check(replace(proof, checkpoint="not.a.jws"), JWKS).problems
    assert "is not a signed one" in problem


def test_a_witnessed_checkpoint_names_its_witness() -> None:
    proof, cp = _proof(12)
    log = [witness.countersign(cp, ONDH, NOW)]
    assert inclusion.check(proof, JWKS, log, ONDH_JWKS).witnesses == ["ONDH"]


def test_a_checkpoint_the_witness_did_not_countersign_has_no_witness() -> None:
    proof, _ = _proof(12)
    _, (early, _) = _trail()
    log = [witness.countersign(early, ONDH, NOW)]
    verdict = inclusion.check(proof, JWKS, log, ONDH_JWKS)
    assert verdict.ok
    assert verdict.witnesses == []


def test_a_checkpoint_resigned_by_the_gateway_is_not_the_one_witnessed() -> None:
    """The gateway re-signs the same node:seq and hash with another root (to prove a record
    it made up): the witness countersigned the first signature, not this one."""
    proof, cp = _proof(12)
    log = [witness.countersign(cp, ONDH, NOW)]
    resigned = chain.sign_checkpoint(replace(cp, at_us=cp.at_us + 1), *_gateway_key())
    again = replace(proof, checkpoint=resigned.signature)
    assert inclusion.check(again, JWKS).ok
    assert inclusion.check(again, JWKS, log, ONDH_JWKS).witnesses == []


def test_a_countersignature_filed_under_another_witness_name_does_not_count() -> None:
    """The log's entry says NOT_ONDH witnessed it, while ONDH's key signed a token naming
    ONDH: the name a verdict gives must be the one the token signs."""
    proof, cp = _proof(12)
    log = [replace(witness.countersign(cp, ONDH, NOW), witness="NOT_ONDH")]
    assert inclusion.check(proof, JWKS, log, ONDH_JWKS).witnesses == []


def test_the_witness_log_is_looked_up_by_the_checkpoint_a_proof_leads_to() -> None:
    proof, cp = _proof(12)
    _, (early, _) = _trail()
    index = inclusion.by_checkpoint([witness.countersign(c, ONDH, NOW) for c in (early, cp)])
    (entry,) = inclusion.witnessed_for(proof, index)
    assert (entry.node, entry.seq) == (cp.node, cp.seq)
    assert inclusion.witnessed_for(replace(proof, checkpoint="x.y.z"), index) == []


def test_a_checkpoint_payload_nested_beyond_reason_is_not_a_checkpoint() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    token = jwt.PyJWS().encode(deep.encode(), "k" * 32, algorithm="HS256")
    assert inclusion.checkpoint_of(token) is None


def _gateway_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    from tests.unit.test_audit_chain import KEY, KID  # noqa: PLC0415

    return KEY, KID


def test_build_refuses_leaves_that_are_not_the_checkpoint_tree() -> None:
    records, (early, _) = _trail()
    with pytest.raises(ValueError, match="does not cover a:12"):
        inclusion.build(records[11], early, [r.hash for r in records[:7]])
    with pytest.raises(ValueError, match="not those of checkpoint a:7"):
        inclusion.build(records[2], early, [r.hash for r in records[:6]])


# --- the chain checks the roots it is given -------------------------------------------


def test_a_trail_whose_checkpoints_sign_its_roots_verifies() -> None:
    records, checkpoints = _trail()
    assert chain.verify(records, checkpoints, JWKS).ok


def test_a_checkpoint_signing_another_root_than_its_records_is_a_finding() -> None:
    records, (early, _) = _trail()
    over_9_to_20 = merkle.root([r.hash for r in records[8:]])  # while it says 8..20
    wrong = chain.sign_checkpoint(
        replace(_sealed(records, 8, 20), root=over_9_to_20), *_gateway_key()
    )
    report = chain.verify(records, [early, wrong], JWKS)
    (finding,) = report.findings
    assert finding.kind == CHECKPOINT
    assert "signs a Merkle root that is not that of records a:8..a:20" in finding.detail


def test_a_slice_checks_the_roots_it_holds_all_the_records_of() -> None:
    records, checkpoints = _trail()
    assert chain.verify(records[7:], checkpoints, JWKS, anchors=True).ok


def test_a_root_checkpoint_of_a_prune_is_refused() -> None:
    records, _ = _trail()
    cp = signed(records, 20, kind="prune", first_seq=5, root="0" * 64, root_first=5)
    assert chain.verify_checkpoint(cp, JWKS) == "a prune checkpoint signs a Merkle root"


def test_a_checkpoint_signed_before_trees_existed_still_verifies() -> None:
    records, _ = _trail()
    old = signed(records, 20)
    assert "root" not in old.claims()
    assert chain.verify_checkpoint(old, JWKS) is None
