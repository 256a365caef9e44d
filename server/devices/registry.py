"""The server's device registry: which signing certificates speak for which device, as of now.

Read from the provisioning CA directory (docs/provisioning.md): the fleet root (``root-ca.pem``), the
device CA (``ca-chain.pem``), the CRL, ``revocations.json``, and every device's signing certificates
(``devices/<ID>/signing.pem`` and ``devices/<ID>/previous-*/signing.pem``). Certificates that arrive in
messages, or were learnt from earlier ones, are judged against the same root and CRL: a certificate
is never trusted because of where it was found.

The CA directory changes under a running server (a revocation, a new enrolment, a renewal): the files
that decide trust are compared by (inode, size, mtime) on every look-up and reloaded when they change.
A reload that fails (a damaged CRL, say) keeps the previous state and says so in the log; it never
drops revocations already known.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.digest import Digest
from custody.errors import TrustError
from custody.signing import key_id
from custody.trust import KeyStatus, SigningKey, TrustStore, load_certificates
from server.errors import SettingsError

log = logging.getLogger(__name__)

_WATCHED: Final = ("root-ca.pem", "ca-chain.pem", "crl.pem", "revocations.json")
#: Rescanning devices/ for an unknown key at most this often (seconds): a flood of records signed by
#: unknown keys must not turn into a flood of directory walks.
_RESCAN_INTERVAL: Final = 1.0
MAX_CERT_PEM: Final = 16 * 1024


@dataclass(frozen=True)
class JudgedKey:
    """A signing certificate as judged now: status, device, validity, revocation, public key."""

    key: SigningKey
    pem: str
    public: Ed25519PublicKey | None

    @property
    def revoked_at(self) -> datetime | None:
        """When the device was revoked (CRL or revocations.json), if it was."""
        return self.key.revoked_at


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def parse_pem_certificates(pems: Iterable[str]) -> list[x509.Certificate]:
    """Certificates from PEM strings carried in a message; unreadable or oversized ones are skipped."""
    out: list[x509.Certificate] = []
    for pem in pems:
        if len(pem) > MAX_CERT_PEM:
            continue
        try:
            out.extend(x509.load_pem_x509_certificates(pem.encode("utf-8")))
        except (ValueError, UnicodeEncodeError):
            continue
    return out


def pem_of(cert: x509.Certificate) -> str:
    """The PEM text of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


