"""Every table of the server, imported in one place so that Alembic and the tests see the whole schema."""

from server.auth.models import (
    AccessRequest,
    AccessRequestEvent,
    ApiToken,
    AuthSession,
    LoginThrottle,
    User,
    UserRole,
)
from server.cases.models import (
    Case,
    CaseAssignment,
    EnforcementSubject,
    FootageAnnotation,
    FootageAnnotationTarget,
    Officer,
    SegmentFacts,
    SegmentFix,
    TextRecord,
)
from server.custody_log.models import CustodyEvent
from server.db import Base
from server.devices.models import Device, SigningCertificate
from server.evidence.models import EvidenceFile, Segment
from server.ingest.models import Record
from server.retention.models import CaseArchiveRule, LegalHold, LegalHoldEvent, RetentionPurge

__all__ = [
    "AccessRequest",
    "AccessRequestEvent",
    "ApiToken",
    "AuthSession",
    "Base",
    "Case",
    "CaseArchiveRule",
    "CaseAssignment",
    "CustodyEvent",
    "Device",
    "EnforcementSubject",
    "EvidenceFile",
    "FootageAnnotation",
    "FootageAnnotationTarget",
    "LegalHold",
    "LegalHoldEvent",
    "LoginThrottle",
    "Officer",
    "Record",
    "RetentionPurge",
    "Segment",
    "SegmentFacts",
    "SegmentFix",
    "SigningCertificate",
    "TextRecord",
    "User",
    "UserRole",
]
