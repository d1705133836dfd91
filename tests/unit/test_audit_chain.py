"""The audit chain's guarantees, and their limits, as specifications (pure, in memory)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from gateway.audit import chain
from gateway.audit.chain import (
    CHECKPOINT,
    INSERTED,
    MALFORMED,
    MISSING,
    MODIFIED,
    REORDERED,
    REWRITTEN,
    TRUNCATED,
    UNGROUPED,
    Finding,
    Report,
)
from gateway.audit.record import (
    GENESIS,
    AuditRecord,
    Checkpoint,
    canonical_bytes,
    link,
    record_hash,
)

KEY = ec.generate_private_key(ec.SECP256R1())
KID = "gw-2026-1"
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    return ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
    }


JWKS = {"keys": [jwk(KEY, KID)]}
VECTOR_HASH = "fefe1e257a43b065ff0d59feb0e73a466d48ebf2dacb335a9fd425520d82dbe1"


def draft(node: str, i: int) -> AuditRecord:
    return AuditRecord(
        node=node,
        seq=0,
        at_us=1_800_000_000_000_000 + i * 1_000,
        trace_id=f"{i:032x}",
        requester="CNSS",
        requester_sub="officer-7",
        method="/jisr.v1.RegistryExchange/GetHouseholdStatus",
        purpose="ELIGIBILITY_CHECK",
        basis="loi-72-18-art-5",
        subjects=(hashlib.sha256(f"s{i}".encode()).hexdigest(),),
        fields=("composition", "region"),
        decision="permit",
        reason="",
        rh=f"rh-{i}",
        sh=f"sh-{i}",
        jti=f"jti-{i}",
        part=0,
        latency_us=900 + i,
    )


def build(
    node: str = "n", count: int = 12, after: int = 0, prev: str = GENESIS
) -> list[AuditRecord]:
    """`count` records of `node`'s chain, after seq `after` whose hash is `prev`."""
    out: list[AuditRecord] = []
    for i in range(count):
        record = link(after + i, prev, draft(node, after + i + 1))
        out.append(record)
        prev = record.hash
    return out


