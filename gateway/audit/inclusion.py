"""Proofs that one audit record is in its node's chain as a signed checkpoint seals it,
without the other records (pure, no I/O; docs/audit-format.md §9).

A citizen's access report lists who used their data. The gateway writes that list; a proof
lets the citizen (or anyone they give it to: the CNDP, a lawyer) check that an entry is
the record the gateway committed to, not one made up for the report or since rewritten:

1. the record's fields hash to its `hash` (the canonical encoding, §3);
2. its Merkle audit path leads from that hash to the `root` a checkpoint signs for the
   records root_first..seq of the node (RFC 9162 §2.1.3.2), at leaf seq - root_first;
3. the checkpoint's signature verifies with the gateway's published keys;
4. optionally, the observatory countersigned that very checkpoint (witness.py): then the
   gateway alone cannot have signed it afterwards to fit a rewritten history.

The path names no other record: only hashes of hashes. What the record itself shows (the
subjects' keyed hashes of a batch, the requester's pseudonymous `sub`) is §9's to say.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import jwt

from gateway.audit import bundle, chain, merkle, witness
from gateway.audit.record import AuditRecord, Checkpoint, record_hash
from gateway.audit.witness import Witnessed

_CHECKPOINT_FIELDS = frozenset(f.name for f in fields(Checkpoint)) - {"signature"}
_MEMBERS = ("record", "leaf_index", "tree_size", "path", "checkpoint")


@dataclass(frozen=True, slots=True)
class Proof:
    """One record, its audit path, and the checkpoint (a compact JWS) it leads to."""

    record: AuditRecord
    leaf_index: int
    tree_size: int
    path: tuple[str, ...]
    checkpoint: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What checking a proof found: `problems` empty when it holds; `witnesses` lists the
    institutions whose countersignature of the checkpoint verified."""

    problems: list[str] = field(default_factory=list)
    witnesses: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def build(record: AuditRecord, cp: Checkpoint, leaves: Sequence[str]) -> Proof:
    """The proof of `record` in `cp`'s tree, whose leaves (the hashes of records
    cp.root_first..cp.seq) the store gave. ValueError if they do not hold the record."""
    index = record.seq - cp.root_first
    if not cp.root or record.node != cp.node or not 0 <= index < len(leaves):
        raise ValueError(f"checkpoint {cp.node}:{cp.seq} does not cover {record.record_id}")
    if leaves[index] != record.hash or len(leaves) != cp.seq - cp.root_first + 1:
        raise ValueError(f"the leaves given are not those of checkpoint {cp.node}:{cp.seq}")
    path = tuple(merkle.inclusion_path(leaves, index))
    return Proof(record, index, len(leaves), path, cp.signature)


def to_json(proof: Proof) -> dict[str, Any]:
    """The proof as a citizen downloads it: the record as records.jsonl holds it."""
    return {
        "record": bundle.record_json(proof.record)
        | {"subjects": list(proof.record.subjects), "fields": list(proof.record.fields)},
        "leaf_index": proof.leaf_index,
        "tree_size": proof.tree_size,
        "path": list(proof.path),
        "checkpoint": proof.checkpoint,
    }


def from_json(obj: object) -> Proof:
    """A Proof from its JSON form; ValueError naming the member at fault."""
    if not isinstance(obj, dict):
        raise ValueError("a proof is a JSON object")
    missing = [m for m in _MEMBERS if m not in obj]
    if missing:
        raise ValueError(f"{missing[0]}: missing")
    try:
        record = bundle.record_from_json(obj["record"])
    except ValueError as exc:
        raise ValueError(f"record: {exc}") from None
    for name in ("leaf_index", "tree_size"):
        if type(obj[name]) is not int or obj[name] < 0:
            raise ValueError(f"{name}: not a whole number")
    path = obj["path"]
    if not isinstance(path, list) or not all(isinstance(h, str) for h in path):
        raise ValueError("path: not a list of hashes")
    if not isinstance(obj["checkpoint"], str):
        raise ValueError("checkpoint: not a compact JWS")
    return Proof(record, obj["leaf_index"], obj["tree_size"], tuple(path), obj["checkpoint"])


