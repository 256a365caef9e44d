"""The bureau's catalogue of enforcement matters (执法事项), carried with the format.

Records name a matter by its stable code (``CF-01``, ``JC-01``…); an unknown code is a format error.
The catalogue is ``custody/data/enforcement-matters.json``, a copy of the bureau's appendix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class EnforcementMatter:
    """One entry of the catalogue."""

    code: str
    category: str
    title: str
    departments: tuple[str, ...]


@cache
def catalogue() -> dict[str, EnforcementMatter]:
    """Every matter by code, read once from the packaged catalogue."""
    raw = json.loads(resources.files("custody").joinpath("data/enforcement-matters.json").read_text("utf-8"))
    out: dict[str, EnforcementMatter] = {}
    for m in raw["matters"]:
        out[m["code"]] = EnforcementMatter(
            code=m["code"], category=m["category"], title=m["title"], departments=tuple(m["departments"])
        )
    return out


def is_known_matter(code: str) -> bool:
    """True when ``code`` names a matter of the catalogue."""
    return code in catalogue()
