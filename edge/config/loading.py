"""Reading config files: TOML, validation, and pydantic's errors turned into text an IT person can act on."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ValidationError,
)

from edge.config.base import (
    ConfigError,
)
from edge.config.dock import DockConfig
from edge.config.policy import RecordingPolicy
from edge.config.recorder import RecorderConfig

# -- loading -----------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def _read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, ["no such file"]) from None
    except IsADirectoryError:
        raise ConfigError(path, ["is a directory, not a config file"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text (byte {exc.start}); save the file as UTF-8"]) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already says "(at line N, column M)".
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None


def _load(model: type[_M], path: Path | str) -> _M:
    path = Path(path)
    text, data = _read_toml(path)
    try:
        return model.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(path, describe_validation_error(exc, data, text)) from None


def load_recorder_config(path: Path | str) -> RecorderConfig:
    """Read and validate a recorder's TOML config; ConfigError names every problem."""
    return _load(RecorderConfig, path)


def load_dock_config(path: Path | str) -> DockConfig:
    """Read and validate a dock's TOML config; ConfigError names every problem."""
    return _load(DockConfig, path)


def load_policy(path: Path | str) -> RecordingPolicy:
    """Read and validate a recording policy; ConfigError names every problem."""
    return _load(RecordingPolicy, path)


# -- turning pydantic's errors into text an IT person can act on --------------------------------


def describe_validation_error(exc: ValidationError, data: Any, text: str = "") -> list[str]:
    """One line per problem: the dotted key as written in the file, its line, and what is wrong."""
    lines = _key_lines(text) if text else {}
    out = []
    for err in exc.errors(include_url=False):
        keys = _file_keys(err["loc"], data)
        kind = err["type"]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            keys = (*keys, err.get("ctx", {}).get("discriminator", "'type'").strip("'"))
        where = _dotted(keys) or "(top level)"
        line, exact = _find_line(lines, keys)
        if line is not None:
            where += f" (line {line})" if exact else f" (near line {line})"
        out.append(f"{where}: {_explain(err)}")
    return out


def _file_keys(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    # pydantic's location includes the tags of discriminated unions ("v4l2", "gpsd"), which are not
    # keys of the file; walk the data alongside and keep only what the file itself contains.
    keys: list[int | str] = []
    node = data
    for i, part in enumerate(loc):
        in_table = isinstance(node, dict) and part in node
        in_array = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_table or in_array:
            keys.append(part)
            node = node[part]
        elif i == len(loc) - 1:
            keys.append(part)  # a missing key: not in the data, but it is what the message is about
    return tuple(keys)


def _dotted(keys: Sequence[int | str]) -> str:
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _explain(err: Any) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown key (not a setting here; check the spelling)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"must be one of {err['ctx']['expected_tags']} (got {err['ctx']['tag']!r})"
    if kind == "union_tag_not_found":
        return "missing: this table needs a type key saying which kind it is"
    msg = msg.removeprefix("Value error, ")
    if isinstance(value, str | int | float | bool) and kind not in ("value_error", "assertion_error"):
        msg += f" (got {value!r})"
    return msg


def _key_lines(text: str) -> dict[tuple[int | str, ...], int]:
    """Map each key path written in the TOML text to its line number (best effort, for messages)."""
    found: dict[tuple[int | str, ...], int] = {}
    table: tuple[int | str, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    in_multiline = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        # Lines inside a multi-line string are text, not keys.
        quotes = line.count('"""') + line.count("'''")
        if in_multiline:
            in_multiline = quotes % 2 == 0
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            name = _split_key(line[2:].split("]]", 1)[0])
            array_counts[name] = array_counts.get(name, -1) + 1
            table = (*name, array_counts[name])
            found.setdefault(table, number)
        elif line.startswith("["):
            table = _split_key(line[1:].split("]", 1)[0])
            found.setdefault(table, number)
        elif "=" in line:
            found.setdefault((*table, *_split_key(line.split("=", 1)[0])), number)
            in_multiline = quotes % 2 == 1
    return found


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


def _find_line(
    lines: dict[tuple[int | str, ...], int], keys: tuple[int | str, ...]
) -> tuple[int | None, bool]:
    for n in range(len(keys), 0, -1):
        if keys[:n] in lines:
            return lines[keys[:n]], n == len(keys)
    return None, False
