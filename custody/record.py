"""The capture record: its fields, kinds and validation (docs/custody-format.md is the spec).

A record is a JSON object; the schema below is the whole of what a record may hold. Unknown members
are errors, so a record cannot smuggle data a verifier would ignore. Validation returns every problem
found (not just the first), each as a readable ``path: problem`` text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from custody.canonical import MAX_SAFE_INTEGER
from custody.digest import is_digest
from custody.matters import is_known_matter

FORMAT_VERSION: Final = 1

#: Device ids: upper-case letters, digits and hyphens, 3–32 characters (REC-0001, DOCK-01).
DEVICE_ID_RE: Final = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,31}$")
#: UTC instants with milliseconds; fixed width, so the text order is the time order.
TIMESTAMP_RE: Final = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z$"
)
_FILE_RE: Final = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_FPS_RE: Final = re.compile(r"^[1-9]\d{0,5}/[1-9]\d{0,5}$")

KINDS: Final = ("boot", "segment", "recovered", "gap", "marker", "annotation", "clock", "release")
CLOCK_SOURCES: Final = ("gps", "ntp", "rtc", "dock", "unset")
ANNOTATABLE: Final = ("case", "subject", "matter", "scene", "proof")

Problems = list[str]
Check = Callable[[Any, str, Problems], None]


# -- elementary checks -------------------------------------------------------------------------


def _str(max_len: int = 1024, *, allow_empty: bool = True) -> Check:
    def check(v: Any, path: str, out: Problems) -> None:
        if not isinstance(v, str):
            out.append(f"{path}: must be a string")
        elif not allow_empty and not v:
            out.append(f"{path}: must not be empty")
        elif len(v) > max_len:
            out.append(f"{path}: longer than {max_len} characters")

    return check


def _int(lo: int = 0, hi: int = MAX_SAFE_INTEGER) -> Check:
    def check(v: Any, path: str, out: Problems) -> None:
        if not isinstance(v, int) or isinstance(v, bool):
            out.append(f"{path}: must be an integer")
        elif not lo <= v <= hi:
            out.append(f"{path}: {v} is outside {lo}..{hi}")

    return check


def _bool(v: Any, path: str, out: Problems) -> None:
    if not isinstance(v, bool):
        out.append(f"{path}: must be true or false")


def _regex(rx: re.Pattern[str], what: str) -> Check:
    def check(v: Any, path: str, out: Problems) -> None:
        if not isinstance(v, str) or rx.fullmatch(v) is None:
            out.append(f"{path}: {v!r} is not {what}")

    return check


def _enum(*values: str) -> Check:
    def check(v: Any, path: str, out: Problems) -> None:
        if v not in values:
            out.append(f"{path}: {v!r} is not one of {', '.join(values)}")

    return check


def _nullable(inner: Check) -> Check:
    def check(v: Any, path: str, out: Problems) -> None:
        if v is not None:
            inner(v, path, out)

    return check


def _digest(v: Any, path: str, out: Problems) -> None:
    if not is_digest(v):
        out.append(f"{path}: {v!r} is not a digest (sha256:<64 lowercase hex>)")


def _file(v: Any, path: str, out: Problems) -> None:
    # Relative POSIX path under the spool's media/ folder; no "..", no absolute paths.
    if not isinstance(v, str) or _FILE_RE.fullmatch(v) is None or ".." in v.split("/") or len(v) > 255:
        out.append(f"{path}: {v!r} is not a relative media path (letters, digits, . _ - and /)")


def _matter(v: Any, path: str, out: Problems) -> None:
    if not isinstance(v, str):
        out.append(f"{path}: must be a string")
    elif v and not is_known_matter(v):
        out.append(f"{path}: {v!r} is not a code of the enforcement-matter catalogue")


_ts = _regex(TIMESTAMP_RE, "a UTC timestamp YYYY-MM-DDTHH:MM:SS.mmmZ")
_device = _regex(DEVICE_ID_RE, "a device id")


def _obj(fields: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    opt = optional or {}
    required = frozenset(fields)
    allowed = required | frozenset(opt)
    both = {**fields, **opt}

    def check(v: Any, path: str, out: Problems) -> None:
        if not isinstance(v, dict):
            out.append(f"{path}: must be an object")
            return
        keys = v.keys()
        # Set operations first: on the verifier's hot path a well-formed record costs one pass.
        if not required <= keys:
            out.extend(f"{path}.{name}: missing" for name in sorted(required - keys))
        if not keys <= allowed:
            out.extend(f"{path}.{name}: unknown member" for name in sorted(map(str, keys - allowed)))
        for name, value in v.items():
            sub = both.get(name)
            if sub is not None:
                sub(value, f"{path}.{name}", out)

    return check


def _list(inner: Check, *, min_len: int = 0, max_len: int = 10_000) -> Check:
    def check(v: Any, path: str, out: Problems) -> None:
        if not isinstance(v, list):
            out.append(f"{path}: must be a list")
            return
        if not min_len <= len(v) <= max_len:
            out.append(f"{path}: must hold {min_len}..{max_len} items")
        for i, item in enumerate(v):
            inner(item, f"{path}[{i}]", out)

    return check


# -- composite parts -----------------------------------------------------------------------------

CLOCK: Final = _obj(
    {
        "source": _enum(*CLOCK_SOURCES),
        # Estimated (reference − device clock) in ms; null when nothing to compare against.
        "offset_ms": _nullable(_int(-MAX_SAFE_INTEGER)),
        "uncertainty_ms": _nullable(_int()),
    }
)

FIX: Final = _obj(
    {
        "t": _ts,
        "lat_e7": _int(-900_000_000, 900_000_000),
        "lon_e7": _int(-1_800_000_000, 1_800_000_000),
        "alt_mm": _nullable(_int(-MAX_SAFE_INTEGER)),
        "hacc_mm": _nullable(_int()),
        "mode": _enum("2d", "3d"),
        "sats": _nullable(_int(0, 255)),
        "source": _enum("gpsd", "nmea"),
    }
)


def _location(v: Any, path: str, out: Problems) -> None:
    if not isinstance(v, dict) or not isinstance(v.get("fix"), bool):
        out.append(f"{path}: must be an object with fix true or false")
    elif v["fix"]:
        _obj({"fix": _bool, "fixes": _list(FIX, min_len=1)})(v, path, out)
    else:
        _obj({"fix": _bool, "reason": _str(200, allow_empty=False)})(v, path, out)


MEDIA: Final = _obj(
    {
        "container": _enum("mp4-fragmented", "mpegts"),
        "duration_ms": _int(),
        "video": _nullable(
            _obj(
                {
                    "codec": _str(32, allow_empty=False),
                    "width": _int(1, 16384),
                    "height": _int(1, 16384),
                    "fps": _regex(_FPS_RE, "a frame rate num/den"),
                }
            )
        ),
        "audio": _nullable(
            _obj({"codec": _str(32, allow_empty=False), "rate": _int(1, 384_000), "channels": _int(1, 32)})
        ),
    }
)

#: What a recording says about itself — the seed's 案件编号, 采集人, 证明对象… (time and place are above).
_CONTEXT: Final[dict[str, Check]] = {
    "officer": _str(64),  # 执法证号 of the collector (采集人)
    "case": _str(128),  # 案件编号; may be empty at capture and set later by an annotation
    "subject": _str(128),  # enforcement subject id (执法对象, e.g. unified social credit code)
    "matter": _matter,  # code in the enforcement-matter catalogue, or empty
    "scene": _str(64),  # scene code/name from the recording policy (现场检查, 调查询问…)
    "proof": _str(2000),  # 证明对象: the fact this footage proves
}

_SEGMENT_FIELDS: Final[dict[str, Check]] = {
    "recording": _str(64, allow_empty=False),
    "index": _int(),
    "file": _file,
    "digest": _digest,
    "size": _int(),
    "media": MEDIA,
    "start": _ts,
    "end": _ts,
    "clock": CLOCK,
    "location": _location,
    "pre_event_s": _int(0, 120),
    **_CONTEXT,
}

_TARGET: Final = _obj({"device": _device, "seq": _int(), "hash": _digest})


def _annotation_set(v: Any, path: str, out: Problems) -> None:
    _obj({}, {k: (_matter if k == "matter" else _str(2000)) for k in ANNOTATABLE})(v, path, out)
    if isinstance(v, dict) and not v:
        out.append(f"{path}: must set at least one of {', '.join(ANNOTATABLE)}")


BODIES: Final[dict[str, Check]] = {
    "boot": _obj(
        {"boot": _int(), "firmware": _str(64), "config": _str(128), "reason": _str(64), "clock": CLOCK}
    ),
    "segment": _obj(_SEGMENT_FIELDS),
    # A segment file found after a crash: as a segment, plus what recovery found and did.
    "recovered": _obj(
        {
            **_SEGMENT_FIELDS,
            "recovery": _obj(
                {"reason": _str(500, allow_empty=False), "original_size": _int(), "trimmed": _bool}
            ),
        }
    ),
    # Footage known lost (a crash left nothing usable): recorded, never silently dropped.
    "gap": _obj(
        {
            "recording": _str(64),
            "index": _nullable(_int()),
            "reason": _str(500, allow_empty=False),
            "from": _nullable(_ts),
            "to": _nullable(_ts),
        }
    ),
    "marker": _obj(
        {
            "recording": _str(64),
            "at": _ts,
            "label": _str(64, allow_empty=False),
            "note": _str(500),
            "officer": _str(64),
            "location": _location,
        }
    ),
    # Sets or corrects context of earlier records; the records themselves never change.
    "annotation": _obj(
        {
            "targets": _list(_TARGET, min_len=1, max_len=1000),
            "set": _annotation_set,
            "by": _str(64, allow_empty=False),
            "reason": _str(500),
        }
    ),
    # A clock correction found at the dock: offset_ms = reference − device.
    "clock": _obj(
        {
            "reference": _str(128, allow_empty=False),
            "device_time": _ts,
            "reference_time": _ts,
            "offset_ms": _int(-MAX_SAFE_INTEGER),
            "applied": _bool,
        }
    ),
}

# The server's signed acknowledgement (docs/sync-protocol.md §3), kept verbatim in a release record.
_ACK: Final = _obj(
    {
        "v": _int(1, 1),
        "msg": _enum("ack"),
        "recorder": _device,
        "seq": _int(),
        "hash": _digest,
        "status": _enum("stored", "duplicate"),
        "reason": _str(500),
        "received": _int(),
        "server_time": _ts,
        "sig": _obj(
            {"alg": _str(16, allow_empty=False), "key": _digest, "value": _str(200, allow_empty=False)}
        ),
    }
)
BODIES["release"] = _obj(
    {
        # Files freed on the recorder after the server acknowledged them as durable; the record of
        # each stays in the chain, and its ack says where the file went.
        "targets": _list(
            _obj({"seq": _int(), "hash": _digest, "file": _file, "digest": _digest}), min_len=1, max_len=1000
        ),
        "acks": _list(_ACK, min_len=1, max_len=1000),
    }
)

_ENVELOPE: Final = _obj(
    {
        "v": _int(FORMAT_VERSION, FORMAT_VERSION),
        "device": _device,
        "seq": _int(),
        "prev": _nullable(_digest),
        "kind": _enum(*KINDS),
        "time": _ts,
        "body": lambda v, p, o: None,  # checked below, by kind
    }
)


def record_problems(record: Any) -> Problems:
    """Every way ``record`` departs from the format; empty when it is well formed."""
    out: Problems = []
    _ENVELOPE(record, "record", out)
    if out and not isinstance(record, dict):
        return out
    kind = record.get("kind")
    body = record.get("body")
    if kind in BODIES:
        BODIES[kind](body, "record.body", out)
    seq, prev = record.get("seq"), record.get("prev")
    if seq == 0 and prev is not None:
        out.append("record.prev: must be null for the first record (seq 0)")
    if isinstance(seq, int) and seq > 0 and prev is None:
        out.append("record.prev: must name the previous record's hash (only seq 0 has none)")
    return out
