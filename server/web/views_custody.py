"""The custodian's pages: chain-of-custody status per case and per device (each segment green, amber
or red with its reasons, from ``server.verification``), the custody log with its proofs, and case
exports with a progress indicator. Roles and custody events as the API's routes."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from custody.errors import CustodyError
from server.api.deps import SessionDep
from server.auth.principal import Principal, Role
from server.cases import policy, retrieval, service
from server.cases.service import find_case
from server.custody_log import service as log
from server.custody_log.errors import NotInLogError
from server.custody_log.models import CustodyEvent
from server.custody_log.sequencer import CheckpointSigner, sequence_pending
from server.custody_log.verify import verify_event_answer
from server.devices.models import Device
from server.errors import SettingsError, StoreError
from server.evidence.store import BlobStore
from server.evidence.views import get_store
from server.verification import service as verification
from server.web import jobs
from server.web.i18n import translate
from server.web.rendering import PageError, PagePrincipal, SameOrigin, page_roles, pages, render
from server.web.views_cases import case_url

router = APIRouter(include_in_schema=False)

CaseNumber = Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
DeviceId = Annotated[str, PathParam(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")]
CustodyReader = Annotated[Principal, Depends(page_roles(Role.CUSTODIAN, Role.AUDITOR))]
Custodian = Annotated[Principal, Depends(page_roles(Role.CUSTODIAN))]
#: How many of the newest custody events the log page shows.
LOG_PAGE = 50


def _store(request: Request) -> BlobStore:
    return get_store(request)


def _cannot_run(exc: CustodyError | SettingsError | StoreError) -> PageError:
    return PageError(503, translate("custody.cannot_run"), detail=exc.diagnostics())


@router.get("/custody")
def custody_index(request: Request, session: SessionDep, principal: CustodyReader) -> Response:
    """Where to start: the cases (custodians) and the devices whose records the server holds."""
    cases = []
    if principal.has(Role.CUSTODIAN):
        with pages():
            cases = service.list_cases(session, principal=principal, limit=500)
    devices = list(session.scalars(select(Device).order_by(Device.role, Device.id)))
    return render(request, "custody.html", principal, cases=cases, devices=devices, case_url=case_url)


@router.get("/custody/case")
def case_custody(
    request: Request, session: SessionDep, principal: PagePrincipal, number: CaseNumber
) -> Response:
    """A case's chain of custody, segment by segment (``GET …/verification``: same readers, same event)."""
    try:
        with pages():
            case, result = verification.read_case_verification(
                session,
                principal=principal,
                number=number,
                settings=request.app.state.settings,
                store=_store(request),
            )
    except verification.VerifierUnavailableError as exc:
        raise _cannot_run(exc.cause) from None
    session.commit()
    return render(
        request,
        "custody_case.html",
        principal,
        case=case,
        result=result,
        may_export=principal.has(Role.CUSTODIAN),
        case_url=case_url,
    )


@router.get("/custody/device/{device}")
def device_custody(
    request: Request, session: SessionDep, principal: CustodyReader, device: DeviceId
) -> Response:
    """A device's whole chain as the server holds it (``GET /devices/{device}/verification``)."""
    try:
        report = verification.verify_device(
            session,
            ca_dir=request.app.state.settings.ca_dir,
            store=_store(request),
            device=device,
            scratch=request.app.state.settings.data_dir,
        )
    except (CustodyError, SettingsError, StoreError) as exc:
        raise _cannot_run(exc) from None
    if not report.records:
        raise PageError(404, translate("error.not_found"))
    retrieval.record_access(
        session,
        principal=principal,
        kind="viewed",
        target_kind="device-verification",
        target_id=device,
        detail={"all_sound": report.all_sound, "findings": len(report.findings)},
        device=device,
    )
    session.commit()
    return render(request, "custody_device.html", principal, device=device, report=report)


@router.get("/custody-log")
def custody_log(request: Request, session: SessionDep, principal: CustodyReader) -> Response:
    """The newest custody events, each with its inclusion proof against the latest signed checkpoint,
    checked here with the server-signing certificate (as ``verify_event_answer`` checks an API answer)."""
    ca_dir = request.app.state.settings.ca_dir
    try:
        signer = CheckpointSigner.from_ca_dir(ca_dir) if ca_dir is not None else None
    except SettingsError as exc:
        raise _cannot_run(exc) from None
    if signer is not None:
        sequence_pending(factory=request.app.state.session_factory, signer=signer)
    session.rollback()  # end the read begun by sign-in: its snapshot predates what was just sequenced
    try:
        checkpoint = log.latest_checkpoint(session=session)
    except NotInLogError:
        checkpoint = None
    rows = list(session.scalars(select(CustodyEvent).order_by(CustodyEvent.id.desc()).limit(LOG_PAGE)))
    entries = []
    for row in rows:
        proof = None
        checked: str | None = None
        try:
            proof = log.event_proof(session=session, event_id=row.id)
            if signer is not None:
                verify_event_answer(proof.to_json(), signer.certificate)
                checked = "ok"
        except NotInLogError:
            checked = "pending"
        except CustodyError as exc:
            checked = f"bad: {exc}"
        entries.append({"row": row, "detail": json.loads(row.detail), "proof": proof, "checked": checked})
    return render(request, "custody_log.html", principal, checkpoint=checkpoint, entries=entries)


@router.post("/export", dependencies=[SameOrigin])
def start_export(
    request: Request,
    session: SessionDep,
    principal: Custodian,
    number: Annotated[str, Form(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")],
) -> Response:
    """Start a case export (custodians) and answer the job to poll."""
    with pages():
        case = find_case(session, number=number)
        policy.ensure_reads_case(session, principal, case)
    job = jobs.start_export(request.app, principal=principal, store=_store(request), number=case.number)
    return JSONResponse(job.to_json(), status_code=202, headers={"Cache-Control": "no-store"})


@router.get("/export-jobs/{job_id}")
def export_job(
    request: Request,
    principal: Custodian,
    job_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")],
) -> Response:
    """How far the export got (its starter only)."""
    job = jobs.get_job(request.app, principal=principal, job_id=job_id)
    if job is None:
        raise PageError(404, translate("error.not_found"))
    return JSONResponse(job.to_json(), headers={"Cache-Control": "no-store"})
