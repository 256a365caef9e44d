"""Tests of custody.merkle against the transparency-dev/merkle vectors, the RFC text and itself."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody import merkle
from custody.errors import CustodyError
from custody.merkle import (
    EMPTY_ROOT,
    ConsistencyProofError,
    InclusionProofError,
    MerkleProofError,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# The project's own copy of the vectors (see its README.md), next to this file.
DATA = Path(__file__).parent / "data" / "merkle"
INCLUSION_FILES = sorted((DATA / "inclusion").rglob("*.json"))
CONSISTENCY_FILES = sorted((DATA / "consistency").rglob("*.json"))

# The RFC 6962 test tree the vectors are built from (README.md, "How the leaves are defined").
LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f"]]  # fmt: skip
LEAF_HASHES = [leaf_hash(d) for d in LEAVES]
ROOTS = [bytes.fromhex(h) for h in [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]  # fmt: skip


def _load(path: Path) -> dict[str, Any]:
    """One vector file, with its base64 strings decoded and a null proof read as empty."""
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    b64 = {"root", "leafHash", "root1", "root2"}
    case = {k: base64.b64decode(v, validate=True) if k in b64 else v for k, v in raw.items()}
    case["proof"] = [base64.b64decode(p, validate=True) for p in raw["proof"] or []]
    return case


def _id(path: Path) -> str:
    """The vector's path below the data folder, as a test id."""
    return path.relative_to(DATA).as_posix()


def _verify_inclusion_case(case: dict[str, Any]) -> None:
    """Run the inclusion verifier on a decoded vector."""
    verify_inclusion(
        leaf_hash=case["leafHash"],
        index=case["leafIdx"],
        tree_size=case["treeSize"],
        proof=case["proof"],
        root=case["root"],
    )


def _verify_consistency_case(case: dict[str, Any]) -> None:
    """Run the consistency verifier on a decoded vector."""
    verify_consistency(
        size1=case["size1"],
        size2=case["size2"],
        root1=case["root1"],
        root2=case["root2"],
        proof=case["proof"],
    )


def _flip(h: bytes, bit: int) -> bytes:
    """``h`` with one bit inverted."""
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# --- An independent reference: RFC 9162 §2.1 transcribed recursively, with hashlib directly. ---


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _ref_node(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return _ref_node(_ref_mth(d[:k]), _ref_mth(d[k:]))


def _ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*_ref_path(m, d[:k]), _ref_mth(d[k:])]
    return [*_ref_path(m - k, d[k:]), _ref_mth(d[:k])]


def _ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    if m == len(d):
        return [] if b else [_ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*_ref_subproof(m, d[:k], b), _ref_mth(d[k:])]
    return [*_ref_subproof(m - k, d[k:], False), _ref_mth(d[:k])]


def _distinct_leaf_hashes(n: int, salt: bytes = b"") -> list[bytes]:
    """``n`` distinct leaf hashes: with repeated leaves a proof for one copy is a proof for another."""
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


# --- 1. The transparency-dev/merkle vectors ---


def test_vector_folder_is_complete() -> None:
    """The copy holds every vector file, the README and the LICENSE, and nothing else."""
    assert (DATA / "README.md").is_file()
    assert (DATA / "LICENSE").is_file()
    assert len(INCLUSION_FILES) == 98
    assert len(CONSISTENCY_FILES) == 98
    all_files = sorted(p for p in DATA.rglob("*") if p.is_file())
    assert len(all_files) == 196 + 2
    ok_inclusion = [_id(p) for p in INCLUSION_FILES if not _load(p)["wantErr"]]
    ok_consistency = [_id(p) for p in CONSISTENCY_FILES if not _load(p)["wantErr"]]
    assert sorted(ok_inclusion) == sorted(
        [f"inclusion/{i}/happy-path.json" for i in range(5)]
        + ["inclusion/single-entry/matching-root-and-leaf.json"]
    )
    assert sorted(ok_consistency) == sorted(
        [f"consistency/{i}/happy-path.json" for i in range(5)]
        + ["consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"]
    )


@pytest.mark.parametrize("path", INCLUSION_FILES, ids=_id)
def test_inclusion_vector(path: Path) -> None:
    """Each inclusion vector verifies or fails with InclusionProofError, exactly as ``wantErr`` says."""
    case = _load(path)
    if case["wantErr"]:
        # pytest.raises lets any other exception through, which fails the test.
        with pytest.raises(InclusionProofError):
            _verify_inclusion_case(case)
    else:
        _verify_inclusion_case(case)


