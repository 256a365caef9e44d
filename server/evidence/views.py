"""API routes of the evidence domain: a device's segments, a segment's metadata and media (HTTP Range,
streamed), a recording as its ordered segments. Access: server/cases/policy.py; each read is logged."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select

from custody.record import DEVICE_ID_RE
from server.api.deps import SessionDep
from server.auth.deps import AUTH_RESPONSES, ErrorOut, PrincipalDep
from server.cases import annotations, retrieval
from server.cases.footage import Footage, fixes_of
from server.cases.schemas import AnnotationRefOut, PlaceOut, RecordingOut, SegmentDetailOut, SegmentOut
from server.cases.views_common import answers
from server.devices.models import Device
from server.evidence.backend import make_blob_store
from server.evidence.service import RangeNotSatisfiableError, iter_blob, list_segments, parse_range
from server.evidence.store import BlobStore
from server.retention.models import RetentionPurge

router = APIRouter(tags=["evidence"])

DeviceParam = Annotated[str, PathParam(pattern=DEVICE_ID_RE.pattern, max_length=32)]
SeqParam = Annotated[int, PathParam(ge=0, le=2**53 - 1)]
Reason = Annotated[str | None, Query(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
_STORE_LOCK = threading.Lock()
CONTAINER_TYPES = {"mp4-fragmented": "video/mp4", "mpegts": "video/mp2t"}


def get_store(request: Request) -> BlobStore:
    """The app's evidence store (made once, from the settings' store and staging directories)."""
    state = request.app.state
    with _STORE_LOCK:
        if not hasattr(state, "blob_store"):
            settings = state.settings
            state.blob_store = make_blob_store(settings)
        store: BlobStore = state.blob_store
        return store


def media_response(
    *,
    store: BlobStore,
    digest: str,
    size: int,
    media_type: str,
    range_header: str | None,
    if_range: str | None,
    disposition: str | None = None,
) -> Response:
    """200 with the whole blob, or 206 with one range; streamed from the store a chunk at a time.

    Raises RangeNotSatisfiableError (the caller answers 416) before anything is logged or sent.
    """
    etag = '"' + digest.removeprefix("sha256:") + '"'
    if if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's copy is another blob: send this one whole (RFC 9110 §13.1.5)
    wanted = parse_range(range_header, size)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if disposition is not None:
        headers["Content-Disposition"] = disposition
    if wanted is None:
        headers["Content-Length"] = str(size)
        body = iter_blob(store, digest, start=0, length=size)
        return StreamingResponse(body, status_code=200, media_type=media_type, headers=headers)
    headers["Content-Range"] = wanted.content_range
    headers["Content-Length"] = str(wanted.length)
    body = iter_blob(store, digest, start=wanted.start, length=wanted.length)
    return StreamingResponse(body, status_code=206, media_type=media_type, headers=headers)


def not_satisfiable(exc: RangeNotSatisfiableError) -> HTTPException:
    """The 416 answer for a range outside the blob."""
    return HTTPException(status_code=416, detail=str(exc), headers={"Content-Range": f"bytes */{exc.size}"})


def attachment(file_name: str) -> str:
    """A Content-Disposition naming the file in UTF-8 (RFC 6266), with an ASCII fallback."""
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in file_name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(file_name, safe='')}"


def segment_out(s: Footage, cls: type[SegmentOut] = SegmentOut, **extra: Any) -> Any:
    """The API view of a segment."""
    place = (
        PlaceOut(lat_e7=s.lat_e7, lon_e7=s.lon_e7) if s.lat_e7 is not None and s.lon_e7 is not None else None
    )
    return cls(
        device=s.device,
        seq=s.seq,
        record_hash=s.record_hash,
        kind=s.kind,
        recording=s.recording,
        index=s.index,
        start=s.start,
        end=s.end,
        officer=s.officer,
        sha256=s.digest,
        size=s.size,
        status=s.file_status,
        case_number=s.case_number,
        case_source=s.case_source,  # type: ignore[arg-type]
        case_annotation=s.case_annotation,
        subject=s.subject,
        proof=s.proof,
        proof_annotation=s.proof_annotation,
        matter=s.matter,
        scene=s.scene,
        container=s.container,
        duration_ms=s.duration_ms,
        place=place,
        media_url=f"/api/v1/segments/{s.device}/{s.seq}/media",
        **extra,
    )


def recording_out(r: retrieval.Recording, *, withheld: int = 0) -> RecordingOut:
    """The API view of a recording."""
    place = r.place
    return RecordingOut(
        device=r.device,
        recording=r.recording,
        start=r.start,
        end=r.end,
        officers=r.officers,
        place=PlaceOut(lat_e7=place[0], lon_e7=place[1]) if place else None,
        segments=[segment_out(s) for s in r.segments],
        missing_indexes=r.missing_indexes,
        withheld=withheld,
    )


# -- a device's segments (ingest's view) --------------------------------------------------------------


class DeviceSegmentOut(BaseModel):
    """A filed segment: its place in the device's chain, its file and what it records."""

    seq: int
    kind: str
    sha256: str
    size: int
    status: str  # pending: announced, file incomplete; stored: verified and durable
    recording: str
    index: int
    case_number: str
    subject: str
    officer: str
    start: str
    end: str
    stored_at: datetime | None


_DEVICE = {
    **AUTH_RESPONSES,
    404: {"model": ErrorOut, "description": "no such device, or none of its footage that this user may see"},
}


