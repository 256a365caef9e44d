"""Regenerate the golden vectors — only when the format changes on purpose (and bump FORMAT_VERSION).

    .venv/bin/python tests/custody/golden/make_golden.py

The key is fixed (seed below), so Ed25519's deterministic signatures make every byte reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custody.chain import ChainHead, ChainWriter
from custody.digest import Digest, sha256_digest

SEED = bytes(range(32))
KEY_ID = Digest("sha256:" + "0" * 63 + "1")  # stands for the signing certificate's fingerprint
HERE = Path(__file__).parent


class FixedSigner:
    """A signer with a fixed key and key id."""

    algorithm = "ed25519"
    key_id = KEY_ID

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(SEED)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


CLOCK = {"source": "gps", "offset_ms": -7, "uncertainty_ms": 40}
FIX = {
    "t": "2026-11-20T01:30:01.000Z",
    "lat_e7": 391244000,
    "lon_e7": 1171907000,
    "alt_mm": 4000,
    "hacc_mm": 3500,
    "mode": "3d",
    "sats": 11,
    "source": "gpsd",
}
SEGMENT = {
    "recording": "5f0c2a9e6b7d4c1e8f00112233445566",
    "index": 0,
    "file": "5f0c2a9e/0000.mp4",
    "digest": sha256_digest(b"segment 0"),
    "size": 9,
    "media": {
        "container": "mp4-fragmented",
        "duration_ms": 10000,
        "video": {"codec": "h264", "width": 1280, "height": 720, "fps": "30/1"},
        "audio": {"codec": "aac", "rate": 48000, "channels": 1},
    },
    "start": "2026-11-20T01:30:01.000Z",
    "end": "2026-11-20T01:30:11.000Z",
    "clock": CLOCK,
    "location": {"fix": True, "fixes": [FIX]},
    "pre_event_s": 30,
    "officer": "12010019001",
    "case": "",
    "subject": "91120116MA05JQ2X4U",
    "matter": "CF-02",
    "scene": "onsite-inspection",
    "proof": '用人单位违反劳务派遣规定的现场情况\n第二行 "引号" \\ 反斜杠 \u0001',
}

STEPS: list[tuple[str, dict[str, Any], str]] = [
    (
        "boot",
        {
            "boot": 1,
            "firmware": "fieldproof-0.1.0",
            "config": "recorder.example",
            "reason": "power-on",
            "clock": CLOCK,
        },
        "2026-11-20T01:30:00.000Z",
    ),
    ("segment", SEGMENT, "2026-11-20T01:30:11.040Z"),
    (
        "marker",
        {
            "recording": SEGMENT["recording"],
            "at": "2026-11-20T01:30:03.000Z",
            "label": "show-credentials",
            "note": "出示执法证件",
            "officer": "12010019001",
            "location": {"fix": False, "reason": "no fix yet"},
        },
        "2026-11-20T01:30:11.050Z",
    ),
    (
        "recovered",
        {
            **SEGMENT,
            "index": 1,
            "file": "5f0c2a9e/0001.mp4",
            "digest": sha256_digest(b"seg 1"),
            "size": 5,
            "start": "2026-11-20T01:30:11.000Z",
            "end": "2026-11-20T01:30:17.000Z",
            "recovery": {
                "reason": "power lost while writing; trimmed to the last whole fragment",
                "original_size": 7,
                "trimmed": True,
            },
        },
        "2026-11-20T01:31:00.000Z",
    ),
    (
        "gap",
        {
            "recording": SEGMENT["recording"],
            "index": 2,
            "reason": "nothing readable survived the crash",
            "from": "2026-11-20T01:30:17.000Z",
            "to": None,
        },
        "2026-11-20T01:31:00.010Z",
    ),
    (
        "annotation",
        {
            "targets": [{"device": "REC-0001", "seq": 1, "hash": "PLACEHOLDER"}],
            "set": {"case": "津人社监察〔2026〕17号"},
            "by": "12010019001",
            "reason": "案件编号在首段录制后确定",
        },
        "2026-11-20T01:32:00.000Z",
    ),
    (
        "release",
        {
            "targets": [
                {"seq": 1, "hash": "PLACEHOLDER", "file": "5f0c2a9e/0000.mp4", "digest": SEGMENT["digest"]}
            ],
            "acks": [
                {
                    "v": 1,
                    "msg": "ack",
                    "recorder": "REC-0001",
                    "seq": 1,
                    "hash": "PLACEHOLDER",
                    "status": "stored",
                    "reason": "",
                    "received": 9,
                    "server_time": "2026-11-20T08:59:00.000Z",
                    "sig": {"alg": "ed25519", "key": KEY_ID, "value": "c2VydmVyIHNpZ25hdHVyZQ=="},
                }
            ],
        },
        "2026-11-20T08:59:01.000Z",
    ),
    (
        "clock",
        {
            "reference": "dock:DOCK-01/ntp",
            "device_time": "2026-11-20T09:00:00.000Z",
            "reference_time": "2026-11-20T08:59:59.988Z",
            "offset_ms": -12,
            "applied": True,
        },
        "2026-11-20T09:00:00.000Z",
    ),
]


def build() -> list[dict[str, Any]]:
    """The golden chain, as dictionaries of record, canonical text, hash, signature and line."""
    writer = ChainWriter(device="REC-0001", signer=FixedSigner(), head=ChainHead())
    out = []
    hashes: list[str] = []
    for kind, body, time in STEPS:
        if kind == "annotation":
            body = {**body, "targets": [{"device": "REC-0001", "seq": 1, "hash": hashes[1]}]}
        if kind == "release":
            body = {
                "targets": [{**body["targets"][0], "hash": hashes[1]}],
                "acks": [{**body["acks"][0], "hash": hashes[1]}],
            }
        sealed = writer.seal_next(kind, body, time=time)
        writer.commit(sealed)
        hashes.append(sealed.hash)
        out.append(
            {
                "record": sealed.record,
                "canonical": sealed.canonical.decode("utf-8"),
                "hash": sealed.hash,
                "signature": sealed.signature["value"],
                "line": sealed.line.decode("utf-8"),
            }
        )
    return out


def main() -> None:
    pub = FixedSigner().key.public_key().public_bytes_raw().hex()
    doc = {
        "about": "Golden capture records (format v1). Regenerate only for a deliberate format change.",
        "seed_hex": SEED.hex(),
        "public_key_hex": pub,
        "key_id": KEY_ID,
        "records": build(),
    }
    (HERE / "chain-v1.json").write_text(
        json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
