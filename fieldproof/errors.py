"""The root of every error Fieldproof raises on purpose.

Each package derives its own base (``custody.errors.CustodyError``, ``provisioning.errors.ProvisioningError``…)
from :class:`FieldproofError`, so the command line can turn any of them into a message and exit code 2
without a traceback.
"""

from __future__ import annotations


class FieldproofError(Exception):
    """An error with a message a custodian, inspector or IT person can act on."""

    def diagnostics(self) -> str:
        """The human text: what is wrong and what to do."""
        return str(self)