@pytest.mark.parametrize("path", CONSISTENCY_FILES, ids=_id)
def test_consistency_vector(path: Path) -> None:
    """Each consistency vector verifies or fails with ConsistencyProofError, exactly as ``wantErr`` says."""
    case = _load(path)
    if case["wantErr"]:
        with pytest.raises(ConsistencyProofError):
            _verify_consistency_case(case)
    else:
        _verify_consistency_case(case)


@pytest.mark.parametrize("folder", ["0", "1", "2", "3", "4"])
def test_generated_proofs_equal_the_happy_path_vectors(folder: str) -> None:
    """Our generators produce exactly the proofs of the vectors' 8-leaf test tree."""
    inc = _load(DATA / "inclusion" / folder / "happy-path.json")
    prefix = LEAF_HASHES[: inc["treeSize"]]
    assert inc["leafHash"] == LEAF_HASHES[inc["leafIdx"]]
    assert inc["root"] == root_from_leaf_hashes(prefix)
    assert inclusion_proof(prefix, inc["leafIdx"]) == inc["proof"]

    con = _load(DATA / "consistency" / folder / "happy-path.json")
    prefix = LEAF_HASHES[: con["size2"]]
    assert con["root1"] == ROOTS[con["size1"]]
    assert con["root2"] == ROOTS[con["size2"]]
    assert consistency_proof(prefix, con["size1"]) == con["proof"]


def test_single_entry_vector_is_the_leaf_data() -> None:
    """The single-entry vectors' leaf is the 4 bytes ``data``, and a 1-leaf tree's root is its leaf hash."""
    case = _load(DATA / "inclusion" / "single-entry" / "matching-root-and-leaf.json")
    assert case["leafHash"] == leaf_hash(b"data") == root_from_leaf_hashes([leaf_hash(b"data")])


# --- 2. Hashing and generation ---


def test_hash_primitives() -> None:
    """The three hashes of RFC 9162 §2.1.1, and the error hierarchy."""
    assert EMPTY_ROOT == ROOTS[0] == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == ROOTS[1]
    left, right = LEAF_HASHES[0], LEAF_HASHES[1]
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest() == ROOTS[2]
    assert issubclass(InclusionProofError, MerkleProofError)
    assert issubclass(ConsistencyProofError, MerkleProofError)
    assert issubclass(MerkleProofError, CustodyError)


@pytest.mark.parametrize("n", range(9))
def test_roots_of_the_test_tree(n: int) -> None:
    """The README's roots table for the first n leaves, batch and incremental."""
    assert root_from_leaf_hashes(LEAF_HASHES[:n]) == ROOTS[n]
    tree = MerkleTree()
    for data in LEAVES:
        tree.append(data)
    assert tree.root(n) == ROOTS[n]
    assert _ref_mth(LEAF_HASHES[:n]) == ROOTS[n]


def test_generators_match_the_rfc_reference() -> None:
    """Every proof of trees up to 40 leaves equals the RFC's recursive definition."""
    for n in range(1, 41):
        d = _distinct_leaf_hashes(n)
        assert root_from_leaf_hashes(d) == _ref_mth(d)
        for m in range(n):
            assert inclusion_proof(d, m) == _ref_path(m, d)
        for m in range(1, n + 1):
            assert consistency_proof(d, m) == _ref_subproof(m, d, True)


def _check_inclusion(leaf_hashes: Sequence[bytes], index: int, size: int, roots: Sequence[bytes]) -> None:
    """Leaf ``index``'s proof in ``size`` leaves verifies; any tampering fails (roots[s]: s leaves' root)."""
    proof = inclusion_proof(leaf_hashes[:size], index)
    lh, root = leaf_hashes[index], roots[size]
    verify_inclusion(leaf_hash=lh, index=index, tree_size=size, proof=proof, root=root)
    for i, p in enumerate(proof):
        for bit in range(256):
            bad = [*proof[:i], _flip(p, bit), *proof[i + 1 :]]
            with pytest.raises(InclusionProofError):
                verify_inclusion(leaf_hash=lh, index=index, tree_size=size, proof=bad, root=root)
    for bit in (0, 255):
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf_hash=_flip(lh, bit), index=index, tree_size=size, proof=proof, root=root)
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf_hash=lh, index=index, tree_size=size, proof=proof, root=_flip(root, bit))
    for wrong in range(size + 1):
        if wrong != index:
            with pytest.raises(InclusionProofError):
                verify_inclusion(leaf_hash=lh, index=wrong, tree_size=size, proof=proof, root=root)
    # A wrong size goes with that size's true root, as a checkpoint would pair them (see
    # test_an_inclusion_proof_does_not_bind_the_size_by_itself for why).
    for wrong in range(len(roots)):
        if wrong != size:
            with pytest.raises(InclusionProofError):
                verify_inclusion(leaf_hash=lh, index=index, tree_size=wrong, proof=proof, root=roots[wrong])


