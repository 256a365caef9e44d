"""The unified social credit code (统一社会信用代码) of GB 32100-2015, with its check character.

18 characters over a 31-character alphabet (the digits and the capitals without I, O, Z, S, V):

    1      registration authority code (登记管理部门代码)
    2      organisation category code (机构类别代码)
    3–8    administrative division code (登记管理机关行政区划码, GB/T 2260: six digits)
    9–17   organisation code (主体标识码, GB 11714)
    18     check character

Check character: each of the first 17 characters has the value of its position in the alphabet;
position i (1-based) is weighted 3^(i−1) mod 31; C18 = 31 − (Σ value × weight mod 31), where 31
means 0. A single wrong character, or two adjacent ones swapped (their weights differ by a factor of
3, which is invertible mod 31), always changes the check character.
"""

from __future__ import annotations

from typing import Final

ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS: Final = tuple(pow(3, i, 31) for i in range(17))  # 1, 3, 9, 27, 19, 26, 16, 17, 20, 29, …
_VALUE: Final = {c: i for i, c in enumerate(ALPHABET)}
LENGTH: Final = 18


class UsccError(ValueError):
    """Not a valid unified social credit code; the message says which rule failed."""


def check_character(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters (UsccError if they use other characters)."""
    if len(first17) != LENGTH - 1:
        raise UsccError(f"the check character is computed over 17 characters, not {len(first17)}")
    total = 0
    for i, (char, weight) in enumerate(zip(first17, WEIGHTS, strict=True)):
        value = _VALUE.get(char)
        if value is None:
            raise UsccError(f"character {i + 1} ({char!r}) is not in the code's alphabet {ALPHABET}")
        total += value * weight
    return ALPHABET[(31 - total % 31) % 31]


def validate_uscc(code: str) -> str:
    """``code`` if it is a well-formed USCC whose check character is right; UsccError otherwise.

    Letters must already be capitals: a code is printed in capitals on the business licence, and
    accepting ``a`` for ``A`` would let two spellings of one subject exist.
    """
    if len(code) != LENGTH:
        raise UsccError(f"a unified social credit code has 18 characters, not {len(code)}")
    for i, char in enumerate(code):
        if char not in _VALUE:
            raise UsccError(
                f"character {i + 1} ({char!r}) is not allowed: the code uses digits and the capitals "
                f"{ALPHABET[10:]} (no I, O, Z, S, V)"
            )
    if not code[2:8].isdigit():
        raise UsccError("characters 3–8 are the administrative division code: six digits")
    expected = check_character(code[:17])
    if code[17] != expected:
        raise UsccError(
            f"the check character is {code[17]!r} but GB 32100 gives {expected!r} for the first 17: "
            "a character was mistyped"
        )
    return code


def is_valid_uscc(code: str) -> bool:
    """Whether ``code`` passes ``validate_uscc``."""
    try:
        validate_uscc(code)
    except UsccError:
        return False
    return True