def relink(records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """What an administrator without the key can do: recompute seqs and hashes from the
    first of `records` on (its own seq and prev_hash kept)."""
    out: list[AuditRecord] = []
    seq, prev = records[0].seq - 1, records[0].prev_hash
    for r in records:
        out.append(link(seq, prev, r))
        seq, prev = seq + 1, out[-1].hash
    return out


def signed(
    records: Sequence[AuditRecord],
    seq: int,
    key: ec.EllipticCurvePrivateKey = KEY,
    kid: str = KID,
    **changes: Any,
) -> Checkpoint:
    """A signed checkpoint of the record `seq` among `records`."""
    (r,) = [r for r in records if r.seq == seq]
    cp = Checkpoint(node=r.node, seq=r.seq, hash=r.hash, at_us=r.at_us + 1, **changes)
    return chain.sign_checkpoint(cp, key, kid)


def only(report: Report) -> Finding:
    assert not report.ok
    assert len(report.findings) == 1, report.findings
    return report.findings[0]


def at(records: Sequence[AuditRecord], seq: int) -> int:
    return next(i for i, r in enumerate(records) if r.seq == seq)


# --- the record encoding -------------------------------------------------------------


def test_the_canonical_encoding_is_the_documented_nul_separated_token_list() -> None:
    r = AuditRecord(
        "gw-a:0", 7, 1_800_000_000_000_001, "", "CNSS", "agent-é", "/m", "P", "b",
        ("s1", "s2"), (), "deny", "PURPOSE_NOT_ALLOWED", "rh", "", "j", 0, -1, "ab", ""
    )  # fmt: skip
    tokens = [
        "jisr-audit-v1", "gw-a:0", "7", "1800000000000001", "", "CNSS", "agent-é", "/m",
        "P", "b", "2", "s1", "s2", "0", "deny", "PURPOSE_NOT_ALLOWED", "rh", "", "j", "0",
        "-1", "ab",
    ]  # fmt: skip
    expected = "\0".join(tokens).encode()
    assert canonical_bytes(r) == expected
    assert record_hash(r) == hashlib.sha256(expected).hexdigest()
    assert record_hash(r) == VECTOR_HASH  # the test vector of docs/audit-format.md


def test_the_encoding_tells_apart_tuples_split_differently() -> None:
    base = draft("n", 1)
    variants = [
        replace(base, subjects=(), fields=()),
        replace(base, subjects=("",), fields=()),
        replace(base, subjects=(), fields=("",)),
        replace(base, subjects=("a", "b"), fields=()),
        replace(base, subjects=("a",), fields=("b",)),
        replace(base, subjects=("ab",), fields=()),
    ]
    assert len({canonical_bytes(v) for v in variants}) == len(variants)


def test_a_nul_in_a_field_has_no_canonical_encoding() -> None:
    with pytest.raises(ValueError, match="NUL"):
        canonical_bytes(replace(draft("n", 1), requester_sub="a\0b"))


def test_sealing_replaces_a_nul_or_lone_surrogate_so_that_it_never_fails() -> None:
    sealed = link(0, GENESIS, replace(draft("n", 1), requester_sub="a\0b\udc80"))
    assert sealed.requester_sub == "a\ufffdb\ufffd"
    assert sealed.hash == record_hash(sealed)


def test_link_and_sealed_agree() -> None:
    linked = link(4, "prev", draft("n", 5))
    assert (linked.seq, linked.prev_hash) == (5, "prev")
    assert replace(linked, hash="").sealed() == linked


# --- untouched chains ----------------------------------------------------------------


def test_an_untouched_chain_with_checkpoints_verifies() -> None:
    records = build(count=25)
    report = chain.verify(iter(records), [signed(records, 10), signed(records, 20)], JWKS)
    assert report.ok, report.findings
    assert (report.records, report.checkpoints, report.nodes) == (25, 2, 1)
    assert report.chains == [chain.ChainSummary("n", 25, 1, 25, "genesis", 20)]


def test_an_empty_trail_verifies() -> None:
    assert chain.verify([], [], JWKS) == Report(True, 0, 0, 0, [], [])


def test_untouched_chains_of_several_nodes_verify() -> None:
    a, b = build("a", 8), build("b", 5)
    report = chain.verify(a + b, [signed(a, 8), signed(b, 5)], JWKS)
    assert report.ok, report.findings
    assert (report.records, report.nodes) == (13, 2)


# --- modification --------------------------------------------------------------------


def test_a_modified_record_is_named() -> None:
    records = build()
    records[at(records, 7)] = replace(records[at(records, 7)], decision="deny")
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 7, MODIFIED)
    assert "record n:7 was modified" in finding.detail


def test_a_record_whose_stored_hash_alone_was_changed_is_named_as_modified() -> None:
    records = build()
    records[at(records, 3)] = replace(records[at(records, 3)], hash="0" * 64)
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.seq, finding.kind) == (3, MODIFIED)


def test_a_modified_first_record_is_named() -> None:
    records = build()
    records[0] = replace(records[0], requester="ANSS")
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.seq, finding.kind) == (1, MODIFIED)


def test_a_modified_and_re_hashed_record_breaks_the_link_of_the_next_one() -> None:
    records = build()
    i = at(records, 7)
    records[i] = replace(records[i], decision="deny").sealed()
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 8, INSERTED)
    assert "n:7" in finding.detail


def test_a_chain_re_hashed_after_a_modification_fails_at_the_next_checkpoint() -> None:
    records = build(count=20)
    checkpoints = [signed(records, 5), signed(records, 10), signed(records, 20)]
    i = at(records, 7)
    records[i:] = relink([replace(records[i], decision="deny"), *records[i + 1 :]])
    finding = only(chain.verify(records, checkpoints, JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 10, REWRITTEN)
    assert "records n:6..n:10 were altered" in finding.detail


def test_a_record_with_a_nul_in_a_field_is_malformed() -> None:
    records = build()
    records[4] = replace(records[4], reason="x\0y")
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.seq, finding.kind) == (5, MALFORMED)


# --- deletion ------------------------------------------------------------------------


def test_deleted_records_are_named_as_missing() -> None:
    records = build()
    del records[at(records, 5) : at(records, 6) + 1]
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 5, MISSING)
    assert "records n:5..n:6 are missing" in finding.detail


def test_one_deleted_record_is_named_as_missing() -> None:
    records = build()
    del records[at(records, 9)]
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.seq, finding.kind, finding.detail) == (9, MISSING, "record n:9 is missing")


