"""The log's Merkle tree as stored: leaf hashes plus the hash of every completed perfect subtree.

The sequencer stores the hash of each perfect subtree (2**h leaves from a multiple of 2**h) once, when
its last leaf arrives; those rows never change. Every subtree that RFC 9162's root, PATH and SUBPROOF
recursions visit is a run of such aligned perfect subtrees (the bits of its size, left to right), so a
root or a proof needs O(log n) stored hashes, fetched in one query per table — never every leaf.
The walks below mirror ``custody.merkle._path`` / ``_subproof``; the tests check the results against
``custody.merkle`` built from all leaves and verify them with ``custody.merkle.verify_*``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from custody.merkle import EMPTY_ROOT, node_hash
from server.custody_log.errors import LogDamagedError
from server.custody_log.models import LogLeaf, LogNode

#: A subtree of the log: (first leaf, number of leaves).
Span = tuple[int, int]
#: A stored perfect subtree: (height, first leaf); height 0 is a leaf.
NodeKey = tuple[int, int]


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2): where RFC 9162 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_parts(lo: int, n: int) -> list[NodeKey]:
    """The aligned perfect subtrees that make up leaves [lo, lo+n), left to right (largest first)."""
    parts: list[NodeKey] = []
    for height in range(n.bit_length() - 1, -1, -1):
        if (n >> height) & 1:
            if lo % (1 << height):
                raise ValueError(f"leaves [{lo}, {lo + n}) are not a subtree RFC 9162 visits")
            parts.append((height, lo))
            lo += 1 << height
    return parts


def path_spans(index: int, size: int) -> list[Span]:
    """The subtrees whose hashes form PATH(index, D[size]), leaf upwards (RFC 9162 §2.1.3.1)."""
    spans: list[Span] = []
    lo, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            spans.append((lo + k, n - k))
            n = k
        else:
            spans.append((lo, k))
            lo, n, m = lo + k, n - k, m - k
    spans.reverse()
    return spans


def subproof_spans(size1: int, size2: int) -> list[Span]:
    """The subtrees whose hashes form SUBPROOF(size1, D[size2], true) (RFC 9162 §2.1.4.1), 0 < size1."""
    spans: list[Span] = []
    lo, n, m, whole = 0, size2, size1, True
    while m != n:
        k = _split(n)
        if m <= k:
            spans.append((lo + k, n - k))
            n = k
        else:
            spans.append((lo, k))
            lo, n, m, whole = lo + k, n - k, m - k, False
    spans.reverse()
    return spans if whole else [(lo, n), *spans]


class StoredTree:
    """Roots and proofs for any size the log has had, read from the stored leaves and nodes."""

    def __init__(self, session: Session, size: int) -> None:
        """``size``: the log's current size (the head); nothing beyond it is asked for."""
        self.session = session
        self.size = size

    def root(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves."""
        self._check_size(size)
        return self._hashes([(0, size)])[0] if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The inclusion proof of leaf ``index`` in the tree of the first ``size`` leaves."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
        return self._hashes(path_spans(index, size))

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The consistency proof from the first ``size1`` leaves to the first ``size2`` leaves."""
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise ValueError(f"consistency proof needs 0 < size1 <= {size2}, got size1 = {size1}")
        return self._hashes(subproof_spans(size1, size2))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is outside 0..{self.size}, the sizes this log has had")

    def _hashes(self, spans: list[Span]) -> list[bytes]:
        """MTH of each span, from one fetch of the perfect subtrees they consist of."""
        parts = [perfect_parts(lo, n) for lo, n in spans]
        stored = fetch_nodes(self.session, {key for p in parts for key in p})
        out: list[bytes] = []
        for p in parts:
            hashes = [stored[key] for key in p]
            # The smaller perfect subtrees sit on the right: fold right to left (RFC 9162 §2.1.1).
            root = hashes.pop()
            while hashes:
                root = node_hash(hashes.pop(), root)
            out.append(root)
        return out


def fetch_nodes(session: Session, keys: Iterable[NodeKey]) -> dict[NodeKey, bytes]:
    """The stored hashes of these perfect subtrees; LogDamagedError if any is missing."""
    keys = set(keys)
    leaves = sorted(lo for h, lo in keys if h == 0)
    inner = sorted((h, lo) for h, lo in keys if h > 0)
    found: dict[NodeKey, bytes] = {}
    if leaves:
        leaf_rows = session.execute(
            select(LogLeaf.leaf_index, LogLeaf.leaf_hash).where(LogLeaf.leaf_index.in_(leaves))
        )
        found.update(((0, i), bytes(h)) for i, h in leaf_rows)
    if inner:
        node_rows = session.execute(
            select(LogNode.height, LogNode.first_leaf, LogNode.hash).where(
                tuple_(LogNode.height, LogNode.first_leaf).in_(inner)
            )
        )
        found.update(((height, lo), bytes(h)) for height, lo, h in node_rows)
    missing = keys - found.keys()
    if missing:
        raise LogDamagedError(
            f"the custody log lacks {len(missing)} stored hash(es), e.g. height {min(missing)[0]} from leaf"
            f" {min(missing)[1]}: its tables were damaged; restore them from a backup"
        )
    return found
