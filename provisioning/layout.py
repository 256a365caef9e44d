"""The CA directory and device bundle layout: a contract that the server, edge and demo read.

Keep these names exactly; other components open the files by them (see docs/provisioning.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import ProvisioningError

ROLES: tuple[str, ...] = ("recorder", "dock")

# Upper case letters, digits and '-', 3–32 characters, not starting with '-'. Lower-case names are
# reserved for server identities (fieldproof-ingest, fieldproof-server), so a device can never be
# issued a certificate whose CN the broker ACL treats as the server.
DEVICE_ID_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,31}$")

INGEST_CN = "fieldproof-ingest"
SERVER_SIGNING_CN = "fieldproof-server"
SERVER_TLS_CN = "fieldproof-server-tls"
ORGANIZATION = "Fieldproof"


def check_device_id(device: str) -> str:
    """Return ``device`` if it is a valid device id, else raise ProvisioningError."""
    if not isinstance(device, str) or DEVICE_ID_RE.fullmatch(device) is None:
        raise ProvisioningError(
            f"{device!r} is not a valid device id: use 3–32 characters, upper-case letters, digits and '-',"
            " starting with a letter or digit (for example REC-0001 or DOCK-01)"
        )
    return device


def check_role(role: str) -> str:
    """Return ``role`` if it is a known device role, else raise ProvisioningError."""
    if role not in ROLES:
        raise ProvisioningError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class CaLayout:
    """Paths inside a CA directory."""

    root: Path

    @property
    def root_cert(self) -> Path:
        """Self-signed root certificate; the trust anchor every verifier is given."""
        return self.root / "root-ca.pem"

    @property
    def root_key(self) -> Path:
        """Root private key; used only to sign the device CA."""
        return self.root / "root-ca.key"

    @property
    def device_ca_cert(self) -> Path:
        """Device CA certificate: issues every leaf certificate and the CRL."""
        return self.root / "device-ca.pem"

    @property
    def device_ca_key(self) -> Path:
        """Device CA private key."""
        return self.root / "device-ca.key"

    @property
    def server_cert(self) -> Path:
        """TLS server certificate (leaf only) for the broker and the API."""
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        """TLS server private key."""
        return self.root / "server.key"

    @property
    def server_signing_cert(self) -> Path:
        """Ed25519 certificate of the server's custody-log checkpoint key."""
        return self.root / "server-signing.pem"

    @property
    def server_signing_key(self) -> Path:
        """Ed25519 private key for custody-log checkpoints."""
        return self.root / "server-signing.key"

    @property
    def ingest_cert(self) -> Path:
        """TLS client certificate of the server's MQTT ingest identity (CN fieldproof-ingest)."""
        return self.root / "ingest.pem"

    @property
    def ingest_key(self) -> Path:
        """Private key of the ingest identity."""
        return self.root / "ingest.key"

    @property
    def chain(self) -> Path:
        """Device CA then root, PEM: the bundle a TLS peer trusts."""
        return self.root / "ca-chain.pem"

    @property
    def crl(self) -> Path:
        """CRL signed by the device CA."""
        return self.root / "crl.pem"

    @property
    def revocations(self) -> Path:
        """JSON list of revocations, one entry per revoked device."""
        return self.root / "revocations.json"

    @property
    def devices(self) -> Path:
        """Directory holding one bundle directory per device id."""
        return self.root / "devices"

    @property
    def lock(self) -> Path:
        """Lock file serialising changes to the CA (enrol, sign, revoke)."""
        return self.root / ".lock"

    def device_dir(self, device: str) -> Path:
        """The bundle directory of one device."""
        return self.devices / check_device_id(device)

    def ca_files(self) -> tuple[Path, ...]:
        """Every file ``init_ca`` writes."""
        return (
            self.root_cert,
            self.root_key,
            self.device_ca_cert,
            self.device_ca_key,
            self.server_cert,
            self.server_key,
            self.server_signing_cert,
            self.server_signing_key,
            self.ingest_cert,
            self.ingest_key,
            self.chain,
            self.crl,
            self.revocations,
        )


# Names inside a device bundle directory.
TLS_KEY = "tls.key"
TLS_CERT = "tls.pem"
TLS_CSR = "tls.csr"
SIGNING_KEY = "signing.key"
SIGNING_CERT = "signing.pem"
SIGNING_CSR = "signing.csr"
BUNDLE_CHAIN = "ca-chain.pem"
BUNDLE_ROOT = "root-ca.pem"
#: The server's signing certificate: devices check the server's signed acks with it before freeing footage.
BUNDLE_SERVER_SIGNING = "server-signing.pem"
DEVICE_JSON = "device.json"
PREVIOUS_PREFIX = "previous-"


def config_name(role: str) -> str:
    """Name of a device's config file in its bundle: recorder.toml or dock.toml."""
    return f"{check_role(role)}.toml"
