"""Access requests for restricted records: asked with a purpose and an expiry, decided by someone else.

A record flagged as involving state secrets, trade secrets or personal privacy opens only for a user
holding an approved, unexpired request for it (``granted_access``). The rules (docs/access.md):

- who may ask: inspectors, case handlers, custodians, legal reviewers (IT admins and auditors never
  open evidence);
- who may decide: a legal reviewer or a custodian — never the requester, whatever their roles;
- a grant lasts at most ``MAX_GRANT`` and never past what was asked; the requester may withdraw, a
  decider may revoke it early; past its time it is expired whether or not anyone marked it so.

Every decision goes into the append-only ``access_request_events`` and into the custody log:
``access-granted`` for an approval, ``access-revoked`` for every way access is not or no longer
given (refused, withdrawn, revoked, expired), with the purpose and the expiry in the detail.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.auth.errors import ConflictError, InvalidInputError, NotAllowedError, NotFoundError
from server.auth.models import RESTRICTIONS, TARGET_KINDS, AccessRequest, AccessRequestEvent, User
from server.auth.principal import Principal, Role
from server.custody_log.service import log_event
from server.db import utc_now

__all__ = [
    "DECIDER_ROLES",
    "MAX_GRANT",
    "REQUESTER_ROLES",
    "RESTRICTIONS",
    "TARGET_KINDS",
    "approve_request",
    "effective_status",
    "expire_due",
    "get_request",
    "granted_access",
    "history",
    "list_requests",
    "log_access",
    "refuse_request",
    "request_access",
    "revoke_request",
    "withdraw_request",
]

REQUESTER_ROLES = (Role.INSPECTOR, Role.CASE_HANDLER, Role.CUSTODIAN, Role.LEGAL_REVIEWER)
DECIDER_ROLES = (Role.LEGAL_REVIEWER, Role.CUSTODIAN)
#: Auditors read every request and decision, but decide nothing.
READER_ROLES = (*DECIDER_ROLES, Role.AUDITOR)
MAX_GRANT = timedelta(days=90)
MAX_PURPOSE = 2000
MAX_NOTE = 2000
MAX_TARGET_ID = 128
#: The actor of expiries noticed by the server itself.
EXPIRY_ACTOR = "server:access-expiry"
_MAX_ID = 2**63 - 1
# Text may hold line breaks and tabs, never other control characters (nor NUL, which PostgreSQL refuses).
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TARGET_ID_RE = re.compile(r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$")

Scope = Literal["mine", "to-decide", "all"]


def _text(value: str, *, field: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit or _CONTROL_IN_TEXT.search(value):
        raise InvalidInputError(f"{field} is 1–{limit} characters of text", field=field)
    return value


def _note(value: str | None) -> str | None:
    return None if value is None or not value.strip() else _text(value, field="note", limit=MAX_NOTE)


def _aware(value: datetime, *, field: str) -> None:
    if value.tzinfo is None:
        raise InvalidInputError(f"{field} needs a time zone (e.g. 2027-01-01T18:00:00+08:00)", field=field)


def _event(
    session: Session,
    req: AccessRequest,
    *,
    kind: str,
    actor_id: int | None,
    now: datetime,
    until: datetime | None = None,
    note: str | None = None,
) -> None:
    session.add(
        AccessRequestEvent(request_id=req.id, time=now, kind=kind, actor_id=actor_id, until=until, note=note)
    )


def _custody(
    session: Session, req: AccessRequest, *, kind: str, actor: str, decision: str, now: datetime
) -> None:
    requester = session.get(User, req.requester_id)
    detail: dict[str, Any] = {
        "access_request": req.id,
        "decision": decision,
        "requester": f"user:{requester.username}" if requester is not None else None,
        "target_kind": req.target_kind,
        "target_id": req.target_id,
        "restriction": req.restriction,
        "purpose": req.purpose,
        "requested_until": req.requested_until.isoformat(),
        "until": req.granted_until.isoformat() if req.granted_until is not None else None,
        "note": req.decision_note,
    }
    log_event(session=session, kind=kind, actor=actor, detail=detail, time=now)


def _try_move(session: Session, req: AccessRequest, *, from_: tuple[str, ...], **values: Any) -> bool:
    """Change the request's state only if it is still in ``from_`` (one UPDATE … WHERE status IN …),
    so that of two deciders acting at once the second finds the request decided; False if it was."""
    result = session.execute(
        update(AccessRequest)
        .where(AccessRequest.id == req.id, AccessRequest.status.in_(from_))
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return True
    session.refresh(req)
    return False


def _move(session: Session, req: AccessRequest, *, from_: tuple[str, ...], **values: Any) -> None:
    """``_try_move``, or ConflictError when someone else changed the request first."""
    if not _try_move(session, req, from_=from_, **values):
        raise ConflictError(f"access request {req.id} is {req.status} now; nothing was changed")


# -- asking ------------------------------------------------------------------------------------------


def request_access(
    session: Session,
    *,
    principal: Principal,
    target_kind: str,
    target_id: str,
    restriction: str,
    purpose: str,
    until: datetime,
    now: datetime | None = None,
) -> AccessRequest:
    """Ask to open a restricted record until ``until`` (≤ MAX_GRANT ahead) for ``purpose``."""
    now = now or utc_now()
    if not principal.has(*REQUESTER_ROLES):
        raise NotAllowedError("IT admins and auditors do not open evidence, so they cannot request access")
    if target_kind not in TARGET_KINDS:
        raise InvalidInputError(f"target_kind is one of {', '.join(TARGET_KINDS)}", field="target_kind")
    if len(target_id) > MAX_TARGET_ID or not _TARGET_ID_RE.match(target_id):
        raise InvalidInputError(
            f"target_id is 1–{MAX_TARGET_ID} characters, no control characters or outer spaces",
            field="target_id",
        )
    if restriction not in RESTRICTIONS:
        raise InvalidInputError(f"restriction is one of {', '.join(RESTRICTIONS)}", field="restriction")
    purpose = _text(purpose, field="purpose", limit=MAX_PURPOSE)
    _aware(until, field="until")
    if not now < until <= now + MAX_GRANT:
        raise InvalidInputError(f"until is in the future and within {MAX_GRANT.days} days", field="until")
    open_already = session.scalar(
        select(AccessRequest.id).where(
            AccessRequest.requester_id == principal.user_id,
            AccessRequest.target_kind == target_kind,
            AccessRequest.target_id == target_id,
            AccessRequest.restriction == restriction,
            AccessRequest.status == "pending",
            AccessRequest.requested_until > now,
        )
    )
    if open_already is not None:
        raise ConflictError(
            f"access request {open_already} for this record is still pending: withdraw it first"
        )
    req = AccessRequest(
        requester_id=principal.user_id,
        target_kind=target_kind,
        target_id=target_id,
        restriction=restriction,
        purpose=purpose,
        requested_at=now,
        requested_until=until,
        granted_until=None,
        status="pending",
        decided_by=None,
        decided_at=None,
        decision_note=None,
    )
    session.add(req)
    session.flush()
    _event(session, req, kind="requested", actor_id=principal.user_id, now=now, until=until, note=purpose)
    session.flush()
    return req


# -- reading -----------------------------------------------------------------------------------------


def get_request(session: Session, *, principal: Principal, request_id: int) -> AccessRequest:
    """One request, if this user asked for it or may read requests (NotFoundError otherwise)."""
    req = session.get(AccessRequest, request_id) if 1 <= request_id <= _MAX_ID else None
    if req is None or (req.requester_id != principal.user_id and not principal.has(*READER_ROLES)):
        raise NotFoundError(f"no access request {request_id} that you may see")
    return req


def list_requests(
    session: Session, *, principal: Principal, scope: Scope = "mine", status: str | None = None
) -> list[AccessRequest]:
    """Requests, newest first: ``mine``; ``to-decide`` (pending, others', for deciders); ``all``."""
    q = select(AccessRequest).order_by(AccessRequest.id.desc())
    if scope == "mine":
        q = q.where(AccessRequest.requester_id == principal.user_id)
    elif scope == "to-decide":
        if not principal.has(*DECIDER_ROLES):
            raise NotAllowedError("only legal reviewers and custodians decide access requests")
        q = q.where(
            AccessRequest.status == "pending",
            AccessRequest.requested_until > utc_now(),
            AccessRequest.requester_id != principal.user_id,
        )
    else:
        if not principal.has(*READER_ROLES):
            raise NotAllowedError("only legal reviewers, custodians and auditors read all access requests")
    if status is not None:
        q = q.where(AccessRequest.status == status)
    return list(session.scalars(q))


def history(session: Session, *, request_id: int) -> list[AccessRequestEvent]:
    """The request's events in order."""
    q = select(AccessRequestEvent).where(AccessRequestEvent.request_id == request_id)
    return list(session.scalars(q.order_by(AccessRequestEvent.id)))


def granted_access(
    session: Session,
    principal: Principal,
    *,
    target_kind: str,
    target_id: str,
    restriction: str | None = None,
    now: datetime | None = None,
) -> AccessRequest | None:
    """The approved, unexpired request of this user for this record (of ``restriction`` if given), or None.

    Time is checked here, not only the status: a grant past its ``granted_until`` opens nothing even
    before ``expire_due`` marks it expired.
    """
    now = now or utc_now()
    q = select(AccessRequest).where(
        AccessRequest.requester_id == principal.user_id,
        AccessRequest.target_kind == target_kind,
        AccessRequest.target_id == target_id,
        AccessRequest.status == "approved",
        AccessRequest.granted_until > now,
    )
    if restriction is not None:
        q = q.where(AccessRequest.restriction == restriction)
    return session.scalars(q.order_by(AccessRequest.granted_until.desc()).limit(1)).first()


def log_access(
    session: Session,
    *,
    principal: Principal,
    kind: str,
    target_kind: str,
    target_id: str,
    grant: AccessRequest | None = None,
    detail: dict[str, Any] | None = None,
    digest: str | None = None,
    device: str | None = None,
    seq: int | None = None,
) -> None:
    """Record one access to evidence in the custody log — who, what, when, and why (the grant's purpose).

    ``kind`` is a custody kind such as ``viewed``, ``streamed``, ``downloaded``, ``exported``.
    """
    body: dict[str, Any] = {"target_kind": target_kind, "target_id": target_id, "via": principal.via}
    if grant is not None:
        body |= {"access_request": grant.id, "purpose": grant.purpose, "restriction": grant.restriction}
    body |= detail or {}
    log_event(
        session=session, kind=kind, actor=principal.actor, detail=body, digest=digest, device=device, seq=seq
    )


# -- deciding ----------------------------------------------------------------------------------------


def _for_decision(session: Session, *, principal: Principal, request_id: int, now: datetime) -> AccessRequest:
    if not principal.has(*DECIDER_ROLES):
        raise NotAllowedError("only a legal reviewer or a custodian decides access requests")
    req = get_request(session, principal=principal, request_id=request_id)
    if req.requester_id == principal.user_id:
        raise NotAllowedError(
            "nobody decides their own access request: ask another legal reviewer or custodian"
        )
    _expire_one(session, req, now=now)
    if req.status != "pending":
        raise ConflictError(f"access request {req.id} is {req.status}, not pending")
    return req


def approve_request(
    session: Session,
    *,
    principal: Principal,
    request_id: int,
    until: datetime | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> AccessRequest:
    """Grant a pending request until ``until`` (default: as asked; never later than asked)."""
    now = now or utc_now()
    req = _for_decision(session, principal=principal, request_id=request_id, now=now)
    note = _note(note)
    if until is not None:
        _aware(until, field="until")
        if not now < until <= req.requested_until:
            raise InvalidInputError("until is in the future and not after the time asked for", field="until")
    _move(
        session,
        req,
        from_=("pending",),
        status="approved",
        granted_until=until or req.requested_until,
        decided_by=principal.user_id,
        decided_at=now,
        decision_note=note,
    )
    _event(
        session, req, kind="approved", actor_id=principal.user_id, now=now, until=req.granted_until, note=note
    )
    _custody(session, req, kind="access-granted", actor=principal.actor, decision="approved", now=now)
    session.flush()
    return req


def refuse_request(
    session: Session, *, principal: Principal, request_id: int, note: str, now: datetime | None = None
) -> AccessRequest:
    """Refuse a pending request, saying why."""
    now = now or utc_now()
    req = _for_decision(session, principal=principal, request_id=request_id, now=now)
    note = _text(note, field="note", limit=MAX_NOTE)
    _move(
        session,
        req,
        from_=("pending",),
        status="refused",
        decided_by=principal.user_id,
        decided_at=now,
        decision_note=note,
    )
    _event(session, req, kind="refused", actor_id=principal.user_id, now=now, note=note)
    _custody(session, req, kind="access-revoked", actor=principal.actor, decision="refused", now=now)
    session.flush()
    return req


def withdraw_request(
    session: Session, *, principal: Principal, request_id: int, now: datetime | None = None
) -> AccessRequest:
    """The requester withdraws their pending request, or gives up access already granted."""
    now = now or utc_now()
    req = get_request(session, principal=principal, request_id=request_id)
    if req.requester_id != principal.user_id:
        raise NotAllowedError("only the requester withdraws a request; deciders revoke")
    _expire_one(session, req, now=now)
    if req.status not in ("pending", "approved"):
        raise ConflictError(f"access request {req.id} is {req.status} already")
    was_granted = req.status == "approved"
    _move(session, req, from_=(req.status,), status="withdrawn")
    _event(session, req, kind="withdrawn", actor_id=principal.user_id, now=now)
    if was_granted:
        _custody(session, req, kind="access-revoked", actor=principal.actor, decision="withdrawn", now=now)
    session.flush()
    return req


def revoke_request(
    session: Session, *, principal: Principal, request_id: int, note: str, now: datetime | None = None
) -> AccessRequest:
    """A legal reviewer or custodian ends granted access before its time, saying why."""
    now = now or utc_now()
    if not principal.has(*DECIDER_ROLES):
        raise NotAllowedError("only a legal reviewer or a custodian revokes granted access")
    req = get_request(session, principal=principal, request_id=request_id)
    note = _text(note, field="note", limit=MAX_NOTE)
    _expire_one(session, req, now=now)
    if req.status != "approved":
        raise ConflictError(f"access request {req.id} is {req.status}, not approved")
    _move(
        session,
        req,
        from_=("approved",),
        status="revoked",
        decided_by=principal.user_id,
        decided_at=now,
        decision_note=note,
    )
    _event(session, req, kind="revoked", actor_id=principal.user_id, now=now, note=note)
    _custody(session, req, kind="access-revoked", actor=principal.actor, decision="revoked", now=now)
    session.flush()
    return req


# -- expiry ------------------------------------------------------------------------------------------


def _expire_one(session: Session, req: AccessRequest, *, now: datetime) -> bool:
    """Mark ``req`` expired if its time has passed (pending: the time asked; approved: the time granted)."""
    if req.status == "pending" and req.requested_until <= now:
        if not _try_move(session, req, from_=("pending",), status="expired"):
            return False
        _event(session, req, kind="expired", actor_id=None, now=now)
        session.flush()
        return True
    if req.status == "approved" and req.granted_until is not None and req.granted_until <= now:
        if not _try_move(session, req, from_=("approved",), status="expired"):
            return False
        _event(session, req, kind="expired", actor_id=None, now=now, until=req.granted_until)
        _custody(session, req, kind="access-revoked", actor=EXPIRY_ACTOR, decision="expired", now=now)
        session.flush()
        return True
    return False


def expire_due(session: Session, *, now: datetime | None = None) -> int:
    """Mark every request past its time expired (and log the end of granted access); how many."""
    now = now or utc_now()
    q = select(AccessRequest).where(
        ((AccessRequest.status == "pending") & (AccessRequest.requested_until <= now))
        | ((AccessRequest.status == "approved") & (AccessRequest.granted_until <= now))
    )
    return sum(_expire_one(session, req, now=now) for req in session.scalars(q).all())


def effective_status(req: AccessRequest, *, now: datetime | None = None) -> str:
    """The status as of ``now``: a pending or approved request past its time reads ``expired``."""
    now = now or utc_now()
    if req.status == "pending" and req.requested_until <= now:
        return "expired"
    if req.status == "approved" and req.granted_until is not None and req.granted_until <= now:
        return "expired"
    return req.status
