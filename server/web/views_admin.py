"""IT's fleet page (enrol: download the bundle; revoke), oversight figures with charts, and access
requests for restricted records — each calling the existing provisioning and access code."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from provisioning import enrollment, revocation
from provisioning.errors import ProvisioningError
from provisioning.layout import CaLayout
from server.api.deps import SessionDep
from server.auth import access
from server.auth.models import AccessRequest, User
from server.auth.principal import Principal, Role
from server.cases.errors import ConflictError, InvalidInputError, NotFoundError
from server.cases.models import Officer
from server.custody_log.models import CustodyEvent
from server.db import utc_now
from server.devices import assignments
from server.web import drawing, fleet, oversight
from server.web.i18n import translate
from server.web.rendering import PageError, PagePrincipal, SameOrigin, page_roles, pages, render
from server.web.views_cases import case_url

router = APIRouter(include_in_schema=False)

ItAdmin = Annotated[Principal, Depends(page_roles(Role.IT_ADMIN))]
Overseer = Annotated[Principal, Depends(page_roles(Role.CUSTODIAN, Role.LEGAL_REVIEWER, Role.AUDITOR))]
DeviceId = Annotated[str, PathParam(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")]


def _ca_dir(request: Request) -> Path:
    ca_dir: Path | None = request.app.state.settings.ca_dir
    if ca_dir is None:
        raise PageError(503, translate("error.unavailable"))
    return ca_dir


# -- fleet ---------------------------------------------------------------------------------------------


@router.get("/fleet")
def fleet_page(request: Request, session: SessionDep, principal: ItAdmin) -> Response:
    """Every recorder and dock: status, last seen, firmware/config, clock offset, certificate expiry."""
    rows = fleet.fleet_rows(session, ca_dir=request.app.state.settings.ca_dir)
    officers = list(session.scalars(select(Officer).order_by(Officer.department, Officer.certificate_no)))
    return render(
        request,
        "fleet.html",
        principal,
        rows=rows,
        officers=officers,
        enrolled=request.query_params.get("enrolled"),
        assigned=request.query_params.get("assigned"),
    )


@router.post("/fleet/assign", dependencies=[SameOrigin])
def assign(
    session: SessionDep,
    principal: ItAdmin,
    recorder: Annotated[str, Form(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")],
    officer_id: Annotated[int, Form(ge=1, le=2**63 - 1)],
    valid_from: Annotated[date, Form()],
    valid_until: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """配发: issue a recorder to an officer (``server.devices.assignments.assign_recorder``)."""
    try:
        until = date.fromisoformat(valid_until) if valid_until else None
    except ValueError:
        raise PageError(422, translate("error.conflict"), detail="valid_until is not a date") from None
    try:
        assignments.assign_recorder(
            session,
            principal=principal,
            recorder=recorder,
            officer_id=officer_id,
            valid_from=valid_from,
            valid_until=until,
        )
    except NotFoundError:
        raise PageError(404, translate("error.not_found")) from None
    except (ConflictError, InvalidInputError) as exc:
        raise PageError(409, translate("error.conflict"), detail=str(exc)) from None
    session.commit()
    return RedirectResponse(f"/fleet?assigned={quote(recorder)}", status_code=303)


@router.post("/fleet/enrol", dependencies=[SameOrigin])
def enrol(
    request: Request,
    principal: ItAdmin,
    device: Annotated[str, Form(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")],
    role: Annotated[str, Form(pattern="^(recorder|dock)$")],
) -> Response:
    """Enrol a device (keys, certificates, config: ``provisioning.enrollment.enroll``)."""
    try:
        enrollment.enroll(_ca_dir(request), device=device, role=role)
    except ProvisioningError as exc:
        raise PageError(409, translate("error.conflict"), detail=str(exc)) from None
    return RedirectResponse(f"/fleet?enrolled={quote(device)}", status_code=303)


@router.get("/fleet/{device}/bundle")
def bundle(request: Request, principal: ItAdmin, device: DeviceId) -> Response:
    """The device's bundle as a zip (its keys included: what goes onto the device, IT only)."""
    folder = CaLayout(_ca_dir(request)).root / "devices" / device
    if not folder.is_dir():
        raise PageError(404, translate("error.not_found"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.iterdir()):
            if p.is_file():
                z.write(p, f"{device}/{p.name}")
    return Response(
        buf.getvalue(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{device}-bundle.zip"',
            "Cache-Control": "private, no-store",
        },
    )


@router.post("/fleet/{device}/revoke", dependencies=[SameOrigin])
def revoke(
    request: Request,
    principal: ItAdmin,
    device: DeviceId,
    reason: Annotated[
        str, Form(pattern="^(keyCompromise|cessationOfOperation|unspecified)$")
    ] = "unspecified",
) -> Response:
    """Revoke a lost device (the CRL and the revocation list: ``provisioning.revocation.revoke``)."""
    try:
        revocation.revoke(_ca_dir(request), device=device, reason=reason)
    except ProvisioningError as exc:
        raise PageError(409, translate("error.conflict"), detail=str(exc)) from None
    return RedirectResponse("/fleet", status_code=303)


# -- oversight -----------------------------------------------------------------------------------------


@router.get("/oversight")
def oversight_page(
    request: Request,
    session: SessionDep,
    principal: Overseer,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> Response:
    """关联率, 上传及时率, 使用率 and warnings, per department and officer, with bar charts."""
    o = oversight.oversight(session, ca_dir=request.app.state.settings.ca_dir, days=days)
    charts = {
        "dept_link": drawing.bars([(k, t.link_rate) for k, t in o.by_department.items() if t.segments]),
        "dept_timely": drawing.bars([(k, t.timely_rate) for k, t in o.by_department.items() if t.segments]),
        "officer_link": drawing.bars(
            [
                (f"{o.officer_names.get(k, '')} {k}", t.link_rate)
                for k, t in o.by_officer.items()
                if t.segments
            ]
        ),
        "officer_timely": drawing.bars(
            [
                (f"{o.officer_names.get(k, '')} {k}", t.timely_rate)
                for k, t in o.by_officer.items()
                if t.segments
            ]
        ),
        "use": drawing.bars([(translate("oversight.use_rate"), o.use_rate)]),
        "dept_use": drawing.bars([(k, t.use_rate) for k, t in o.by_department.items() if t.issued]),
        "officer_use": drawing.bars(
            [(f"{o.officer_names.get(k, '')} {k}", t.use_rate) for k, t in o.by_officer.items() if t.issued]
        ),
    }
    return render(request, "oversight.html", principal, o=o, charts=charts, days=days, case_url=case_url)


# -- access requests -----------------------------------------------------------------------------------


@router.get("/access-requests")
def access_requests(request: Request, session: SessionDep, principal: PagePrincipal) -> Response:
    """Your requests; for deciders, those waiting for a decision and all of them."""
    with pages():
        mine = access.list_requests(session, principal=principal, scope="mine")
        to_decide = (
            access.list_requests(session, principal=principal, scope="to-decide")
            if principal.has(*access.DECIDER_ROLES)
            else []
        )
    return render(
        request,
        "access.html",
        principal,
        mine=mine,
        to_decide=to_decide,
        may_ask=principal.has(*access.REQUESTER_ROLES),
        status_of=access.effective_status,
    )


@router.post("/access-requests", dependencies=[SameOrigin])
def ask_access(
    session: SessionDep,
    principal: PagePrincipal,
    target_kind: Annotated[str, Form(pattern="^(case|text-record|segment|recording)$")],
    target_id: Annotated[str, Form(min_length=1, max_length=128)],
    restriction: Annotated[str, Form(pattern="^(state-secret|trade-secret|personal-privacy)$")],
    purpose: Annotated[str, Form(min_length=1, max_length=2000)],
    days: Annotated[int, Form(ge=1, le=90)] = 7,
) -> Response:
    """Ask for access (``server.auth.access.request_access``)."""
    with pages():
        access.expire_due(session)
        access.request_access(
            session,
            principal=principal,
            target_kind=target_kind,
            target_id=target_id,
            restriction=restriction,
            purpose=purpose,
            until=utc_now() + timedelta(days=days) - timedelta(minutes=1),
        )
    session.commit()
    return RedirectResponse("/access-requests", status_code=303)


@router.post("/access-requests/{request_id}/decide", dependencies=[SameOrigin])
def decide(
    session: SessionDep,
    principal: PagePrincipal,
    request_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)],
    decision: Annotated[str, Form(pattern="^(approve|refuse)$")],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Approve or refuse (a custodian or legal reviewer who is not the requester)."""
    with pages():
        if decision == "approve":
            access.approve_request(session, principal=principal, request_id=request_id, note=note or None)
        else:
            access.refuse_request(session, principal=principal, request_id=request_id, note=note)
    session.commit()
    return RedirectResponse("/access-requests", status_code=303)


#: Custody kinds that record evidence being opened.
OPENED_KINDS = ("viewed", "streamed", "downloaded", "exported")


def opened_under(session: SessionDep, req: AccessRequest) -> list[tuple[CustodyEvent, dict[str, Any]]]:
    """The custody events of the requester opening evidence under this grant (they name it)."""
    requester = session.get(User, req.requester_id)
    if requester is None or req.decided_at is None:
        return []
    q = (
        select(CustodyEvent)
        .where(
            CustodyEvent.kind.in_(OPENED_KINDS),
            CustodyEvent.actor == f"user:{requester.username}",
            CustodyEvent.time >= req.decided_at,
        )
        .order_by(CustodyEvent.id)
    )
    out = []
    for event in session.scalars(q):
        detail = json.loads(event.detail)
        cited = [a.get("id") for a in detail.get("access_requests", [])]
        if req.id in cited or detail.get("access_request") == req.id:
            out.append((event, detail))
    return out


@router.get("/access-requests/{request_id}")
def access_request(
    request: Request,
    session: SessionDep,
    principal: PagePrincipal,
    request_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)],
) -> Response:
    """One request: its history and what was opened under it (its requester, deciders, auditors)."""
    with pages():
        req = access.get_request(session, principal=principal, request_id=request_id)
    events = access.history(session, request_id=req.id)
    names = {
        u.id: u.username
        for u in session.scalars(
            select(User).where(User.id.in_({req.requester_id, *(e.actor_id for e in events if e.actor_id)}))
        )
    }
    return render(
        request,
        "access_request.html",
        principal,
        req=req,
        status=access.effective_status(req),
        events=events,
        names=names,
        opened=opened_under(session, req),
    )
