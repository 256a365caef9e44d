"""Footage as the case file sees it: the index filled at filing, each segment's *current* case,
subject and proof statement, and the queries behind retrieval (by case, recording, search).

Current values: the latest server annotation (``footage_annotations``, by id) that sets a member wins;
without one, the segment's own value — as captured, or as the device's own annotation record set it
(ingest keeps that in ``segments``). The capture record itself is never changed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    and_,
    cast,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.orm import Session, aliased

from custody.timefmt import utc_timestamp
from server.cases.models import FootageAnnotation, FootageAnnotationTarget, SegmentFacts, SegmentFix
from server.cases.policy import Scope
from server.evidence.models import EvidenceFile, Segment
from server.ingest.models import Record

#: Metres per degree of latitude on a sphere of the Earth's mean radius (6,371,008.8 m).
M_PER_DEGREE = 6_371_008.8 * math.pi / 180
#: Search radius limit: the flat-earth distance used below is exact to well under 0.1 % at this size.
MAX_RADIUS_M = 100_000


#: Statements with their values as parameters: compiled and cached once, not per segment.
_INSERT_FACTS = insert(SegmentFacts.__table__)
_INSERT_FIX = insert(SegmentFix.__table__)


def index_segment(*, session: Session, segment_id: int, body: dict[str, Any]) -> None:
    """Index a segment's capture facts for search (called by ingest when it files the segment).
    Plain INSERTs, as the segment's own row: ingest's busiest thread runs this once per segment."""
    location = body["location"]
    session.execute(
        _INSERT_FACTS,
        {
            "segment_id": segment_id,
            "container": body["media"]["container"],
            "duration_ms": body["media"]["duration_ms"],
            "matter": body["matter"],
            "scene": body["scene"],
            # PostgreSQL text cannot hold NUL; the signed line in ``records`` keeps the exact value.
            "proof": body["proof"].replace("\x00", ""),
            "fix": bool(location["fix"]),
        },
    )
    fixes = [
        {"segment_id": segment_id, "n": n, "t": fix["t"], "lat_e7": fix["lat_e7"], "lon_e7": fix["lon_e7"]}
        for n, fix in enumerate(location["fixes"] if location["fix"] else [])
    ]
    if fixes:
        session.execute(_INSERT_FIX, fixes)


def _latest(value: Any, sets: Any, seg: Any = Segment) -> Any:
    """The ``value`` of the latest annotation of the outer query's segment (``seg``) that sets ``sets``."""
    return (
        select(value)
        .select_from(FootageAnnotationTarget)
        .join(FootageAnnotation, FootageAnnotation.id == FootageAnnotationTarget.annotation_id)
        .where(FootageAnnotationTarget.segment_id == seg.id, sets.is_not(None))
        .order_by(FootageAnnotation.id.desc())
        .limit(1)
        .correlate(seg)
        .scalar_subquery()
    )


def current_case(seg: Any = Segment) -> ColumnElement[str]:
    """The segment's current case number ('' when it belongs to none)."""
    return func.coalesce(
        _latest(FootageAnnotation.case_number, FootageAnnotation.case_number, seg), seg.case_number
    )


def current_subject() -> ColumnElement[str]:
    """The segment's current subject (a USCC, or the text the recorder was given)."""
    return func.coalesce(
        _latest(FootageAnnotation.subject_uscc, FootageAnnotation.subject_uscc), Segment.subject
    )


def current_proof() -> ColumnElement[str]:
    """The segment's current proof statement (证明对象)."""
    return func.coalesce(_latest(FootageAnnotation.proof, FootageAnnotation.proof), SegmentFacts.proof, "")


@dataclass(frozen=True)
class Footage:
    """One segment with its current context and where its values came from."""

    segment_id: int
    device: str
    seq: int
    record_hash: str
    kind: str
    recording: str
    index: int
    file_name: str
    start: str
    end: str
    officer: str
    digest: str
    size: int
    file_status: str
    case_number: str
    case_annotation: int | None  # the annotation that set it, if one did
    device_annotated: bool  # the device's own annotation record set it (no server annotation since)
    subject: str
    proof: str
    proof_annotation: int | None
    matter: str
    scene: str
    container: str
    duration_ms: int
    lat_e7: int | None = None  # first fix, if any
    lon_e7: int | None = None

    @property
    def case_source(self) -> str:
        """``annotation`` (server), ``device-annotation`` or ``capture``."""
        if self.case_annotation is not None:
            return "annotation"
        return "device-annotation" if self.device_annotated else "capture"

    @property
    def ref(self) -> str:
        """How access requests and custody details name the segment (``DEVICE:seq``)."""
        return f"{self.device}:{self.seq}"


_FIRST_FIX = aliased(SegmentFix, name="first_fix")  # aliased: search's ``near`` correlates SegmentFix