def _check_consistency(leaf_hashes: Sequence[bytes], size1: int, size2: int, roots: Sequence[bytes]) -> None:
    """Proof from ``size1`` to ``size2`` leaves verifies; any tampering fails (``roots`` as above)."""
    proof = consistency_proof(leaf_hashes[:size2], size1)
    r1, r2 = roots[size1], roots[size2]
    verify_consistency(size1=size1, size2=size2, root1=r1, root2=r2, proof=proof)
    for i, p in enumerate(proof):
        for bit in range(256):
            bad = [*proof[:i], _flip(p, bit), *proof[i + 1 :]]
            with pytest.raises(ConsistencyProofError):
                verify_consistency(size1=size1, size2=size2, root1=r1, root2=r2, proof=bad)
    for bit in (0, 255):
        with pytest.raises(ConsistencyProofError):
            verify_consistency(size1=size1, size2=size2, root1=_flip(r1, bit), root2=r2, proof=proof)
        with pytest.raises(ConsistencyProofError):
            verify_consistency(size1=size1, size2=size2, root1=r1, root2=_flip(r2, bit), proof=proof)
    for wrong in range(len(roots)):
        if wrong != size1:
            with pytest.raises(ConsistencyProofError):
                verify_consistency(size1=wrong, size2=size2, root1=roots[wrong], root2=r2, proof=proof)
        if wrong != size2:
            with pytest.raises(ConsistencyProofError):
                verify_consistency(size1=size1, size2=wrong, root1=r1, root2=roots[wrong], proof=proof)


@pytest.mark.parametrize("size", range(1, 9))
def test_every_proof_of_the_test_tree_verifies_and_resists_tampering(size: int) -> None:
    """All inclusion and consistency proofs of the first ``size`` test leaves, each bit flipped."""
    for index in range(size):
        _check_inclusion(LEAF_HASHES, index, size, ROOTS)
    for size1 in range(1, size + 1):
        _check_consistency(LEAF_HASHES, size1, size, ROOTS)


def test_an_inclusion_proof_does_not_bind_the_size_by_itself() -> None:
    """Leaf 0's proof in 8 leaves also "verifies" as 7 leaves against the 8-leaf root (RFC 9162 as is)."""
    # The verifier's arithmetic is the same for both sizes, so only the root ties a proof to a size:
    # callers must take the size and the root together from one signed checkpoint.
    proof = inclusion_proof(LEAF_HASHES, 0)
    verify_inclusion(leaf_hash=LEAF_HASHES[0], index=0, tree_size=7, proof=proof, root=ROOTS[8])
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf_hash=LEAF_HASHES[0], index=0, tree_size=7, proof=proof, root=ROOTS[7])


@st.composite
def _trees(draw: st.DrawFn, max_size: int = 300) -> tuple[list[bytes], list[bytes], int]:
    """Distinct leaf hashes (a few beyond the tree, for wrong sizes), their prefix roots, and a tree size."""
    size = draw(st.integers(1, max_size))
    hashes = _distinct_leaf_hashes(size + 4, salt=draw(st.binary(max_size=8)))
    return hashes, [root_from_leaf_hashes(hashes[:s]) for s in range(len(hashes) + 1)], size


def _tamper_cases(proof: list[bytes], data: st.DataObject) -> list[list[bytes]]:
    """One random bit flip in each element of ``proof``."""
    return [
        [*proof[:i], _flip(p, data.draw(st.integers(0, 255))), *proof[i + 1 :]] for i, p in enumerate(proof)
    ]


