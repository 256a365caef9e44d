"""Exact conversion of receiver text (NMEA ``ddmm.mmmm``, gpsd decimal degrees) to record integers.

Records carry coordinates as integers of 1e-7 degree and lengths as integers of millimetres. The
conversions work on the decimal text with exact rational arithmetic, so no binary floating-point
rounding can move a position by a unit: the same sentence always yields the same integers, on any
machine, which matters when two implementations must agree on signed records.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

LAT_E7_MAX = 900_000_000
LON_E7_MAX = 1_800_000_000
_E7 = 10**7

# NMEA positions are unsigned ddmm.mmmm / dddmm.mmmm; the hemisphere letter carries the sign.
_NMEA_NUMBER = re.compile(r"^\d{3,5}(\.\d{1,10})?$")
_DECIMAL = re.compile(r"^[+-]?\d+(\.\d+)?$")


def _round_half_away(value: Fraction) -> int:
    """Round to the nearest integer, halves away from zero (symmetrical for S/W and N/E)."""
    magnitude = abs(value)
    whole = int(magnitude + Fraction(1, 2))
    return -whole if value < 0 else whole


def nmea_to_e7(text: str, hemisphere: str, *, latitude: bool) -> int:
    """An NMEA ``ddmm.mmmm`` (or ``dddmm.mmmm``) field and its N/S/E/W letter as 1e-7 degrees.

    Raises ValueError for malformed text, minutes of 60 or more (receivers print placeholders such
    as ``8960.000000`` before their first fix), a wrong hemisphere letter or an out-of-range result.
    """
    if not _NMEA_NUMBER.match(text):
        raise ValueError(f"not an NMEA coordinate: {text!r}")
    whole, _, fraction = text.partition(".")
    degrees = int(whole[:-2])
    minutes = Fraction(int(whole[-2:] + fraction), 10 ** len(fraction))
    if minutes >= 60:
        raise ValueError(f"minutes of {text!r} are 60 or more: a placeholder, not a position")
    valid = ("N", "S") if latitude else ("E", "W")
    if hemisphere not in valid:
        raise ValueError(f"hemisphere {hemisphere!r} is not one of {'/'.join(valid)}")
    e7 = _round_half_away(degrees * _E7 + minutes * _E7 / 60)
    if e7 > (LAT_E7_MAX if latitude else LON_E7_MAX):
        raise ValueError(f"{text} {hemisphere} is beyond {'90' if latitude else '180'} degrees")
    return -e7 if hemisphere in ("S", "W") else e7


def degrees_to_e7(value: Decimal | int | str, *, latitude: bool) -> int:
    """Decimal degrees (gpsd's JSON text, kept as Decimal) as 1e-7 degrees, range-checked."""
    e7 = _round_half_away(Fraction(_decimal(value)) * _E7)
    if abs(e7) > (LAT_E7_MAX if latitude else LON_E7_MAX):
        raise ValueError(f"{value} is beyond {'90' if latitude else '180'} degrees")
    return e7


def metres_to_mm(value: Decimal | int | str) -> int:
    """Metres (decimal text) as whole millimetres."""
    return _round_half_away(Fraction(_decimal(value)) * 1000)


def _decimal(value: Decimal | int | str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value}")
        return value
    if not _DECIMAL.match(value):
        raise ValueError(f"not a decimal number: {value!r}")
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already rules this out
        raise ValueError(f"not a decimal number: {value!r}") from exc
