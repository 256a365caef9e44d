"""Stage one of verification: each journal line by itself — strict parse, canonical form, schema,
signature. A pure function of the line and the public keys, so long chains are examined on all cores.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.canonical import fast_canonical, parse
from custody.record import record_problems
from custody.signing import SIGNATURE_ALGORITHMS, SIGNATURE_CONTEXT

_PREFIX = b'{"record":'
_SIG_SEP = b',"sig":'
# Below this many lines a process pool costs more than it saves.
_PARALLEL_MIN = 4096
_CHUNK = 2048


@dataclass(slots=True)
class RecordFacts:
    """What one journal line says, as far as it can be read by itself."""

    line: int
    ok: bool = False  # parsed, canonical and well formed
    problem: str = ""
    seq: int | None = None
    device: str = ""
    kind: str = ""
    time: str = ""
    prev: str | None = None
    hash: str = ""
    key: str = ""
    signature_ok: bool = False
    file: str | None = None
    digest: str | None = None
    size: int | None = None
    start: str | None = None
    end: str | None = None
    clock_applied: bool = False
    released: tuple[tuple[int, str], ...] = ()  # (seq, hash) of records whose files a release freed


def examine_line(line_no: int, raw: bytes, keys: Mapping[str, Ed25519PublicKey]) -> RecordFacts:
    """Parse, check and signature-verify one journal line against the given public keys."""
    f = RecordFacts(line=line_no)
    try:
        envelope = parse(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        f.problem = f"not JSON ({exc})" if raw.endswith(b"\n") else "torn line: the journal ends mid-record"
        return f
    if not isinstance(envelope, dict) or set(envelope) != {"record", "sig"}:
        f.problem = "a journal line must be an object with exactly 'record' and 'sig'"
        return f
    record, sig = envelope["record"], envelope["sig"]
    if isinstance(record, dict):
        # Salvage what identifies the record, so that findings can name it even if it is malformed.
        seq = record.get("seq")
        f.seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None
        device, kind = record.get("device"), record.get("kind")
        f.device = device if isinstance(device, str) else ""
        f.kind = kind if isinstance(kind, str) else ""
    problems = record_problems(record)
    if (
        not isinstance(sig, dict)
        or set(sig) != {"alg", "key", "value"}
        or not all(isinstance(v, str) for v in sig.values())
    ):
        problems.append("sig: must be an object with string members alg, key and value")
    if problems:
        f.problem = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return f
    try:
        # A record that passed record_problems is inside the canonical domain (every member typed, every
        # integer bounded, no floats, only known ASCII member names), so no separate domain walk.
        rbytes = fast_canonical(record)
        canonical_line = _PREFIX + rbytes + _SIG_SEP + fast_canonical(sig) + b"}\n"
    except (ValueError, UnicodeEncodeError) as exc:
        f.problem = f"record cannot be canonicalised: {exc}"
        return f
    # The writer emits exactly the RFC 8785 form; anything else (duplicate members, spacing,
    # escapes) means the line was not written by a recorder and parsers could disagree on it.
    if raw != canonical_line:
        f.problem = "line is not in canonical form (RFC 8785): it was edited or not written by a recorder"
        return f
    body = record["body"]
    f.ok = True
    f.seq = record["seq"]
    f.time = record["time"]
    f.prev = record["prev"]
    f.hash = "sha256:" + hashlib.sha256(rbytes).hexdigest()
    f.key = sig["key"]
    if f.kind in ("segment", "recovered"):
        f.file, f.digest, f.size, f.start, f.end = (
            body["file"],
            body["digest"],
            body["size"],
            body["start"],
            body["end"],
        )
    elif f.kind == "clock":
        f.clock_applied = body["applied"]
    elif f.kind == "release":
        f.released = tuple((t["seq"], t["hash"]) for t in body["targets"])
    pub = keys.get(f.key)
    if pub is not None and sig["alg"] in SIGNATURE_ALGORITHMS:
        try:
            value = base64.b64decode(sig["value"], validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text where base64 belongs
            value = b""
        # b64decode ignores the unused low bits of the last character; only the canonical spelling
        # counts, or a changed character could leave the signature "valid".
        if base64.b64encode(value).decode("ascii") != sig["value"]:
            value = b""
        try:
            pub.verify(value, SIGNATURE_CONTEXT + rbytes)
            f.signature_ok = True
        except (InvalidSignature, ValueError):
            f.signature_ok = False
    return f


def _public_keys(raw: Mapping[str, bytes]) -> dict[str, Ed25519PublicKey]:
    return {k: Ed25519PublicKey.from_public_bytes(v) for k, v in raw.items()}


_WORKER_KEYS: dict[str, Ed25519PublicKey] = {}


def _init_worker(keys: dict[str, bytes]) -> None:
    # Key objects do not pickle; each worker builds its own from the raw bytes.
    _WORKER_KEYS.clear()
    _WORKER_KEYS.update(_public_keys(keys))


def _examine_chunk(start: int, lines: Sequence[bytes]) -> list[RecordFacts]:
    return [examine_line(start + i, raw, _WORKER_KEYS) for i, raw in enumerate(lines)]


def examine_lines(
    lines: Sequence[bytes], keys: dict[str, bytes], *, workers: int | None = None
) -> list[RecordFacts]:
    """Examine every line, on several processes when the journal is long."""
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n <= 1 or len(lines) < _PARALLEL_MIN:
        objs = _public_keys(keys)
        return [examine_line(i + 1, raw, objs) for i, raw in enumerate(lines)]
    import multiprocessing

    ctx = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    starts = range(0, len(lines), _CHUNK)
    with ProcessPoolExecutor(
        max_workers=n, mp_context=ctx, initializer=_init_worker, initargs=(keys,)
    ) as pool:
        parts = pool.map(_examine_chunk, [s + 1 for s in starts], [lines[s : s + _CHUNK] for s in starts])
        return [facts for part in parts for facts in part]
