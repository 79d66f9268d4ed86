"""RFC 6962 / RFC 9162 Merkle hashing: the Certificate Transparency vectors, and every proof of random trees."""

from __future__ import annotations

import doctest
import hashlib

import pytest
from examples import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from hpf.federation.audit import merkle
from hpf.federation.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# The reference tree used by certificate-transparency-go, Trillian and transparency-dev/merkle
# (proof/verify_test.go): eight leaves, the head of every prefix, and published proofs.
LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, proof); the Go file counts leaves from 1
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
HASHES = [leaf_hash(d) for d in LEAVES]


def _h(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def _flip(proof: list[bytes], i: int, bit: int = 0) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ (1 << bit)]) + out[i][1:]
    return out


def test_docstring_examples_run() -> None:
    result = doctest.testmod(merkle, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_hash_prefixes_and_empty_tree() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == root([])
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert node_hash(HASHES[0], HASHES[1]).hex() == ROOTS[2]


@pytest.mark.parametrize("size", range(9))
def test_reference_roots(size: int) -> None:
    assert root(HASHES[:size]).hex() == ROOTS[size]
    assert MerkleTree(HASHES).root(size).hex() == ROOTS[size]
    compact = CompactRange()
    for leaf in HASHES[:size]:
        compact.append(leaf)
    assert compact.size == size and compact.root().hex() == ROOTS[size]


def test_split_is_the_largest_power_of_two_below_n_not_the_midpoint() -> None:
    assert [merkle.split_point(n) for n in (2, 3, 4, 5, 6, 7, 8, 9, 1000)] == [1, 2, 2, 4, 4, 4, 4, 8, 512]
    with pytest.raises(ValueError):
        merkle.split_point(1)


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    expected = _h(proof)
    assert inclusion_proof(HASHES, index, size) == expected
    assert MerkleTree(HASHES).inclusion_proof(index, size) == expected
    head = bytes.fromhex(ROOTS[size])
    assert verify_inclusion(HASHES[index], index, size, expected, head)
    # the Go verifier's corruption probes: every one must fail
    probes = [
        (index - 1, size, head, HASHES[index], expected),
        (index + 1, size, head, HASHES[index], expected),
        (index ^ 2, size, head, HASHES[index], expected),
        (index, size * 2, head, HASHES[index], expected),
        (index, size // 2, head, HASHES[index], expected),
        (index, size, head, b"WrongLeaf", expected),
        (index, size, EMPTY_ROOT, HASHES[index], expected),
        (index, size, SOME_HASH, HASHES[index], expected),
        (index, size, head, HASHES[index], [*expected, b""]),
        (index, size, head, HASHES[index], [*expected, head]),
        (index, size, head, HASHES[index], [b"", *expected]),
        (index, size, head, HASHES[index], [head, *expected]),
        (index, size, head, HASHES[index], expected[:-1]),
        (index, size, head, HASHES[index], [expected[0], SOME_HASH, *expected[1:]]),
        *((index, size, head, HASHES[index], _flip(expected, i, 3)) for i in range(len(expected))),
    ]
    for i, s, r, leaf, p in probes:
        assert not verify_inclusion(leaf, i, s, p, r), (i, s, len(p))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_reference_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    expected = _h(proof)
    assert consistency_proof(HASHES, old, new) == expected
    assert MerkleTree(HASHES).consistency_proof(old, new) == expected
    r1, r2 = bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new])
    assert verify_consistency(old, new, r1, r2, expected)
    probes = [
        (old - 1, new, r1, r2, expected),
        (old + 1, new, r1, r2, expected),
        (old ^ 2, new, r1, r2, expected),
        (old, new * 2, r1, r2, expected),
        (old, new // 2, r1, r2, expected),
        (old, new, b"WrongRoot", r2, expected),
        (old, new, r1, b"WrongRoot", expected),
        (old, new, r2, r1, expected),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*expected, b""]),
        (old, new, r1, r2, [*expected, r1]),
        (old, new, r1, r2, [*expected, r2]),
        (old, new, r1, r2, [b"", *expected]),
        (old, new, r1, r2, [r1, *expected]),
        (old, new, r1, r2, [r2, *expected]),
        (old, new, r1, r2, [expected[0], *expected]),
        (old, new, r1, r2, expected[:-1]),
        *((old, new, r1, r2, _flip(expected, i, 4)) for i in range(len(expected))),
    ]
    for o, n, a, b, p in probes:
        assert not verify_consistency(o, n, a, b, p), (o, n, len(p))


def test_trivial_and_impossible_consistency() -> None:
    r1 = bytes.fromhex(ROOTS[1])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, bytes.fromhex(ROOTS[5]), [])
    assert verify_consistency(1, 1, r1, r1, [])
    assert not verify_consistency(0, 5, SOME_HASH, bytes.fromhex(ROOTS[5]), [])  # a non-empty "empty" tree
    assert not verify_consistency(1, 1, r1, SOME_HASH, [])  # same size, different heads
    assert not verify_consistency(1, 1, r1, r1, [EMPTY_ROOT])  # same size, a proof where none is due
    assert not verify_consistency(0, 1, EMPTY_ROOT, r1, [EMPTY_ROOT])
    assert not verify_consistency(2, 1, r1, r1, [])  # time runs backwards
    assert not verify_consistency(1, 2, r1, bytes.fromhex(ROOTS[2]), [])  # a proof is due
    assert consistency_proof(HASHES, 0, 8) == [] and consistency_proof(HASHES, 8, 8) == []