def test_deleting_the_first_records_is_missing_without_a_prune_checkpoint() -> None:
    records = build()[3:]
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 1, MISSING)
    assert "records n:1..n:3 are missing" in finding.detail


def test_deleting_the_last_records_before_a_checkpoint_is_caught() -> None:
    records = build(count=10)
    checkpoints = [signed(records, 10)]
    finding = only(chain.verify(records[:8], checkpoints, JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 9, TRUNCATED)
    assert "records n:9..n:10 are missing" in finding.detail


def test_deleting_every_record_of_a_checkpointed_node_is_caught() -> None:
    records = build(count=10)
    finding = only(chain.verify([], [signed(records, 10)], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 1, TRUNCATED)


# --- insertion -----------------------------------------------------------------------


def test_a_forged_record_that_does_not_continue_the_chain_is_named() -> None:
    records = build()
    i = at(records, 5)
    records[i] = link(4, "f" * 64, draft("n", 99))
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 5, INSERTED)
    assert "does not continue the chain" in finding.detail


def test_a_duplicated_record_is_named() -> None:
    records = build()
    i = at(records, 5)
    records.insert(i + 1, records[i])
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.seq, finding.kind) == (5, INSERTED)
    assert "appears twice" in finding.detail


def test_a_forged_record_inserted_with_an_existing_seq_is_named() -> None:
    records = build()
    i = at(records, 5)
    records.insert(i, link(4, records[i - 1].hash, draft("n", 99)))
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.seq, finding.kind) == (5, INSERTED)
    assert "repeated seq" in finding.detail


def test_a_record_inserted_with_the_rest_renumbered_fails_at_the_next_checkpoint() -> None:
    records = build(count=12)
    checkpoints = [signed(records, 4), signed(records, 8), signed(records, 12)]
    i = at(records, 6)
    forged = relink([records[i - 1], draft("n", 99), *records[i:]])
    records[i - 1 :] = forged[:-1]  # renumbered, the chain keeps its length
    finding = only(chain.verify(records, checkpoints, JWKS))
    assert (finding.seq, finding.kind) == (8, REWRITTEN)


# --- reordering ----------------------------------------------------------------------


def test_swapped_records_are_named_as_reordered() -> None:
    records = build()
    i = at(records, 5)
    records[i], records[i + 1] = records[i + 1], records[i]
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 5, REORDERED)


