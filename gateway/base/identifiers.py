"""Syntax of the identifiers Jisr accepts: IDCS and RSU household ids.

The public sources give the IDCS as 10 digits without publishing a check-digit algorithm;
Jisr treats it as 9 digits plus a Luhn check digit (our choice, see docs/registry-data.md),
which catches every single-digit typo and most transpositions at a counter.
"""

from __future__ import annotations

import re

_IDCS = re.compile(r"[0-9]{10}")
_HOUSEHOLD = re.compile(r"H[0-9]{9}")


def luhn_digit(body: str) -> str:
    """The Luhn check digit for a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def make_idcs(body: str) -> str:
    """An IDCS from its 9 leading digits."""
    if len(body) != 9 or not body.isdigit():
        raise ValueError("an IDCS body is 9 digits")
    return body + luhn_digit(body)


# Luhn over all ten digits at once: from the right, the check digit counts as it is and
# every second digit is doubled (its digits summed); valid when the total ends in 0.
_PLAIN = {str(d): d for d in range(10)}
_DOUBLED = {str(d): 2 * d if d < 5 else 2 * d - 9 for d in range(10)}


def is_valid_idcs(value: str) -> bool:
    """True for 10 ASCII digits whose last is the Luhn check digit of the first nine.

    Table lookups rather than luhn_digit's loop: every IDCS a remote backend returns is
    checked (adapters/record_checks.py), some 5,000 per 1,000-subject batch."""
    if _IDCS.fullmatch(value) is None:
        return False
    p, d = _PLAIN, _DOUBLED
    total = (
        d[value[0]] + p[value[1]] + d[value[2]] + p[value[3]] + d[value[4]]
        + p[value[5]] + d[value[6]] + p[value[7]] + d[value[8]] + p[value[9]]
    )  # fmt: skip
    return total % 10 == 0


def is_valid_household_id(value: str) -> bool:
    """True for "H" followed by 9 ASCII digits."""
    return _HOUSEHOLD.fullmatch(value) is not None
