"""Merkle trees over audit record hashes (RFC 9162 §2.1) as specifications.

The oracle is a naive implementation written here straight from the RFC's recursive
definitions (MTH and PATH), independent of the module's level-by-level construction.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from gateway.audit.merkle import inclusion_path, root, root_from_path, verify_inclusion


def _hashes(count: int, seed: int = 9162) -> list[str]:
    """`count` distinct record hashes, the same on every run."""
    rng = random.Random(seed)
    return [rng.randbytes(32).hex() for _ in range(count)]


LEAVES = _hashes(70)


def _split(n: int) -> int:
    """The RFC's k: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(data: list[bytes]) -> bytes:
    """MTH(D[n]), RFC 9162 §2.1.1, word for word."""
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = _split(n)
    return hashlib.sha256(b"\x01" + _mth(data[:k]) + _mth(data[k:])).digest()


def _path(m: int, data: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 §2.1.3.1, word for word."""
    n = len(data)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, data[:k]), _mth(data[k:])]
    return [*_path(m - k, data[k:]), _mth(data[:k])]


def _naive_root(leaves: list[str]) -> str:
    return _mth([bytes.fromhex(h) for h in leaves]).hex()


def _naive_path(leaves: list[str], index: int) -> list[str]:
    return [p.hex() for p in _path(index, [bytes.fromhex(h) for h in leaves])]


def _proof(size: int, index: int) -> tuple[str, list[str], str]:
    """Leaf `index` of the first `size` LEAVES, its path, and the tree's root."""
    leaves = LEAVES[:size]
    return leaves[index], inclusion_path(leaves, index), root(leaves)


# -- roots ------------------------------------------------------------------------------------


def test_the_root_of_the_empty_tree_is_the_hash_of_nothing() -> None:
    assert root([]) == hashlib.sha256(b"").hexdigest()


def test_the_root_of_one_leaf_is_its_leaf_hash() -> None:
    leaf = LEAVES[0]
    assert root([leaf]) == hashlib.sha256(b"\x00" + bytes.fromhex(leaf)).hexdigest()


def test_the_root_of_two_leaves_hashes_their_leaf_hashes_under_0x01() -> None:
    left, right = (hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in LEAVES[:2])
    assert root(LEAVES[:2]) == hashlib.sha256(b"\x01" + left + right).hexdigest()


@pytest.mark.parametrize("size", range(1, 71))
def test_the_root_is_the_rfc_mth_for_every_size(size: int) -> None:
    assert root(LEAVES[:size]) == _naive_root(LEAVES[:size])


def test_the_root_is_lowercase_hex() -> None:
    assert root(LEAVES[:5]) == root(LEAVES[:5]).lower()
    assert len(root(LEAVES[:5])) == 64


def test_the_root_accepts_any_sequence() -> None:
    assert root(tuple(LEAVES[:9])) == root(LEAVES[:9])


def test_the_root_depends_on_the_order_of_the_leaves() -> None:
    assert root(LEAVES[:2]) != root(LEAVES[1::-1])


# -- inclusion paths --------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 41))
def test_every_path_is_the_rfc_path_and_verifies_against_the_root(size: int) -> None:
    leaves = LEAVES[:size]
    tree_root = root(leaves)
    for index in range(size):
        path = inclusion_path(leaves, index)
        assert path == _naive_path(leaves, index)
        assert root_from_path(leaves[index], index, size, path) == tree_root
        assert verify_inclusion(leaves[index], index, size, path, tree_root)


def test_the_path_of_a_single_leaf_is_empty() -> None:
    assert inclusion_path(LEAVES[:1], 0) == []
    assert verify_inclusion(LEAVES[0], 0, 1, [], root(LEAVES[:1]))


def test_paths_are_at_most_ceil_log2_n_long() -> None:
    leaves = _hashes(1000)
    assert max(len(inclusion_path(leaves, i)) for i in range(0, 1000, 37)) <= 10
    assert len(inclusion_path(leaves, 0)) == 10


@pytest.mark.parametrize("size", [2, 3, 5, 8, 13, 70])
def test_no_path_is_longer_than_ceil_log2_of_its_size(size: int) -> None:
    ceil_log2 = (size - 1).bit_length()
    assert all(len(inclusion_path(LEAVES[:size], i)) <= ceil_log2 for i in range(size))


def test_a_path_in_a_tree_of_100_000_leaves_verifies() -> None:
    leaves = _hashes(100_000, seed=1)
    path = inclusion_path(leaves, 77_777)
    assert len(path) == 17
    assert verify_inclusion(leaves[77_777], 77_777, 100_000, path, root(leaves))


@pytest.mark.parametrize("index", [-1, 5, 6])
def test_a_path_is_refused_for_an_index_outside_the_tree(index: int) -> None:
    with pytest.raises(ValueError, match="outside a tree of 5 leaves"):
        inclusion_path(LEAVES[:5], index)


def test_the_empty_tree_has_no_paths() -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_path([], 0)


# -- what a path does not prove ---------------------------------------------------------------


@pytest.mark.parametrize("size", range(2, 21))
def test_a_path_verifies_for_no_other_index(size: int) -> None:
    for index in range(size):
        leaf, path, tree_root = _proof(size, index)
        for other in range(size):
            if other != index:
                assert not verify_inclusion(leaf, other, size, path, tree_root)


@pytest.mark.parametrize("size", range(1, 21))
def test_a_path_verifies_for_no_other_leaf(size: int) -> None:
    for index in range(size):
        _, path, tree_root = _proof(size, index)
        for other in LEAVES[:size]:
            if other != LEAVES[index]:
                assert not verify_inclusion(other, index, size, path, tree_root)


@pytest.mark.parametrize("size", range(1, 21))
def test_a_path_proves_nothing_about_a_tree_of_another_size(size: int) -> None:
    for index in range(size):
        leaf, path, _ = _proof(size, index)
        for other in range(index + 1, 41):
            if other != size:
                other_root = root(LEAVES[:other])
                assert not verify_inclusion(leaf, index, other, path, other_root)


def test_the_size_is_bound_only_by_a_root_signed_with_it() -> None:
    """RFC 9162's check folds leaf 0's path of a 5-leaf tree the same way under size 6.

    So the path also 'verifies' against the 5-leaf root at claimed size 6: whoever relies on
    a root must have it signed together with its tree size.
    """
    leaf, path, five_root = _proof(5, 0)
    assert verify_inclusion(leaf, 0, 6, path, five_root)
    assert five_root != root(LEAVES[:6])


@pytest.mark.parametrize("size", [2, 3, 7, 8, 21])
def test_a_path_with_one_hash_altered_does_not_verify(size: int) -> None:
    for index in range(size):
        leaf, path, tree_root = _proof(size, index)
        for position, p in enumerate(path):
            altered = [*path[:position], f"{int(p, 16) ^ 1:064x}", *path[position + 1 :]]
            assert not verify_inclusion(leaf, index, size, altered, tree_root)


@pytest.mark.parametrize("size", [2, 3, 7, 8, 21])
def test_a_path_with_one_hash_removed_does_not_verify(size: int) -> None:
    for index in range(size):
        leaf, path, tree_root = _proof(size, index)
        for position in range(len(path)):
            shorter = path[:position] + path[position + 1 :]
            assert not verify_inclusion(leaf, index, size, shorter, tree_root)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 21])
