"""RFC 6962 / RFC 9162 Merkle tree hashing, proof generation and proof verification (SHA-256).

The tree is the Certificate Transparency one: leaves and interior nodes are hashed with distinct
prefixes (0x00 and 0x01) so that a leaf can never be passed off as a node, and a tree whose size is
not a power of two is split at the largest power of two below its size (RFC 9162 §2.1.1).

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, plus the edge-case rules of
transparency-dev/merkle (``proof/verify.go``), whose test vectors are in tests/custody/data/merkle/.
Every ``verify_*`` function returns nothing and raises :class:`MerkleProofError` on any failure, so
a forgotten return value can never turn a bad proof into a good one.

Generators raise ``ValueError`` for arguments outside the tree: that is a bug in the caller, not a
bad proof from someone else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from custody.errors import CustodyError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "ConsistencyProofError",
    "InclusionProofError",
    "MerkleProofError",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

#: Size in bytes of every hash in the tree (SHA-256).
HASH_SIZE: Final = 32

#: MTH({}) = SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"


class MerkleProofError(CustodyError):
    """A Merkle proof does not prove what it claims; the message says which check failed."""


class InclusionProofError(MerkleProofError):
    """An inclusion proof does not show the entry in the tree with the given root."""


class ConsistencyProofError(MerkleProofError):
    """A consistency proof does not show the earlier tree is a prefix of the later one."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one entry's data."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    """Raise ValueError unless every leaf hash is HASH_SIZE bytes."""
    for i, h in enumerate(leaf_hashes):
        if len(h) != HASH_SIZE:
            raise ValueError(f"leaf hash {i} is {len(h)} bytes, expected {HASH_SIZE}")


def _mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of already-checked leaf hashes, iteratively in O(n) hashes."""
    if not leaf_hashes:
        return EMPTY_ROOT
    # A stack of perfect subtrees with strictly decreasing heights, like a binary counter: equal
    # heights merge as soon as they meet, so each node is hashed exactly once.
    stack: list[tuple[int, bytes]] = []
    for h in leaf_hashes:
        height, node = 0, h
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))
    # RFC 9162 puts the smaller, incomplete subtrees on the right: fold the leftover peaks right to left.
    root = stack.pop()[1]
    while stack:
        root = node_hash(stack.pop()[1], root)
    return root


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1 for the given leaf hashes."""
    _check_leaf_hashes(leaf_hashes)
    return _mth(leaf_hashes)


# A function returning MTH(D[lo:lo+n]) for a subtree that RFC 9162's recursion visits.
_SubtreeHash: TypeAlias = Callable[[int, int], bytes]


def _path(index: int, size: int, subtree_hash: _SubtreeHash) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, by walking down from the root instead of recursing."""
    siblings: list[bytes] = []
    lo, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            siblings.append(subtree_hash(lo + k, n - k))
            n = k
        else:
            siblings.append(subtree_hash(lo, k))
            lo, n, m = lo + k, n - k, m - k
    # The walk meets siblings top-down; the proof lists them from the leaf up.
    siblings.reverse()
    return siblings


def _subproof(size1: int, size2: int, subtree_hash: _SubtreeHash) -> list[bytes]:
    """SUBPROOF(size1, D[size2], true) of RFC 9162 §2.1.4.1, walking down from the root (0 < size1)."""
    siblings: list[bytes] = []
    lo, n, m, whole = 0, size2, size1, True
    while m != n:
        k = _split(n)
        if m <= k:
            siblings.append(subtree_hash(lo + k, n - k))
            n = k
        else:
            siblings.append(subtree_hash(lo, k))
            lo, n, m, whole = lo + k, n - k, m - k, False
    siblings.reverse()
    # When the old tree is a whole subtree of the new one on the left edge (b = true) the verifier
    # already has its hash: root1. Otherwise the subtree where the walk stopped must be sent.
    return siblings if whole else [subtree_hash(lo, n), *siblings]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The RFC 9162 inclusion proof (PATH) of leaf ``index`` in the tree of all ``leaf_hashes``."""
    _check_leaf_hashes(leaf_hashes)
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaf_hashes)} leaves")
    return _path(index, len(leaf_hashes), lambda lo, n: _mth(leaf_hashes[lo : lo + n]))


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int) -> list[bytes]:
    """The RFC 9162 consistency proof from the first ``size1`` leaves to all ``leaf_hashes``."""
    _check_leaf_hashes(leaf_hashes)
    size2 = len(leaf_hashes)
    if not 0 < size1 <= size2:
        # RFC 9162 §2.1.4 defines proofs only for 0 < first; the verifiers reject size1 = 0 too.
        raise ValueError(f"consistency proof needs 0 < size1 <= {size2}, got size1 = {size1}")
    return _subproof(size1, size2, lambda lo, n: _mth(leaf_hashes[lo : lo + n]))


