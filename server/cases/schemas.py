"""Bodies and answers of the case-file API: pydantic models with ``extra="forbid"`` and bounded fields,
so the OpenAPI document says exactly what is accepted and no input reaches the database unchecked."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from custody.record import DEVICE_ID_RE
from server.cases.uscc import ALPHABET

Restriction = Literal["state-secret", "trade-secret", "personal-privacy"]
CaseStatus = Literal["open", "closed", "archived"]
TextKind = Literal["inspection-note", "inquiry-transcript", "notice", "decision", "other"]
MAX_ID = 2**63 - 1
MAX_SEQ = 2**53 - 1


def _utf8(value: str) -> str:
    """Refuse text that cannot be stored (lone surrogates from JSON ``\\ud800`` escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


# One line: no control characters. Paragraph: line breaks and tabs allowed, no other control characters.
Line = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]*$"), AfterValidator(_utf8)]
Paragraph = Annotated[str, Field(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"), AfterValidator(_utf8)]
Uscc = Annotated[str, Field(min_length=18, max_length=18, pattern=f"^[{ALPHABET}]{{18}}$")]
CaseNumber = Annotated[Line, Field(min_length=1, max_length=64)]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_RE.pattern, max_length=32)]
RecordingId = Annotated[Line, Field(min_length=1, max_length=64)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- subjects and officers ---------------------------------------------------------------------------


class ContactIn(_In):
    """A contact person of a subject."""

    name: Annotated[Line, Field(min_length=1, max_length=64)]
    phone: Annotated[Line, Field(max_length=32)] = ""
    role: Annotated[Line, Field(max_length=64)] = ""


class SubjectIn(_In):
    """An enforcement subject: its unified social credit code (GB 32100, check character verified)."""

    uscc: Uscc
    name: Annotated[Line, Field(min_length=1, max_length=200)]
    address: Annotated[Line, Field(max_length=500)] = ""
    contacts: Annotated[list[ContactIn], Field(max_length=20)] = []


class SubjectOut(BaseModel):
    """A subject of the register."""

    id: int
    uscc: str
    name: str
    address: str
    contacts: list[ContactIn]
    created_at: datetime


class OfficerIn(_In):
    """An officer by their enforcement certificate number (执法证号)."""

    certificate_no: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z-]+$")]
    name: Annotated[Line, Field(min_length=1, max_length=64)]
    department: Annotated[Line, Field(min_length=1, max_length=128)]


class OfficerOut(BaseModel):
    """An officer of the register."""

    id: int
    certificate_no: str
    name: str
    department: str
    created_at: datetime


# -- cases -------------------------------------------------------------------------------------------


class CaseIn(_In):
    """A new case; its creator becomes its first handler."""

    number: CaseNumber
    subject_id: Id
    matter_code: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z]{2}-\d{2}$")]
    title: Annotated[Line, Field(max_length=200)] = ""
    opened_on: date | None = None
    restriction: Restriction | None = None


class CasePatch(_In):
    """Close, reopen or archive a case, set or clear its restriction."""

    status: CaseStatus | None = None
    closed_on: date | None = None
    restriction: Restriction | None = None
    clear_restriction: bool = False


class AssignmentIn(_In):
    """Assign a user to a case."""

    user_id: Id
    role: Literal["handler", "reviewer"]


class AssignmentOut(BaseModel):
    """A user's part in a case."""

    id: int
    user_id: int
    username: str
    role: str
    assigned_at: datetime
    ended_at: datetime | None


class CaseOut(BaseModel):
    """A case."""

    id: int
    number: str
    subject_id: int
    matter_code: str
    matter_title: str
    title: str
    status: CaseStatus
    opened_on: date
    closed_on: date | None
    restriction: Restriction | None
    created_at: datetime
    assignments: list[AssignmentOut]


# -- text records ------------------------------------------------------------------------------------


class TextRecordOut(BaseModel):
    """A text record. A restricted one the user may not open shows only its kind, size and restriction."""

    id: int
    case_number: str
    kind: TextKind
    title: str | None
    file_name: str | None
    media_type: str
    sha256: str | None
    size: int
    uploaded_by: str
    uploaded_at: datetime
    restriction: Restriction | None
    openable: bool
    content_url: str | None


