"""Fieldproof: provisioning — the fleet CA, device enrolment and revocation, broker configuration."""

from provisioning.broker import write_broker_config
from provisioning.ca import init_ca
from provisioning.device_keys import keygen
from provisioning.enrollment import enroll, sign_csrs
from provisioning.errors import ProvisioningError
from provisioning.revocation import refresh_crl, revoke

__all__ = [
    "ProvisioningError",
    "enroll",
    "init_ca",
    "keygen",
    "refresh_crl",
    "revoke",
    "sign_csrs",
    "write_broker_config",
]
