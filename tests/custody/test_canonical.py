"""The verifier's fast canonical encoder equals the RFC 8785 reference on the whole record domain."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from custody.canonical import MAX_SAFE_INTEGER, canonical, check_domain, fast_canonical, parse

ascii_keys = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
# Any Unicode scalar value in strings (no lone surrogates: they are not text and RFC 8785 rejects them).
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | texts
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ascii_keys, inner, max_size=6),
    max_leaves=30,
)


@given(values)
def test_fast_encoder_matches_rfc8785(value: object) -> None:
    check_domain(value)
    assert fast_canonical(value) == rfc8785.dumps(value)
    assert parse(fast_canonical(value)) == value


@pytest.mark.parametrize(
    "bad",
    [1.5, {"a": 0.0}, [2**53], {"é": 1}, {"k": [float("nan")]}, -(2**53)],
)
def test_values_outside_the_domain_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"\$"):
        check_domain(bad)
    with pytest.raises(ValueError, match=r"outside|not allowed|not an ASCII"):
        canonical(bad)


def test_nan_and_infinity_are_not_json() -> None:
    for text in ('{"a":NaN}', "[Infinity]", "-Infinity"):
        with pytest.raises(ValueError, match="not JSON"):
            parse(text)