def test_records_swapped_and_renumbered_break_the_chain_at_the_first_of_them() -> None:
    records = build()
    i = at(records, 5)
    first = replace(records[i + 1], seq=5, prev_hash=records[i].hash).sealed()
    second = replace(records[i], seq=6, prev_hash=first.hash).sealed()
    records[i], records[i + 1] = first, second
    finding = only(chain.verify(records, [], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 5, INSERTED)


# --- truncation ----------------------------------------------------------------------


def test_truncation_after_a_checkpoint_is_caught() -> None:
    records = build(count=10)
    finding = only(chain.verify(records[:7], [signed(records, 5), signed(records, 10)], JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 8, TRUNCATED)
    assert "records n:8..n:10 are missing" in finding.detail


def test_truncation_then_appending_again_is_caught_at_the_checkpoint() -> None:
    records = build(count=10)
    checkpoints = [signed(records, 10)]
    regrown = records[:7] + relink([replace(r, trace_id="regrown") for r in records[7:]])
    finding = only(chain.verify(regrown, checkpoints, JWKS))
    assert (finding.node, finding.seq, finding.kind) == ("n", 10, REWRITTEN)


def test_truncating_the_tail_after_the_last_checkpoint_is_not_detectable() -> None:
    """The guarantee's limit: records after the last signed checkpoint are protected by
    the hash chain alone, and cutting them off leaves a valid, shorter chain."""
    records = build(count=15)
    report = chain.verify(records[:11], [signed(records, 10)], JWKS)
    assert report.ok
    assert report.chains[0].signed_through == 10


# --- several nodes -------------------------------------------------------------------


def test_nodes_are_verified_independently() -> None:
    a, b, c = build("a"), build("b"), build("c")
    a[at(a, 3)] = replace(a[at(a, 3)], decision="deny")
    del c[at(c, 4)]
    report = chain.verify(a + b + c, [], JWKS)
    assert [(f.node, f.seq, f.kind) for f in report.findings] == [
        ("a", 3, MODIFIED),
        ("c", 4, MISSING),
    ]
    assert (report.records, report.nodes) == (35, 3)


def test_only_the_first_bad_record_of_a_node_is_reported() -> None:
    records = build()
    for seq in (3, 6, 9):
        records[at(records, seq)] = replace(records[at(records, seq)], decision="deny")
    report = chain.verify(records, [], JWKS)
    assert [(f.seq, f.kind) for f in report.findings] == [(3, MODIFIED)]
    assert report.records == 12


def test_a_checkpoint_of_one_node_does_not_apply_to_another() -> None:
    a, b = build("a", 10), build("b", 4)
    report = chain.verify(a + b, [signed(a, 10)], JWKS)
    assert report.ok, report.findings


def test_records_of_a_node_split_by_another_node_are_reported() -> None:
    a, b = build("a", 6), build("b", 3)
    report = chain.verify(a[:3] + b + a[3:], [], JWKS)
    assert [(f.node, f.kind) for f in report.findings] == [("a", UNGROUPED)]


# --- checkpoints ---------------------------------------------------------------------


def test_a_checkpoint_is_a_compact_jws_of_its_claims_with_the_pinned_header() -> None:
    records = build(count=3)
    cp = signed(records, 3)
    header = jwt.get_unverified_header(cp.signature)
    assert header == {"alg": "ES256", "typ": "jisr-checkpoint+jwt", "kid": KID}
    claims = jwt.decode(cp.signature, KEY.public_key(), algorithms=["ES256"])
    assert claims == cp.claims()
    assert chain.verify_checkpoint(cp, JWKS) is None


def test_a_checkpoint_signed_by_another_key_is_caught_and_not_trusted() -> None:
    records = build(count=10)
    forged = signed(records, 10, key=OTHER_KEY)
    truncated = records[:6]  # would be caught if the forged checkpoint counted
    report = chain.verify(truncated, [forged], JWKS)
    finding = only(report)
    assert (finding.node, finding.seq, finding.kind) == ("n", 10, CHECKPOINT)
    assert "does not verify" in finding.detail


def test_a_checkpoint_whose_claims_were_edited_is_caught() -> None:
    records = build(count=10)
    cp = replace(signed(records, 10), seq=8, hash=records[7].hash)
    reason = chain.verify_checkpoint(cp, JWKS)
    assert reason is not None
    assert "differ from what was signed" in reason
    assert "seq" in reason
    assert only(chain.verify(records, [cp], JWKS)).kind == CHECKPOINT


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda cp: replace(cp, signature=""), "not signed"),
        (lambda cp: replace(cp, signature="not.a.jws"), "not a compact JWS"),
        (
            lambda cp: chain.sign_checkpoint(replace(cp, signature=""), KEY, "gw-unknown"),
            "not in the gateway's JWKS",
        ),
        (
            lambda cp: replace(
                cp,
                signature=jwt.encode(
                    cp.claims(),
                    KEY,
                    algorithm="ES256",
                    headers={"typ": "jisr-receipt+jwt", "kid": KID},
                ),
            ),
            "typ",
        ),
    ],
    ids=["unsigned", "garbage", "unknown-kid", "receipt-typ"],
)
def test_a_checkpoint_that_is_not_a_valid_gateway_jws_is_caught(make: Any, reason: str) -> None:
    records = build(count=4)
    cp = make(signed(records, 4))
    detail = chain.verify_checkpoint(cp, JWKS)
    assert detail is not None
    assert reason in detail


def test_checkpoints_signing_different_hashes_for_one_record_are_reported() -> None:
    records = build(count=6)
    other = chain.sign_checkpoint(Checkpoint("n", 6, "e" * 64, 1), KEY, KID)
    report = chain.verify(records, [signed(records, 6), other], JWKS)
    assert [f.kind for f in report.findings] == [CHECKPOINT]


# --- prune checkpoints ---------------------------------------------------------------


def pruned(records: list[AuditRecord], first_seq: int, **changes: Any) -> Checkpoint:
    first = records[at(records, first_seq)]
    values: dict[str, Any] = {"kind": "prune", "first_seq": first_seq}
    values["first_prev_hash"] = first.prev_hash
    values.update(changes)
    return signed(records, records[-1].seq, **values)


