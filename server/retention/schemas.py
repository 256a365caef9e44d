"""API bodies and answers of retention (docs/retention.md)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.cases.schemas import Paragraph

_Text = Annotated[Paragraph, Field(min_length=1, max_length=2000)]
_Device = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]
_Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]


class HoldIn(BaseModel):
    """A legal hold on a case (``case_id``) or on a device's segments (``device``, optional seq range)."""

    model_config = ConfigDict(extra="forbid")

    case_id: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    device: _Device | None = None
    seq_from: _Seq | None = None
    seq_to: _Seq | None = None
    reason: _Text


class ReleaseIn(BaseModel):
    """Why the hold ends."""

    model_config = ConfigDict(extra="forbid")

    reason: _Text


class HoldEventOut(BaseModel):
    """One step of a hold's history."""

    kind: Literal["placed", "released"]
    time: datetime
    actor_id: int
    note: str


class HoldOut(BaseModel):
    """A legal hold, its state and its history."""

    id: int
    scope: Literal["case", "device"]
    case_id: int | None
    device: str | None
    seq_from: int | None
    seq_to: int | None
    reason: str
    placed_by: int
    placed_at: datetime
    released_by: int | None
    released_at: datetime | None
    release_reason: str | None
    active: bool
    history: list[HoldEventOut]


class ArchiveRuleIn(BaseModel):
    """Keep the case's evidence ``keep_years`` after the case is closed; null: permanently."""

    model_config = ConfigDict(extra="forbid")

    keep_years: Annotated[int, Field(ge=1, le=100)] | None
    reason: _Text


class ArchiveRuleOut(BaseModel):
    """An archive rule as set."""

    id: int
    case_id: int
    keep_years: int | None
    set_by: int
    set_at: datetime
    reason: str


class CaseRetentionOut(BaseModel):
    """A case's retention status."""

    case_id: int
    case_number: str
    status: str
    closed_on: date | None
    retention_class: Literal["case"]
    archive_rule: ArchiveRuleOut | None
    keep_until: date | None
    rule_expired: bool
    hold_ids: list[int]
    segments: int


class SegmentRetentionOut(BaseModel):
    """A segment's retention status."""

    device: str
    seq: int
    digest: str
    retention_class: Literal["case", "non-case"]
    case_number: str
    captured: str
    due_at: datetime | None
    hold_ids: list[int]
    purged_at: datetime | None
    due_now: bool
