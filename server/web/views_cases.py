"""The case handler's pages: find a case, the case page, the player, linking footage, the dossier,
footage search. Every view of evidence goes through ``server.cases.retrieval`` and so writes the same
custody event as the API route that shows the same thing."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from custody.matters import catalogue
from server.api.deps import SessionDep
from server.auth.principal import Role
from server.cases import annotations as footage_annotations
from server.cases import retrieval, service
from server.cases.annotations import Target
from server.cases.footage import SearchQuery
from server.web import casework, drawing
from server.web.i18n import translate
from server.web.rendering import PageError, PagePrincipal, SameOrigin, pages, render

router = APIRouter(include_in_schema=False)

Text = Annotated[str, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
Device = Annotated[str, PathParam(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")]
RecordingId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f/]+$")]


def _when(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _day(value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PageError(422, translate("error.invalid", field="date")) from None


def case_url(number: str) -> str:
    """The case page of ``number``."""
    return f"/case?number={quote(number, safe='')}"


@router.get("/cases")
def find_cases(
    request: Request,
    session: SessionDep,
    principal: PagePrincipal,
    number: Text = "",
    subject: Text = "",
    officer: Text = "",
    date: Text = "",
    matter: Text = "",
) -> Response:
    """Find a case: by its number (straight to the case page when it is exact), subject, officer, date, matter."""
    query = casework.CaseQuery(number, subject, officer, _day(date), matter)
    with pages():
        found = casework.find_cases(session, principal=principal, query=query)
    session.commit()  # an officer or date search is logged like GET /search/footage
    # Straight to the case when its exact number was asked, and only among the cases this user may
    # read: a redirect for a case they may not see would tell them it exists.
    exact = [c for c, _s in found if c.number == number.strip()]
    if number and not (subject or officer or date or matter) and exact:
        return RedirectResponse(case_url(exact[0].number), status_code=303)
    return render(
        request,
        "cases.html",
        principal,
        query=query,
        found=found,
        matters=sorted(catalogue().values(), key=lambda m: m.code),
        case_url=case_url,
    )


@router.get("/case")
def case_page(
    request: Request,
    session: SessionDep,
    principal: PagePrincipal,
    number: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")],
) -> Response:
    """The case: subject, text records, footage on a time axis; logged as ``viewed`` (as the case file)."""
    with pages():
        cf = retrieval.case_file(session, principal=principal, number=number)
        people = service.assignments_of(session, case_id=cf.case.id)
    session.commit()
    items = [
        (
            _when(r.start),
            _when(r.end),
            f"{r.device} · {r.recording[:8]}",
            f"/play/{r.device}/{quote(r.recording, safe='')}",
            "recording",
        )
        for r in cf.recordings
    ]
    for rec, _ok in cf.text_records:
        items.append((rec.uploaded_at, rec.uploaded_at, rec.kind, f"#record-{rec.id}", "text-record"))
    spans, t0, t1 = drawing.time_axis(items)
    matter = catalogue().get(cf.case.matter_code)
    return render(
        request,
        "case.html",
        principal,
        cf=cf,
        people=people,
        spans=spans,
        t0=t0,
        t1=t1,
        matter_title=matter.title if matter else "",
        may_verify=principal.has(Role.CUSTODIAN, Role.CASE_HANDLER, Role.LEGAL_REVIEWER),
        may_export=principal.has(Role.CUSTODIAN),
        quote=quote,
    )


@router.get("/play/{device}/{recording}")
def player(
    request: Request, session: SessionDep, principal: PagePrincipal, device: Device, recording: RecordingId
) -> Response:
    """A recording: its segments played in order (the API's media route, HTTP Range), the markers,
    the GPS track; logged as ``viewed`` (target ``recording``), each media request as ``streamed``."""
    with pages():
        rec, withheld = retrieval.recording(
            session, principal=principal, device=device, recording_id=recording
        )
    session.commit()
    marks = casework.markers(session, device=device, recording=recording, start=rec.start)
    fixes = casework.track_fixes(session, rec.segments)
    playlist = []
    offset = 0.0
    for s in rec.segments:
        seconds = s.duration_ms / 1000 or (_when(s.end) - _when(s.start)).total_seconds()
        playlist.append(
            {
                "url": f"/api/v1/segments/{s.device}/{s.seq}/media",
                "seq": s.seq,
                "index": s.index,
                "offset": offset,
                "duration": seconds,
            }
        )
        offset += seconds
    case_numbers = sorted({s.case_number for s in rec.segments if s.case_number})
    return render(
        request,
        "player.html",
        principal,
        rec=rec,
        withheld=withheld,
        playlist=playlist,
        total=offset,
        marks=marks,
        track=drawing.track(fixes),
        may_link=principal.has(Role.CASE_HANDLER, Role.INSPECTOR),
        case_numbers=case_numbers,
        case_url=case_url,
    )


@router.post("/link", dependencies=[SameOrigin])
def link_footage(
    request: Request,
    session: SessionDep,
    principal: PagePrincipal,
    device: Annotated[str, Form(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")],
    recording: Annotated[str, Form(min_length=1, max_length=64)],
    reason: Annotated[str, Form(min_length=1, max_length=2000)],
    case_number: Annotated[str, Form(max_length=64)] = "",
    proof: Annotated[str, Form(max_length=2000)] = "",
    seq: Annotated[list[int] | None, Form()] = None,
) -> Response:
    """Link segments (or the whole recording) to a case and set their proof statement: a signed
    annotation (``server.cases.annotations``, the rules of ``POST /api/v1/annotations``)."""
    targets = (
        [Target(device=device, seq=s, recording=None) for s in seq]
        if seq
        else [Target(device=device, seq=None, recording=recording)]
    )
    with pages():
        footage_annotations.annotate(
            session,
            principal=principal,
            signer=casework.signer(request),
            targets=targets,
            reason=reason,
            case_number=case_number.strip() or None,
            subject_uscc=None,
            proof=proof.strip() or None,
        )
    session.commit()
    return RedirectResponse(f"/play/{device}/{quote(recording, safe='')}?linked=1", status_code=303)


@router.get("/subjects/{subject_id}")
def dossier(
    request: Request,
    session: SessionDep,
    principal: PagePrincipal,
    subject_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)],
) -> Response:
    """The subject's dossier (一户一档) across its cases; logged as ``viewed``, as the API's."""
    with pages():
        d = retrieval.dossier(session, principal=principal, subject_id=subject_id)
    session.commit()
    return render(request, "dossier.html", principal, d=d, case_url=case_url, quote=quote)


@router.get("/footage")
def footage_search(
    request: Request,
    session: SessionDep,
    principal: PagePrincipal,
    officer: Text = "",
    date: Text = "",
    matter: Text = "",
    case_number: Text = "",
    unfiled: Annotated[bool, Query()] = False,
) -> Response:
    """Footage the user may open, by officer, day, matter, case; ``unfiled``: footage of no case yet."""
    day = _day(date)
    start_from = start_to = None
    if day is not None:
        from datetime import time, timedelta

        from server.web.rendering import SHANGHAI

        start_from = datetime.combine(day, time(0), SHANGHAI)
        start_to = start_from + timedelta(days=1)
    query = SearchQuery(
        officer=officer or None,
        start_from=start_from,
        start_to=start_to,
        matter=matter or None,
        case_number=case_number or None,
    )
    with pages():
        found = retrieval.search(session, principal=principal, query=query, limit=500)
    session.commit()
    segments = [s for s in found.segments if not unfiled or not s.case_number]
    recordings = retrieval.group(segments)
    return render(
        request,
        "footage.html",
        principal,
        recordings=recordings,
        withheld=found.withheld,
        form={"officer": officer, "date": date, "matter": matter, "case_number": case_number},
        unfiled=unfiled,
        quote=quote,
    )