@settings(deadline=None, max_examples=60)
@given(tree=_trees(), data=st.data())
def test_random_inclusion_proofs_verify_and_resist_tampering(
    tree: tuple[list[bytes], list[bytes], int], data: st.DataObject
) -> None:
    """In random trees up to 300 leaves, a proof verifies; a flipped bit, wrong index or size fails."""
    hashes, roots, size = tree
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(hashes[:size], index)
    lh = hashes[index]
    verify_inclusion(leaf_hash=lh, index=index, tree_size=size, proof=proof, root=roots[size])
    for bad in _tamper_cases(proof, data):
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf_hash=lh, index=index, tree_size=size, proof=bad, root=roots[size])
    wrong_index = data.draw(st.integers(0, size).filter(lambda i: i != index))
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf_hash=lh, index=wrong_index, tree_size=size, proof=proof, root=roots[size])
    wrong_size = data.draw(st.integers(0, len(roots) - 1).filter(lambda s: s != size))
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf_hash=lh, index=index, tree_size=wrong_size, proof=proof, root=roots[wrong_size])


@settings(deadline=None, max_examples=60)
@given(tree=_trees(), data=st.data())
def test_random_consistency_proofs_verify_and_resist_tampering(
    tree: tuple[list[bytes], list[bytes], int], data: st.DataObject
) -> None:
    """In random trees up to 300 leaves, a proof verifies; a flipped bit or a wrong size fails."""
    hashes, roots, size2 = tree
    size1 = data.draw(st.integers(1, size2))
    proof = consistency_proof(hashes[:size2], size1)
    r1, r2 = roots[size1], roots[size2]
    verify_consistency(size1=size1, size2=size2, root1=r1, root2=r2, proof=proof)
    for bad in _tamper_cases(proof, data):
        with pytest.raises(ConsistencyProofError):
            verify_consistency(size1=size1, size2=size2, root1=r1, root2=r2, proof=bad)
    wrong1 = data.draw(st.integers(0, len(roots) - 1).filter(lambda s: s != size1))
    with pytest.raises(ConsistencyProofError):
        verify_consistency(size1=wrong1, size2=size2, root1=roots[wrong1], root2=r2, proof=proof)
    wrong2 = data.draw(st.integers(0, len(roots) - 1).filter(lambda s: s != size2))
    with pytest.raises(ConsistencyProofError):
        verify_consistency(size1=size1, size2=wrong2, root1=r1, root2=roots[wrong2], proof=proof)


_any_size = st.one_of(st.integers(-3, 40), st.integers(-(2**70), 2**70), st.just(2**64 - 1))
_any_hash = st.one_of(st.binary(max_size=40), st.binary(min_size=32, max_size=32))


@settings(deadline=None, max_examples=300)
@given(index=_any_size, size=_any_size, lh=_any_hash, root=_any_hash, proof=st.lists(_any_hash, max_size=8))
def test_inclusion_verifier_raises_only_its_own_error(
    index: int, size: int, lh: bytes, root: bytes, proof: list[bytes]
) -> None:
    """Garbage in gives InclusionProofError, never IndexError, ValueError or a hang."""
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf_hash=lh, index=index, tree_size=size, proof=proof, root=root)


