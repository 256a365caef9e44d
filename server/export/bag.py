"""Writing a BagIt bag (RFC 8493) with SHA-256 manifests, atomically: built under a temporary name in
the same folder, every file fsynced, the manifests written last, checked by the ``bagit`` library, then
renamed into place and the folder fsynced. A crash leaves a ``.tmp-*`` folder, never a half bag.

Manifests are written here rather than by ``bagit.make_bag``, which changes the process's working
directory (unsafe in a threaded server). Lines are ``<hex>  <path>`` (two spaces): the format
``sha256sum -c`` reads, and one BagIt accepts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

from fieldproof.durable import fsync_dir

BAGIT_TXT: Final = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
_CHUNK: Final = 1 << 20


class BagWriter:
    """Payload files go under ``data/``; ``finish`` writes the tag files and moves the bag into place."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.root = final.parent / f".tmp-{final.name}"
        if self.root.exists():
            shutil.rmtree(self.root)
        (self.root / "data").mkdir(parents=True)
        self.payload: dict[str, tuple[str, int]] = {}  # bag-relative path → (hex, size)

    def _path(self, rel: str) -> Path:
        if rel.startswith("/") or ".." in rel.split("/") or not rel:
            raise ValueError(f"unsafe bag path {rel!r}")
        p = self.root / "data" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data/<rel>``; returns its SHA-256 hex."""
        p = self._path(rel)
        with open(p, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        digest = hashlib.sha256(data).hexdigest()
        self.payload[f"data/{rel}"] = (digest, len(data))
        return digest

    def add_stream(self, rel: str, stream: BinaryIO) -> str:
        """Copy a stream to ``data/<rel>``, hashing the bytes as written; returns the SHA-256 hex."""
        p = self._path(rel)
        h = hashlib.sha256()
        size = 0
        with open(p, "wb") as f:
            while chunk := stream.read(_CHUNK):
                f.write(chunk)
                h.update(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        self.payload[f"data/{rel}"] = (h.hexdigest(), size)
        return h.hexdigest()

    def _tag(self, name: str, data: bytes) -> str:
        with open(self.root / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return hashlib.sha256(data).hexdigest()

    def finish(self, info: Iterable[tuple[str, str]]) -> Path:
        """Tag files, manifests, a check by the ``bagit`` library, then the atomic rename."""
        import bagit  # the server extra's; the offline verifier (custody/bundle.py) does without it

        octets = sum(size for _, size in self.payload.values())
        lines = [
            ("Bagging-Date", datetime.now(UTC).date().isoformat()),
            ("Payload-Oxum", f"{octets}.{len(self.payload)}"),
            ("Bag-Software-Agent", "fieldproof"),
            *info,
        ]
        tags = {
            "bagit.txt": self._tag("bagit.txt", BAGIT_TXT),
            "bag-info.txt": self._tag(
                "bag-info.txt", "".join(f"{k}: {v}\n" for k, v in lines).encode("utf-8")
            ),
        }
        manifest = "".join(f"{h}  {p}\n" for p, (h, _) in sorted(self.payload.items())).encode("utf-8")
        tags["manifest-sha256.txt"] = self._tag("manifest-sha256.txt", manifest)
        self._tag("tagmanifest-sha256.txt", "".join(f"{h}  {p}\n" for p, h in sorted(tags.items())).encode())
        for d in sorted({p.parent for p in self.root.rglob("*")}, key=lambda x: len(x.parts), reverse=True):
            fsync_dir(d)
        bagit.Bag(str(self.root)).validate()  # BagValidationError: a bug here, nothing is published
        os.replace(self.root, self.final)
        fsync_dir(self.final.parent)
        return self.final

    @property
    def manifest_sha256(self) -> str:
        """SHA-256 of manifest-sha256.txt (after ``finish``): names the whole payload."""
        return hashlib.sha256((self.final / "manifest-sha256.txt").read_bytes()).hexdigest()

    def abandon(self) -> None:
        """Remove the unfinished bag."""
        shutil.rmtree(self.root, ignore_errors=True)
