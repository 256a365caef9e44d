"""API routes of the case file: subjects, officers, cases and assignments, text records, the case file by
number, a subject's dossier, footage search and signed annotations (docs/case-file.md).

Who may do what is ``server.cases.policy``'s; these routes only parse, call the services, commit, and
answer. Every read of a case or of evidence writes its custody event before the answer is sent.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AwareDatetime
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.matters import catalogue
from server.api.deps import SessionDep
from server.auth.deps import AUTH_RESPONSES, ErrorOut, PrincipalDep
from server.cases import annotations, records, retrieval, service
from server.cases.annotations import CONTEXT, AnnotationSigner, Target
from server.cases.errors import AnnotationSignatureError, SigningUnavailableError
from server.cases.footage import MAX_RADIUS_M, SearchQuery
from server.cases.models import (
    MEDIA_TYPES,
    Case,
    CaseAssignment,
    EnforcementSubject,
    FootageAnnotation,
    FootageAnnotationTarget,
    TextRecord,
)
from server.cases.schemas import (
    AnnotationIn,
    AnnotationOut,
    AssignmentIn,
    AssignmentOut,
    CaseFileOut,
    CaseIn,
    CaseOut,
    CasePatch,
    ContactIn,
    DossierOut,
    OfficerIn,
    OfficerOut,
    Restriction,
    SearchOut,
    SignedTargetOut,
    SubjectIn,
    SubjectOut,
    TextKind,
    TextRecordOut,
    TimelineItemOut,
)
from server.cases.views_common import answers, json_answer
from server.evidence.models import Segment
from server.evidence.service import RangeNotSatisfiableError
from server.evidence.views import (
    attachment,
    get_store,
    media_response,
    not_satisfiable,
    recording_out,
    segment_out,
)
from server.ingest.models import Record

router = APIRouter(tags=["case file"])

IdParam = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
Reason = Annotated[str | None, Query(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
Page = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
_SIGNER_LOCK = threading.Lock()


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        404: "no such item, or not one this user may see",
        403: "the roles, the case assignment or a restriction do not allow it (the detail says which)",
        409: "the action does not fit the current state",
        400: "the body could not be parsed (not JSON, or not UTF-8)",
        413: "the file is too large",
        503: "the server cannot sign annotations (no CA directory configured)",
    }
    return {**AUTH_RESPONSES, **{c: {"model": ErrorOut, "description": text[c]} for c in codes}}


def _signer(request: Request) -> AnnotationSigner:
    """The server-signing key, loaded once per app from the settings' CA directory."""
    state = request.app.state
    with _SIGNER_LOCK:
        if not hasattr(state, "annotation_signer"):
            ca_dir = state.settings.ca_dir
            if ca_dir is None:
                raise SigningUnavailableError(
                    "annotations are signed with the server-signing key: set FIELDPROOF_CA_DIR to the "
                    "provisioning CA directory"
                )
            state.annotation_signer = AnnotationSigner.from_ca_dir(ca_dir)
        signer: AnnotationSigner = state.annotation_signer
        return signer


# -- answers -----------------------------------------------------------------------------------------


def _subject_out(s: EnforcementSubject) -> SubjectOut:
    return SubjectOut(
        id=s.id,
        uscc=s.uscc,
        name=s.name,
        address=s.address,
        contacts=[ContactIn(**c) for c in service.contacts_of(s)],
        created_at=s.created_at,
    )


def _officer_out(o: Any) -> OfficerOut:
    return OfficerOut(
        id=o.id,
        certificate_no=o.certificate_no,
        name=o.name,
        department=o.department,
        created_at=o.created_at,
    )


