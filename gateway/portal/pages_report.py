"""The citizen's access report: who looked at their data and their household's, when,
for what, on what legal basis and which kinds of data, in plain words.

Each report is an AuditTrail.AccessReport call (purpose CITIZEN_ACCESS_REQUEST), so the
trail records that the citizen looked, under the session's pseudonym. The proofs download
is the same report with each entry's proof of inclusion in the signed trail, for the
citizen to have checked by anyone they trust (`jisr audit check-proof`,
docs/audit-format.md §9): the portal checks nothing on their behalf, it is Jisr's own.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.portal import plain
from gateway.portal.web import ask, current, render, to_login
from gateway.sdk.client import JisrClient
from gateway.sdk.trail import REPORT_PURPOSE, Trail, proof_document

PROOFS_FILE = "jisr-preuves.json"


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


async def proofs(request: Request) -> Response:
    session = current(request)
    if session is None:
        return to_login()

    def read(client: JisrClient) -> list[dict[str, object]]:
        entries = Trail(client, REPORT_PURPOSE).report(session.subject, proofs=True)
        return [proof_document(e.proof) for e in entries.message.entries if e.HasField("proof")]

    found = await ask(request, session, read)
    if isinstance(found, Response):
        return found
    return JSONResponse(
        {"proofs": found},
        headers={"Content-Disposition": f'attachment; filename="{PROOFS_FILE}"'},
    )
