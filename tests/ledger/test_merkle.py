"""RFC 6962/9162 Merkle hashing and proofs (`cta.merkle`): known answers, pymerkle as an independent
implementation, and hypothesis properties (every honest proof verifies; any tampering fails)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cta import merkle
from cta.merkle import (
    EMPTY_ROOT,
    Frontier,
    Levels,
    consistency_proof,
    frontier_positions,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)


def leaves_of(n: int) -> list[bytes]:
    return [leaf_hash(f"entry {i}".encode()) for i in range(n)]


def pymerkle_tree(n: int) -> pymerkle.InmemoryTree:
    """pymerkle with its default security mode: RFC 6962's 0x00 leaf and 0x01 node prefixes."""
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for i in range(n):
        tree.append_entry(f"entry {i}".encode())
    return tree


# ----- known answers ---------------------------------------------------------------------------------------------


def test_the_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root([]) == EMPTY_ROOT == Levels().root() == Frontier().root()


def test_leaf_and_node_hashes_carry_the_rfc_prefixes() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


def test_small_trees_follow_the_rfc_recursion() -> None:
    d = leaves_of(5)
    assert root(d[:1]) == d[0]
    assert root(d[:2]) == node_hash(d[0], d[1])
    assert root(d[:3]) == node_hash(node_hash(d[0], d[1]), d[2])
    assert root(d[:5]) == node_hash(node_hash(node_hash(d[0], d[1]), node_hash(d[2], d[3])), d[4])


def test_rfc6962_reference_root_of_eight_leaves() -> None:
    """The test vector of Certificate Transparency's reference implementation (merkle_tree_test.cc)."""
    inputs = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
    expected = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    d = [leaf_hash(bytes.fromhex(x)) for x in inputs]
    assert [root(d[: n + 1]).hex() for n in range(8)] == expected


@pytest.mark.parametrize("n", range(0, 34))
def test_roots_and_proofs_match_pymerkle(n: int) -> None:
    d, tree, levels = leaves_of(n), pymerkle_tree(n), Levels(leaves_of(n))
    assert root(d) == levels.root() == tree.get_root()
    frontier = Frontier()
    for leaf in d:
        frontier.append(leaf)
    assert frontier.root() == tree.get_root()
    for size in range(1, n + 1):
        assert levels.root(size) == tree.get_root(size)
        for index in range(size):
            proof = inclusion_proof(index, size, levels)
            assert verify_inclusion(d[index], index, size, proof, tree.get_root(size))
            theirs = tree.prove_inclusion(index + 1, size)  # pymerkle counts leaves from 1
            pymerkle.verify_inclusion(d[index], levels.root(size), theirs)  # raises when invalid
            assert sorted(theirs.path[1:]) == sorted(proof)
        for old in range(1, size + 1):
            proof = consistency_proof(old, size, levels)
            assert verify_consistency(old, size, tree.get_root(old), tree.get_root(size), proof)
            theirs = tree.prove_consistency(old, size)
            pymerkle.verify_consistency(levels.root(old), levels.root(size), theirs)


def test_proofs_of_a_seven_leaf_tree_are_the_rfc_example() -> None:
    """RFC 9162 2.1.5: the path for d0 in D[7] is [b, h, l]; PROOF(3, D[7]) = [c, d, g, l]; PROOF(4, D[7]) = [l];
    PROOF(6, D[7]) = [i, j, k]."""
    d = leaves_of(7)
    levels = Levels(d)
    a, b, c, dd, e, f, j = d  # the RFC's leaf hashes; its d6 is the node it calls j
    g, h, i = node_hash(a, b), node_hash(c, dd), node_hash(e, f)
    k, l = node_hash(g, h), node_hash(i, j)  # noqa: E741 (the RFC's names)
    assert inclusion_proof(0, 7, levels) == [b, h, l]
    assert consistency_proof(3, 7, levels) == [c, dd, g, l]
    assert consistency_proof(4, 7, levels) == [l]
    assert consistency_proof(6, 7, levels) == [i, j, k]


def test_frontier_names_its_nodes() -> None:
    assert frontier_positions(0) == []
    assert frontier_positions(6) == [(2, 0), (1, 2)]
    assert frontier_positions(7) == [(2, 0), (1, 2), (0, 6)]
    frontier = Frontier()
    created = [frontier.append(leaf) for leaf in leaves_of(4)]
    assert [[(level, index) for level, index, _ in c] for c in created] == [
        [(0, 0)],
        [(0, 1), (1, 0)],
        [(0, 2)],
        [(0, 3), (1, 1), (2, 0)],
    ]


