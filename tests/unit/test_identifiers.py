"""IDCS and household-id syntax."""

from __future__ import annotations

import pytest

from gateway.base.identifiers import is_valid_household_id, is_valid_idcs, luhn_digit, make_idcs


def test_made_idcs_is_valid() -> None:
    assert is_valid_idcs(make_idcs("123456789"))


@pytest.mark.parametrize("position", range(10))
def test_any_single_digit_typo_is_rejected(position: int) -> None:
    good = make_idcs("492817365")
    for digit in "0123456789":
        typo = good[:position] + digit + good[position + 1 :]
        assert is_valid_idcs(typo) == (typo == good)


def test_adjacent_transposition_is_rejected() -> None:
    good = make_idcs("123456789")
    swapped = good[1] + good[0] + good[2:]
    assert not is_valid_idcs(swapped)


@pytest.mark.parametrize("value", ["", "123456789", "12345678901", "12345abcde", "١٢٣٤٥٦٧٨٩٠"])
def test_malformed_idcs_is_rejected(value: str) -> None:
    assert not is_valid_idcs(value)


def test_luhn_digit_of_the_classic_example() -> None:
    assert luhn_digit("7992739871") == "3"


@pytest.mark.parametrize(
    ("value", "valid"),
    [("H000000001", True), ("H12345678", False), ("h000000001", False), ("X000000001", False)],
)
def test_household_id_is_h_and_nine_digits(value: str, valid: bool) -> None:
    assert is_valid_household_id(value) is valid
