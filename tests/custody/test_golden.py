"""Golden vectors: fixed records with their canonical bytes, hashes and signatures.

A change to the format shows here as a failure, so it can only be made deliberately (regenerate with
tests/custody/golden/make_golden.py and bump the format version).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.examine import examine_line
from custody.record import KINDS
from custody.signing import SIGNATURE_CONTEXT

GOLDEN = json.loads((Path(__file__).parent / "golden" / "chain-v1.json").read_text("utf-8"))
ENTRIES = GOLDEN["records"]


def test_golden_covers_every_kind() -> None:
    assert {e["record"]["kind"] for e in ENTRIES} == set(KINDS)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["record"]["kind"] for e in ENTRIES])
def test_canonical_bytes_hash_and_signature(entry: dict) -> None:
    canonical = entry["canonical"].encode("utf-8")
    assert rfc8785.dumps(entry["record"]) == canonical
    assert entry["hash"] == "sha256:" + hashlib.sha256(canonical).hexdigest()
    pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(GOLDEN["public_key_hex"]))
    pub.verify(base64.b64decode(entry["signature"]), SIGNATURE_CONTEXT + canonical)  # raises if wrong
    sig = {"alg": "ed25519", "key": GOLDEN["key_id"], "value": entry["signature"]}
    assert entry["line"].encode("utf-8") == rfc8785.dumps({"record": entry["record"], "sig": sig}) + b"\n"


def test_chain_links_and_regeneration_is_identical() -> None:
    for prev, entry in zip([None, *ENTRIES], ENTRIES, strict=False):
        assert entry["record"]["prev"] == (prev["hash"] if prev else None)
        assert entry["record"]["seq"] == ENTRIES.index(entry)
    from tests.custody.golden.make_golden import build

    assert build() == ENTRIES


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["record"]["kind"] for e in ENTRIES])
def test_the_verifier_accepts_each_golden_line(entry: dict) -> None:
    facts = examine_line(
        1,
        entry["line"].encode("utf-8"),
        {GOLDEN["key_id"]: Ed25519PublicKey.from_public_bytes(bytes.fromhex(GOLDEN["public_key_hex"]))},
    )
    assert facts.ok, facts.problem
    assert facts.signature_ok
    assert facts.hash == entry["hash"]
