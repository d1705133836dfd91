"""The citizen's access report: who looked at their data and their household's, when,
for what, on what legal basis and which kinds of data, in plain words.

Each report is an AuditTrail.AccessReport call (purpose CITIZEN_ACCESS_REQUEST), so the
trail records that the citizen looked, under the session's pseudonym.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.portal import plain
from gateway.portal.web import ask, current, render, to_login
from gateway.sdk.client import JisrClient
from gateway.sdk.trail import REPORT_PURPOSE, Trail


async def report(request: Request) -> Response:
    session = current(request)
    if session is None:
        return to_login()

    def read(client: JisrClient) -> list[plain.Access]:
        return plain.report(Trail(client, REPORT_PURPOSE).report(session.subject).message.entries)

    accesses = await ask(request, session, read)
    if isinstance(accesses, Response):
        return accesses
    return render(request, "report.html", {"accesses": accesses}, session)
