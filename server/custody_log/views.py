"""API routes of the custody log: checkpoints, events with inclusion proofs, consistency proofs.

Hashes are lowercase hex, signatures base64 (docs/custody-log.md). Before answering, a route
sequences whatever was committed since the last checkpoint (when the app can sign: it has the CA
directory), so "latest" includes every event committed before the request.

Who: custodians and auditors (docs/access.md). The role check comes before sequencing, so a request
that is refused costs no signing work.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from server.api.deps import SessionDep
from server.auth.deps import AUTH_RESPONSES, ErrorOut, require
from server.auth.principal import Role
from server.custody_log import service
from server.custody_log.errors import NotInLogError, NotSequencedError
from server.custody_log.sequencer import CheckpointSigner, sequence_pending
from server.custody_log.service import ConsistencyProof
from server.errors import SettingsError

_SIGNER_LOCK = threading.Lock()
_MAX = 2**53 - 1


def _signer(request: Request) -> CheckpointSigner | None:
    """The checkpoint signer, loaded once per app from settings.ca_dir (None: serve, never sequence)."""
    state = request.app.state
    with _SIGNER_LOCK:
        if not hasattr(state, "custody_log_signer"):
            ca_dir = state.settings.ca_dir
            state.custody_log_signer = CheckpointSigner.from_ca_dir(ca_dir) if ca_dir is not None else None
        signer: CheckpointSigner | None = state.custody_log_signer
        return signer


def sequenced(request: Request) -> None:
    """Bring the log up to date before a route reads it (a no-op when nothing is queued)."""
    try:
        signer = _signer(request)
    except SettingsError as exc:
        # Loud, not stale: a server that cannot sign its log must be fixed, not quietly fall behind.
        raise HTTPException(status_code=503, detail=exc.diagnostics()) from None
    if signer is not None:
        sequence_pending(factory=request.app.state.session_factory, signer=signer)


#: Answers every route may give besides 200 (documented for clients and the schema checks).
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    404: {"model": ErrorOut, "description": "no such checkpoint, event or leaf in the log"},
    409: {"model": ErrorOut, "description": "the event is not sequenced yet, or not in that checkpoint"},
    503: {"model": ErrorOut, "description": "the server cannot sign checkpoints: its CA directory is broken"},
}

router = APIRouter(
    prefix="/custody-log",
    tags=["custody log"],
    # Order matters: authorise first, then bring the log up to date.
    dependencies=[Depends(require(Role.CUSTODIAN, Role.AUDITOR)), Depends(sequenced)],
    responses=_RESPONSES,
)


class CheckpointOut(BaseModel):
    """A signed checkpoint: Ed25519 over ``fieldproof/checkpoint/v1\\n`` + RFC 8785 of its body."""

    tree_size: int
    root_hash: str  # hex
    time: str  # UTC, microseconds
    key_id: str  # sha256 of the server-signing certificate (DER)
    signature: str  # base64


class EventProofOut(BaseModel):
    """An event object (exactly what the leaf encodes) and its inclusion proof against a checkpoint."""

    event: dict[str, Any]
    leaf_index: int
    leaf_hash: str  # hex, as stored; recompute it from ``event`` rather than trust it
    inclusion_proof: list[str]  # hex, from the leaf upwards (RFC 9162 PATH)
    checkpoint: CheckpointOut


class ConsistencyOut(BaseModel):
    """Two checkpoints and the RFC 9162 consistency proof between them."""

    first: CheckpointOut
    second: CheckpointOut
    consistency_proof: list[str]  # hex


def _not_found(exc: NotInLogError) -> HTTPException:
    # Not sequenced yet: a conflict with the log's state that resolves itself; otherwise: no such thing.
    return HTTPException(status_code=409 if isinstance(exc, NotSequencedError) else 404, detail=str(exc))


Size = Annotated[
    int | None, Query(ge=1, le=_MAX, description="a checkpoint's tree size; default: the latest")
]


@router.get("/checkpoint", response_model=CheckpointOut)
def latest_checkpoint(session: SessionDep) -> dict[str, Any]:
    """The newest signed checkpoint."""
    try:
        return service.latest_checkpoint(session=session).to_json()
    except NotInLogError as exc:
        raise _not_found(exc) from None


@router.get("/checkpoints/{tree_size}", response_model=CheckpointOut)
def checkpoint(session: SessionDep, tree_size: Annotated[int, PathParam(ge=1, le=_MAX)]) -> dict[str, Any]:
    """The signed checkpoint of exactly ``tree_size`` leaves."""
    try:
        return service.checkpoint_at(session=session, tree_size=tree_size).to_json()
    except NotInLogError as exc:
        raise _not_found(exc) from None


@router.get("/events/{event_id}", response_model=EventProofOut)
def event(
    session: SessionDep, event_id: Annotated[int, PathParam(ge=1, le=_MAX)], tree_size: Size = None
) -> dict[str, Any]:
    """A custody event, its leaf index and its inclusion proof against a checkpoint."""
    try:
        return service.event_proof(session=session, event_id=event_id, tree_size=tree_size).to_json()
    except NotInLogError as exc:
        raise _not_found(exc) from None


@router.get("/leaves/{leaf_index}", response_model=EventProofOut)
def leaf(
    session: SessionDep, leaf_index: Annotated[int, PathParam(ge=0, le=_MAX)], tree_size: Size = None
) -> dict[str, Any]:
    """The event at a leaf index, with its inclusion proof (to walk the log in order)."""
    try:
        return service.leaf_proof(session=session, leaf_index=leaf_index, tree_size=tree_size).to_json()
    except NotInLogError as exc:
        raise _not_found(exc) from None


@router.get("/consistency", response_model=ConsistencyOut)
def consistency(
    session: SessionDep,
    first: Annotated[int, Query(ge=1, le=_MAX, description="the earlier checkpoint's tree size")],
    second: Annotated[int, Query(ge=1, le=_MAX, description="the later checkpoint's tree size")],
) -> dict[str, Any]:
    """The proof that the log at checkpoint ``first`` is a prefix of the log at checkpoint ``second``."""
    if first > second:
        # FastAPI's 422 shape (as the schema documents it), naming the field.
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "first"),
                    "msg": f"first ({first}) must not exceed second ({second})",
                    "input": first,
                }
            ]
        )
    try:
        answer: ConsistencyProof = service.consistency(session=session, first=first, second=second)
    except NotInLogError as exc:
        raise _not_found(exc) from None
    return answer.to_json()
