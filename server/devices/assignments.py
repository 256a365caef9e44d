"""配发: recorders issued to officers, from a date until a date (or for now), by IT admins.

One recorder is issued to at most one officer on any day: a new assignment whose period overlaps one of
the same recorder is refused (end the old one first, by giving it an ``until``). The assignments are
the base of 使用率 per department and officer (``server/web/oversight.py``).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.record import DEVICE_ID_RE
from server.auth.principal import Principal, Role
from server.cases.errors import ConflictError, InvalidInputError, NotAllowedError, NotFoundError
from server.cases.models import Officer
from server.db import utc_now
from server.devices.models import RecorderAssignment

#: The first and last dates an assignment may name (a typo such as year 20026 is refused).
EARLIEST, LATEST = date(2000, 1, 1), date(2200, 12, 31)


def _ensure_it_admin(principal: Principal) -> None:
    if not principal.has(Role.IT_ADMIN):
        raise NotAllowedError("issuing recorders to officers is for IT admins")


def _overlaps(a_from: date, a_until: date | None, b_from: date, b_until: date | None) -> bool:
    return (a_until is None or b_from <= a_until) and (b_until is None or a_from <= b_until)


def assign_recorder(
    session: Session,
    *,
    principal: Principal,
    recorder: str,
    officer_id: int,
    valid_from: date,
    valid_until: date | None = None,
    now: datetime | None = None,
) -> RecorderAssignment:
    """Issue ``recorder`` to an officer for a period (IT admins); refused if it overlaps another."""
    _ensure_it_admin(principal)
    if not DEVICE_ID_RE.fullmatch(recorder):
        raise InvalidInputError("a recorder id is 3–32 capital letters, digits or '-'", field="recorder")
    for field, d in (("valid_from", valid_from), ("valid_until", valid_until)):
        if d is not None and not EARLIEST <= d <= LATEST:
            raise InvalidInputError(f"a date between {EARLIEST} and {LATEST}", field=field)
    if valid_until is not None and valid_until < valid_from:
        raise InvalidInputError("the end is before the start", field="valid_until")
    if session.get(Officer, officer_id) is None:
        raise NotFoundError(f"no officer {officer_id}")
    held = session.scalars(
        select(RecorderAssignment).where(RecorderAssignment.recorder == recorder).with_for_update()
    )
    for a in held:
        if _overlaps(a.valid_from, a.valid_until, valid_from, valid_until):
            raise ConflictError(
                f"{recorder} is issued from {a.valid_from} until {a.valid_until or '—'} (assignment "
                f"{a.id}); end that assignment first"
            )
    assignment = RecorderAssignment(
        recorder=recorder,
        officer_id=officer_id,
        valid_from=valid_from,
        valid_until=valid_until,
        created_by=principal.actor[:64],
        created_at=now or utc_now(),
    )
    session.add(assignment)
    session.flush()
    return assignment


def end_assignment(
    session: Session, *, principal: Principal, assignment_id: int, valid_until: date
) -> RecorderAssignment:
    """Set (or move) the last day of an assignment (IT admins)."""
    _ensure_it_admin(principal)
    a = session.get(RecorderAssignment, assignment_id, with_for_update=True)
    if a is None:
        raise NotFoundError(f"no assignment {assignment_id}")
    if not EARLIEST <= valid_until <= LATEST:
        raise InvalidInputError(f"a date between {EARLIEST} and {LATEST}", field="valid_until")
    if valid_until < a.valid_from:
        raise InvalidInputError("the end is before the start", field="valid_until")
    others = session.scalars(
        select(RecorderAssignment).where(
            RecorderAssignment.recorder == a.recorder, RecorderAssignment.id != a.id
        )
    )
    for o in others:
        if _overlaps(o.valid_from, o.valid_until, a.valid_from, valid_until):
            raise ConflictError(f"{a.recorder} is issued from {o.valid_from} (assignment {o.id}) by then")
    a.valid_until = valid_until
    session.flush()
    return a


def list_assignments(
    session: Session, *, principal: Principal, recorder: str | None = None
) -> list[RecorderAssignment]:
    """Every assignment (of one recorder), newest first (IT admins)."""
    _ensure_it_admin(principal)
    q = select(RecorderAssignment).order_by(RecorderAssignment.valid_from.desc(), RecorderAssignment.id)
    if recorder is not None:
        q = q.where(RecorderAssignment.recorder == recorder)
    return list(session.scalars(q))


def current_assignments(session: Session, *, on: date | None = None) -> dict[str, tuple[str, str]]:
    """recorder → (certificate number, name) of the officer it is issued to on ``on`` (today)."""
    day = on or utc_now().date()
    rows = session.execute(
        select(RecorderAssignment.recorder, Officer.certificate_no, Officer.name)
        .join(Officer, Officer.id == RecorderAssignment.officer_id)
        .where(RecorderAssignment.valid_from <= day)
        .where((RecorderAssignment.valid_until.is_(None)) | (RecorderAssignment.valid_until >= day))
    )
    return {recorder: (cert, name) for recorder, cert, name in rows}


def assignments_in(session: Session, *, since: date, until: date) -> list[tuple[RecorderAssignment, Officer]]:
    """Every assignment overlapping [since, until], with its officer."""
    rows = session.execute(
        select(RecorderAssignment, Officer)
        .join(Officer, Officer.id == RecorderAssignment.officer_id)
        .where(RecorderAssignment.valid_from <= until)
        .where((RecorderAssignment.valid_until.is_(None)) | (RecorderAssignment.valid_until >= since))
    )
    return [(a, officer) for a, officer in rows]