def test_bad_arguments_are_refused() -> None:
    levels = Levels(leaves_of(3))
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(3, 3, levels)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(4, 3, levels)
    assert consistency_proof(0, 3, levels) == [] == consistency_proof(3, 3, levels)
    assert not verify_inclusion(leaves_of(1)[0], 0, 0, [], EMPTY_ROOT)
    assert verify_consistency(0, 3, EMPTY_ROOT, levels.root(), [])
    assert not verify_consistency(3, 3, levels.root(), levels.root(), [levels.root()])
    assert not verify_consistency(2, 3, levels.root(2), levels.root(), [])


# ----- properties ------------------------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=300)


def _flip(data: bytes, position: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@settings(max_examples=150, deadline=None)
@given(size=sizes, data=st.data())
def test_every_inclusion_proof_verifies_and_any_tampering_fails(size: int, data: st.DataObject) -> None:
    d = leaves_of(size)
    levels = Levels(d)
    index = data.draw(st.integers(0, size - 1))
    head = levels.root()
    proof = inclusion_proof(index, size, levels)
    assert verify_inclusion(d[index], index, size, proof, head)
    # another leaf, another index, a flipped byte anywhere, a dropped or extra node, another order
    assert not verify_inclusion(leaf_hash(b"forged"), index, size, proof, head)
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        assert not verify_inclusion(d[index], other, size, proof, head)
        assert not verify_inclusion(d[other], index, size, proof, head)
    assert not verify_inclusion(d[index], index, size, proof, _flip(head, data.draw(st.integers(0, 31))))
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        flipped = list(proof)
        flipped[at] = _flip(proof[at], data.draw(st.integers(0, 31)))
        assert not verify_inclusion(d[index], index, size, flipped, head)
        assert not verify_inclusion(d[index], index, size, proof[:at] + proof[at + 1 :], head)
        if len(proof) > 1:
            assert not verify_inclusion(d[index], index, size, list(reversed(proof)), head)
    assert not verify_inclusion(d[index], index, size, [*proof, head], head)


@settings(max_examples=150, deadline=None)
@given(size=sizes, data=st.data())
def test_every_consistency_proof_verifies_and_any_tampering_fails(size: int, data: st.DataObject) -> None:
    d = leaves_of(size)
    levels = Levels(d)
    old = data.draw(st.integers(1, size))
    old_root, new_root = levels.root(old), levels.root()
    proof = consistency_proof(old, size, levels)
    assert verify_consistency(old, size, old_root, new_root, proof)
    # a history that differs anywhere before `old` (one changed, dropped or swapped entry) is not consistent
    at = data.draw(st.integers(0, old - 1))
    changed = list(d)
    changed[at] = leaf_hash(b"rewritten")
    assert not verify_consistency(old, size, old_root, Levels(changed).root(), proof)
    assert not verify_consistency(old, size, Levels(changed).root(old), new_root, proof)
    if size > 1:
        dropped = d[:at] + d[at + 1 :]
        assert not verify_consistency(old, size, old_root, Levels(dropped).root(), proof)
    if old > 1:
        swapped = list(d)
        swapped[0], swapped[old - 1] = swapped[old - 1], swapped[0]
        assert not verify_consistency(old, size, old_root, Levels(swapped).root(), proof)
    # a truncated (shrunk) tree, a flipped byte, a dropped node
    if old < size:
        assert not verify_consistency(old, size, old_root, levels.root(size - 1), proof)
        assert not verify_consistency(size, old, new_root, old_root, proof)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        flipped = list(proof)
        flipped[k] = _flip(proof[k], data.draw(st.integers(0, 31)))
        assert not verify_consistency(old, size, old_root, new_root, flipped)
        assert not verify_consistency(old, size, old_root, new_root, proof[:k] + proof[k + 1 :])


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 200))
def test_the_frontier_root_equals_the_full_root_after_every_append(size: int) -> None:
    frontier, d = Frontier(), leaves_of(size)
    for n, leaf in enumerate(d, start=1):
        frontier.append(leaf)
        assert frontier.root() == root(d[:n])
        assert len(frontier.hashes) == bin(n).count("1")
    levels = Levels(d)
    assert frontier.hashes == [levels(level, index) for level, index in frontier_positions(size)]


def test_module_is_pure() -> None:
    text = Path(merkle.__file__).read_text(encoding="utf-8")
    assert "import os" not in text and "open(" not in text and "sqlalchemy" not in text
