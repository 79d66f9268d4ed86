"""RFC 6962 / RFC 9162 Merkle tree hashing: tree heads, inclusion and consistency proofs.

Pure functions over a list of leaf hashes, byte for byte the Certificate Transparency algorithms, so any other
implementation (Go's ``transparency-dev/merkle``, Trillian, sigstore) checks our proofs and we check theirs:

- a leaf hashes as ``SHA-256(0x00 || data)``, an interior node as ``SHA-256(0x01 || left || right)``;
- the tree head of ``n`` leaves splits at ``k``, the largest power of two smaller than ``n`` (not the midpoint);
- the empty tree's head is ``SHA-256("")``.

Two incremental structures sit on top: :class:`CompactRange` (the root after every append in O(log n) memory
and time, what a log needs on its hot path) and :class:`MerkleTree` (every perfect subtree kept, so a proof
for any old or current size costs O(log² n) instead of re-hashing the log).

>>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
>>> head = root(leaves)
>>> proof = inclusion_proof(leaves, 2, 5)
>>> verify_inclusion(leaves[2], 2, 5, proof, head)
True
>>> verify_inclusion(leaf_hash(b"forged"), 2, 5, proof, head)
False
>>> old = root(leaves[:3])
>>> verify_consistency(3, 5, old, head, consistency_proof(leaves, 3, 5))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``.

    >>> leaf_hash(b"").hex()
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d'
    """
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``.

    >>> node_hash(leaf_hash(b""), leaf_hash(b"\\x00")).hex()
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125'
    """
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where RFC 6962 splits a tree.

    >>> [split_point(n) for n in (2, 3, 4, 5, 8, 9)]
    [1, 2, 2, 4, 4, 8]
    """
    if n < 2:
        raise ValueError("a tree of fewer than 2 leaves does not split")
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]): the tree head of these leaves (``EMPTY_ROOT`` for none).

    Computed level by level, promoting an odd last node unchanged, which is the same tree as the recursive
    definition (RFC 6962 trees are left-balanced) without Python recursion.

    >>> root([]) == EMPTY_ROOT
    True
    >>> root([leaf_hash(b"a")]) == leaf_hash(b"a")
    True
    """
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        paired = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _fold(subtrees: Sequence[bytes]) -> bytes:
    """The head of adjacent perfect subtrees given largest (leftmost) first, folded from the right."""
    acc = subtrees[-1]
    for left in reversed(subtrees[:-1]):
        acc = _sha256(b"\x01" + left + acc).digest()
    return acc


class CompactRange:
    """The perfect subtrees covering the leaves appended so far: O(log n) memory, O(log n) per root.

    >>> cr = CompactRange()
    >>> for i in range(5):
    ...     cr.append(leaf_hash(bytes([i])))
    >>> cr.size, cr.root() == root([leaf_hash(bytes([i])) for i in range(5)])
    (5, True)
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._nodes: list[bytes] = []  # roots of perfect subtrees, largest (leftmost) first
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash; merges the equal-sized subtrees it completes (amortised one hash)."""
        nodes, n = self._nodes, self._size
        nodes.append(leaf)
        while n & 1:
            right = nodes.pop()
            nodes[-1] = _sha256(b"\x01" + nodes[-1] + right).digest()
            n >>= 1
        self._size += 1

    def root(self) -> bytes:
        """The tree head of every leaf appended so far."""
        return _fold(self._nodes) if self._nodes else EMPTY_ROOT

    def copy(self) -> CompactRange:
        """An independent copy: the head after an append can be had before the append is kept."""
        twin = CompactRange()
        twin._nodes, twin._size = list(self._nodes), self._size
        return twin

    def next_leaf_proof(self) -> list[bytes]:
        """The inclusion proof of the leaf appended next, in the tree it makes (index ``size``, size ``size + 1``):
        the perfect subtrees covering the leaves so far, smallest (deepest) first. At most log2(n) hashes, and no
        hashing: what a log hands out with each append.

        >>> cr, leaves = CompactRange(), [leaf_hash(bytes([i])) for i in range(6)]
        >>> for leaf in leaves[:5]:
        ...     cr.append(leaf)
        >>> cr.next_leaf_proof() == inclusion_proof(leaves, 5, 6)
        True
        """
        return self._nodes[::-1]


def _check_range(index_or_old: int, size: int, available: int, what: str) -> None:
    if not 0 <= size <= available:
        raise ValueError(f"size {size} is outside the tree (0..{available})")
    if what == "index" and not 0 <= index_or_old < size:
        raise ValueError(f"index {index_or_old} is not in a tree of size {size}")
    if what == "old" and not 0 <= index_or_old <= size:
        raise ValueError(f"old size {index_or_old} is larger than new size {size}")


def _path(index: int, size: int, mth: Callable[[int, int], bytes]) -> list[bytes]:
    """PATH(index, D[size]) with ``mth(start, end)`` giving MTH(D[start:end]) (RFC 9162 §2.1.3.1)."""
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            proof.append(mth(start + k, end))
            end = start + k
        else:
            proof.append(mth(start, start + k))
            start += k
    proof.reverse()  # PATH lists the deepest sibling first
    return proof


def _subproof(old: int, size: int, mth: Callable[[int, int], bytes]) -> list[bytes]:
    """PROOF(old, D[size]) = SUBPROOF(old, D[size], true) (RFC 9162 §2.1.4.1)."""
    if old in (0, size):
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, size, old, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(mth(start, end))
            break
        k = split_point(n)
        if m <= k:
            proof.append(mth(start + k, end))
            end = start + k
        else:
            proof.append(mth(start, start + k))
            start, m, complete = start + k, m - k, False
    proof.reverse()
    return proof


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """The audit path proving leaf ``index`` is in the tree of the first ``size`` leaves.

    >>> leaves = [leaf_hash(bytes([i])) for i in range(3)]
    >>> inclusion_proof(leaves, 2, 3) == [root(leaves[:2])]
    True
    """
    _check_range(index, size, len(leaf_hashes), "index")
    return _path(index, size, lambda start, end: root(leaf_hashes[start:end]))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of the tree of ``new_size`` leaves.

    Empty when ``old_size`` is 0 or equals ``new_size`` (nothing to prove).
    """
    _check_range(old_size, new_size, len(leaf_hashes), "old")
    return _subproof(old_size, new_size, lambda start, end: root(leaf_hashes[start:end]))