def test_a_chain_may_start_at_a_signed_prune_checkpoint() -> None:
    records = build(count=20)
    report = chain.verify(records[9:], [pruned(records, 10)], JWKS)
    assert report.ok, report.findings
    assert report.chains[0].start == chain.START_PRUNE
    assert report.chains[0].first_seq == 10


def test_a_prune_checkpoint_does_not_permit_deleting_more_than_it_says() -> None:
    records = build(count=20)
    finding = only(chain.verify(records[12:], [pruned(records, 10)], JWKS))
    assert (finding.seq, finding.kind) == (10, MISSING)
    assert "records n:10..n:12 are missing" in finding.detail


def test_a_pruned_chain_must_continue_the_hash_the_prune_checkpoint_signs() -> None:
    records = build(count=20)
    cp = pruned(records, 10, first_prev_hash="d" * 64)
    finding = only(chain.verify(records[9:], [cp], JWKS))
    assert (finding.seq, finding.kind) == (10, INSERTED)


def test_a_forged_prune_checkpoint_does_not_permit_a_late_start() -> None:
    records = build(count=20)
    forged = pruned(records, 10, key=OTHER_KEY)
    report = chain.verify(records[9:], [forged], JWKS)
    assert [(f.seq, f.kind) for f in report.findings] == [(20, CHECKPOINT), (1, MISSING)]


def test_a_chain_still_starting_at_genesis_verifies_against_a_prune_checkpoint() -> None:
    records = build(count=20)
    assert chain.verify(records, [pruned(records, 10)], JWKS).ok


# --- anchors (slices) ----------------------------------------------------------------


def test_a_slice_may_start_right_after_an_included_checkpoint() -> None:
    records = build(count=30)
    cps = [signed(records, 10), signed(records, 20)]
    report = chain.verify(records[10:25], cps, JWKS, anchors=True)
    assert report.ok, report.findings
    assert report.chains[0].start == chain.START_ANCHOR
    assert report.chains[0].signed_through == 20


def test_an_anchored_start_is_a_deletion_when_anchors_are_not_allowed() -> None:
    records = build(count=30)
    finding = only(chain.verify(records[10:25], [signed(records, 10)], JWKS))
    assert (finding.seq, finding.kind) == (1, MISSING)
    assert "records n:1..n:10 are missing" in finding.detail


def test_a_slice_without_its_anchor_checkpoint_is_missing_records() -> None:
    records = build(count=30)
    finding = only(chain.verify(records[10:25], [signed(records, 20)], JWKS, anchors=True))
    assert (finding.seq, finding.kind) == (1, MISSING)


def test_a_slice_must_continue_the_hash_of_its_anchor() -> None:
    records = build(count=30)
    sliced = relink([replace(records[10], prev_hash="c" * 64), *records[11:25]])
    finding = only(chain.verify(sliced, [signed(records, 10)], JWKS, anchors=True))
    assert (finding.seq, finding.kind) == (11, INSERTED)


def test_a_slice_including_a_checkpoint_beyond_its_last_record_is_truncated() -> None:
    records = build(count=30)
    cps = [signed(records, 10), signed(records, 30)]
    finding = only(chain.verify(records[10:25], cps, JWKS, anchors=True))
    assert (finding.seq, finding.kind) == (26, TRUNCATED)


def test_a_checkpoint_verifies_with_a_jwks_holding_several_keys() -> None:
    records = build(count=3)
    jwks = {"keys": [jwk(OTHER_KEY, "gw-old"), *JWKS["keys"]]}
    assert chain.verify(records, [signed(records, 3)], jwks).ok


def test_a_jwks_key_for_another_algorithm_is_not_used() -> None:
    records = build(count=3)
    jwks = {"keys": [{**jwk(KEY, KID), "alg": "ES384"}]}
    reason = chain.verify_checkpoint(signed(records, 3), jwks)
    assert reason is not None


def test_verify_streams_records_once() -> None:
    records = build(count=50)
    consumed: list[int] = []

    def stream() -> Any:
        for r in records:
            consumed.append(r.seq)
            yield r

    assert chain.verify(stream(), [signed(records, 50)], JWKS).ok
    assert consumed == list(range(1, 51))


def test_a_node_whose_records_were_all_pruned_verifies() -> None:
    records = build(count=10)
    cp = signed(records, 10, kind="prune", first_seq=11, first_prev_hash=records[-1].hash)
    assert chain.verify([], [cp], JWKS).ok
