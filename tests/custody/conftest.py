"""A real fleet (CA, enrolled devices, a revoked one, a foreign CA) and spools signed by it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custody.signing import Ed25519Signer
from custody.spool import Spool
from custody.trust import TrustStore
from custody.verify import ChainReport, ChainVerifier
from fieldproof.sample_chain import write_sample_spool
from provisioning import enroll, init_ca, revoke

# Sample recordings are dated half an hour ago (provisioning backdates certificates by an hour); REC-0003 is
# revoked 45 s into its sample recording.
SAMPLE_START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
REVOKED_AT = SAMPLE_START + timedelta(seconds=45)


@dataclass(frozen=True)
class Fleet:
    """Paths of a provisioned fleet."""

    ca: Path
    foreign_ca: Path

    def bundle(self, device: str, *, foreign: bool = False) -> Path:
        return (self.foreign_ca if foreign else self.ca) / "devices" / device

    def signer(self, device: str, *, foreign: bool = False) -> Ed25519Signer:
        b = self.bundle(device, foreign=foreign)
        return Ed25519Signer.from_files(b / "signing.key", b / "signing.pem")

    def trust(self, *, crl: bool = True) -> TrustStore:
        return TrustStore.from_paths(
            ca=[self.ca / "root-ca.pem"],
            crl=[self.ca / "crl.pem"] if crl else [],
            certs=[self.ca / "ca-chain.pem"],
        )

    def make_spool(
        self,
        root: Path,
        device: str = "REC-0001",
        *,
        segments: int = 3,
        foreign: bool = False,
        seconds: int = 10,
    ) -> Spool:
        b = self.bundle(device, foreign=foreign)
        write_sample_spool(
            root,
            signer=self.signer(device, foreign=foreign),
            device=device,
            segments=segments,
            media=lambda i: os.urandom(2000 + 37 * i),
            ca_chain=(b / "ca-chain.pem").read_bytes(),
            seconds=seconds,
            start=SAMPLE_START,
        ).close()
        return Spool.open(root)

    def verify(self, root: Path, **kw: object) -> ChainReport:
        return ChainVerifier(self.trust(), workers=1).verify_spool(Spool.open(root), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    base = tmp_path_factory.mktemp("fleet")
    ca, foreign = base / "ca", base / "foreign-ca"
    init_ca(ca)
    init_ca(foreign)
    for dev in ("REC-0001", "REC-0002", "REC-0003"):
        enroll(ca, device=dev, role="recorder")
    enroll(foreign, device="REC-0001", role="recorder")
    revoke(ca, device="REC-0003", at=REVOKED_AT, reason="keyCompromise")
    return Fleet(ca=ca, foreign_ca=foreign)


@pytest.fixture(scope="session")
def pristine(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sound spool of REC-0001, copied by tests before they tamper with it."""
    root = tmp_path_factory.mktemp("pristine") / "spool"
    fleet.make_spool(root, segments=4)
    return root


@pytest.fixture
def spool_copy(pristine: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "spool"
    shutil.copytree(pristine, dest)
    return dest
