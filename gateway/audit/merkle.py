"""Merkle trees over audit record hashes, exactly as RFC 9162 §2.1 defines them (pure, no I/O).

Why the RFC's tree and not one of our own: a partner or regulator can then check an inclusion
proof with any Certificate Transparency library, and the RFC's choices are the safe ones. The
0x00 / 0x01 prefixes separate leaves from interior nodes, so an interior hash can never be
passed off as a leaf (second preimage); splitting at the largest power of two below n (never
duplicating an odd last node) gives every set of leaves one tree and one root.

A leaf is an audit record's `hash` (64 lowercase hex characters); the leaf input is the 32
bytes it encodes, so the leaf hash is SHA-256(0x00 || bytes.fromhex(hash)).

What a path does not prove: the tree size. `root_from_path` follows RFC 9162 §2.1.3.2, and a
path made for one size can lead to the same root under another claimed size. The size is
bound only when the root it is checked against is signed together with its size.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

_HASH = re.compile(r"[0-9a-f]{64}")
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
"""MTH({}): the RFC's root of a tree with no leaves, the hash of the empty string."""


def _is_hash(value: object) -> bool:
    """Is `value` a hash as the audit trail writes them: 64 lowercase hex characters?

    One spelling only, so that equal hashes are equal strings and a root compares as text.
    """
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def _is_count(value: object) -> bool:
    """Is `value` a plain int (not a bool, which Python also counts as an int)?"""
    return isinstance(value, int) and not isinstance(value, bool)


def _leaf_hash(leaf: str) -> bytes:
    """SHA-256(0x00 || leaf bytes): the 0x00 marks it a leaf, never an interior node."""
    return hashlib.sha256(_LEAF_PREFIX + bytes.fromhex(leaf)).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the 0x01 marks it an interior node, never a leaf."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _leaf_level(leaves: Sequence[str]) -> list[bytes]:
    """The leaf hashes, after checking every leaf, so a bad one is named by its position."""
    for position, leaf in enumerate(leaves):
        if not _is_hash(leaf):
            raise ValueError(f"leaf {position} is not a hash (64 lowercase hex characters)")
    return [_leaf_hash(leaf) for leaf in leaves]


def _parent_level(level: list[bytes]) -> list[bytes]:
    """The level above `level`: pairs hashed left to right, an odd last node carried up as is.

    Carrying the odd node up unhashed, level by level, builds the same tree as the RFC's split
    at the largest power of two below n, with each node hashed once (O(n) for the whole tree).
    """
    parents = [_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


def _levels(leaves: Sequence[str]) -> list[list[bytes]]:
    """Every level of the tree, leaf hashes first, the one-node root level last."""
    level = _leaf_level(leaves)
    levels = [level]
    while len(level) > 1:
        level = _parent_level(level)
        levels.append(level)
    return levels


def root(leaves: Sequence[str]) -> str:
    """MTH(D[n]) over the hex record hashes `leaves`, as lowercase hex.

    Raises ValueError naming the position of a leaf that is not 64 lowercase hex characters.
    """
    level = _leaf_level(leaves)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _parent_level(level)
    return level[0].hex()


def inclusion_path(leaves: Sequence[str], index: int) -> list[str]:
    """PATH(index, D[n]) (RFC 9162 §2.1.3.1): the sibling hashes from the leaf up to the root.

    At each level the sibling is the node next to ours in its pair; a node without one (the
    odd last node) is carried up and adds nothing, which is why paths on the right edge of an
    unbalanced tree are shorter. At most ceil(log2(n)) hashes.

    Raises ValueError for a bad leaf (naming its position) or an index outside 0..n-1.
    """
    levels = _levels(leaves)
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    path: list[str] = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling].hex())
        index //= 2
    return path


def _well_formed(leaf: str, index: int, size: int, path: Sequence[str]) -> bool:
    """Can these inputs be checked at all? Proofs arrive from outside, so nothing is assumed."""
    if not (_is_hash(leaf) and _is_count(index) and _is_count(size)):
        return False
    if isinstance(path, str) or not isinstance(path, Sequence):
        return False
    return all(_is_hash(p) for p in path)


def _fold(fn: int, sn: int, r: bytes, p: bytes) -> tuple[int, int, bytes]:
    """One step 4b-4c of RFC 9162 §2.1.3.2: hash `p` in on the side the bits of fn/sn say.

    fn is the node's index and sn the last index at the current level. When fn is a right
    child, or the last node (so its level above was reached by carrying it up), p lies to the
    left; the carried-up levels are then skipped by shifting until fn is a right child or 0.
    """
    if fn & 1 or fn == sn:
        r = _node_hash(p, r)
        while fn and not fn & 1:
            fn >>= 1
            sn >>= 1
    else:
        r = _node_hash(r, p)
    return fn >> 1, sn >> 1, r


def root_from_path(leaf: str, index: int, size: int, path: Sequence[str]) -> str | None:
    """The root that `path` leads to from record hash `leaf` at `index` in a tree of `size`.

    Follows the verification algorithm of RFC 9162 §2.1.3.2. None when the path cannot be
    followed: index not in 0..size-1, a path too long (sn reaches 0 with hashes left) or too
    short (sn not 0 at the end), or any input malformed (a hash that is not 64 lowercase hex
    characters). Never raises: proofs come from outside and are checked, not trusted.
    """
    if not _well_formed(leaf, index, size, path) or not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, _leaf_hash(leaf)
    for p in path:
        if sn == 0:
            return None
        fn, sn, r = _fold(fn, sn, r, bytes.fromhex(p))
    return r.hex() if sn == 0 else None


def verify_inclusion(
    leaf: str, index: int, size: int, path: Sequence[str], expected_root: str
) -> bool:
    """Does `path` prove record hash `leaf` is leaf `index` of the tree with `expected_root`?

    A plain comparison: the root and the path are public values, so timing reveals nothing.
    """
    return root_from_path(leaf, index, size, path) == expected_root
