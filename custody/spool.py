"""A recorder's spool as the verifier reads it (the recorder writes it through edge/journal).

Layout (docs/custody-format.md §Spool)::

    SPOOL/spool.json    {"format": "fieldproof-spool/1", "device": "REC-0001"}
    SPOOL/chain.jsonl   the device's journal: one sealed record per line, append-only
    SPOOL/certs/        the device's signing certificate(s) and the device CA (untrusted until chained)
    SPOOL/media/        the files segment records name, by relative path
    SPOOL/tmp/          files being written; never referenced by a record
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509

from custody.errors import SpoolError
from custody.record import DEVICE_ID_RE
from custody.trust import load_certificates

SPOOL_FORMAT: Final = "fieldproof-spool/1"
MANIFEST: Final = "spool.json"
JOURNAL: Final = "chain.jsonl"
CERTS: Final = "certs"
MEDIA: Final = "media"
TMP: Final = "tmp"


@dataclass(frozen=True)
class Spool:
    """An opened spool folder."""

    root: Path
    device: str

    @property
    def journal(self) -> Path:
        """The chain's journal file."""
        return self.root / JOURNAL

    @property
    def media_dir(self) -> Path:
        """Where segment files live."""
        return self.root / MEDIA

    @classmethod
    def open(cls, root: Path) -> Spool:
        """Open a spool, or raise SpoolError saying what is missing."""
        if not root.is_dir():
            raise SpoolError(f"{root} is not a folder; give the path of a recorder spool")
        manifest = root / MANIFEST
        try:
            meta = json.loads(manifest.read_text("utf-8"))
        except FileNotFoundError:
            raise SpoolError(f"{root} has no {MANIFEST}: it is not a Fieldproof spool") from None
        except (OSError, ValueError) as exc:
            raise SpoolError(f"{manifest} is unreadable: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != SPOOL_FORMAT:
            raise SpoolError(f"{manifest} does not declare format {SPOOL_FORMAT!r}")
        device = meta.get("device")
        if not isinstance(device, str) or not DEVICE_ID_RE.fullmatch(device):
            raise SpoolError(f"{manifest} names no valid device id")
        return cls(root=root, device=device)

    def read_journal(self) -> list[bytes]:
        """Every line of the journal, as bytes with their newline (a torn last line is kept)."""
        try:
            with open(self.journal, "rb") as f:
                return f.readlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SpoolError(f"cannot read {self.journal}: {exc.strerror}") from exc

    def certificates(self) -> list[x509.Certificate]:
        """The certificates the spool carries (not trusted by themselves)."""
        d = self.root / CERTS
        return load_certificates(d) if d.is_dir() else []

    def media_files(self) -> set[str]:
        """Relative paths of every file under media/."""
        d = self.media_dir
        if not d.is_dir():
            return set()
        return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