@router.get("/devices/{device}/segments", response_model=list[DeviceSegmentOut], responses=_DEVICE)
def device_segments(
    session: SessionDep, device: DeviceParam, principal: PrincipalDep, reason: Reason = None
) -> list[DeviceSegmentOut]:
    """The device's segments this user may open, in chain order (case and subject as ingest holds them).

    A custodian sees every segment but those of restricted cases without a grant; others see the
    footage policy gives them (own recordings, assigned cases). The read is logged (``viewed``).
    """
    if session.scalar(select(Device.id).where(Device.id == device)) is None:
        raise HTTPException(status_code=404, detail=f"no device {device} has sent records to this server")
    with answers():
        shown, _withheld = retrieval.device_footage(
            session, principal=principal, device=device, reason=reason
        )
    session.commit()  # the event is durable before the answer leaves
    seqs = {s.seq for s in shown}
    return [
        DeviceSegmentOut(**s.__dict__) for s in list_segments(session=session, device=device) if s.seq in seqs
    ]


# -- one segment ----------------------------------------------------------------------------------------

_READ = {**AUTH_RESPONSES, 404: {"model": ErrorOut, "description": "no such item that this user may see"}}


@router.get("/segments/{device}/{seq}", response_model=SegmentDetailOut, responses=_READ)
def get_segment(
    device: DeviceParam, seq: SeqParam, session: SessionDep, principal: PrincipalDep, reason: Reason = None
) -> SegmentDetailOut:
    """A segment's metadata: current case, subject, proof statement (and their sources), fixes, annotations."""
    with answers():
        opened = retrieval.open_segment(session, principal=principal, device=device, seq=seq)
        s = opened.segment
        notes = annotations.annotations_of(session, segment_id=s.segment_id)
        retrieval.record_access(
            session,
            principal=principal,
            kind="viewed",
            target_kind="segment",
            target_id=s.ref,
            grants=[opened.grant],
            reason=reason,
            device=s.device,
            seq=s.seq,
            record_hash=s.record_hash,
            digest=s.digest,
        )
    session.commit()
    refs = [
        AnnotationRefOut(
            id=a.id,
            time=a.time,
            by=a.actor,
            set={
                k: v
                for k, v in (("case", a.case_number), ("subject", a.subject_uscc), ("proof", a.proof))
                if v is not None
            },
            reason=a.reason,
        )
        for a in notes
    ]
    return segment_out(s, SegmentDetailOut, fixes=fixes_of(session, s.segment_id), annotations=refs)  # type: ignore[no-any-return]


_MEDIA = {
    **_READ,
    200: {"content": {"video/mp4": {}, "video/mp2t": {}}, "description": "the whole file"},
    206: {"content": {"video/mp4": {}, "video/mp2t": {}}, "description": "the range asked for"},
    409: {"model": ErrorOut, "description": "the file has not been received completely yet"},
    410: {"model": ErrorOut, "description": "the retention sweep deleted the file (its records remain)"},
    416: {"model": ErrorOut, "description": "the range lies outside the file"},
}


@router.get("/segments/{device}/{seq}/media", response_class=Response, responses=_MEDIA)
def segment_media(
    device: DeviceParam,
    seq: SeqParam,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    range_header: Annotated[str | None, Header(alias="range", max_length=200)] = None,
    if_range: Annotated[str | None, Header(alias="if-range", max_length=200)] = None,
    download: bool = False,
    reason: Reason = None,
) -> Response:
    """The segment's file: seekable in a browser (HTTP Range), streamed; ``streamed`` or ``downloaded`` logged."""
    with answers():
        opened = retrieval.open_segment(session, principal=principal, device=device, seq=seq)
    s = opened.segment
    if s.file_status != "stored":
        raise HTTPException(
            status_code=409, detail=f"segment {s.ref}: its file is not completely received yet"
        )
    purge = session.get(RetentionPurge, s.digest)
    if purge is not None:
        raise HTTPException(
            status_code=410,
            detail=f"segment {s.ref}: its file was deleted by the retention sweep at "
            f"{purge.purged_at.isoformat()} (class {purge.retention_class}, due {purge.due_at.date()}); "
            "its capture record and custody events remain",
        )
    name = s.file_name.rsplit("/", 1)[-1]
    try:
        response = media_response(
            store=get_store(request),
            digest=s.digest,
            size=s.size,
            media_type=CONTAINER_TYPES.get(s.container, "application/octet-stream"),
            range_header=range_header,
            if_range=if_range,
            disposition=attachment(f"{s.device}-{s.seq}-{name}") if download else None,
        )
    except RangeNotSatisfiableError as exc:
        raise not_satisfiable(exc) from None
    retrieval.record_access(
        session,
        principal=principal,
        kind="downloaded" if download else "streamed",
        target_kind="segment",
        target_id=s.ref,
        grants=[opened.grant],
        reason=reason,
        device=s.device,
        seq=s.seq,
        record_hash=s.record_hash,
        digest=s.digest,
        detail={"range": response.headers.get("content-range", f"bytes 0-{s.size - 1}/{s.size}")},
    )
    session.commit()  # the event is durable before the first byte leaves
    return response


@router.get("/recordings/{device}/{recording}", response_model=RecordingOut, responses=_READ)
def get_recording(
    device: DeviceParam,
    recording: Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")],
    session: SessionDep,
    principal: PrincipalDep,
    reason: Reason = None,
) -> RecordingOut:
    """A recording as the ordered list of its segments (index order), to play one after another."""
    with answers():
        rec, withheld = retrieval.recording(
            session, principal=principal, device=device, recording_id=recording, reason=reason
        )
    session.commit()
    return recording_out(rec, withheld=withheld)
