"""RFC 6962 / RFC 9162 (section 2.1) Merkle tree hashing, inclusion and consistency proofs. Pure: no I/O.

A tree of n leaves has the Merkle Tree Hash MTH(D[n]): sha256() for n = 0, sha256(0x00 || d) for one leaf, and
sha256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) otherwise, k the largest power of two smaller than n.

Every function here works on leaf *hashes* (`leaf_hash(data)`), and the proof builders read the tree through a
`NodeSource`: the hash of a perfect, aligned subtree, node (level, index) covering leaves
[index * 2**level, (index + 1) * 2**level). A store that keeps those nodes (`Levels` in memory, the ledger's table
in the database) answers any proof with O(log n) reads. `Frontier` is the compact form an append needs: the roots
of the perfect subtrees that make up the tree, one per set bit of its size, so an append costs O(log n) hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeSource = Callable[[int, int], bytes]  # (level, index) -> hash of a perfect aligned subtree


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf: sha256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node: sha256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves, bottom-up (an odd last node moves up unchanged, which equals the RFC's recursion)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def range_root(lo: int, hi: int, nodes: NodeSource) -> bytes:
    """MTH(D[lo:hi]) for a range that starts on a boundary of its left subtree (as every range a proof needs does),
    folded from the perfect aligned subtrees that cover it."""
    if hi <= lo:
        return EMPTY_ROOT
    parts: list[bytes] = []
    start = lo
    while start < hi:
        # the largest perfect subtree aligned at `start` that fits in [start, hi)
        level = (hi - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        parts.append(nodes(level, start >> level))
        start += 1 << level
    result = parts[-1]
    for part in reversed(parts[:-1]):
        result = node_hash(part, result)
    return result


def inclusion_proof(index: int, size: int, nodes: NodeSource) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 2.1.3.1: the sibling hashes from the leaf up to the root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(range_root(lo + k, hi, nodes))
            hi = lo + k
        else:
            path.append(range_root(lo, lo + k, nodes))
            lo = lo + k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, nodes: NodeSource) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 2.1.4.1 (empty for old_size 0 or equal sizes)."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    m, lo, hi, complete = old_size, 0, new_size, True
    while m != hi:
        k = _split(hi - lo)
        if m - lo <= k:
            proof.append(range_root(lo + k, hi, nodes))
            hi = lo + k
        else:
            proof.append(range_root(lo, lo + k, nodes))
            lo, complete = lo + k, False
    if not complete:
        proof.append(range_root(lo, hi, nodes))
    proof.reverse()
    return proof


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `proof` show leaf hash `leaf` at `index` in the tree of `size` with `root_hash`?"""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root_hash


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does `proof` show the tree of `old_size` with `old_root` is a prefix of the tree of
    `new_size` with `new_root`?"""
    if not 0 <= old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node of the path
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


@dataclass
class Frontier:
    """The roots of the perfect subtrees a tree of `size` leaves is made of, largest first (one per set bit)."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns the nodes (level, index, hash) completed by it, the leaf first."""
        created = [(0, self.size, leaf)]
        node, level, n = leaf, 0, self.size
        while n & 1:
            node = node_hash(self.hashes.pop(), node)
            level, n = level + 1, n >> 1
            created.append((level, n, node))
        self.hashes.append(node)
        self.size += 1
        return created

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for part in reversed(self.hashes[:-1]):
            result = node_hash(part, result)
        return result


def frontier_positions(size: int) -> list[tuple[int, int]]:
    """The (level, index) of each frontier node of a tree of `size` leaves, largest first."""
    positions = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            positions.append((level, start >> level))
            start += 1 << level
    return positions


class Levels:
    """Every perfect aligned node of a tree held in memory (level 0 = the leaf hashes): a `NodeSource`."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def __call__(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return range_root(0, self.size if size is None else size, self)