class DeviceRegistry:
    """Trust in device signing keys, reloaded from the CA directory when it changes."""

    def __init__(self, ca_dir: Path) -> None:
        self.ca_dir = ca_dir
        self._stamp: tuple[object, ...] = ()
        self._trust: TrustStore | None = None
        self._revoked: dict[str, datetime] = {}
        self._roles: dict[str, str] = {}
        self._certs: dict[str, x509.Certificate] = {}  # key id → certificate, from the CA directory
        self._judged: dict[str, JudgedKey] = {}
        self._last_scan = 0.0
        self.generation = 0
        try:
            self._load()
        except (TrustError, OSError, ValueError) as exc:
            raise SettingsError(f"cannot read the trust in {ca_dir}: {exc}") from None

    # -- loading ---------------------------------------------------------------------------------

    def _watched_stamp(self) -> tuple[object, ...]:
        return tuple(_stat(self.ca_dir / name) for name in _WATCHED)

    def _load(self) -> None:
        stamp = self._watched_stamp()
        trust = TrustStore.from_paths(
            ca=[self.ca_dir / "root-ca.pem"],
            certs=[self.ca_dir / "ca-chain.pem"],
            crl=[self.ca_dir / "crl.pem"],
        )
        trust.signing_keys([])  # resolve the CRL now: a CRL the fleet CA did not sign fails here
        for note in trust.crl_notes:
            log.warning("%s", note)
        revoked = self._read_revocations()
        self._trust, self._revoked, self._stamp = trust, revoked, stamp
        self._scan_devices()
        self._judged.clear()
        self.generation += 1

    def _read_revocations(self) -> dict[str, datetime]:
        raw = json.loads((self.ca_dir / "revocations.json").read_text("utf-8"))
        out: dict[str, datetime] = {}
        for entry in raw:
            at = datetime.fromisoformat(str(entry["revoked_at"]).replace("Z", "+00:00"))
            if at.tzinfo is None:
                raise ValueError(f"revocation time {entry['revoked_at']!r} names no time zone")
            out[str(entry["device"])] = at.astimezone(UTC)
        return out

    def _scan_devices(self) -> None:
        certs: dict[str, x509.Certificate] = {}
        roles: dict[str, str] = {}
        devices = self.ca_dir / "devices"
        for bundle in sorted(devices.iterdir()) if devices.is_dir() else []:
            for folder in [bundle, *sorted(bundle.glob("previous-*"))]:
                try:
                    found = (
                        load_certificates(folder / "signing.pem")
                        if (folder / "signing.pem").is_file()
                        else []
                    )
                except TrustError as exc:
                    log.warning("skipping %s: %s", folder / "signing.pem", exc)
                    continue
                for cert in found:
                    certs[key_id(cert)] = cert
            try:
                role = json.loads((bundle / "device.json").read_text("utf-8")).get("role")
            except (OSError, ValueError, AttributeError):
                role = None
            if role in ("recorder", "dock"):
                roles[bundle.name] = role
        self._certs, self._roles = certs, roles
        self._last_scan = time.monotonic()

    def refresh(self) -> None:
        """Reload if root, chain, CRL or revocations changed since the last look (cheap: four stats)."""
        if self._watched_stamp() == self._stamp:
            return
        try:
            self._load()
            log.info("reloaded trust from %s (generation %d)", self.ca_dir, self.generation)
        except (TrustError, OSError, ValueError, KeyError, TypeError) as exc:
            # Keep what we had; a half-written file cannot appear (provisioning writes by rename), so
            # this is damage an operator must look at. Try again on the next change.
            self._stamp = self._watched_stamp()
            log.error("cannot reload trust from %s, keeping the previous state: %s", self.ca_dir, exc)
            # But never miss a revocation that revocations.json alone can tell (the earlier time wins).
            try:
                for device, at in self._read_revocations().items():
                    if device not in self._revoked or at < self._revoked[device]:
                        self._revoked[device] = at
                self._judged.clear()
            except (OSError, ValueError, KeyError, TypeError) as again:
                log.error("cannot read %s either: %s", self.ca_dir / "revocations.json", again)

    # -- answers ---------------------------------------------------------------------------------

    def role(self, device: str) -> str:
        """The device's role as enrolled (recorder, dock), or ``unknown``."""
        return self._roles.get(device, "unknown")

    def rescan_roles(self) -> None:
        """Look at devices/ again for enrolments since the last look (at most once per second)."""
        if time.monotonic() - self._last_scan > _RESCAN_INTERVAL:
            self._scan_devices()

    def revoked_at(self, device: str) -> datetime | None:
        """When ``device`` was revoked, by revocations.json."""
        return self._revoked.get(device)

    def judge(
        self,
        kid: str,
        *,
        offered: Iterable[str] = (),
        learnt: Callable[[], str | None] | None = None,
    ) -> JudgedKey | None:
        """The certificate for key id ``kid`` as judged now, from the CA directory, a certificate learnt
        earlier (``learnt()`` looks it up) or those ``offered`` in the message; None when none has it."""
        self.refresh()
        if kid in self._judged:
            return self._judged[kid]
        cert = self._certs.get(kid)
        if cert is None and learnt is not None:
            pem = learnt()
            if pem is not None:
                cert = next((c for c in parse_pem_certificates([pem]) if key_id(c) == kid), None)
        if cert is None:
            cert = next((c for c in parse_pem_certificates(offered) if key_id(c) == kid), None)
        if cert is None and time.monotonic() - self._last_scan > _RESCAN_INTERVAL:
            self._scan_devices()  # enrolled or renewed since we last looked
            cert = self._certs.get(kid)
        if cert is None:
            return None
        try:
            return self._evaluate(cert)
        except (ValueError, TypeError) as exc:
            # A certificate from a message that parses but cannot be read through (a malformed name or
            # extension) vouches for nothing.
            log.warning("cannot evaluate the certificate for key %s: %s", kid, exc)
            return None

    def _evaluate(self, cert: x509.Certificate) -> JudgedKey:
        assert self._trust is not None
        key = self._trust.evaluate(cert)
        # revocations.json names the device and the time it was lost; the CRL names serials. Take the
        # earlier of the two, so that neither file alone can make a revoked device trusted.
        by_device = self._revoked.get(key.device) if key.status is KeyStatus.TRUSTED else None
        if by_device is not None and (key.revoked_at is None or by_device < key.revoked_at):
            key = SigningKey(
                key_id=key.key_id,
                device=key.device,
                status=key.status,
                detail=key.detail,
                public_key=key.public_key,
                not_before=key.not_before,
                not_after=key.not_after,
                revoked_at=by_device,
            )
        public = Ed25519PublicKey.from_public_bytes(key.public_key) if key.public_key else None
        judged = JudgedKey(key=key, pem=pem_of(cert), public=public)
        # Only certificates that chain are remembered; a message cannot fill the cache with junk.
        if key.status is KeyStatus.TRUSTED:
            self._judged[Digest(key.key_id)] = judged
        return judged
