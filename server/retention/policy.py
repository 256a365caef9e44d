"""Retention classes: how long footage is kept, and from when (docs/retention.md).

- ``non-case``: footage of no case is kept at least **6 months from capture** (the segment's ``start``);
  after that the sweep may purge its bytes, unless a legal hold covers it.
- ``case``: footage whose current case is set is kept **permanently**, until the case's archive rule
  (``case_archive_rules``: N years after the case was closed) says otherwise — and even then the sweep
  only *lists* it: destroying a case's evidence is an appraisal decision (档案鉴定销毁), not a timer.

Text records are case evidence too (class ``case``); the sweep never touches them.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

#: The least a non-case segment is kept (the seed: at least six months); a bureau may keep longer.
MIN_NON_CASE_MONTHS: Final = 6


@dataclass(frozen=True)
class RetentionClass:
    """A retention class: its name, and how many months after capture (None: no timer)."""

    name: str
    months_after_capture: int | None
    description: str


NON_CASE: Final = RetentionClass(
    "non-case", MIN_NON_CASE_MONTHS, "footage of no case: kept 6 months from capture, then purged"
)
CASE: Final = RetentionClass(
    "case", None, "case evidence: kept permanently, until the case's archive rule says otherwise"
)
CLASSES: Final = {c.name: c for c in (NON_CASE, CASE)}


def add_months(when: datetime, months: int) -> datetime:
    """``when`` moved by whole calendar months; the day is clamped (31 August + 6 months = 28/29 February)."""
    total = when.year * 12 + when.month - 1 + months
    year, month = divmod(total, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)


def add_years(day: date, years: int) -> date:
    """``day`` moved by whole years (29 February → 28 February in a common year)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)
