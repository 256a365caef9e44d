"""Writing a recorder spool (layout in custody/spool.py): sealed media files, then their records.

Order of durability, which is the whole point: a media file is written under ``tmp/``, fsynced,
renamed into ``media/`` and the directory fsynced; only then is its record sealed and appended. So a
record never names a file that a power cut could take away.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from custody.chain import ChainWriter
from custody.digest import file_digest
from custody.errors import SpoolError
from custody.signing import Ed25519Signer, SealedRecord
from custody.spool import CERTS, JOURNAL, MANIFEST, MEDIA, SPOOL_FORMAT, TMP
from edge.journal.journal import Journal, read_head
from fieldproof.durable import fsync_dir, make_dir, write_file


class SpoolWriter:
    """The recorder's side of a spool: owns the journal and the chain writer."""

    def __init__(self, root: Path, *, signer: Ed25519Signer, device: str) -> None:
        self.root = root
        self.device = device
        self.journal = Journal(root / JOURNAL)
        self.chain = ChainWriter(device=device, signer=signer, head=read_head(root / JOURNAL))

    @classmethod
    def create(cls, root: Path, *, signer: Ed25519Signer, device: str, ca_chain: bytes = b"") -> SpoolWriter:
        """Create (or reopen) a spool for ``device``, carrying its signing certificate and CA chain."""
        for sub in ("", CERTS, MEDIA, TMP):
            make_dir(root / sub, mode=0o755)
        manifest = root / MANIFEST
        if manifest.exists():
            meta = json.loads(manifest.read_text("utf-8"))
            if meta.get("device") != device:
                raise SpoolError(f"{root} is the spool of {meta.get('device')}, not {device}")
        else:
            write_file(manifest, json.dumps({"format": SPOOL_FORMAT, "device": device}).encode() + b"\n")
        pem = signer.certificate.public_bytes(serialization.Encoding.PEM)
        cert_name = f"signing-{signer.key_id.split(':')[1][:16]}.pem"
        if not (root / CERTS / cert_name).exists():
            write_file(root / CERTS / cert_name, pem)
        if ca_chain and not (root / CERTS / "ca-chain.pem").exists():
            write_file(root / CERTS / "ca-chain.pem", ca_chain)
        return cls(root, signer=signer, device=device)

    def append(self, kind: str, body: dict[str, Any], *, time: str | None = None) -> SealedRecord:
        """Seal the next record, make it durable, and only then advance the chain."""
        sealed = self.chain.seal_next(kind, body, time=time)
        self.journal.append(sealed)
        self.chain.commit(sealed)
        return sealed

    def store_media(self, source: Path, name: str) -> tuple[str, int]:
        """Move a finished file into media/ durably; returns its digest and size."""
        dest = self.root / MEDIA / name
        if dest.exists():
            raise SpoolError(f"{dest} exists already: media files are written once")
        make_dir(dest.parent, mode=0o755)  # a new recording's folder must itself survive a power cut
        if source.resolve().parent == (self.root / TMP).resolve():
            tmp = source  # written in place by the capture pipeline: no copy, just seal it
        else:
            tmp = self.root / TMP / (name.replace("/", "_") + ".part")
            shutil.copyfile(source, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        digest, size = file_digest(dest)
        return digest, size

    def close(self) -> None:
        """Close the journal."""
        self.journal.close()