@settings(deadline=None, max_examples=300)
@given(size1=_any_size, size2=_any_size, r1=_any_hash, r2=_any_hash, proof=st.lists(_any_hash, max_size=8))
def test_consistency_verifier_raises_only_its_own_error(
    size1: int, size2: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> None:
    """Garbage in gives ConsistencyProofError or, for equal sizes and roots with no proof, success."""
    if size1 == size2 and size1 > 0 and r1 == r2 and not proof:
        verify_consistency(size1=size1, size2=size2, root1=r1, root2=r2, proof=proof)
        return
    with pytest.raises(ConsistencyProofError):
        verify_consistency(size1=size1, size2=size2, root1=r1, root2=r2, proof=proof)


def test_generators_reject_arguments_outside_the_tree() -> None:
    """Out-of-range indexes and sizes, and malformed leaf hashes, are the caller's bug: ValueError."""
    d = LEAF_HASHES[:5]
    calls: list[Callable[[], object]] = [
        lambda: inclusion_proof(d, 5),
        lambda: inclusion_proof(d, -1),
        lambda: inclusion_proof([], 0),
        lambda: consistency_proof(d, 0),
        lambda: consistency_proof(d, 6),
        lambda: root_from_leaf_hashes([b"short"]),
        lambda: inclusion_proof([*d, b""], 0),
    ]
    for call in calls:
        with pytest.raises(ValueError):  # noqa: PT011 - every case is a different message
            call()
    assert consistency_proof(d, 5) == []
    assert root_from_leaf_hashes([]) == EMPTY_ROOT


# --- 3. MerkleTree, the incremental form ---


def _tree_of(leaf_hashes: Sequence[bytes]) -> MerkleTree:
    """A MerkleTree with ``leaf_hashes`` appended one by one, checking the returned indexes."""
    tree = MerkleTree()
    for i, h in enumerate(leaf_hashes):
        assert tree.append_leaf_hash(h) == i
    assert tree.size == len(leaf_hashes)
    return tree


def test_merkle_tree_equals_batch_for_every_size_and_pair() -> None:
    """For 40 leaves, every root, inclusion proof and consistency proof of every earlier size."""
    d = _distinct_leaf_hashes(40)
    tree = MerkleTree()
    assert tree.size == 0
    assert tree.root() == EMPTY_ROOT
    for n, h in enumerate(d, start=1):
        tree.append_leaf_hash(h)
        # Results for the current size, while the tree grows...
        assert tree.root() == root_from_leaf_hashes(d[:n])
        assert tree.inclusion_proof(n - 1) == inclusion_proof(d[:n], n - 1)
        assert tree.consistency_proof(1) == consistency_proof(d[:n], 1)
    # ...and for every earlier size once it has grown.
    for size in range(41):
        assert tree.root(size) == root_from_leaf_hashes(d[:size])
        for index in range(size):
            assert tree.inclusion_proof(index, size) == inclusion_proof(d[:size], index)
        for size1 in range(1, size + 1):
            assert tree.consistency_proof(size1, size) == consistency_proof(d[:size], size1)


def test_merkle_tree_append_hashes_leaf_data() -> None:
    """``append`` takes entry data and hashes it as a leaf."""
    tree = MerkleTree()
    assert [tree.append(data) for data in LEAVES] == list(range(8))
    assert tree.root() == ROOTS[8]
    assert tree.inclusion_proof(5) == inclusion_proof(LEAF_HASHES, 5)
    assert tree.consistency_proof(6) == consistency_proof(LEAF_HASHES, 6)


@settings(deadline=None, max_examples=40)
@given(tree=_trees(), data=st.data())
def test_merkle_tree_equals_batch_in_random_trees(
    tree: tuple[list[bytes], list[bytes], int], data: st.DataObject
) -> None:
    """For random trees up to 300 leaves, random sizes, indexes and pairs agree with the batch functions."""
    hashes, _, n = tree
    mt = _tree_of(hashes[:n])
    assert mt.root() == root_from_leaf_hashes(hashes[:n])
    for _ in range(3):
        size = data.draw(st.integers(1, n))
        index = data.draw(st.integers(0, size - 1))
        size1 = data.draw(st.integers(1, size))
        assert mt.root(size) == root_from_leaf_hashes(hashes[:size])
        assert mt.inclusion_proof(index, size) == inclusion_proof(hashes[:size], index)
        assert mt.consistency_proof(size1, size) == consistency_proof(hashes[:size], size1)


def test_merkle_tree_rejects_arguments_outside_the_tree() -> None:
    """Sizes beyond the tree, bad indexes and malformed leaf hashes: ValueError."""
    tree = _tree_of(LEAF_HASHES)
    calls: list[Callable[[], object]] = [
        lambda: tree.root(9),
        lambda: tree.root(-1),
        lambda: tree.inclusion_proof(8),
        lambda: tree.inclusion_proof(3, 3),
        lambda: tree.inclusion_proof(0, 9),
        lambda: tree.consistency_proof(0),
        lambda: tree.consistency_proof(5, 4),
        lambda: tree.consistency_proof(1, 9),
        lambda: tree.append_leaf_hash(b"\x00" * 31),
    ]
    for call in calls:
        with pytest.raises(ValueError):  # noqa: PT011 - every case is a different message
            call()
    assert tree.size == 8
    assert tree.consistency_proof(8) == []


def test_merkle_tree_roots_and_proofs_reuse_cached_subtrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """After appends, a root costs a few hashes and a proof O(log² n), not a rehash of the tree."""
    n = 1000
    tree = _tree_of(_distinct_leaf_hashes(n))
    calls = 0
    real = merkle.node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real(left, right)

    monkeypatch.setattr(merkle, "node_hash", counting)
    tree.root()
    # 1000 = 512 + 256 + 128 + 64 + 32 + 8: six stored subtrees, five hashes to join them.
    assert calls == 5
    bound = n.bit_length() ** 2
    for index in range(0, n, 7):
        calls = 0
        tree.inclusion_proof(index)
        assert calls <= bound
    for size1 in range(1, n, 7):
        calls = 0
        tree.consistency_proof(size1)
        assert calls <= bound