@functools.cache
def _select() -> Select[Any]:
    """The footage columns (one row per segment, its first fix joined): built once — a statement of
    five correlated subqueries costs more to build than to run on a case's worth of rows."""
    return (
        select(
            Segment.id,
            Segment.device,
            Segment.seq,
            Record.hash,
            Segment.kind,
            Segment.recording,
            Segment.index,
            Segment.file_name,
            Segment.start,
            Segment.end,
            Segment.officer,
            Segment.digest,
            EvidenceFile.size,
            EvidenceFile.status,
            current_case(),
            _latest(FootageAnnotation.id, FootageAnnotation.case_number),
            Segment.case_set_by.is_not(None),
            current_subject(),
            current_proof(),
            _latest(FootageAnnotation.id, FootageAnnotation.proof),
            func.coalesce(SegmentFacts.matter, ""),
            func.coalesce(SegmentFacts.scene, ""),
            func.coalesce(SegmentFacts.container, "mp4-fragmented"),
            func.coalesce(SegmentFacts.duration_ms, 0),
            _FIRST_FIX.lat_e7,
            _FIRST_FIX.lon_e7,
        )
        .join(Record, Record.id == Segment.record_id)
        .join(EvidenceFile, EvidenceFile.digest == Segment.digest)
        .outerjoin(SegmentFacts, SegmentFacts.segment_id == Segment.id)
        .outerjoin(_FIRST_FIX, and_(_FIRST_FIX.segment_id == Segment.id, _FIRST_FIX.n == 0))
    )


def _rows(session: Session, query: Select[Any]) -> list[Footage]:
    out = []
    for r in session.execute(query):
        row = list(r)
        row[16] = bool(row[16])
        out.append(Footage(*row))
    return out


def visible(scope: Scope) -> ColumnElement[bool]:
    """SQL: the segments the scope may read (restriction is checked per row afterwards): those of its
    cases, those of no case in a recording partly in its cases, and the inspector's own."""
    if scope.all_cases:
        return true()
    clauses: list[ColumnElement[bool]] = []
    if scope.case_numbers:
        numbers = sorted(scope.case_numbers)
        clauses.append(current_case().in_(numbers))
        sibling = aliased(Segment)
        in_recording = exists(
            select(sibling.id).where(
                sibling.device == Segment.device,
                sibling.recording == Segment.recording,
                current_case(sibling).in_(numbers),
            )
        )
        clauses.append(and_(current_case() == "", in_recording))
    if scope.officer_no is not None:
        clauses.append(Segment.officer == scope.officer_no)
    return or_(*clauses) if clauses else false()


_ORDER = (Segment.start, Segment.device, Segment.seq)


def segment(session: Session, *, device: str, seq: int) -> Footage | None:
    """One segment by (device, seq), or None."""
    rows = _rows(session, _select().where(Segment.device == device, Segment.seq == seq))
    return rows[0] if rows else None


def segments_by_id(session: Session, ids: Sequence[int]) -> list[Footage]:
    """Segments by id, in time order."""
    return _rows(session, _select().where(Segment.id.in_(list(ids))).order_by(*_ORDER))


def _case_candidates(numbers: list[str]) -> list[Select[Any]]:
    """Segments whose current case *may* be one of ``numbers``, found through indexes: those captured
    (or device-annotated) with it, and those a server annotation links to it. A segment's current
    case is one of these two values, so the set is a superset; the caller applies the rule itself."""
    return [
        select(Segment.id).where(Segment.case_number.in_(numbers)),
        select(FootageAnnotationTarget.segment_id)
        .join(FootageAnnotation, FootageAnnotation.id == FootageAnnotationTarget.annotation_id)
        .where(FootageAnnotation.case_number.in_(numbers)),
    ]


def _subject_candidates(uscc: str) -> list[Select[Any]]:
    """Segments whose current subject *may* be ``uscc`` (as :func:`_case_candidates`). The captured
    subject is free text on a recorder, so its index is on its first 18 characters (a USCC's length)."""
    return [
        select(Segment.id).where(func.substr(Segment.subject, 1, 18) == uscc[:18], Segment.subject == uscc),
        select(FootageAnnotationTarget.segment_id)
        .join(FootageAnnotation, FootageAnnotation.id == FootageAnnotationTarget.annotation_id)
        .where(FootageAnnotation.subject_uscc == uscc),
    ]


def of_case(session: Session, *, scope: Scope, case_number: str) -> list[Footage]:
    """The segments whose current case is ``case_number`` that the scope may read, in time order.

    Narrowed by index to the candidates first: the current-value rule (a correlated subquery per row)
    then runs over a recording's worth of rows, not over all footage (docs/case-file.md, benchmark)."""
    candidates = union(*_case_candidates([case_number])).subquery()
    q = (
        _select()
        .join(candidates, candidates.c.id == Segment.id)
        .where(current_case() == case_number, visible(scope))
        .order_by(*_ORDER)
    )
    return _rows(session, q)


