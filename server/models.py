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

__all__ = [
    "AccessRequest",
    "AccessRequestEvent",
    "ApiToken",
    "AuthSession",
    "Base",
    "Case",
    "CaseAssignment",
    "CustodyEvent",
    "Device",
    "EnforcementSubject",
    "EvidenceFile",
    "FootageAnnotation",
    "FootageAnnotationTarget",
    "LoginThrottle",
    "Officer",
    "Record",
    "Segment",
    "SegmentFacts",
    "SegmentFix",
    "SigningCertificate",
    "TextRecord",
    "User",
    "UserRole",
]