def _case_out(
    session: Session, c: Case, assignments: list[tuple[CaseAssignment, str]] | None = None
) -> CaseOut:
    """``assignments``: the case's, when already read (a list of cases reads them in one query)."""
    if assignments is None:
        assignments = service.assignments_of(session, case_id=c.id)
    matter = catalogue().get(c.matter_code)
    return CaseOut(
        id=c.id,
        number=c.number,
        subject_id=c.subject_id,
        matter_code=c.matter_code,
        matter_title=matter.title if matter else "",
        title=c.title,
        status=c.status,  # type: ignore[arg-type]
        opened_on=c.opened_on,
        closed_on=c.closed_on,
        restriction=c.restriction,  # type: ignore[arg-type]
        created_at=c.created_at,
        assignments=[
            AssignmentOut(
                id=a.id,
                user_id=a.user_id,
                username=name,
                role=a.role,
                assigned_at=a.assigned_at,
                ended_at=a.ended_at,
            )
            for a, name in assignments
        ],
    )


def _text_out(session: Session, r: TextRecord, *, case_number: str, openable: bool) -> TextRecordOut:
    uploader = service.usernames(session, {r.uploaded_by}).get(r.uploaded_by, "")
    return TextRecordOut(
        id=r.id,
        case_number=case_number,
        kind=r.kind,  # type: ignore[arg-type]
        title=r.title if openable else None,
        file_name=r.file_name if openable else None,
        media_type=r.media_type,
        sha256=r.digest if openable else None,
        size=r.size,
        uploaded_by=uploader,
        uploaded_at=r.uploaded_at,
        restriction=r.restriction,  # type: ignore[arg-type]
        openable=openable,
        content_url=f"/api/v1/text-records/{r.id}/content" if openable else None,
    )


# -- subjects ----------------------------------------------------------------------------------------


@router.post("/subjects", status_code=201, response_model=SubjectOut, responses=_errors(400, 409))
def create_subject(body: SubjectIn, session: SessionDep, principal: PrincipalDep) -> SubjectOut:
    """Register an enforcement subject (case handlers); the USCC's check character is verified."""
    with answers():
        subject = service.create_subject(
            session,
            principal=principal,
            uscc=body.uscc,
            name=body.name,
            address=body.address,
            contacts=[c.model_dump() for c in body.contacts],
        )
    session.commit()
    return _subject_out(subject)


@router.get("/subjects", response_model=list[SubjectOut], responses=AUTH_RESPONSES)
def list_subjects(
    session: SessionDep,
    principal: PrincipalDep,
    q: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    limit: Page = 100,
    offset: Offset = 0,
) -> list[SubjectOut]:
    """Subjects of the register, optionally those whose code or name contains ``q``."""
    with answers():
        rows = service.list_subjects(session, principal=principal, query=q, limit=limit, offset=offset)
    return [_subject_out(s) for s in rows]


@router.get("/subjects/{subject_id}", response_model=SubjectOut, responses=_errors(404))
def get_subject(subject_id: IdParam, session: SessionDep, principal: PrincipalDep) -> SubjectOut:
    """One subject of the register."""
    with answers():
        return _subject_out(service.get_subject(session, principal=principal, subject_id=subject_id))


@router.get("/subjects/{subject_id}/dossier", response_model=DossierOut, responses=_errors(404))
def subject_dossier(
    subject_id: IdParam, session: SessionDep, principal: PrincipalDep, reason: Reason = None
) -> Response:
    """The subject's dossier (一户一档): its cases, their text records and its footage as one timeline."""
    with answers():
        d = retrieval.dossier(session, principal=principal, subject_id=subject_id, reason=reason)
    session.commit()
    timeline = []
    for item in d.items:
        text = (
            _text_out(session, item.text_record, case_number=item.case_number, openable=item.text_record_open)
            if item.text_record is not None
            else None
        )
        timeline.append(
            TimelineItemOut(
                time=item.time,
                kind=item.kind,  # type: ignore[arg-type]
                case_number=item.case_number,
                text_record=text,
                recording=recording_out(item.recording) if item.recording is not None else None,
                restriction=item.restriction,  # type: ignore[arg-type]
            )
        )
    assigned = service.assignments_of_cases(session, case_ids=[c.id for c in d.cases])
    out = DossierOut(
        subject=_subject_out(d.subject),
        cases=[_case_out(session, c, assigned.get(c.id, [])) for c in d.cases],
        timeline=timeline,
    )
    return json_answer(out)