def checkpoint_of(token: str) -> Checkpoint | None:
    """The checkpoint a compact JWS signs, read without verifying (check does that)."""
    try:
        payload = jwt.PyJWS().decode(token, options={"verify_signature": False})
        claims = json.loads(payload)
    except (jwt.PyJWTError, ValueError, RecursionError):
        return None
    if not isinstance(claims, dict) or not set(claims) <= _CHECKPOINT_FIELDS:
        return None
    try:
        cp = Checkpoint(**claims, signature=token)
    except TypeError:  # a field missing
        return None
    return cp if isinstance(cp.seq, int) and isinstance(cp.root_first, int) else None


def check(
    proof: Proof,
    jwks: Mapping[str, Any],
    witnessed: Sequence[Witnessed] = (),
    witness_jwks: Mapping[str, Any] | None = None,
) -> Verdict:
    """Check a proof against the gateway's public keys (and, given the witness's log and
    keys, whether the witness countersigned its checkpoint). Never raises on a bad proof;
    ValueError for witness keys that are not a usable JWKS."""
    record = proof.record
    cp = checkpoint_of(proof.checkpoint)
    if cp is None:
        return Verdict([f"the checkpoint of {record.record_id}'s proof is not a signed one"])
    problems = _record_problems(record) + _place_problems(proof, cp)
    signature = chain.verify_checkpoint(cp, jwks)
    if signature is not None:
        problems.append(f"checkpoint {cp.node}:{cp.seq}: {signature}")
    if not problems and not merkle.verify_inclusion(
        record.hash, proof.leaf_index, proof.tree_size, proof.path, cp.root
    ):
        problems.append(
            f"the path does not lead from {record.record_id} to the root checkpoint"
            f" {cp.node}:{cp.seq} signs"
        )
    if problems or witness_jwks is None:
        return Verdict(problems)
    mine = [w for w in witnessed if (w.node, w.seq) == (cp.node, cp.seq)]
    found = {w.witness for w in mine if witness.countersigns(w, cp, witness_jwks)}
    return Verdict([], sorted(found))


def by_checkpoint(log: Iterable[Witnessed]) -> dict[tuple[str, int], list[Witnessed]]:
    """The witness's log by node and seq: what `check` needs of it for one proof."""
    index: dict[tuple[str, int], list[Witnessed]] = {}
    for w in log:
        index.setdefault((w.node, w.seq), []).append(w)
    return index


def witnessed_for(
    proof: Proof, index: Mapping[tuple[str, int], list[Witnessed]]
) -> list[Witnessed]:
    """The log entries about the checkpoint `proof` leads to (none for a bad one)."""
    cp = checkpoint_of(proof.checkpoint)
    return [] if cp is None else index.get((cp.node, cp.seq), [])


def _record_problems(record: AuditRecord) -> list[str]:
    try:
        computed = record_hash(record)
    except (ValueError, TypeError):
        return [f"record {record.record_id} has no canonical form"]
    if computed != record.hash:
        return [f"record {record.record_id} does not hash to its hash: it was altered"]
    return []


def _place_problems(proof: Proof, cp: Checkpoint) -> list[str]:
    """The record and the path's position must be those the checkpoint's tree gives."""
    record = proof.record
    if not cp.root:
        return [f"checkpoint {cp.node}:{cp.seq} signs no Merkle root"]
    if record.node != cp.node or not cp.root_first <= record.seq <= cp.seq:
        return [f"checkpoint {cp.node}:{cp.seq} does not cover {record.record_id}"]
    if proof.leaf_index != record.seq - cp.root_first:
        return [f"leaf_index {proof.leaf_index} is not {record.record_id}'s place in the tree"]
    if proof.tree_size != cp.seq - cp.root_first + 1:
        return [f"tree_size {proof.tree_size} is not that of checkpoint {cp.node}:{cp.seq}"]
    return []
