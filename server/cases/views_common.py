"""What the case-file and evidence routes share: turning the case domain's errors into HTTP answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from server.cases.errors import (
    CaseError,
    ConflictError,
    InvalidInputError,
    NotAllowedError,
    NotFoundError,
    SigningUnavailableError,
)
from server.cases.records import TooLargeError
from server.errors import SettingsError


@contextmanager
def answers() -> Iterator[None]:
    """Map the service's errors to answers (the session is not committed: nothing was changed)."""
    try:
        yield
    except TooLargeError as exc:
        raise HTTPException(status_code=413, detail=str(exc)) from None
    except InvalidInputError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", exc.field), "msg": str(exc), "input": None}]
        ) from None
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except NotAllowedError as exc:  # RestrictedError included: it says how to ask for access
        raise HTTPException(status_code=403, detail=str(exc)) from None
    except ConflictError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except (SigningUnavailableError, SettingsError) as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None
    except CaseError as exc:  # pragma: no cover - every raised kind is mapped above
        raise HTTPException(status_code=400, detail=str(exc)) from None


def json_answer(model: BaseModel) -> Response:
    """``model`` as JSON, serialized once. Returned as is, FastAPI would dump it, validate the dump
    against the route's ``response_model`` (the same class) and serialize it again: three passes over
    a case file's footage instead of one (bench/query_bench.py). The route keeps ``response_model``
    for its schema."""
    return Response(model.model_dump_json(), media_type="application/json")