# -- officers ----------------------------------------------------------------------------------------


@router.post("/officers", status_code=201, response_model=OfficerOut, responses=_errors(400, 409))
def create_officer(body: OfficerIn, session: SessionDep, principal: PrincipalDep) -> OfficerOut:
    """Register an officer (IT admins); link a user to it with the user's ``officer_id``."""
    with answers():
        officer = service.create_officer(
            session,
            principal=principal,
            certificate_no=body.certificate_no,
            name=body.name,
            department=body.department,
        )
    session.commit()
    return _officer_out(officer)


@router.get("/officers", response_model=list[OfficerOut], responses=AUTH_RESPONSES)
def list_officers(session: SessionDep, principal: PrincipalDep) -> list[OfficerOut]:
    """Every officer."""
    with answers():
        return [_officer_out(o) for o in service.list_officers(session, principal=principal)]


@router.get("/officers/{officer_id}", response_model=OfficerOut, responses=_errors(404))
def get_officer(officer_id: IdParam, session: SessionDep, principal: PrincipalDep) -> OfficerOut:
    """One officer."""
    with answers():
        return _officer_out(service.get_officer(session, principal=principal, officer_id=officer_id))


# -- cases -------------------------------------------------------------------------------------------


@router.post("/cases", status_code=201, response_model=CaseOut, responses=_errors(400, 409))
def create_case(body: CaseIn, session: SessionDep, principal: PrincipalDep) -> CaseOut:
    """Open a case (case handlers); its creator becomes its first handler."""
    with answers():
        case = service.create_case(
            session,
            principal=principal,
            number=body.number,
            subject_id=body.subject_id,
            matter_code=body.matter_code,
            title=body.title,
            opened_on=body.opened_on,
            restriction=body.restriction,
        )
    session.commit()
    return _case_out(session, case)


@router.get("/cases", response_model=list[CaseOut], responses=AUTH_RESPONSES)
def list_cases(
    session: SessionDep,
    principal: PrincipalDep,
    subject_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status: Annotated[str | None, Query(pattern="^(open|closed|archived)$")] = None,
    limit: Page = 100,
    offset: Offset = 0,
) -> list[CaseOut]:
    """The cases this user may read (assigned ones; every case for custodians)."""
    with answers():
        rows = service.list_cases(
            session, principal=principal, subject_id=subject_id, status=status, limit=limit, offset=offset
        )
    assigned = service.assignments_of_cases(session, case_ids=[c.id for c in rows])
    return [_case_out(session, c, assigned.get(c.id, [])) for c in rows]


@router.get("/cases/by-number/{number:path}", response_model=CaseFileOut, responses=_errors(403, 404))
def case_by_number(
    number: Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")],
    session: SessionDep,
    principal: PrincipalDep,
    reason: Reason = None,
) -> Response:
    """The case file: the case, its text records, and its footage grouped by recording (current case)."""
    with answers():
        cf = retrieval.case_file(session, principal=principal, number=number, reason=reason)
    session.commit()
    out = CaseFileOut(
        case=_case_out(session, cf.case),
        subject=_subject_out(cf.subject),
        text_records=[
            _text_out(session, r, case_number=cf.case.number, openable=ok) for r, ok in cf.text_records
        ],
        recordings=[recording_out(r) for r in cf.recordings],
    )
    return json_answer(out)


@router.get("/cases/{case_id}", response_model=CaseOut, responses=_errors(404))
def get_case(
    case_id: IdParam, session: SessionDep, principal: PrincipalDep, reason: Reason = None
) -> CaseOut:
    """A case and its assignments."""
    with answers():
        case = service.get_case(session, principal=principal, case_id=case_id)
        retrieval.record_access(
            session,
            principal=principal,
            kind="viewed",
            target_kind="case",
            target_id=case.number,
            reason=reason,
        )
    session.commit()
    return _case_out(session, case)


