"""What the case handler's pages need beyond the case domain's services: finding cases by several
fields, a recording's markers and GPS fixes (read after ``retrieval.recording`` opened it and logged the
view), and the annotation signer (the same key, kept on the app as the API keeps it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.canonical import parse
from server.auth.principal import Principal
from server.cases import retrieval, service
from server.cases.annotations import AnnotationSigner
from server.cases.errors import SigningUnavailableError
from server.cases.footage import Footage, SearchQuery, fixes_of
from server.cases.models import Case, EnforcementSubject
from server.ingest.models import Record
from server.web.rendering import SHANGHAI

_SIGNER_LOCK = threading.Lock()
#: How many cases a search page lists at most.
MAX_LISTED = 500


@dataclass(frozen=True)
class CaseQuery:
    """The case search form: any field may be empty."""

    number: str = ""
    subject: str = ""
    officer: str = ""
    day: date | None = None
    matter: str = ""

    @property
    def empty(self) -> bool:
        """Nothing asked."""
        return not (self.number or self.subject or self.officer or self.day or self.matter)


def find_cases(
    session: Session, *, principal: Principal, query: CaseQuery
) -> list[tuple[Case, EnforcementSubject | None]]:
    """The readable cases (``service.list_cases``) matching every field given.

    Officer and day match a case through its footage (``retrieval.search``, logged as a search like
    ``GET /search/footage``) or, for the day, the date it was opened.
    """
    cases = service.list_cases(session, principal=principal, limit=MAX_LISTED)
    subjects = {
        s.id: s
        for s in session.scalars(
            select(EnforcementSubject).where(EnforcementSubject.id.in_({c.subject_id for c in cases}))
        )
    }
    footage_cases: set[str] | None = None
    if query.officer or query.day:
        start_from = start_to = None
        if query.day is not None:
            start_from = datetime.combine(query.day, time(0), SHANGHAI)
            start_to = start_from + timedelta(days=1)
        found = retrieval.search(
            session,
            principal=principal,
            query=SearchQuery(officer=query.officer or None, start_from=start_from, start_to=start_to),
            limit=MAX_LISTED,
        )
        footage_cases = {s.case_number for s in found.segments if s.case_number}
    out = []
    for c in cases:
        subject = subjects.get(c.subject_id)
        if query.number and query.number.strip() not in c.number:
            continue
        if query.subject and (
            subject is None or (query.subject not in subject.name and query.subject not in subject.uscc)
        ):
            continue
        if query.matter and c.matter_code != query.matter.strip().upper():
            continue
        if query.officer and (footage_cases is None or c.number not in footage_cases):
            continue
        if (
            query.day
            and not query.officer
            and c.opened_on != query.day
            and c.number not in (footage_cases or ())
        ):
            continue
        out.append((c, subject))
    return out


@dataclass(frozen=True)
class Marker:
    """A moment the inspector marked during a recording (出示证件, 告知权利义务…)."""

    at: str
    label: str
    note: str
    offset_s: float  # seconds from the recording's start


def markers(session: Session, *, device: str, recording: str, start: str) -> list[Marker]:
    """The device's marker records of ``recording``, in time order (the signed lines, parsed)."""
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    out = []
    for line in session.scalars(
        select(Record.line).where(Record.device == device, Record.kind == "marker").order_by(Record.seq)
    ):
        try:
            body: dict[str, Any] = parse(bytes(line).rstrip(b"\n"))["record"]["body"]
        except (ValueError, KeyError, TypeError):
            continue  # the verifier reports a malformed record; a page only shows sound markers
        if body.get("recording") != recording:
            continue
        at = str(body["at"])
        offset = (datetime.fromisoformat(at.replace("Z", "+00:00")) - t0).total_seconds()
        out.append(Marker(at, str(body["label"]), str(body.get("note", "")), max(offset, 0.0)))
    return sorted(out, key=lambda m: m.at)


def track_fixes(session: Session, segments: list[Footage]) -> list[tuple[int, int]]:
    """Every fix of the segments, in the recording's order (lat_e7, lon_e7)."""
    return [(lat, lon) for s in segments for _t, lat, lon in fixes_of(session, s.segment_id)]


def signer(request: Request) -> AnnotationSigner:
    """The server-signing key for annotations, loaded once per app (shared with the API's routes)."""
    state = request.app.state
    with _SIGNER_LOCK:
        if not hasattr(state, "annotation_signer"):
            ca_dir = state.settings.ca_dir
            if ca_dir is None:
                raise SigningUnavailableError(
                    "annotations are signed with the server-signing key: set FIELDPROOF_CA_DIR"
                )
            state.annotation_signer = AnnotationSigner.from_ca_dir(ca_dir)
        found: AnnotationSigner = state.annotation_signer
        return found
