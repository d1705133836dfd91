"""Searching the trail and opening one exchange.

Each search and each opened exchange is one AuditTrail call made as the officer, so the
gateway's policy decides what comes back (a DPO: its own institution's requests; the
regulator: all) and the trail records the look itself. A form with a bad field is shown
again with the field named, and nothing is asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.console import i18n, records
from gateway.console.web import Officer, ask, checked_form, console, render, signed_in
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.sdk import filters
from gateway.sdk.trail import AccessQuery, Trail

SHOWN = 100  # records on one page of results, newest first
FIELDS = filters.Filters()  # the form's input names are the field names


def _typed(values: Mapping[str, Any]) -> filters.Filters:
    return filters.Filters(
        *(str(values.get(name) or "")[:200] for name in FIELDS.__dataclass_fields__)
    )


async def search(request: Request) -> Response:
    """The form posts (CSRF-checked), so that an IDCS typed in it never lands in a URL, a
    browser's history or a proxy's log; GET with filters in the query serves links the
    console makes (never with a subject)."""
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    if request.method == "POST":
        values: Mapping[str, Any] = await checked_form(request, who)
    else:
        values = request.query_params
    typed = _typed(values)
    context: dict[str, Any] = {
        "typed": typed,
        "errors": {},
        "rows": None,
        "methods": filters.method_names(),
        "shown": SHOWN,
    }
    if "q" not in values:
        return render(request, "search.html", context, officer=who)
    found = filters.problems(typed, zone=i18n.ZONE)
    if isinstance(found, list):
        context["errors"] = {e.field: e.problem for e in found}
        return render(request, "search.html", context, officer=who, status=400)
    query = found

    def run(trail: Trail) -> list[apb.AccessRecord]:
        return list(trail.query(query, limit=SHOWN))

    rows = await ask(request, who, run)
    if isinstance(rows, Response):
        return rows
    context["rows"] = [_row(r) for r in rows]
    return render(request, "search.html", context, officer=who)


def _row(r: apb.AccessRecord) -> dict[str, Any]:
    return {
        "id": f"{r.node}:{r.seq}",
        "when": records.moment(r),
        "requester": r.requester,
        "sub": r.requester_sub,
        "purpose": r.purpose,
        "method": r.method.rsplit("/", 1)[-1],
        "decision": r.decision,
        "reason": r.reason,
        "subjects": len(r.subject_hashes),
    }


async def _one(request: Request, officer: Officer, record_id: str) -> apb.AccessRecord | Response:
    def run(trail: Trail) -> list[apb.AccessRecord]:
        return list(trail.query(AccessQuery(record_id=record_id), limit=1))

    found = await ask(request, officer, run)
    if isinstance(found, Response):
        return found
    if not found:
        context = {"status": 404, "key": "error.no_record", "reason": ""}
        return render(request, "error.html", context, officer=officer, status=404)
    return found[0]


async def exchange(request: Request) -> Response:
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    record = await _one(request, who, request.query_params.get("id", "")[:200])
    if isinstance(record, Response):
        return record
    return render(request, "exchange.html", _exchange_context(record, None), officer=who)


async def check_receipt(request: Request) -> Response:
    """A receipt pasted on an exchange's page, verified and compared with the record."""
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    form = await checked_form(request, who)
    record = await _one(request, who, str(form.get("id") or "")[:200])
    if isinstance(record, Response):
        return record
    token = str(form.get("receipt") or "")[:20_000]
    jwks = console(request).link.gateway_jwks()
    result = records.check_receipt(token, record, jwks)
    return render(request, "exchange.html", _exchange_context(record, result), officer=who)


def _exchange_context(r: apb.AccessRecord, receipt: records.ReceiptCheck | None) -> dict[str, Any]:
    return {
        "r": r,
        "row": _row(r),
        "basis_kind": "consent" if r.basis.startswith("consent:") else "statute",
        "hash_holds": records.hash_holds(r),
        "withheld": records.withheld(r.method, r.fields),
        "receipt": receipt,
    }
