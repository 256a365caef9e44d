"""Legal holds and case archive rules: placed, released and set by custodians and legal reviewers.

A hold row keeps its current state; every step is also a row of ``legal_hold_events`` (append-only),
written in the same transaction, so the history cannot disagree with the state it explains.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import Session

from server.auth.principal import Principal
from server.cases.errors import ConflictError, InvalidInputError, NotFoundError
from server.cases.footage import current_case
from server.cases.models import Case, FootageAnnotation, FootageAnnotationTarget
from server.db import utc_now
from server.evidence.models import Segment
from server.retention.models import CaseArchiveRule, LegalHold, LegalHoldEvent

MAX_REASON = 2000


def _reason(text: str, field: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidInputError("give the reason (it is kept in the hold's history)", field=field)
    if len(text) > MAX_REASON:
        raise InvalidInputError(f"at most {MAX_REASON} characters", field=field)
    return text


def place_hold(
    *,
    session: Session,
    principal: Principal,
    reason: str,
    case_id: int | None = None,
    device: str | None = None,
    seq_from: int | None = None,
    seq_to: int | None = None,
    now: datetime | None = None,
) -> LegalHold:
    """Place a hold on a case, or on a device's segments (optionally a seq range)."""
    reason = _reason(reason, "reason")
    if (case_id is None) == (device is None):
        raise InvalidInputError("name either a case (case_id) or a device (device)", field="case_id")
    if case_id is not None:
        if seq_from is not None or seq_to is not None:
            raise InvalidInputError("a seq range goes with a device, not a case", field="seq_from")
        if session.get(Case, case_id) is None:
            raise NotFoundError(f"no case {case_id}")
    if seq_from is not None and seq_to is not None and seq_to < seq_from:
        raise InvalidInputError("seq_to is before seq_from", field="seq_to")
    when = now or utc_now()
    hold = LegalHold(
        scope="case" if case_id is not None else "device",
        case_id=case_id,
        device=device,
        seq_from=seq_from,
        seq_to=seq_to,
        reason=reason,
        placed_by=principal.user_id,
        placed_at=when,
    )
    session.add(hold)
    session.flush()
    session.add(
        LegalHoldEvent(hold_id=hold.id, kind="placed", time=when, actor_id=principal.user_id, note=reason)
    )
    return hold


def release_hold(
    *, session: Session, principal: Principal, hold_id: int, reason: str, now: datetime | None = None
) -> LegalHold:
    """Release a hold, with the reason; 409 if it was released already (atomic: one release wins)."""
    reason = _reason(reason, "reason")
    if session.get(LegalHold, hold_id) is None:
        raise NotFoundError(f"no legal hold {hold_id}")
    when = now or utc_now()
    done = session.execute(
        update(LegalHold)
        .where(LegalHold.id == hold_id, LegalHold.released_at.is_(None))
        .values(released_at=when, released_by=principal.user_id, release_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        raise ConflictError(f"legal hold {hold_id} was already released")
    session.add(
        LegalHoldEvent(hold_id=hold_id, kind="released", time=when, actor_id=principal.user_id, note=reason)
    )
    session.flush()
    hold = session.get(LegalHold, hold_id)
    assert hold is not None
    session.refresh(hold)
    return hold


def history(session: Session, hold_id: int) -> list[LegalHoldEvent]:
    """The hold's steps in order."""
    return list(
        session.scalars(
            select(LegalHoldEvent).where(LegalHoldEvent.hold_id == hold_id).order_by(LegalHoldEvent.id)
        )
    )


def active_holds(session: Session) -> list[LegalHold]:
    """Holds not released, oldest first."""
    return list(
        session.scalars(select(LegalHold).where(LegalHold.released_at.is_(None)).order_by(LegalHold.id))
    )


def hold_clause(session: Session, hold: LegalHold) -> ColumnElement[bool]:
    """SQL over ``Segment``: the segments the hold covers.

    A case hold covers what the case has or ever had: segments captured with its number, whose current
    case is it, or that any annotation ever linked to it (footage unlinked later stays held).
    """
    if hold.scope == "device":
        clauses = [Segment.device == hold.device]
        if hold.seq_from is not None:
            clauses.append(Segment.seq >= hold.seq_from)
        if hold.seq_to is not None:
            clauses.append(Segment.seq <= hold.seq_to)
        return and_(*clauses)
    number = session.scalar(select(Case.number).where(Case.id == hold.case_id))
    ever_linked = exists(
        select(FootageAnnotationTarget.segment_id)
        .join(FootageAnnotation, FootageAnnotation.id == FootageAnnotationTarget.annotation_id)
        .where(FootageAnnotationTarget.segment_id == Segment.id, FootageAnnotation.case_number == number)
    )
    return or_(Segment.case_number == number, current_case() == number, ever_linked)


def holds_covering(
    session: Session, segment_ids: Sequence[int], holds: Iterable[LegalHold] | None = None
) -> dict[int, list[int]]:
    """For the given segments, the active holds (ids) covering each; segments no hold covers are absent."""
    out: dict[int, list[int]] = {}
    ids = list(segment_ids)
    for hold in holds if holds is not None else active_holds(session):
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            q = select(Segment.id).where(Segment.id.in_(chunk), hold_clause(session, hold))
            for sid in session.scalars(q):
                out.setdefault(sid, []).append(hold.id)
    return out


def set_archive_rule(
    *, session: Session, principal: Principal, case_id: int, keep_years: int | None, reason: str
) -> CaseArchiveRule:
    """A new archive rule for the case (the latest is in force): keep N years after closing, or permanently."""
    reason = _reason(reason, "reason")
    if session.get(Case, case_id) is None:
        raise NotFoundError(f"no case {case_id}")
    if keep_years is not None and not 1 <= keep_years <= 100:
        raise InvalidInputError("keep_years is 1 to 100, or null for permanently", field="keep_years")
    rule = CaseArchiveRule(
        case_id=case_id, keep_years=keep_years, set_by=principal.user_id, set_at=utc_now(), reason=reason
    )
    session.add(rule)
    session.flush()
    return rule


def archive_rule(session: Session, case_id: int) -> CaseArchiveRule | None:
    """The case's archive rule in force (the latest), or None (permanent by default)."""
    return session.scalar(
        select(CaseArchiveRule)
        .where(CaseArchiveRule.case_id == case_id)
        .order_by(CaseArchiveRule.id.desc())
        .limit(1)
    )
