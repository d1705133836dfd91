"""Where the console goes after a login (a path of its own site, never another origin), and
how a gateway's refusal becomes an HTTP status (the table, not the page)."""

from __future__ import annotations

import grpc
import pytest

from gateway.console import web
from gateway.console.pages_auth import safe_next as _next
from gateway.console.web import REFUSALS
from gateway.sdk.client import JisrError

HOME = "/search"

# After login.


def test_a_path_of_this_site_is_kept_with_its_query() -> None:
    assert _next("/exchange/gw-a:42?lang=ar&q=1") == "/exchange/gw-a:42?lang=ar&q=1"


def test_the_integrity_page_is_kept() -> None:
    assert _next("/integrity") == "/integrity"


@pytest.mark.parametrize("missing", ["", None])
def test_no_target_goes_to_the_search_page(missing: str | None) -> None:
    assert _next(missing) == HOME


@pytest.mark.parametrize(
    "elsewhere",
    ["https://evil.example/search", "http://evil.example", "HTTPS://evil.example"],
)
def test_an_absolute_url_is_refused(elsewhere: str) -> None:
    assert _next(elsewhere) == HOME


@pytest.mark.parametrize("elsewhere", ["//evil.example", "//evil.example/search?x=1"])
def test_a_scheme_relative_url_is_refused(elsewhere: str) -> None:
    assert _next(elsewhere) == HOME


@pytest.mark.parametrize("elsewhere", ["/\\evil.example", "/\\/evil.example", "\\\\evil.example"])
def test_a_backslash_that_a_browser_reads_as_a_slash_is_refused(elsewhere: str) -> None:
    # Browsers read "/\evil.example" as "//evil.example": another origin.
    assert _next(elsewhere) == HOME


@pytest.mark.parametrize("elsewhere", ["/\t/evil.example", "/\n/evil.example"])
def test_a_control_character_a_browser_drops_is_refused(elsewhere: str) -> None:
    # Browsers drop tabs and newlines from a URL: "/\t/evil.example" is "//evil.example".
    assert _next(elsewhere) == HOME


@pytest.mark.parametrize("script", ["javascript:alert(1)", "JavaScript:alert(1)", "data:,x"])
def test_a_script_or_data_url_is_refused(script: str) -> None:
    assert _next(script) == HOME


def test_a_relative_path_is_refused() -> None:
    assert _next("search") == HOME


# Refusals.


@pytest.mark.parametrize(
    ("code", "status"),
    [("PERMISSION_DENIED", 403), ("UNAVAILABLE", 503), ("INVALID_ARGUMENT", 400)],
)
def test_a_refusal_has_its_status(code: str, status: int) -> None:
    assert REFUSALS[code][0] == status


def test_the_refusals_are_those_of_the_table() -> None:
    assert REFUSALS == {
        "PERMISSION_DENIED": (403, "error.forbidden"),
        "UNAUTHENTICATED": (403, "error.forbidden"),
        "UNAVAILABLE": (503, "error.unavailable"),
        "DEADLINE_EXCEEDED": (503, "error.unavailable"),
        "INVALID_ARGUMENT": (400, "error.invalid"),
        "NOT_FOUND": (404, "error.no_record"),
        "ABORTED": (409, "error.changed"),
        "FAILED_PRECONDITION": (409, "error.conflict"),
    }


def test_every_refusal_is_named_by_a_grpc_code() -> None:
    assert set(REFUSALS) <= {code.name for code in grpc.StatusCode}


def test_a_code_not_in_the_table_is_a_bad_gateway() -> None:
    refused = JisrError(grpc.StatusCode.DATA_LOSS, "SOME_REASON", "refused")
    assert web.refusal_status(refused) == (502, "error.gateway")


def test_a_refusal_by_the_policy_is_forbidden() -> None:
    refused = JisrError(grpc.StatusCode.PERMISSION_DENIED, "NOT_AN_AUDITOR", "refused")
    assert web.refusal_status(refused) == (403, "error.forbidden")
