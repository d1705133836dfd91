"""The attention list: the patterns of gateway/console/attention.py over the last days of
the trail the officer may read, each with links to its records.

The records are read as the officer, like a search (a DPO: its own institution's
requests; the regulator: all), so the list covers what the policy lets the officer see
and the trail records the reading. At most MAX_RECORDS are read, newest first; the page
says when that cut the period short. A bad number of days is shown on the form, and
nothing is asked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.console import attention as patterns
from gateway.console import records
from gateway.console.web import Officer, ask, render, signed_in
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.sdk.trail import AccessQuery, Trail

MAX_RECORDS = 50_000  # records read for one list, newest first (memory and time bound)
DAYS = 7  # the period by default
MAX_DAYS = 31
THRESHOLDS = patterns.Thresholds()


def _days(typed: str) -> int | None:
    try:
        days = int(typed)
    except ValueError:
        return None
    return days if 1 <= days <= MAX_DAYS else None


async def attention(request: Request) -> Response:
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    typed = request.query_params.get("days", str(DAYS))[:10]
    context: dict[str, Any] = {
        "typed": typed,
        "error": "",
        "findings": None,
        "read": 0,
        "since": None,
        "capped": False,
        "max_records": MAX_RECORDS,
    }
    days = _days(typed)
    if days is None:
        context["error"] = "attention.days_invalid"
        return render(request, "attention.html", context, officer=who, status=400)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)

    def run(trail: Trail) -> tuple[list[apb.AccessRecord], list[patterns.Finding]]:
        rows = list(trail.query(AccessQuery(since=since), limit=MAX_RECORDS))
        return rows, patterns.findings(rows, THRESHOLDS)

    found = await ask(request, who, run)
    if isinstance(found, Response):
        return found
    rows, findings = found
    capped = len(rows) >= MAX_RECORDS
    context.update(
        findings=findings,
        read=len(rows),
        # When capped, the list covers from the oldest record read, not the whole period.
        since=min(records.moment(r) for r in rows) if capped else since,
        capped=capped,
    )
    return render(request, "attention.html", context, officer=who)
