"""Retention status of a segment or a case: its class, until when it is kept, what holds it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from custody.timefmt import parse_timestamp
from server.cases.errors import NotFoundError
from server.cases.footage import current_case
from server.cases.models import Case
from server.db import utc_now
from server.evidence.models import Segment
from server.retention.holds import active_holds, archive_rule, holds_covering
from server.retention.models import CaseArchiveRule, LegalHold, RetentionPurge
from server.retention.policy import CASE, MIN_NON_CASE_MONTHS, NON_CASE, add_months, add_years
from server.retention.sweep import plan_sweep


@dataclass(frozen=True)
class CaseRetention:
    """A case's retention: its archive rule in force, and until when its evidence is kept."""

    case: Case
    rule: CaseArchiveRule | None
    keep_until: date | None  # None: permanently (no rule, a permanent rule, or the case not closed)
    rule_expired: bool  # the rule's time has passed: evidence may be appraised for destruction
    holds: list[LegalHold]
    segments: int  # segments whose current case is this one


def _keep_until(case: Case, rule: CaseArchiveRule | None) -> date | None:
    if rule is None or rule.keep_years is None or case.closed_on is None or case.status == "open":
        return None
    return add_years(case.closed_on, rule.keep_years)


def case_retention(session: Session, *, case_id: int, now: datetime | None = None) -> CaseRetention:
    """The case's retention status; NotFoundError for an unknown case."""
    case = session.get(Case, case_id)
    if case is None:
        raise NotFoundError(f"no case {case_id}")
    rule = archive_rule(session, case_id)
    until = _keep_until(case, rule)
    today = (now or utc_now()).date()
    count = (
        session.scalar(select(func.count()).select_from(Segment).where(current_case() == case.number)) or 0
    )
    holds = [h for h in active_holds(session) if h.case_id == case_id]
    return CaseRetention(case, rule, until, until is not None and until <= today, holds, int(count))


@dataclass(frozen=True)
class SegmentRetention:
    """A segment's retention: class, when it is due (None: kept permanently), holds, purged or due now."""

    segment: Segment
    retention_class: str
    case_number: str
    due_at: datetime | None
    hold_ids: list[int]
    purged_at: datetime | None
    due_now: bool  # the next sweep would purge its blob


def segment_retention(
    session: Session, *, device: str, seq: int, now: datetime | None = None
) -> SegmentRetention:
    """The segment's retention status; NotFoundError for an unknown segment."""
    now = now or utc_now()
    seg = session.scalar(select(Segment).where(Segment.device == device, Segment.seq == seq))
    if seg is None:
        raise NotFoundError(f"no segment {device}:{seq}")
    number = session.scalar(select(current_case()).where(Segment.id == seg.id)) or ""
    due_at: datetime | None
    if number:
        cls = CASE.name
        case = session.scalar(select(Case).where(Case.number == number))
        until = _keep_until(case, archive_rule(session, case.id)) if case is not None else None
        due_at = datetime.combine(until, datetime.min.time(), tzinfo=now.tzinfo) if until else None
    else:
        cls = NON_CASE.name
        due_at = add_months(parse_timestamp(seg.start), MIN_NON_CASE_MONTHS)
    purge = session.get(RetentionPurge, seg.digest)
    hold_ids = holds_covering(session, [seg.id]).get(seg.id, [])
    due_now = (
        purge is None
        and cls == NON_CASE.name
        and any(b.digest == seg.digest for b in plan_sweep(session, now=now, digest=seg.digest).due)
    )
    return SegmentRetention(
        seg, cls, number, due_at, hold_ids, purge.purged_at if purge is not None else None, due_now
    )
