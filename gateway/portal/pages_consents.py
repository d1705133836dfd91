"""The consents about the citizen and their household, and revoking those they gave.

A ListConsents call (purpose CONSENT_MANAGEMENT, `with_household`) shows every consent
that lets an institution see the citizen's data; a revocation is an artefact the portal
institution signs naming the citizen as grantor (gateway/sdk/consents.py). The gateway
takes it back at once: an exchange that relied on it is refused from then on.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.portal import plain
from gateway.portal.web import ask, checked_form, current, error_page, render, to_login
from gateway.sdk.client import JisrClient
from gateway.sdk.consents import Consents

CONSENT_ID = re.compile(r"C[0-9a-f]{24}")


async def consents(request: Request) -> Response:
    session = current(request)
    if session is None:
        return to_login()

    def read(client: JisrClient) -> list[plain.Consent]:
        found = Consents(client).every(session.subject, with_household=True)
        return [plain.consent(c, session.subject) for c in found]

    listed = await ask(request, session, read)
    if isinstance(listed, Response):
        return listed
    order = {"active": 0, "expired": 1, "revoked": 2}
    listed.sort(key=lambda c: order.get(c.status, 3))
    notice = "consents.revoked" if request.query_params.get("revoked") == "1" else ""
    return render(request, "consents.html", {"consents": listed, "notice": notice}, session)


async def revoke(request: Request) -> Response:
    session = current(request)
    if session is None:
        return to_login()
    form = await checked_form(request, session)
    consent_id = str(form.get("id") or "")[:40]
    if not CONSENT_ID.fullmatch(consent_id):
        return error_page(request, session, 404, "error.not_found")

    def send(client: JisrClient) -> None:
        Consents(client).revoke(consent_id, session.subject, method="portal")

    done = await ask(request, session, send)
    if isinstance(done, Response):
        return done
    return RedirectResponse("/consents?revoked=1", status_code=303)
