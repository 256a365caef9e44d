"""What verification can find: typed codes, each with a severity and advice a custodian can act on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final


class FindingCode(StrEnum):
    """Every kind of problem the verifier reports."""

    MALFORMED = "malformed-record"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_DEVICE = "unknown-device"
    FOREIGN_CA = "foreign-ca"
    CERT_NOT_VALID = "certificate-not-valid-at-time"
    REVOKED = "signed-after-revocation"
    WRONG_DEVICE = "wrong-device"
    GAP = "gap"
    FORK = "fork"
    DUPLICATE = "duplicate"
    REORDERED = "reordered"
    BROKEN_LINK = "broken-link"
    TRUNCATED = "truncated"
    MISSING_FILE = "missing-file"
    SIZE_MISMATCH = "size-mismatch"
    HASH_MISMATCH = "hash-mismatch"
    ORPHAN_FILE = "orphan-file"
    CLOCK_BACKWARDS = "clock-backwards"
    STALE_CRL = "stale-crl"


class Severity(StrEnum):
    """Errors make a record unsound; warnings are anomalies a custodian should read."""

    ERROR = "error"
    WARNING = "warning"


SEVERITY: Final[dict[FindingCode, Severity]] = {
    code: Severity.WARNING
    for code in (FindingCode.ORPHAN_FILE, FindingCode.CLOCK_BACKWARDS, FindingCode.STALE_CRL)
} | {
    code: Severity.ERROR
    for code in FindingCode
    if code not in (FindingCode.ORPHAN_FILE, FindingCode.CLOCK_BACKWARDS, FindingCode.STALE_CRL)
}

ADVICE: Final[dict[FindingCode, str]] = {
    FindingCode.MALFORMED: "The line is not a valid record. Do not rely on it; keep the spool as found and "
    "compare with the copy the server received.",
    FindingCode.BAD_SIGNATURE: "The record was altered after the device signed it. Treat its content as "
    "untrustworthy; keep the spool as found and compare with the server's copy.",
    FindingCode.UNKNOWN_DEVICE: "No certificate of this device signs the record. Obtain the device's signing "
    "certificate from provisioning (fieldproof provision list) and verify again with --certs.",
    FindingCode.FOREIGN_CA: "The signing certificate does not come from this bureau's fleet CA. Check that --ca "
    "is the right root; otherwise the records were made by a device that is not ours.",
    FindingCode.CERT_NOT_VALID: "The record's time lies outside its certificate's validity. Check the device "
    "clock (clock records) and the certificate's dates.",
    FindingCode.REVOKED: "The device had been revoked when this record was signed. Treat it as made with a "
    "possibly stolen key; records before the revocation time remain usable.",
    FindingCode.WRONG_DEVICE: "A record of another device sits in this chain. Find out how it got there; it does "
    "not belong to this device's evidence.",
    FindingCode.GAP: "Records are missing from the chain. Look for them on the server or the dock; if they are "
    "gone, the footage they described is lost or was deleted.",
    FindingCode.FORK: "Two different records claim the same place in the chain. At most one is genuine; the "
    "chain continues from the one named by the next record's prev.",
    FindingCode.DUPLICATE: "A record appears twice. The copy adds nothing; the journal was edited.",
    FindingCode.REORDERED: "Records are out of order in the journal. The recorder only appends, so the journal "
    "was edited.",
    FindingCode.BROKEN_LINK: "The record does not name its predecessor's hash: a record was replaced or the chain "
    "spliced. Compare with the server's copy.",
    FindingCode.TRUNCATED: "The chain ends before the point a witness (server or dock) saw. The last records were "
    "removed; recover them from the server.",
    FindingCode.MISSING_FILE: "The media file the record describes is not in the spool. Look for it on the "
    "server; the record still proves what was recorded and its hash.",
    FindingCode.SIZE_MISMATCH: "The media file's size differs from the signed size: the file was cut, extended "
    "or replaced. Do not use it as evidence.",
    FindingCode.HASH_MISMATCH: "The media file's content differs from what the device signed. Do not use it as "
    "evidence; obtain the original from the server.",
    FindingCode.ORPHAN_FILE: "A media file has no record. It may be a segment whose record was removed, or "
    "a file placed in the spool; it is not signed evidence.",
    FindingCode.CLOCK_BACKWARDS: "The device clock went backwards. Times of these records need the clock "
    "records and the dock's correction to be read correctly.",
    FindingCode.STALE_CRL: "The CRL is past its next-update date. Obtain the current CRL from provisioning and "
    "verify again.",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, tied to a record (by journal line and seq) or to the chain as a whole."""

    code: FindingCode
    message: str
    seq: int | None = None
    line: int | None = None  # 1-based line in the journal; None for chain-level findings
    missing: tuple[int, int] | None = None  # for gaps: first and last missing seq

    @property
    def severity(self) -> Severity:
        """Error or warning."""
        return SEVERITY[self.code]

    @property
    def advice(self) -> str:
        """What a custodian can do about it."""
        return ADVICE[self.code]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        d = asdict(self)
        d["code"] = str(self.code)
        d["severity"] = str(self.severity)
        d["advice"] = self.advice
        d["missing"] = list(self.missing) if self.missing else None
        return d
