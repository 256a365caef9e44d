"""What the case-file and evidence routes share: turning the case domain's errors into HTTP answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

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
