"""Routes of export: make a case's bag (custodians), download it as a zip or tar archive.

Synchronous: the answer comes when the bag is sealed and the ``exported`` event committed.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel

from server.api.deps import SessionDep
from server.auth.deps import AUTH_RESPONSES, ErrorOut, PrincipalDep
from server.auth.principal import Role
from server.cases import retrieval
from server.cases.views_common import answers
from server.errors import SettingsError, StoreError
from server.evidence.views import get_store
from server.export import service

router = APIRouter(tags=["export"])

_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    404: {"model": ErrorOut, "description": "no such case, or not one this user may see"},
    503: {
        "model": ErrorOut,
        "description": "the export cannot be signed (the server's key or CA is unusable), or the "
        "evidence store cannot be read",
    },
}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    404: {"model": ErrorOut, "description": "no such export of this case"},
}

CaseNumber = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
Reason = Annotated[str | None, Query(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]


class ExportOut(BaseModel):
    """A sealed bag: where to download it, and the custody event that recorded it."""

    export_id: str
    case_number: str
    clips: int
    manifest_sha256: str
    checkpoint_tree_size: int
    exported_event: int
    download: str


@router.post(
    "/cases/by-number/{number:path}/export",
    status_code=201,
    response_model=ExportOut,
    responses=_EXPORT_RESPONSES,
)
def export_case(
    number: CaseNumber, request: Request, session: SessionDep, principal: PrincipalDep, reason: Reason = None
) -> ExportOut:
    """Build the case's BagIt bag in the server's data directory and log ``exported``."""
    store = get_store(request)
    state = request.app.state
    with answers():
        try:
            done = service.export_case(
                session,
                principal=principal,
                settings=state.settings,
                factory=state.session_factory,
                store=store,
                number=number,
                reason=reason,
            )
        except (SettingsError, StoreError) as exc:
            raise HTTPException(status_code=503, detail=exc.diagnostics()) from None
    session.commit()
    return ExportOut(
        export_id=done.export_id,
        case_number=done.case_number,
        clips=done.clips,
        manifest_sha256=done.manifest_sha256,
        checkpoint_tree_size=done.checkpoint_size,
        exported_event=done.event_id,
        download=f"/api/v1/cases/by-number/{done.case_number}/exports/{done.export_id}",
    )


def _archive(bag: Path, kind: str) -> Path:
    """``<bag>.zip`` or ``<bag>.tar``, made once (temporary name, fsync, rename); the bag is the top folder."""
    out = bag.with_name(f"{bag.name}.{kind}")
    if out.is_file():
        return out
    tmp = bag.with_name(f".tmp-{bag.name}.{kind}")
    files = sorted(p for p in bag.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, f"{bag.name}/{p.relative_to(bag).as_posix()}")
    else:
        with tarfile.open(tmp, "w") as t:
            for p in files:
                t.add(p, f"{bag.name}/{p.relative_to(bag).as_posix()}")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out


@router.get(
    "/cases/by-number/{number:path}/exports/{export_id}", responses=_DOWNLOAD_RESPONSES, response_model=None
)
def download_export(
    number: CaseNumber,
    export_id: Annotated[str, PathParam(max_length=40)],
    session: SessionDep,
    principal: PrincipalDep,
    request: Request,
    format: Annotated[Literal["zip", "tar"], Query()] = "zip",
    reason: Reason = None,
) -> Any:
    """The bag as an archive (custodians); logs ``downloaded``."""
    if not principal.has(Role.CUSTODIAN):
        raise HTTPException(status_code=403, detail="downloading an export needs the role custodian")
    bag = service.find_export(request.app.state.settings, export_id)
    if bag is None or service.export_case_number(bag) != number:
        raise HTTPException(status_code=404, detail=f"no export {export_id} of case {number}")
    archive = _archive(bag, format)
    retrieval.record_access(
        session,
        principal=principal,
        kind="downloaded",
        target_kind="export",
        target_id=export_id,
        reason=reason,
        detail={"case": number, "format": format, "manifest_sha256": service.manifest_digest(bag)},
    )
    session.commit()
    return FileResponse(
        archive,
        media_type="application/zip" if format == "zip" else "application/x-tar",
        filename=archive.name,
        headers={"Cache-Control": "private, no-store"},
    )
