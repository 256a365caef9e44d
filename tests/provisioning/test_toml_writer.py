"""The minimal TOML writer: whatever it writes, tomllib reads back unchanged."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning.toml_writer import dumps

REPO = Path(__file__).resolve().parents[2]

keys = st.text(min_size=1, max_size=12)
scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))
tables = st.recursive(
    st.dictionaries(keys, values, max_size=4),
    lambda children: st.dictionaries(
        keys, st.one_of(values, children, st.lists(children, min_size=1, max_size=3)), max_size=4
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(tables)
def test_round_trip(data: dict[str, Any]) -> None:
    assert tomllib.loads(dumps(data)) == data


@pytest.mark.parametrize("name", ["recorder.example.toml", "dock.example.toml", "recording-policy.toml"])
def test_round_trip_of_the_shipped_configs(name: str) -> None:
    path = REPO / "firmware-config" / name
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert tomllib.loads(dumps(data)) == data


def test_special_values() -> None:
    data = {"nan": math.nan, "inf": math.inf, "s": 'a"b\\c\n\t\x01é执法', "key with space": 1, "e": []}
    back = tomllib.loads(dumps(data))
    assert math.isnan(back.pop("nan"))
    assert back == {k: v for k, v in data.items() if k != "nan"}


def test_unsupported_types_raise() -> None:
    with pytest.raises(TypeError):
        dumps({"b": b"bytes"})
    with pytest.raises(TypeError):
        dumps({1: "x"})  # type: ignore[dict-item]
