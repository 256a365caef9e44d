"""Canonical JSON (RFC 8785, JCS) for capture records.

Writers encode with the ``rfc8785`` package. The verifier re-encodes 100,000s of records, and the
package's pure-Python encoder costs about as much as an Ed25519 verification, so it uses the C JSON
encoder instead. For the values the record schema admits — objects with ASCII member names, strings,
booleans, null, and integers within ±(2^53 − 1); never floats — the two encodings are byte-identical
(tests/custody/test_canonical.py checks it property by property). A value outside that domain makes
``fast_canonical`` raise, so a record can never be accepted on bytes the reference encoder would not
produce: at worst a sound record is reported malformed, never the reverse.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

MAX_SAFE_INTEGER = 2**53 - 1

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(value: Any) -> bytes:
    """The RFC 8785 encoding of ``value`` by the reference encoder (what writers sign)."""
    check_domain(value)
    return rfc8785.dumps(value)


def fast_canonical(value: Any) -> bytes:
    """RFC 8785 bytes for a value already known to be in the record domain (see ``check_domain``)."""
    return _ENCODER.encode(value).encode("utf-8")


def check_domain(value: Any, path: str = "$") -> None:
    """Raise ValueError where ``value`` leaves the record domain (floats, big ints, non-ASCII keys)."""
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(f"{path}: integer {value} is outside ±(2^53−1)")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_domain(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise ValueError(f"{path}: member name {key!r} is not an ASCII string")
            check_domain(item, f"{path}.{key}")
        return
    raise ValueError(f"{path}: {type(value).__name__} values are not allowed in records (no floats)")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: bytes | str) -> Any:
    """Parse JSON strictly: NaN/Infinity are rejected (they have no canonical form)."""
    return json.loads(text, parse_constant=_reject_constant)