def _inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes an inclusion proof of leaf ``index`` in a tree of ``size`` has (index < size)."""
    # Below the level where the paths to ``index`` and to the last leaf part, every level has a
    # sibling; above it, only levels where ``index`` is a right child do (verify.go decompInclProof).
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_proof_length(size1: int, size2: int) -> int:
    """How many hashes a consistency proof from ``size1`` to ``size2`` has (0 < size1 < size2)."""
    # The proof is the inclusion proof of leaf size1-1, minus the levels inside the largest perfect
    # subtree ending at size1, plus that subtree's hash unless it is the whole old tree.
    shift = (size1 & -size1).bit_length() - 1
    seed = 0 if size1 == 1 << shift else 1
    return seed + _inclusion_proof_length(size1 - 1, size2) - shift


def _leaves(n: int) -> str:
    """ "1 leaf", "2 leaves"… for messages."""
    return f"{n} leaf" if n == 1 else f"{n} leaves"


def _hashes(n: int) -> str:
    """ "1 hash", "2 hashes"… for messages."""
    return f"{n} hash" if n == 1 else f"{n} hashes"


def _short(h: bytes) -> str:
    """A hash abbreviated for messages."""
    return (h.hex()[:16] + "…") if len(h) > 8 else (h.hex() or "(empty)")


def _check_hash(what: str, h: bytes, error: type[MerkleProofError]) -> None:
    """Raise ``error`` unless ``h`` is HASH_SIZE bytes."""
    if len(h) != HASH_SIZE:
        raise error(f"{what} is {len(h)} bytes long, a SHA-256 hash is {HASH_SIZE}")


def verify_inclusion(
    *, leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` leaves with ``root``."""
    err = InclusionProofError
    if index < 0 or tree_size < 0:
        raise err(f"negative leaf index {index} or tree size {tree_size}")
    # RFC 9162 §2.1.3.2 step 1; it also rejects every proof against the empty tree.
    if index >= tree_size:
        raise err(f"leaf index {index} is not in a tree of {_leaves(tree_size)}")
    # Without this a 1-leaf "tree" with an empty leaf hash and an empty root would verify.
    _check_hash("the leaf hash", leaf_hash, err)
    _check_hash("the root", root, err)
    for i, p in enumerate(proof):
        _check_hash(f"proof hash {i}", p, err)
    want = _inclusion_proof_length(index, tree_size)
    if len(proof) != want:
        raise err(
            f"the proof has {_hashes(len(proof))}, leaf {index} of a tree of"
            f" {_leaves(tree_size)} needs {want}"
        )

    # RFC 9162 §2.1.3.2 steps 2-5, literally; the length check above makes the sn checks unreachable
    # but they stay as the RFC's own guard.
    fn, sn, r = index, tree_size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise err("the proof is longer than the path from the leaf to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                # Climb past the levels where this node is promoted unpaired (the right edge).
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise err("the proof is shorter than the path from the leaf to the root")
    if r != root:
        raise err(
            f"the proof for leaf {index} leads to root {_short(r)}, not to the expected root {_short(root)}:"
            f" the leaf, the proof or the root was altered, or they belong to different trees"
        )


def verify_consistency(*, size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of ``size1`` leaves, ``root1``, is a prefix of the one of ``size2``, ``root2``."""
    err = ConsistencyProofError
    # The order of these checks is the one of verify.go, which the shared test vectors pin down.
    if size1 < 0 or size2 < 0:
        raise err(f"negative tree size {size1} or {size2}")
    if size2 < size1:
        raise err(f"the later tree ({_leaves(size2)}) is smaller than the earlier one ({size1})")
    if size1 == 0:
        # Every tree extends the empty tree, so such a proof would prove nothing; refuse it outright.
        raise err("a consistency proof from the empty tree is meaningless")
    if size1 == size2:
        # Same size: the trees are consistent exactly when the roots are equal. The roots' length is
        # deliberately not checked here (the vectors accept any equal byte strings).
        if proof:
            raise err(
                f"both trees have {_leaves(size1)}, so the proof must be empty, not {_hashes(len(proof))}"
            )
        if root1 != root2:
            raise err(
                f"two trees of {_leaves(size1)} have different roots {_short(root1)} and {_short(root2)}"
            )
        return
    if not proof:
        raise err(f"the consistency proof from {size1} to {size2} leaves is empty")
    _check_hash("the earlier root", root1, err)
    _check_hash("the later root", root2, err)
    for i, p in enumerate(proof):
        _check_hash(f"proof hash {i}", p, err)
    want = _consistency_proof_length(size1, size2)
    if len(proof) != want:
        raise err(f"the proof has {_hashes(len(proof))}, one from {size1} to {_leaves(size2)} needs {want}")

    # RFC 9162 §2.1.4.2 steps 2-7, literally.
    path = list(proof)
    if (size1 & (size1 - 1)) == 0:
        # The old tree is a whole left subtree of the new one: its root is the proof's starting node.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise err("the proof is longer than the path to the later root")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            # A node only the later tree has: it changes the later root, never the earlier one.
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise err("the proof is shorter than the path to the later root")
    if fr != root1:
        raise err(
            f"the proof rebuilds the earlier root as {_short(fr)}, not {_short(root1)}: the tree of"
            f" {_leaves(size1)} is not a prefix of the tree of {_leaves(size2)}, or a root or the proof"
            f" was altered"
        )
    if sr != root2:
        raise err(
            f"the proof rebuilds the later root as {_short(sr)}, not {_short(root2)}: the tree of"
            f" {_leaves(size2)} does not extend the tree of {_leaves(size1)}, or a root or the proof"
            f" was altered"
        )


class MerkleTree:
    """An append-only RFC 9162 tree that keeps every perfect subtree's hash, for cheap roots and proofs."""

    # Not thread-safe: a server sharing one tree between requests must serialise appends itself.

    def __init__(self) -> None:
        """Start an empty tree."""
        # _levels[h][i] is the hash of the perfect subtree of 2**h leaves starting at leaf i * 2**h.
        # Each is hashed once, when its last leaf arrives, and never changes afterwards (2n hashes
        # stored in all), so any RFC subtree of any earlier size is a handful of lookups.
        self._levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    def append(self, data: bytes) -> int:
        """Append an entry's data (hashed as a leaf); returns its index."""
        return self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, leaf_hash: bytes) -> int:
        """Append an already computed leaf hash; returns its index."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf_hash)}")
        index = self.size
        self._levels[0].append(bytes(leaf_hash))
        # Completing a pair completes its parent: carry upwards like a binary counter.
        height = 0
        while len(self._levels[height]) % 2 == 0:
            level = self._levels[height]
            if height + 1 == len(self._levels):
                self._levels.append([])
            self._levels[height + 1].append(node_hash(level[-2], level[-1]))
            height += 1
        return index

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        size = self._size_arg(size, "size")
        return self._subtree_hash(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The inclusion proof of leaf ``index`` in the tree of the first ``size`` leaves."""
        size = self._size_arg(size, "size")
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
        return _path(index, size, self._subtree_hash)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """The consistency proof from the first ``size1`` leaves to the first ``size2`` leaves."""
        size2 = self._size_arg(size2, "size2")
        if not 0 < size1 <= size2:
            raise ValueError(f"consistency proof needs 0 < size1 <= {size2}, got size1 = {size1}")
        return _subproof(size1, size2, self._subtree_hash)

    def _size_arg(self, size: int | None, name: str) -> int:
        """Default ``size`` to the current size and check it is one this tree has had."""
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"{name} {size} is outside 0..{self.size}, the sizes this tree has had")
        return size

    def _subtree_hash(self, lo: int, n: int) -> bytes:
        """MTH(D[lo:lo+n]) for a subtree RFC 9162's recursion visits (n >= 1)."""
        # Such a subtree starts at a multiple of the power of two at or above n, so it is the perfect
        # subtrees for the bits of n, left to right, each aligned and therefore already stored.
        peaks: list[bytes] = []
        for height in range(n.bit_length() - 1, -1, -1):
            if (n >> height) & 1:
                peaks.append(self._levels[height][lo >> height])
                lo += 1 << height
        root = peaks.pop()
        while peaks:
            root = node_hash(peaks.pop(), root)
        return root
