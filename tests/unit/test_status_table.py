"""One reason, one status: the code table is docs/errors.md's, reason for reason."""

import re
from pathlib import Path

import grpc
import pytest

from gateway.base.errors import ExchangeError, Reason, caller_ended, invalid, not_found
from gateway.base.status import CODES, code_name, rich_status
from gateway.services.edge import grpc_code, grpc_status

DOC = Path(__file__).parents[2] / "docs" / "errors.md"


def _documented() -> dict[str, set[str]]:
    """Each reason the docs' table names, with the statuses it is given there."""
    found: dict[str, set[str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"[A-Z_]+( / [A-Z_]+)*", cells[0]):
            continue
        statuses = cells[0].split(" / ")
        groups = cells[1].split(" / ")
        for index, group in enumerate(groups):
            status = statuses[index] if len(statuses) == len(groups) else statuses[0]
            for reason in re.findall(r"[A-Z][A-Z_]+", group):
                found.setdefault(reason, set()).add(status)
    return found


def test_every_reason_is_documented_with_the_status_the_table_gives_it() -> None:
    documented = _documented()
    assert {reason.value: {code_name(reason)} for reason in Reason} == documented


def test_every_reason_has_a_status() -> None:
    assert set(CODES) == set(Reason)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (invalid(Reason.INVALID_IDCS, "bad", "subject.idcs"), grpc.StatusCode.INVALID_ARGUMENT),
        (not_found("no such subject"), grpc.StatusCode.NOT_FOUND),
        (caller_ended(0.0), grpc.StatusCode.DEADLINE_EXCEEDED),
        (caller_ended(5.0), grpc.StatusCode.CANCELLED),
        (ExchangeError(Reason.AUDIT_UNAVAILABLE, "retry"), grpc.StatusCode.UNAVAILABLE),
    ],
    ids=["invalid", "not-found", "deadline", "cancelled", "audit"],
)
def test_the_grpc_edge_gives_the_tables_status(error: ExchangeError, code: grpc.StatusCode) -> None:
    status = grpc_status(error)
    assert (status.code, status.details) == (code, error.message)
    assert grpc_code(error.reason) == code


def test_the_rich_status_carries_the_reason_and_the_field() -> None:
    status = rich_status(invalid(Reason.INVALID_IDCS, "bad", "subject.idcs"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.details[0].type_url.endswith("google.rpc.ErrorInfo")
    assert b"INVALID_IDCS" in status.details[0].value
    assert b"subject.idcs" in status.details[0].value
