"""API routes of 配发 (recorders issued to officers), for IT admins (docs/access.md)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from server.api.deps import SessionDep
from server.auth.deps import AUTH_RESPONSES, ErrorOut, require
from server.auth.principal import Principal, Role
from server.cases.views_common import answers
from server.devices import assignments
from server.devices.models import RecorderAssignment

router = APIRouter(tags=["fleet"])

ItAdmin = Annotated[Principal, Depends(require(Role.IT_ADMIN))]
IdParam = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
DEVICE_PATTERN = r"^[A-Z0-9][A-Z0-9-]{2,31}$"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "the body could not be parsed (not JSON, or not UTF-8)",
        404: "no such officer or assignment",
        409: "the recorder is issued to someone else in an overlapping period",
    }
    return {**AUTH_RESPONSES, **{c: {"model": ErrorOut, "description": text[c]} for c in codes}}


class AssignmentIn(BaseModel):
    """Issue a recorder to an officer from a day until a day (inclusive; none: for now)."""

    model_config = ConfigDict(extra="forbid")

    recorder: Annotated[str, Field(pattern=DEVICE_PATTERN)]
    officer_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    valid_from: date
    valid_until: date | None = None


class AssignmentEnd(BaseModel):
    """The last day of an assignment."""

    model_config = ConfigDict(extra="forbid")

    valid_until: date


class AssignmentOut(BaseModel):
    """A recorder issued to an officer."""

    id: int
    recorder: str
    officer_id: int
    valid_from: date
    valid_until: date | None
    created_by: str
    created_at: datetime


def _out(a: RecorderAssignment) -> AssignmentOut:
    return AssignmentOut(
        id=a.id,
        recorder=a.recorder,
        officer_id=a.officer_id,
        valid_from=a.valid_from,
        valid_until=a.valid_until,
        created_by=a.created_by,
        created_at=a.created_at,
    )


@router.post(
    "/recorder-assignments", status_code=201, response_model=AssignmentOut, responses=_errors(400, 404, 409)
)
def create_assignment(body: AssignmentIn, session: SessionDep, principal: ItAdmin) -> AssignmentOut:
    """Issue a recorder to an officer (配发; IT admins)."""
    with answers():
        a = assignments.assign_recorder(
            session,
            principal=principal,
            recorder=body.recorder,
            officer_id=body.officer_id,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
        )
    session.commit()
    return _out(a)


@router.get("/recorder-assignments", response_model=list[AssignmentOut], responses=AUTH_RESPONSES)
def list_assignments(
    session: SessionDep,
    principal: ItAdmin,
    recorder: Annotated[str | None, Query(pattern=DEVICE_PATTERN)] = None,
) -> list[AssignmentOut]:
    """Every assignment, or one recorder's, newest first (IT admins)."""
    with answers():
        return [
            _out(a) for a in assignments.list_assignments(session, principal=principal, recorder=recorder)
        ]


@router.post(
    "/recorder-assignments/{assignment_id}/end",
    response_model=AssignmentOut,
    responses=_errors(400, 404, 409),
)
def end_assignment(
    assignment_id: IdParam, body: AssignmentEnd, session: SessionDep, principal: ItAdmin
) -> AssignmentOut:
    """Set the last day of an assignment (IT admins)."""
    with answers():
        a = assignments.end_assignment(
            session, principal=principal, assignment_id=assignment_id, valid_until=body.valid_until
        )
    session.commit()
    return _out(a)
