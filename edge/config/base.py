"""Building blocks of every device config: strict models, paths relative to the file, the error type."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Final, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationInfo,
)

from fieldproof.errors import FieldproofError

#: Device ids as the custody format spells them (mirrors ``custody.record.DEVICE_ID_RE``; a test keeps
#: the two equal): upper-case letters, digits and hyphens, 3–32 characters (REC-0001, DOCK-01).
DEVICE_ID_PATTERN: Final = r"^[A-Z0-9][A-Z0-9-]{2,31}$"
#: 执法证号: digits, letters and hyphens; empty means "no default officer".
OFFICER_ID_PATTERN: Final = r"^[0-9A-Za-z-]{0,64}$"
#: Scene and marker codes: ASCII slugs, since they travel in records and topic-safe identifiers.
CODE_PATTERN: Final = r"^[a-z][a-z0-9-]{1,39}$"
_CJK: Final = re.compile(r"[\u3400-\u9fff]")
# A unix socket address holds at most 108 bytes including the terminating NUL (sun_path).
_SUN_PATH_MAX: Final = 107


class ConfigError(FieldproofError):
    """A configuration or policy file that cannot be used, with every problem and where it is."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"{path}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            text = f"{path}: {len(self.problems)} problems:\n{lines}"
        super().__init__(text)


# -- building blocks ---------------------------------------------------------------------------


class _Config(BaseModel):
    """Base of every config model: unknown keys are errors, loaded values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_against_file(value: Path, info: ValidationInfo) -> Path:
    # Relative paths mean "next to this config file", wherever the process happens to run from.
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


#: A path in a config file; relative paths are resolved against the file's directory by the loaders.
ConfigPath = Annotated[Path, AfterValidator(_resolve_against_file)]
DeviceId = Annotated[StrictStr, Field(pattern=DEVICE_ID_PATTERN)]
Code = Annotated[StrictStr, Field(pattern=CODE_PATTERN)]
_T = TypeVar("_T")


def _duplicates(items: Iterable[_T]) -> list[_T]:
    seen: set[_T] = set()
    dups: list[_T] = []
    for item in items:
        if item in seen and item not in dups:
            dups.append(item)
        seen.add(item)
    return dups


def _chinese(value: str) -> str:
    if not _CJK.search(value):
        raise ValueError("must be written in Chinese (it is shown to inspectors)")
    return value


ChineseText = Annotated[StrictStr, Field(min_length=1, max_length=64), AfterValidator(_chinese)]


def default_policy_path() -> Path:
    """The recording policy shipped with the software: in the source tree, or inside the wheel."""
    package_root = Path(__file__).resolve().parents[2]
    candidates = [
        package_root / "firmware-config" / "recording-policy.toml",
        # pyproject force-includes firmware-config/ here in the wheel.
        package_root / "provisioning" / "_firmware_config" / "recording-policy.toml",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        candidates[0], [f"the shipped recording policy is missing (also looked at {candidates[1]})"]
    )