def of_subject(session: Session, *, scope: Scope, uscc: str, case_numbers: set[str]) -> list[Footage]:
    """Segments of the subject: its current subject is the code, or its current case is one of its cases.
    Narrowed by index first, as :func:`of_case`."""
    numbers = sorted(case_numbers)
    parts = _subject_candidates(uscc)
    clause = current_subject() == uscc
    if numbers:
        parts += _case_candidates(numbers)
        clause = or_(clause, current_case().in_(numbers))
    candidates = union(*parts).subquery()
    q = (
        _select()
        .join(candidates, candidates.c.id == Segment.id)
        .where(clause, visible(scope))
        .order_by(*_ORDER)
    )
    return _rows(session, q)


def of_recording(session: Session, *, scope: Scope, device: str, recording: str) -> list[Footage]:
    """The readable segments of one recording, in index order (then seq: a recovered duplicate index)."""
    q = (
        _select()
        .where(Segment.device == device, Segment.recording == recording, visible(scope))
        .order_by(Segment.index, Segment.seq)
    )
    return _rows(session, q)


def of_device(session: Session, *, scope: Scope, device: str) -> list[Footage]:
    """The readable segments of one device, in chain order (seq)."""
    q = _select().where(Segment.device == device, visible(scope)).order_by(Segment.seq)
    return _rows(session, q)


@dataclass(frozen=True)
class SearchQuery:
    """Footage search filters; each given one narrows the result."""

    officer: str | None = None  # 执法证号 of the collector
    start_from: datetime | None = None  # footage overlapping [start_from, start_to]
    start_to: datetime | None = None
    lat_e7: int | None = None  # a circle: centre and radius in metres
    lon_e7: int | None = None
    radius_m: int | None = None
    matter: str | None = None
    scene: str | None = None
    proof: str | None = None  # text the current proof statement contains
    case_number: str | None = None
    subject: str | None = None
    device: str | None = None


def near(lat_e7: int, lon_e7: int, radius_m: int) -> ColumnElement[bool]:
    """SQL: the segment has a fix within ``radius_m`` of the point (bounding box, then flat-earth distance).

    Units: 1e-7 degree. Near the poles the box covers every longitude; across the antimeridian a
    circle is not found (the bureau's jurisdiction is nowhere near it).
    """
    ky = M_PER_DEGREE * 1e-7  # metres per 1e-7 degree of latitude
    kx = ky * math.cos(math.radians(lat_e7 * 1e-7))
    dlat = int(radius_m / ky) + 1
    dlon = int(radius_m / kx) + 1 if kx > 1e-9 else 3_600_000_000
    dy = cast(SegmentFix.lat_e7 - lat_e7, Float) * ky
    dx = cast(SegmentFix.lon_e7 - lon_e7, Float) * kx
    return exists(
        select(SegmentFix.n).where(
            SegmentFix.segment_id == Segment.id,
            SegmentFix.lat_e7.between(lat_e7 - dlat, lat_e7 + dlat),
            SegmentFix.lon_e7.between(lon_e7 - dlon, lon_e7 + dlon),
            dy * dy + dx * dx <= float(radius_m) ** 2,
        )
    )


def search(session: Session, *, scope: Scope, query: SearchQuery, limit: int, offset: int) -> list[Footage]:
    """Readable segments matching every filter given, in time order."""
    where: list[ColumnElement[bool]] = [visible(scope)]
    if query.officer is not None:
        where.append(Segment.officer == query.officer)
    if query.start_from is not None:
        where.append(Segment.end >= utc_timestamp(query.start_from))
    if query.start_to is not None:
        where.append(Segment.start <= utc_timestamp(query.start_to))
    if query.lat_e7 is not None and query.lon_e7 is not None and query.radius_m is not None:
        where.append(near(query.lat_e7, query.lon_e7, query.radius_m))
    if query.matter is not None:
        where.append(SegmentFacts.matter == query.matter)
    if query.scene is not None:
        where.append(SegmentFacts.scene == query.scene)
    if query.proof:
        where.append(current_proof().contains(query.proof, autoescape=True))
    if query.case_number is not None:
        where.append(current_case() == query.case_number)
    if query.subject is not None:
        where.append(current_subject() == query.subject)
    if query.device is not None:
        where.append(Segment.device == query.device)
    q = _select().where(and_(*where)).order_by(*_ORDER).limit(limit).offset(offset)
    return _rows(session, q)


def sibling_cases(session: Session, segment: Footage) -> set[str]:
    """For a segment of no case: the current case numbers of its recording's segments (else empty:
    only a segment of no case is shown or linked by way of its recording)."""
    if segment.case_number:
        return set()
    q = select(current_case()).where(Segment.device == segment.device, Segment.recording == segment.recording)
    return set(session.scalars(q.distinct())) - {""}


def fixes_of(session: Session, segment_id: int) -> list[tuple[str, int, int]]:
    """The segment's fixes (time, lat_e7, lon_e7) in order."""
    rows = session.execute(
        select(SegmentFix.t, SegmentFix.lat_e7, SegmentFix.lon_e7)
        .where(SegmentFix.segment_id == segment_id)
        .order_by(SegmentFix.n)
    )
    return [(t, lat, lon) for t, lat, lon in rows]