@router.patch("/cases/{case_id}", response_model=CaseOut, responses=_errors(400, 403, 404, 409))
def update_case(case_id: IdParam, body: CasePatch, session: SessionDep, principal: PrincipalDep) -> CaseOut:
    """Close, reopen or archive a case, or change its restriction (its assigned handlers)."""
    with answers():
        case = service.update_case(
            session,
            principal=principal,
            case_id=case_id,
            status=body.status,
            closed_on=body.closed_on,
            restriction=body.restriction,
            clear_restriction=body.clear_restriction,
        )
    session.commit()
    return _case_out(session, case)


@router.post(
    "/cases/{case_id}/assignments",
    status_code=201,
    response_model=AssignmentOut,
    responses=_errors(400, 403, 404, 409),
)
def assign(
    case_id: IdParam, body: AssignmentIn, session: SessionDep, principal: PrincipalDep
) -> AssignmentOut:
    """Assign a user as handler or reviewer (the case's handlers, custodians); logged as access-granted."""
    with answers():
        row = service.assign(
            session, principal=principal, case_id=case_id, user_id=body.user_id, role=body.role
        )
    session.commit()
    name = service.usernames(session, {row.user_id})[row.user_id]
    return AssignmentOut(
        id=row.id,
        user_id=row.user_id,
        username=name,
        role=row.role,
        assigned_at=row.assigned_at,
        ended_at=None,
    )


@router.delete(
    "/cases/{case_id}/assignments/{assignment_id}",
    response_model=AssignmentOut,
    responses=_errors(403, 404, 409),
)
def end_assignment(
    case_id: IdParam, assignment_id: IdParam, session: SessionDep, principal: PrincipalDep
) -> AssignmentOut:
    """End an assignment (kept in the case's history); logged as access-revoked."""
    with answers():
        row = service.end_assignment(
            session, principal=principal, case_id=case_id, assignment_id=assignment_id
        )
    session.commit()
    name = service.usernames(session, {row.user_id})[row.user_id]
    return AssignmentOut(
        id=row.id,
        user_id=row.user_id,
        username=name,
        role=row.role,
        assigned_at=row.assigned_at,
        ended_at=row.ended_at,
    )


# -- text records ------------------------------------------------------------------------------------


@router.post(
    "/cases/{case_id}/text-records",
    status_code=201,
    response_model=TextRecordOut,
    responses=_errors(400, 403, 404, 409, 413),
)
def upload_text_record(
    case_id: IdParam,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="PDF, DOCX, PNG or JPEG, at most 64 MiB")],
    kind: Annotated[TextKind, Form()],
    title: Annotated[str, Form(min_length=1, max_length=200)],
    restriction: Annotated[Restriction | None, Form()] = None,
) -> TextRecordOut:
    """File a text record in a case (its handlers): stored write-once by SHA-256; logged as ``filed``."""
    with answers():
        record = records.upload(
            session,
            principal=principal,
            store=get_store(request),
            case_id=case_id,
            kind=kind,
            title=title,
            file_name=file.filename or "upload",
            declared_type=file.content_type,
            stream=file.file,
            restriction=restriction,
        )
        case = service.find_case(session, case_id=case_id)
    session.commit()
    return _text_out(
        session, record, case_number=case.number, openable=records.may_open(session, principal, record, case)
    )


@router.get("/cases/{case_id}/text-records", response_model=list[TextRecordOut], responses=_errors(403, 404))
def case_text_records(
    case_id: IdParam, session: SessionDep, principal: PrincipalDep, reason: Reason = None
) -> list[TextRecordOut]:
    """A case's text records (restricted ones the user may not open show no title, name or hash)."""
    with answers():
        case = service.get_case(session, principal=principal, case_id=case_id)
        retrieval.record_access(
            session, principal=principal, kind="viewed", target_kind="case", target_id=case.number, reason=reason,
            detail={"view": "text-records"},
        )  # fmt: skip
        rows = [
            (r, records.may_open(session, principal, r, case))
            for r in records.of_case(session, case_id=case.id)
        ]
    session.commit()
    return [_text_out(session, r, case_number=case.number, openable=ok) for r, ok in rows]