def test_a_path_with_one_hash_added_does_not_verify(size: int) -> None:
    extra = _hashes(1, seed=2)[0]
    for index in range(size):
        leaf, path, tree_root = _proof(size, index)
        for position in range(len(path) + 1):
            longer = [*path[:position], extra, *path[position:]]
            assert not verify_inclusion(leaf, index, size, longer, tree_root)


def test_a_path_too_short_or_too_long_for_its_size_leads_nowhere() -> None:
    leaf, path, _ = _proof(8, 3)
    assert root_from_path(leaf, 3, 8, path[:-1]) is None
    assert root_from_path(leaf, 3, 8, [*path, path[0]]) is None


# -- malformed inputs: None / False, never an exception ---------------------------------------


@pytest.mark.parametrize(("index", "size"), [(5, 5), (6, 5), (0, 0), (-1, 5), (-1, 0)])
def test_an_index_outside_the_claimed_size_leads_nowhere(index: int, size: int) -> None:
    leaf, path, tree_root = _proof(5, 4)
    assert root_from_path(leaf, index, size, path) is None
    assert not verify_inclusion(leaf, index, size, path, tree_root)


BAD_HASHES = [
    "zz" * 32,  # not hex
    LEAVES[1].upper(),  # uppercase
    "A" + LEAVES[1][1:],  # one uppercase character
    LEAVES[1][:-1],  # 63 characters
    LEAVES[1] + "00",  # 66 characters
    "",
    " " + LEAVES[1][1:],
    LEAVES[1][:-1] + "\n",
]


@pytest.mark.parametrize("bad", BAD_HASHES)
def test_a_malformed_path_entry_leads_nowhere(bad: str) -> None:
    leaf, path, tree_root = _proof(4, 0)
    malformed = [path[0], bad]
    assert root_from_path(leaf, 0, 4, malformed) is None
    assert not verify_inclusion(leaf, 0, 4, malformed, tree_root)


@pytest.mark.parametrize("bad", BAD_HASHES)
def test_a_malformed_leaf_leads_nowhere(bad: str) -> None:
    _, path, tree_root = _proof(4, 0)
    assert root_from_path(bad, 0, 4, path) is None
    assert not verify_inclusion(bad, 0, 4, path, tree_root)


def test_a_path_given_as_one_string_leads_nowhere() -> None:
    leaf, path, _ = _proof(2, 0)
    assert root_from_path(leaf, 0, 2, path[0]) is None


def test_an_uppercase_expected_root_does_not_match() -> None:
    leaf, path, tree_root = _proof(6, 2)
    assert not verify_inclusion(leaf, 2, 6, path, tree_root.upper())


@pytest.mark.parametrize("bad", BAD_HASHES)
def test_a_bad_leaf_given_to_root_is_named_by_its_position(bad: str) -> None:
    leaves = [*LEAVES[:2], bad, *LEAVES[2:5]]
    with pytest.raises(ValueError, match=r"^leaf 2 is not a hash"):
        root(leaves)


def test_a_bad_leaf_given_to_inclusion_path_is_named_by_its_position() -> None:
    leaves = [*LEAVES[:7], LEAVES[7].upper()]
    with pytest.raises(ValueError, match=r"^leaf 7 is not a hash"):
        inclusion_path(leaves, 0)
