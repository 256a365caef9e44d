"""Retrieval: a case file by its number, a subject's dossier across cases (一户一档) as one timeline,
footage search, one segment, one recording — each read written to the custody log.

Every function checks access through ``server.cases.policy`` and appends one custody event (``viewed``,
or the caller's ``streamed``/``downloaded`` for bytes) naming the actor, what was shown, the user's
stated reason when given, and the access request that opened a restricted record. The caller commits:
the event exists exactly when the answer was given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.timefmt import parse_timestamp
from server.auth.models import AccessRequest
from server.auth.principal import Principal
from server.cases import footage, policy, records
from server.cases.errors import NotFoundError, RestrictedError
from server.cases.footage import Footage, SearchQuery
from server.cases.models import Case, EnforcementSubject, TextRecord
from server.cases.policy import Action, Scope
from server.cases.service import BUREAU_TZ, get_subject
from server.custody_log.service import log_event

#: At most this many item references are listed in one custody event's detail.
MAX_REFS = 1000


def record_access(
    session: Session,
    *,
    principal: Principal,
    kind: str,
    target_kind: str,
    target_id: str,
    grants: Iterable[AccessRequest | None] = (),
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    device: str | None = None,
    seq: int | None = None,
    record_hash: str | None = None,
    digest: str | None = None,
) -> None:
    """One custody event for an access to evidence: who, what, why (their reason; the grant's purpose)."""
    body: dict[str, Any] = {"target_kind": target_kind, "target_id": target_id, "via": principal.via}
    if reason:
        body["reason"] = reason
    used = [g for g in grants if g is not None]
    if used:
        body["access_requests"] = [
            {"id": g.id, "purpose": g.purpose, "restriction": g.restriction, "target_kind": g.target_kind}
            for g in used
        ]
    body |= detail or {}
    log_event(
        session=session,
        kind=kind,
        actor=principal.actor,
        detail=body,
        device=device,
        seq=seq,
        record_hash=record_hash,
        digest=digest,
    )


def _restrictions(session: Session, numbers: Iterable[str]) -> dict[str, str]:
    """Case number → restriction, for the restricted cases among ``numbers``."""
    wanted = sorted({n for n in numbers if n})
    out: dict[str, str] = {}
    for i in range(0, len(wanted), 500):
        rows = session.execute(
            select(Case.number, Case.restriction).where(
                Case.number.in_(wanted[i : i + 500]), Case.restriction.is_not(None)
            )
        )
        out.update({n: r for n, r in rows})
    return out


def _unlocked(
    session: Session, principal: Principal, segments: list[Footage], known: Iterable[Case] = ()
) -> tuple[list[Footage], list[AccessRequest], list[Footage]]:
    """Split segments into those the principal may open and those withheld (restricted, no grant).
    ``known``: cases already loaded, whose restriction need not be read again."""
    loaded = {c.number: c.restriction for c in known}
    restricted = {n: r for n, r in loaded.items() if r is not None}
    restricted |= _restrictions(session, (s.case_number for s in segments if s.case_number not in loaded))
    shown, grants, withheld = [], [], []
    for s in segments:
        restriction = restricted.get(s.case_number)
        try:
            grant = policy.unlock(
                session,
                principal,
                restriction=restriction,
                targets=policy.segment_targets(
                    case_number=s.case_number, device=s.device, seq=s.seq, recording=s.recording
                ),
            )
        except RestrictedError:
            withheld.append(s)
            continue
        shown.append(s)
        if grant is not None and grant not in grants:
            grants.append(grant)
    return shown, grants, withheld


@dataclass
class Recording:
    """Segments of one recording, in order, with the span they cover."""

    device: str
    recording: str
    segments: list[Footage] = field(default_factory=list)

    @property
    def start(self) -> str:
        """Start of the earliest segment."""
        return min(s.start for s in self.segments)

    @property
    def end(self) -> str:
        """End of the latest segment."""
        return max(s.end for s in self.segments)

    @property
    def officers(self) -> list[str]:
        """The collectors named by its segments."""
        return sorted({s.officer for s in self.segments})

    @property
    def place(self) -> tuple[int, int] | None:
        """The first fix of the recording, if any (lat_e7, lon_e7)."""
        for s in self.segments:
            if s.lat_e7 is not None and s.lon_e7 is not None:
                return s.lat_e7, s.lon_e7
        return None

    @property
    def missing_indexes(self) -> list[int]:
        """Segment numbers between the first and last held that the server does not have (or not shown)."""
        held = {s.index for s in self.segments}
        return [i for i in range(min(held), max(held) + 1) if i not in held]


def group(segments: list[Footage]) -> list[Recording]:
    """Segments grouped by (device, recording), recordings by start, segments by index."""
    by: dict[tuple[str, str], Recording] = {}
    for s in segments:
        by.setdefault((s.device, s.recording), Recording(s.device, s.recording)).segments.append(s)
    for r in by.values():
        r.segments.sort(key=lambda s: (s.index, s.seq))
    return sorted(by.values(), key=lambda r: (r.start, r.device, r.recording))


def _refs(segments: list[Footage]) -> list[str]:
    return [s.ref for s in segments[:MAX_REFS]]


# -- a case file by number ---------------------------------------------------------------------------


@dataclass
class CaseFile:
    """A case with its text records and footage, as one user may see it."""

    case: Case
    subject: EnforcementSubject
    text_records: list[tuple[TextRecord, bool]]  # (record, may be opened)
    recordings: list[Recording]


def case_file(session: Session, *, principal: Principal, number: str, reason: str | None = None) -> CaseFile:
    """The case file of ``number``: 404 unless assigned (or custodian), 403 if restricted without a grant."""
    # The case with its subject in one round trip (each request of the case file pays it).
    row = session.execute(
        select(Case, EnforcementSubject)
        .join(EnforcementSubject, EnforcementSubject.id == Case.subject_id)
        .where(Case.number == number)
    ).first()
    if row is None:
        raise NotFoundError(f"no case {number} that you may see")
    case, subject = row
    scope = policy.ensure_reads_case(session, principal, case)
    grant = policy.unlock(session, principal, restriction=case.restriction, targets=[("case", case.number)])
    texts = [
        (r, records.may_open(session, principal, r, case)) for r in records.of_case(session, case_id=case.id)
    ]
    segments = footage.of_case(session, scope=scope, case_number=case.number)
    record_access(
        session,
        principal=principal,
        kind="viewed",
        target_kind="case",
        target_id=case.number,
        grants=[grant],
        reason=reason,
        detail={
            "view": "case-file",
            "text_records": [r.id for r, _ in texts],
            "segments": _refs(segments),
            "segment_count": len(segments),
        },
    )
    return CaseFile(case=case, subject=subject, text_records=texts, recordings=group(segments))


# -- a subject's dossier (一户一档) --------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineItem:
    """One entry of a dossier's timeline."""

    time: datetime
    kind: str  # case-opened | case-closed | text-record | recording | restricted-case
    case_number: str
    text_record: TextRecord | None = None
    text_record_open: bool = False
    recording: Recording | None = None
    restriction: str | None = None


def _day(d: date) -> datetime:
    return datetime.combine(d, time(0, 0), BUREAU_TZ).astimezone(UTC)


@dataclass
class Dossier:
    """A subject's cases, text records and footage as one timeline (what this user may see)."""

    subject: EnforcementSubject
    cases: list[Case]
    items: list[TimelineItem]


def dossier(session: Session, *, principal: Principal, subject_id: int, reason: str | None = None) -> Dossier:
    """Every readable case of the subject, their text records, and the subject's footage, by time."""
    policy.ensure_role(principal, Action.READ_EVIDENCE)
    subject = get_subject(session, principal=principal, subject_id=subject_id)
    scope: Scope = policy.scope_of(session, principal)
    cases = list(
        session.scalars(select(Case).where(Case.subject_id == subject.id).order_by(Case.opened_on, Case.id))
    )
    readable = [c for c in cases if scope.reads_case(c)]
    items: list[TimelineItem] = []
    grants: list[AccessRequest] = []
    shown_records: list[int] = []
    opened: list[Case] = []
    for c in readable:
        try:
            grant = policy.unlock(session, principal, restriction=c.restriction, targets=[("case", c.number)])
        except RestrictedError:
            items.append(
                TimelineItem(_day(c.opened_on), "restricted-case", c.number, restriction=c.restriction)
            )
            continue
        if grant is not None:
            grants.append(grant)
        opened.append(c)
    texts = records.of_cases(session, case_ids=[c.id for c in opened])
    for c in opened:
        items.append(TimelineItem(_day(c.opened_on), "case-opened", c.number))
        if c.closed_on is not None:
            items.append(TimelineItem(_day(c.closed_on), "case-closed", c.number))
        for r in texts.get(c.id, []):
            opened = records.may_open(session, principal, r, c)
            shown_records.append(r.id)
            items.append(
                TimelineItem(r.uploaded_at, "text-record", c.number, text_record=r, text_record_open=opened)
            )
    numbers = {c.number for c in cases}
    segments, seg_grants, withheld = _unlocked(
        session,
        principal,
        footage.of_subject(session, scope=scope, uscc=subject.uscc, case_numbers=numbers),
        known=cases,
    )
    grants.extend(g for g in seg_grants if g not in grants)
    for rec in group(segments):
        items.append(
            TimelineItem(parse_timestamp(rec.start), "recording", rec.segments[0].case_number, recording=rec)
        )
    items.sort(key=lambda i: (i.time, i.kind, i.case_number))
    record_access(
        session,
        principal=principal,
        kind="viewed",
        target_kind="subject",
        target_id=subject.uscc,
        grants=grants,
        reason=reason,
        detail={
            "view": "dossier",
            "cases": [c.number for c in readable],
            "text_records": shown_records,
            "segments": _refs(segments),
            "withheld_segments": len(withheld),
        },
    )
    return Dossier(subject=subject, cases=readable, items=items)


# -- search ------------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """Matching segments this user may open, and how many matched but are restricted to them."""

    segments: list[Footage]
    withheld: int


def search(
    session: Session,
    *,
    principal: Principal,
    query: SearchQuery,
    limit: int = 100,
    offset: int = 0,
    reason: str | None = None,
) -> SearchResult:
    """Footage search over what the principal may read (restricted matches counted, not shown)."""
    policy.ensure_role(principal, Action.READ_EVIDENCE)
    scope = policy.scope_of(session, principal)
    found = footage.search(session, scope=scope, query=query, limit=limit, offset=offset)
    shown, grants, withheld = _unlocked(session, principal, found)
    record_access(
        session,
        principal=principal,
        kind="viewed",
        target_kind="search",
        target_id="footage",
        grants=grants,
        reason=reason,
        detail={
            "query": {k: v for k, v in asdict(query).items() if v is not None},
            "segments": _refs(shown),
            "withheld_segments": len(withheld),
        },
    )
    return SearchResult(segments=shown, withheld=len(withheld))


# -- one segment, one recording ----------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedSegment:
    """A segment the principal may open, and the grant that opened it if it is restricted."""

    segment: Footage
    grant: AccessRequest | None


def open_segment(session: Session, *, principal: Principal, device: str, seq: int) -> OpenedSegment:
    """A segment for its metadata or bytes: 404 unless readable, 403 if restricted without a grant.

    Writes no event: the caller logs what it then shows (``viewed``) or sends (``streamed``…).
    """
    policy.ensure_role(principal, Action.READ_EVIDENCE)
    seg = footage.segment(session, device=device, seq=seq)
    scope = policy.scope_of(session, principal)
    if seg is None or not scope.reads_footage(
        case_number=seg.case_number, officer=seg.officer, recording_cases=footage.sibling_cases(session, seg)
    ):
        raise NotFoundError(f"no segment {device}:{seq} that you may see")
    restriction = _restrictions(session, [seg.case_number]).get(seg.case_number)
    grant = policy.unlock(
        session,
        principal,
        restriction=restriction,
        targets=policy.segment_targets(
            case_number=seg.case_number, device=device, seq=seq, recording=seg.recording
        ),
    )
    return OpenedSegment(segment=seg, grant=grant)


def recording(
    session: Session, *, principal: Principal, device: str, recording_id: str, reason: str | None = None
) -> tuple[Recording, int]:
    """A recording's readable segments in order (and how many are withheld); 404 if none is readable."""
    policy.ensure_role(principal, Action.READ_EVIDENCE)
    scope = policy.scope_of(session, principal)
    found = footage.of_recording(session, scope=scope, device=device, recording=recording_id)
    if not found:
        raise NotFoundError(f"no recording {device}:{recording_id} that you may see")
    shown, grants, withheld = _unlocked(session, principal, found)
    if not shown:
        first = withheld[0]
        raise RestrictedError(
            target_kind="recording",
            target_id=f"{device}:{recording_id}",
            restriction=_restrictions(session, [first.case_number])[first.case_number],
        )
    record_access(
        session,
        principal=principal,
        kind="viewed",
        target_kind="recording",
        target_id=f"{device}:{recording_id}",
        grants=grants,
        reason=reason,
        device=device,
        detail={"segments": _refs(shown), "withheld_segments": len(withheld)},
    )
    return group(shown)[0], len(withheld)


# -- a device's segments --------------------------------------------------------------------------------


def device_footage(
    session: Session, *, principal: Principal, device: str, reason: str | None = None
) -> tuple[list[Footage], int]:
    """The device's segments the principal may open, in chain order, and how many restricted ones were
    withheld; one ``viewed`` event (target ``device``). 404 when a non-custodian may see none of them."""
    policy.ensure_role(principal, Action.READ_EVIDENCE)
    scope = policy.scope_of(session, principal)
    found = footage.of_device(session, scope=scope, device=device)
    if not found and not scope.all_cases:
        raise NotFoundError(f"no device {device} with footage that you may see")
    shown, grants, withheld = _unlocked(session, principal, found)
    record_access(
        session,
        principal=principal,
        kind="viewed",
        target_kind="device",
        target_id=device,
        grants=grants,
        reason=reason,
        device=device,
        detail={"segments": _refs(shown), "withheld_segments": len(withheld)},
    )
    return shown, len(withheld)
