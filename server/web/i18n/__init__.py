"""The texts of the pages, one TOML file per language (zh-CN now); add ``en.toml`` for another language.

Keys are dotted (``nav.cases``); a text may hold ``{name}`` fields filled by ``format``. A key missing
from the file is an error at render time, never an empty string on a page.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

DEFAULT_LANGUAGE = "zh_CN"
_HERE = Path(__file__).parent


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name}.")
        else:
            out[name] = str(value)
    return out


@cache
def messages(language: str = DEFAULT_LANGUAGE) -> dict[str, str]:
    """Every text of ``language`` by dotted key."""
    with open(_HERE / f"{language}.toml", "rb") as f:
        return _flatten(tomllib.load(f))


def translate(key: str, language: str = DEFAULT_LANGUAGE, /, **fields: Any) -> str:
    """The text of ``key``, with ``{fields}`` filled; KeyError names a key the file lacks."""
    text = messages(language)[key]
    return text.format(**fields) if fields else text