@router.get("/text-records/{record_id}", response_model=TextRecordOut, responses=_errors(403, 404))
def get_text_record(
    record_id: IdParam, session: SessionDep, principal: PrincipalDep, reason: Reason = None
) -> TextRecordOut:
    """A text record's description (403 if restricted and not granted)."""
    with answers():
        opened = records.open_record(session, principal=principal, record_id=record_id)
        retrieval.record_access(
            session, principal=principal, kind="viewed", target_kind="text-record", target_id=str(record_id),
            grants=opened.grants, reason=reason, digest=opened.record.digest,
        )  # fmt: skip
    session.commit()
    return _text_out(session, opened.record, case_number=opened.case.number, openable=True)


@router.get(
    "/text-records/{record_id}/content",
    response_class=Response,
    responses={
        **_errors(403, 404),
        200: {"content": {t: {} for t in MEDIA_TYPES}, "description": "the whole file"},
        206: {"content": {t: {} for t in MEDIA_TYPES}, "description": "the range asked for"},
        416: {"model": ErrorOut, "description": "the range lies outside the file"},
    },
)
def text_record_content(
    record_id: IdParam,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    range_header: Annotated[str | None, Header(alias="range", max_length=200)] = None,
    if_range: Annotated[str | None, Header(alias="if-range", max_length=200)] = None,
    reason: Reason = None,
) -> Response:
    """The text record's bytes, exactly as uploaded (Range supported); logged as ``downloaded``."""
    with answers():
        opened = records.open_record(session, principal=principal, record_id=record_id)
    r = opened.record
    try:
        response = media_response(
            store=get_store(request),
            digest=r.digest,
            size=r.size,
            media_type=r.media_type,
            range_header=range_header,
            if_range=if_range,
            disposition=attachment(r.file_name),
        )
    except RangeNotSatisfiableError as exc:
        raise not_satisfiable(exc) from None
    retrieval.record_access(
        session,
        principal=principal,
        kind="downloaded",
        target_kind="text-record",
        target_id=str(r.id),
        grants=opened.grants,
        reason=reason,
        digest=r.digest,
        detail={"case": opened.case.number, "range": response.headers.get("content-range", "whole")},
    )
    session.commit()
    return response


# -- search ------------------------------------------------------------------------------------------


