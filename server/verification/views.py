"""Routes of verification: a case's footage, or a device's whole chain, as JSON or as a human report.

Access (docs/export.md): a case's verification is read like the case file — a custodian for every
case, its assigned handlers and legal reviewers for theirs (server/cases/policy.py), a restricted case
only with a grant. A device's verification spans cases: custodians and auditors (it shows hashes,
seqs and findings, never content). Each answer writes a ``viewed`` custody event before it is sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from custody.errors import CustodyError
from custody.report import render_text
from server.api.deps import SessionDep
from server.auth.deps import AUTH_RESPONSES, ErrorOut, PrincipalDep
from server.auth.principal import Role
from server.cases import retrieval
from server.cases.views_common import answers
from server.errors import SettingsError, StoreError
from server.evidence.store import BlobStore
from server.evidence.views import get_store
from server.verification import service

router = APIRouter(tags=["verification"])

_CASE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    404: {"model": ErrorOut, "description": "no such case, or not one this user may see"},
    503: {
        "model": ErrorOut,
        "description": "the verifier cannot run: the CA directory or the evidence store is unusable",
    },
}
_DEVICE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_CASE_RESPONSES,
    404: {"model": ErrorOut, "description": "no such device"},
}

Format = Annotated[Literal["json", "text"], Query(description="json (default) or a human report")]
Reason = Annotated[str | None, Query(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
CaseNumber = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
Device = Annotated[str, PathParam(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")]


def _store(request: Request) -> BlobStore:
    return get_store(request)


def _cannot_run(exc: CustodyError | SettingsError | StoreError) -> HTTPException:
    # The CA directory's root, chain or CRL is unusable, or the store cannot be read: the verifier cannot
    # run (fieldproof verify's exit 2) — never a report of footage "missing" that may not be.
    return HTTPException(status_code=503, detail=f"verification cannot run: {exc.diagnostics()}")


@router.get("/cases/by-number/{number:path}/verification", responses=_CASE_RESPONSES, response_model=None)
def case_verification(
    number: CaseNumber,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    format: Format = "json",
    reason: Reason = None,
) -> Response:
    """Each segment of the case green, amber or red with its reasons, and each device's chain report."""
    try:
        with answers():
            _case, result = service.read_case_verification(
                session,
                principal=principal,
                number=number,
                settings=request.app.state.settings,
                store=_store(request),
                reason=reason,
            )
    except service.VerifierUnavailableError as exc:
        raise _cannot_run(exc.cause) from None
    session.commit()
    if format == "text":
        return PlainTextResponse(service.render_case_text(result))
    return JSONResponse(result.to_json())


@router.get("/devices/{device}/verification", responses=_DEVICE_RESPONSES, response_model=None)
def device_verification(
    device: Device,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    format: Format = "json",
    reason: Reason = None,
) -> Response:
    """The device's whole chain as the server holds it, verified like ``fieldproof verify`` (ChainReport)."""
    if not principal.has(Role.CUSTODIAN, Role.AUDITOR):
        raise HTTPException(
            status_code=403, detail="a device's verification needs the role custodian or auditor"
        )
    try:
        report = service.verify_device(
            session,
            ca_dir=request.app.state.settings.ca_dir,
            store=_store(request),
            device=device,
            scratch=request.app.state.settings.data_dir,
        )
    except (CustodyError, SettingsError, StoreError) as exc:
        raise _cannot_run(exc) from None
    if not report.records:
        raise HTTPException(status_code=404, detail=f"the server holds no records of device {device}")
    detail: dict[str, Any] = {"all_sound": report.all_sound, "findings": len(report.findings)}
    retrieval.record_access(
        session,
        principal=principal,
        kind="viewed",
        target_kind="device-verification",
        target_id=device,
        reason=reason,
        detail=detail,
        device=device,
    )
    session.commit()
    if format == "text":
        return PlainTextResponse(render_text(report))
    return JSONResponse(report.to_json())