def _hashes_ok(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def _sides(fn: int, sn: int, count: int) -> list[bool] | None:
    """Climbing from node ``fn`` of a level whose last node is ``sn`` (RFC 9162 §2.1.3.2 and §2.1.4.2): for each
    of ``count`` proof hashes, whether it is the left sibling; None unless the proof is exactly that long."""
    sides: list[bool] = []
    for _ in range(count):
        if sn == 0:
            return None
        left = bool(fn & 1) or fn == sn
        sides.append(left)
        if left:
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        fn >>= 1
        sn >>= 1
    return sides if sn == 0 else None


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The tree head ``proof`` leads to from ``leaf`` at ``index`` in a tree of ``size`` leaves, or None when the
    input is malformed (wrong lengths, index out of range): for a verifier that checks a signature over the head
    rather than compares it with one it holds.

    >>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
    >>> root_from_inclusion(leaves[4], 4, 5, inclusion_proof(leaves, 4, 5)) == root(leaves)
    True
    """
    if not (0 <= index < size) or not _hashes_ok(leaf, *proof):
        return None
    sides = _sides(index, size - 1, len(proof))
    if sides is None:
        return None
    acc = leaf
    for p, left in zip(proof, sides, strict=True):
        acc = node_hash(p, acc) if left else node_hash(acc, p)
    return acc


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """True when ``proof`` shows ``leaf`` at ``index`` in the tree of ``size`` with head ``root_hash``.

    The RFC 9162 §2.1.3.2 algorithm; any malformed input (wrong lengths, index out of range) is False.
    """
    if not _hashes_ok(root_hash):
        return False
    head = root_from_inclusion(leaf, index, size, proof)
    return head is not None and head == root_hash


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """True when ``proof`` shows the tree (old_size, old_root) is a prefix of (new_size, new_root).

    The RFC 9162 §2.1.4.2 algorithm. Equal sizes need equal roots and an empty proof; the empty tree
    (whose head must be ``EMPTY_ROOT``) is a prefix of every tree, with an empty proof.
    """
    if not (0 <= old_size <= new_size) or not _hashes_ok(old_root, new_root, *proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old head is itself a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    sides = _sides(fn, sn, len(path) - 1)
    if sides is None:
        return False
    fr = sr = path[0]
    for c, left in zip(path[1:], sides, strict=True):
        if left:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    return fr == old_root and sr == new_root


class MerkleTree:
    """An append-only tree keeping every perfect subtree's hash (about 2 × 32 bytes per leaf).

    Level 0 holds the leaf hashes, level ``l`` the hashes of the aligned perfect subtrees of ``2**l`` leaves,
    each level one contiguous ``bytearray``. The head of any past size and any proof come from O(log n)
    stored nodes, folded with at most O(log n) hashes each.

    >>> tree = MerkleTree(leaf_hash(bytes([i])) for i in range(7))
    >>> leaves = [tree.leaf(i) for i in range(7)]
    >>> tree.root(5) == root(leaves[:5]), tree.inclusion_proof(3, 7) == inclusion_proof(leaves, 3, 7)
    (True, True)
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        for leaf in leaf_hashes:
            self.append(leaf)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        levels = self._levels
        levels[0] += leaf
        n, level = self._size + 1, 0
        while n & 1 == 0:  # this leaf completed a perfect subtree one level up
            below = levels[level]
            if len(levels) == level + 1:
                levels.append(bytearray())
            levels[level + 1] += _sha256(b"\x01" + below[-2 * HASH_SIZE :]).digest()
            n >>= 1
            level += 1
        self._size += 1

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise IndexError(index)
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _node(self, level: int, index: int) -> bytes:
        return bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for ``start`` aligned to a power of two at least as large as the range.

        Every range the RFC recursion visits is such a range, so it is the fold of the perfect subtrees
        given by the bits of its length, largest first.
        """
        if end == start:
            return EMPTY_ROOT
        parts: list[bytes] = []
        offset, remaining = start, end - start
        while remaining:
            level = remaining.bit_length() - 1
            parts.append(self._node(level, offset >> level))
            offset += 1 << level
            remaining -= 1 << level
        return _fold(parts)

    def root(self, size: int | None = None) -> bytes:
        """The tree head of the first ``size`` leaves (default: all)."""
        size = self._size if size is None else size
        _check_range(0, size, self._size, "size")
        return self._mth(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self._size if size is None else size
        _check_range(index, size, self._size, "index")
        return _path(index, size, self._mth)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self._size if new_size is None else new_size
        _check_range(old_size, new_size, self._size, "old")
        return _subproof(old_size, new_size, self._mth)