# -- footage -----------------------------------------------------------------------------------------


class PlaceOut(BaseModel):
    """A position: WGS-84 degrees × 10^7."""

    lat_e7: int
    lon_e7: int


class SegmentOut(BaseModel):
    """A segment with its current context and where each value came from."""

    device: str
    seq: int
    record_hash: str
    kind: str
    recording: str
    index: int
    start: str
    end: str
    officer: str
    sha256: str
    size: int
    status: str  # pending: file incomplete; stored: verified and durable
    case_number: str
    case_source: Literal["capture", "device-annotation", "annotation"]
    case_annotation: int | None
    subject: str
    proof: str
    proof_annotation: int | None
    matter: str
    scene: str
    container: str
    duration_ms: int
    place: PlaceOut | None
    media_url: str


class AnnotationRefOut(BaseModel):
    """An annotation naming a segment."""

    id: int
    time: datetime
    by: str
    set: dict[str, str]
    reason: str


class SegmentDetailOut(SegmentOut):
    """A segment with its fixes and the annotations that name it."""

    fixes: list[tuple[str, int, int]]  # (time, lat_e7, lon_e7)
    annotations: list[AnnotationRefOut]


class RecordingOut(BaseModel):
    """A recording: its segments in order (play them one after another), and what is missing."""

    device: str
    recording: str
    start: str
    end: str
    officers: list[str]
    place: PlaceOut | None
    segments: list[SegmentOut]
    missing_indexes: list[int]
    withheld: int = 0


class CaseFileOut(BaseModel):
    """A case with its text records and its footage grouped by recording."""

    case: CaseOut
    subject: SubjectOut
    text_records: list[TextRecordOut]
    recordings: list[RecordingOut]


class TimelineItemOut(BaseModel):
    """One entry of a dossier's timeline."""

    time: datetime
    kind: Literal["case-opened", "case-closed", "text-record", "recording", "restricted-case"]
    case_number: str
    text_record: TextRecordOut | None = None
    recording: RecordingOut | None = None
    restriction: Restriction | None = None


class DossierOut(BaseModel):
    """A subject's dossier (一户一档): its cases and one timeline across them."""

    subject: SubjectOut
    cases: list[CaseOut]
    timeline: list[TimelineItemOut]


class SearchOut(BaseModel):
    """Footage found; ``withheld`` matched but is restricted to this user."""

    segments: list[SegmentOut]
    withheld: int
    limit: int
    offset: int


# -- annotations -------------------------------------------------------------------------------------


class TargetIn(_In):
    """A segment (device and seq) or a whole recording (device and recording)."""

    device: DeviceId
    seq: Seq | None = None
    recording: RecordingId | None = None

    @model_validator(mode="after")
    def _one(self) -> TargetIn:
        if (self.seq is None) == (self.recording is None):
            raise ValueError("name either seq or recording")
        return self


class AnnotationIn(_In):
    """Link footage to a case ('' unlinks) and/or a subject, and/or correct its proof statement."""

    targets: Annotated[list[TargetIn], Field(min_length=1, max_length=1000)]
    case_number: Annotated[Line, Field(max_length=64)] | None = None
    subject: Uscc | None = None
    proof: Annotated[Paragraph, Field(min_length=1, max_length=2000)] | None = None
    reason: Annotated[Paragraph, Field(min_length=1, max_length=500)]


class SignedTargetOut(BaseModel):
    """A capture record named by an annotation."""

    device: str
    seq: int
    hash: str


class AnnotationOut(BaseModel):
    """A signed annotation: Ed25519 (base64) by the server-signing key over ``context`` + ``signed``."""

    id: int
    time: datetime
    by: str
    case_number: str | None
    subject: str | None
    proof: str | None
    reason: str
    targets: list[SignedTargetOut]
    key_id: str
    context: str
    signed: str  # the RFC 8785 text, exactly as signed (UTF-8)
    signature: str
    verified: bool  # checked by the server against its certificate when served
    problem: str | None = None  # why it does not verify, if it does not