def test_inclusion_edge_cases() -> None:
    single = leaf_hash(b"data")
    assert verify_inclusion(single, 0, 1, [], single)
    assert not verify_inclusion(single, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], single)
    for index, size in ((0, 0), (1, 0), (2, 1), (-1, 3)):
        assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    with pytest.raises(ValueError):
        inclusion_proof(HASHES, 8, 8)
    with pytest.raises(ValueError):
        inclusion_proof(HASHES, 0, 9)
    with pytest.raises(ValueError):
        consistency_proof(HASHES, 5, 4)
    with pytest.raises(ValueError):
        MerkleTree(HASHES).inclusion_proof(3, 2)


def test_every_proof_of_small_trees_verifies_and_matches_the_stored_tree() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(33)]
    tree = MerkleTree(leaves)
    heads = [root(leaves[:n]) for n in range(len(leaves) + 1)]
    for size in range(1, len(leaves) + 1):
        assert tree.root(size) == heads[size]
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == inclusion_proof(leaves, index, size)
            assert verify_inclusion(leaves[index], index, size, proof, heads[size])
        for old in range(size + 1):
            proof = tree.consistency_proof(old, size)
            assert proof == consistency_proof(leaves, old, size)
            assert verify_consistency(old, size, heads[old], heads[size], proof)


# distinct leaves: with repeated ones a proof may truly hold at another index of a symmetric tree
leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=80, unique=True).map(
    lambda ds: [leaf_hash(d) for d in ds]
)


@settings(max_examples=budget(60), deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_inclusion_proofs_verify_and_tampering_fails(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    size = data.draw(st.integers(1, len(leaves)), label="size")
    head = root(leaves[:size])
    for index in range(size):
        proof = tree.inclusion_proof(index, size)
        assert proof == inclusion_proof(leaves, index, size)
        assert verify_inclusion(leaves[index], index, size, proof, head)
        assert not verify_inclusion(leaves[index], index, size, proof, node_hash(head, head))
        assert not verify_inclusion(leaf_hash(b"forged"), index, size, proof, head)
        if size > 1:
            assert not verify_inclusion(leaves[index], (index + 1) % size, size, proof, head)
        for i in range(len(proof)):
            assert not verify_inclusion(leaves[index], index, size, _flip(proof, i, i % 8), head)
        if proof:
            assert not verify_inclusion(leaves[index], index, size, proof[:-1], head)
        assert not verify_inclusion(leaves[index], index, size, [*proof, head], head)


@settings(max_examples=budget(60), deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_consistency_proofs_verify_and_tampering_fails(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    new = data.draw(st.integers(1, len(leaves)), label="new")
    new_head = root(leaves[:new])
    for old in range(new + 1):
        old_head = root(leaves[:old])
        proof = tree.consistency_proof(old, new)
        assert proof == consistency_proof(leaves, old, new)
        assert verify_consistency(old, new, old_head, new_head, proof)
        if 0 < old < new:
            assert not verify_consistency(old, new, node_hash(old_head, old_head), new_head, proof)
            assert not verify_consistency(old, new, old_head, node_hash(new_head, new_head), proof)
            for i in range(len(proof)):
                assert not verify_consistency(old, new, old_head, new_head, _flip(proof, i, i % 8))
            assert not verify_consistency(old, new, old_head, new_head, proof[:-1])
            assert not verify_consistency(old, new, old_head, new_head, [*proof, new_head])


@settings(max_examples=budget(40), deadline=None)
@given(leaves=st.lists(st.binary(max_size=8), max_size=200).map(lambda ds: [leaf_hash(d) for d in ds]))
def test_compact_range_root_equals_root_for_every_prefix(leaves: list[bytes]) -> None:
    compact, tree = CompactRange(), MerkleTree()
    assert compact.root() == EMPTY_ROOT
    for n, leaf in enumerate(leaves, start=1):
        compact.append(leaf)
        tree.append(leaf)
        assert compact.size == tree.size == n
        assert compact.root() == root(leaves[:n]) == tree.root()
        assert tree.leaf(n - 1) == leaf


def test_the_frontier_before_an_append_is_the_new_leafs_inclusion_proof() -> None:
    """What a log hands out with each append: the compact range before it proves the new (last) leaf."""
    compact, leaves = CompactRange(), [leaf_hash(i.to_bytes(2, "big")) for i in range(300)]
    for n, leaf in enumerate(leaves):
        proof = compact.next_leaf_proof()
        assert proof == inclusion_proof(leaves, n, n + 1) and len(proof) <= max(n, 1).bit_length()
        compact.append(leaf)
        assert verify_inclusion(leaf, n, n + 1, proof, compact.root())
        assert n == 0 or not verify_inclusion(leaves[n - 1], n, n + 1, proof, compact.root())


def test_a_tree_refuses_a_leaf_that_is_not_a_hash() -> None:
    with pytest.raises(ValueError):
        MerkleTree().append(b"short")
    with pytest.raises(IndexError):
        MerkleTree(HASHES).leaf(8)
