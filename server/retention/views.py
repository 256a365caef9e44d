"""API routes of retention: legal holds (place, release, read), case archive rules, retention status.

Who: custodians and legal reviewers, for every case and segment (a hold protects evidence; it opens
nothing — status answers carry no content). Everyone else: 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from sqlalchemy import select

from server.api.deps import SessionDep
from server.auth.deps import AUTH_RESPONSES, ErrorOut, require
from server.auth.principal import Principal, Role
from server.cases.errors import NotFoundError
from server.cases.views_common import answers
from server.errors import StoreError
from server.evidence.views import get_store
from server.retention import holds as service
from server.retention import locks
from server.retention.models import CaseArchiveRule, LegalHold
from server.retention.schemas import (
    ArchiveRuleIn,
    ArchiveRuleOut,
    CaseRetentionOut,
    HoldEventOut,
    HoldIn,
    HoldOut,
    ReleaseIn,
    SegmentRetentionOut,
)
from server.retention.status import case_retention, segment_retention

router = APIRouter(tags=["retention"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        404: "no such case, segment or hold",
        409: "the hold was already released",
        503: "the evidence store refused to set or lift its legal hold",
    }
    return {**AUTH_RESPONSES, **{c: {"model": ErrorOut, "description": text[c]} for c in codes}}


Keeper = Annotated[Principal, Depends(require(Role.CUSTODIAN, Role.LEGAL_REVIEWER))]
IdParam = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
DeviceParam = Annotated[str, PathParam(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]
SeqParam = Annotated[int, PathParam(ge=0, le=2**63 - 1)]


def _hold_out(session: SessionDep, hold: LegalHold) -> HoldOut:
    return HoldOut(
        id=hold.id,
        scope=hold.scope,  # type: ignore[arg-type]
        case_id=hold.case_id,
        device=hold.device,
        seq_from=hold.seq_from,
        seq_to=hold.seq_to,
        reason=hold.reason,
        placed_by=hold.placed_by,
        placed_at=hold.placed_at,
        released_by=hold.released_by,
        released_at=hold.released_at,
        release_reason=hold.release_reason,
        active=hold.released_at is None,
        history=[
            HoldEventOut(kind=e.kind, time=e.time, actor_id=e.actor_id, note=e.note)  # type: ignore[arg-type]
            for e in service.history(session, hold.id)
        ],
    )


def _rule_out(rule: CaseArchiveRule) -> ArchiveRuleOut:
    return ArchiveRuleOut(
        id=rule.id,
        case_id=rule.case_id,
        keep_years=rule.keep_years,
        set_by=rule.set_by,
        set_at=rule.set_at,
        reason=rule.reason,
    )


@router.post("/legal-holds", status_code=201, responses=_errors(404, 503))
def place_hold(body: HoldIn, request: Request, session: SessionDep, principal: Keeper) -> HoldOut:
    """Place a legal hold: nothing it covers is purged until it is released. On a store with Object
    Lock, its blobs get the store's legal hold first (503, and no hold, if the store refuses)."""
    with answers():
        hold = service.place_hold(
            session=session,
            principal=principal,
            reason=body.reason,
            case_id=body.case_id,
            device=body.device,
            seq_from=body.seq_from,
            seq_to=body.seq_to,
        )
        store = get_store(request)
        if locks.locks_in_store(store):
            try:
                locks.set_store_holds(store, locks.covered_digests(session, hold), on=True)
            except StoreError as exc:
                session.rollback()
                raise HTTPException(
                    status_code=503, detail=f"the evidence store refused the legal hold: {exc}"
                ) from None
        session.commit()
    return _hold_out(session, hold)


@router.get("/legal-holds", responses=AUTH_RESPONSES)
def list_holds(
    session: SessionDep, _principal: Keeper, active: Annotated[bool | None, Query()] = None
) -> list[HoldOut]:
    """Holds, newest first; ``active=true`` for those in force, ``false`` for released ones."""
    q = select(LegalHold).order_by(LegalHold.id.desc()).limit(1000)
    if active is not None:
        q = q.where(LegalHold.released_at.is_(None) if active else LegalHold.released_at.is_not(None))
    return [_hold_out(session, h) for h in session.scalars(q)]


@router.get("/legal-holds/{hold_id}", responses=_errors(404))
def get_hold(hold_id: IdParam, session: SessionDep, _principal: Keeper) -> HoldOut:
    """One hold with its history."""
    hold = session.get(LegalHold, hold_id)
    if hold is None:
        with answers():
            raise NotFoundError(f"no legal hold {hold_id}")
    assert hold is not None
    return _hold_out(session, hold)


@router.post("/legal-holds/{hold_id}/release", responses=_errors(404, 409, 503))
def release_hold(
    hold_id: IdParam, body: ReleaseIn, request: Request, session: SessionDep, principal: Keeper
) -> HoldOut:
    """Release a hold, with the reason (409 if released already). On a store with Object Lock, the
    store's legal hold is then lifted from the blobs no other hold covers (503 if the store refuses:
    the release stands, those blobs stay held in the store — the safe way round — and the retention
    sweep reports them as locked until an administrator lifts the store's hold)."""
    with answers():
        hold = service.release_hold(session=session, principal=principal, hold_id=hold_id, reason=body.reason)
        session.commit()
    store = get_store(request)
    if locks.locks_in_store(store):
        try:
            locks.lift_released(session, store, hold)
        except StoreError as exc:
            raise HTTPException(
                status_code=503,
                detail=f"the hold is released, but the evidence store kept its legal hold on some blobs: {exc}",
            ) from None
    return _hold_out(session, hold)


@router.put("/retention/cases/{case_id}/archive-rule", responses=_errors(404))
def set_archive_rule(
    case_id: IdParam, body: ArchiveRuleIn, session: SessionDep, principal: Keeper
) -> ArchiveRuleOut:
    """Set the case's archive rule (a new rule; the previous ones stay in its history)."""
    with answers():
        rule = service.set_archive_rule(
            session=session,
            principal=principal,
            case_id=case_id,
            keep_years=body.keep_years,
            reason=body.reason,
        )
        session.commit()
    return _rule_out(rule)


@router.get("/retention/cases/{case_id}", responses=_errors(404))
def get_case_retention(case_id: IdParam, session: SessionDep, _principal: Keeper) -> CaseRetentionOut:
    """A case's retention status: archive rule, kept until, holds, segments."""
    with answers():
        got = case_retention(session, case_id=case_id)
    return CaseRetentionOut(
        case_id=got.case.id,
        case_number=got.case.number,
        status=got.case.status,
        closed_on=got.case.closed_on,
        retention_class="case",
        archive_rule=_rule_out(got.rule) if got.rule is not None else None,
        keep_until=got.keep_until,
        rule_expired=got.rule_expired,
        hold_ids=[h.id for h in got.holds],
        segments=got.segments,
    )


@router.get("/retention/segments/{device}/{seq}", responses=_errors(404))
def get_segment_retention(
    device: DeviceParam, seq: SeqParam, session: SessionDep, _principal: Keeper
) -> SegmentRetentionOut:
    """A segment's retention status: class, due, holds, purged."""
    with answers():
        got = segment_retention(session, device=device, seq=seq)
    return SegmentRetentionOut(
        device=got.segment.device,
        seq=got.segment.seq,
        digest=got.segment.digest,
        retention_class=got.retention_class,  # type: ignore[arg-type]
        case_number=got.case_number,
        captured=got.segment.start,
        due_at=got.due_at,
        hold_ids=got.hold_ids,
        purged_at=got.purged_at,
        due_now=got.due_now,
    )
