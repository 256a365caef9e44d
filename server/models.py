"""Every table of the server, imported in one place so that Alembic and the tests see the whole schema."""

from server.custody_log.models import CustodyEvent
from server.db import Base
from server.devices.models import Device, SigningCertificate
from server.evidence.models import EvidenceFile, Segment
from server.ingest.models import Record

__all__ = ["Base", "CustodyEvent", "Device", "EvidenceFile", "Record", "Segment", "SigningCertificate"]