@router.get("/search/footage", response_model=SearchOut, responses=AUTH_RESPONSES)
def search_footage(
    session: SessionDep,
    principal: PrincipalDep,
    officer: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    start_from: Annotated[AwareDatetime | None, Query()] = None,
    start_to: Annotated[AwareDatetime | None, Query()] = None,
    lat_e7: Annotated[int | None, Query(ge=-900_000_000, le=900_000_000)] = None,
    lon_e7: Annotated[int | None, Query(ge=-1_800_000_000, le=1_800_000_000)] = None,
    radius_m: Annotated[int | None, Query(ge=1, le=MAX_RADIUS_M)] = None,
    matter: Annotated[str | None, Query(max_length=16, pattern=r"^[A-Z]{2}-\d{2}$")] = None,
    scene: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    proof: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    case_number: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    subject: Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    device: Annotated[str | None, Query(max_length=32, pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")] = None,
    limit: Page = 100,
    offset: Offset = 0,
    reason: Reason = None,
) -> SearchOut:
    """Footage by officer (执法证号), time range, place (a circle), matter, scene, proof text, case, subject."""
    circle = (lat_e7, lon_e7, radius_m)
    if any(v is not None for v in circle) and any(v is None for v in circle):
        raise _query_error("radius_m", "a place is lat_e7, lon_e7 and radius_m together")
    start_from, start_to = _bounded(start_from, "start_from"), _bounded(start_to, "start_to")
    if start_from is not None and start_to is not None and start_from > start_to:
        raise _query_error("start_to", "start_to is before start_from")
    query = SearchQuery(
        officer=officer,
        start_from=start_from,
        start_to=start_to,
        lat_e7=lat_e7,
        lon_e7=lon_e7,
        radius_m=radius_m,
        matter=matter,
        scene=scene,
        proof=proof,
        case_number=case_number,
        subject=subject,
        device=device,
    )
    with answers():
        found = retrieval.search(
            session, principal=principal, query=query, limit=limit, offset=offset, reason=reason
        )
    session.commit()
    segments = [segment_out(s) for s in found.segments]
    return SearchOut(segments=segments, withheld=found.withheld, limit=limit, offset=offset)


def _query_error(name: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": None}]
    )


def _bounded(value: datetime | None, name: str) -> datetime | None:
    """A time that exists in UTC (year 1 at +14:00 does not): else 422, not an overflow later."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _query_error(name, "the time lies outside years 1–9999 in UTC") from None


# -- annotations -------------------------------------------------------------------------------------


def _annotation_out(session: Session, row: FootageAnnotation, *, problem: str | None = None) -> AnnotationOut:
    targets = session.execute(
        select(Segment.device, Segment.seq, Record.hash)
        .join(FootageAnnotationTarget, FootageAnnotationTarget.segment_id == Segment.id)
        .join(Record, Record.id == Segment.record_id)
        .where(FootageAnnotationTarget.annotation_id == row.id)
        .order_by(Segment.device, Segment.seq)
    )
    return AnnotationOut(
        id=row.id,
        time=row.time,
        by=row.actor,
        case_number=row.case_number,
        subject=row.subject_uscc,
        proof=row.proof,
        reason=row.reason,
        targets=[SignedTargetOut(device=d, seq=s, hash=h) for d, s, h in targets],
        key_id=row.key_id,
        context=CONTEXT.decode("ascii"),
        signed=row.signed.decode("utf-8"),
        signature=row.signature,
        verified=problem is None,
        problem=problem,
    )


@router.post(
    "/annotations", status_code=201, response_model=AnnotationOut, responses=_errors(400, 403, 404, 409, 503)
)
def annotate(
    body: AnnotationIn, request: Request, session: SessionDep, principal: PrincipalDep
) -> AnnotationOut:
    """Link footage to a case or subject, or correct its proof statement: a signed, append-only annotation.

    The capture records are not changed; each segment's current values become the annotation's.
    """
    with answers():
        row = annotations.annotate(
            session,
            principal=principal,
            signer=_signer(request),
            targets=[Target(device=t.device, seq=t.seq, recording=t.recording) for t in body.targets],
            reason=body.reason,
            case_number=body.case_number,
            subject_uscc=body.subject,
            proof=body.proof,
        )
    session.commit()
    return _annotation_out(session, row)


@router.get("/annotations/{annotation_id}", response_model=AnnotationOut, responses=_errors(404))
def get_annotation(
    annotation_id: IdParam,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    reason: Reason = None,
) -> AnnotationOut:
    """An annotation with its signature, for checking offline against the server-signing certificate."""
    with answers():
        row = annotations.get_annotation(session, principal=principal, annotation_id=annotation_id)
        problem = None
        try:
            annotations.check_annotation(session, annotation=row, certificate=_signer(request).certificate)
        except AnnotationSignatureError as exc:
            # Served anyway, marked: hiding a tampered annotation would hide the tampering.
            problem = str(exc)
        except SigningUnavailableError as exc:
            problem = f"not checked: {exc}"
        retrieval.record_access(
            session,
            principal=principal,
            kind="viewed",
            target_kind="annotation",
            target_id=str(row.id),
            reason=reason,
        )
    session.commit()
    return _annotation_out(session, row, problem=problem)
