"""A citizen's consents from a portal's desk: list those about them, revoke those they gave.

A portal institution (the policy's `citizen_portal` role) signs the citizen in by its own
means and asks on their behalf (docs/citizen-portal.md): it lists every consent about the
person and their household (`with_household`), and records a revocation the citizen makes
there as an artefact it signs, naming the citizen as grantor. The gateway refuses a portal
any grant, and a revocation by anyone but the consent's grantor (GRANTOR_NOT_ENTITLED).
Consent collectors use the same two calls (`jisr consent list|revoke`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.sdk.client import Answer, JisrClient, subject

PURPOSE = "CONSENT_MANAGEMENT"
PAGE = 100
# Pages read at most by `every`: far above any one citizen's consents, so a loop in a
# gateway's tokens cannot hold a portal's worker for ever.
MAX_PAGES = 50


class Consents:
    """The ConsentRegistry's list and revoke through one client."""

    def __init__(self, client: JisrClient, purpose: str = PURPOSE) -> None:
        self.client = client
        self.purpose = purpose

    def page(
        self, who: str, *, with_household: bool = False, page_token: str = ""
    ) -> Answer[cpb.ListConsentsResponse]:
        """One page of the consents about `who` (IDCS or household id); `with_household`
        for a person adds their household's after their own."""
        request = cpb.ListConsentsRequest(
            purpose=self.purpose,
            subject=subject(who),
            page_size=PAGE,
            page_token=page_token,
            with_household=with_household,
        )
        return self.client.consent("ListConsents", request, cpb.ListConsentsResponse, self.purpose)

    def every(self, who: str, *, with_household: bool = False) -> Iterator[cpb.Consent]:
        """Every consent about `who`, page after page (at most MAX_PAGES)."""
        token = ""
        for _ in range(MAX_PAGES):
            answer = self.page(who, with_household=with_household, page_token=token).message
            yield from answer.consents
            token = answer.next_page_token
            if not token:
                return

    def revoke(
        self, consent_id: str, grantor: str, method: str = "portal"
    ) -> Answer[cpb.RevokeConsentResponse]:
        """Revoke `consent_id` at once for its `grantor` (IDCS), with an artefact this
        client's institution signs; `method` says where the citizen asked."""
        now = int(time.time())
        claims = {
            "act": "revoke",
            "jti": secrets.token_urlsafe(12),
            "cid": consent_id,
            "grantor": grantor,
            "method": method,
            "iat": now,
        }
        request = cpb.RevokeConsentRequest(
            purpose=self.purpose, artefact=self.client.sign_artefact(claims)
        )
        return self.client.consent(
            "RevokeConsent", request, cpb.RevokeConsentResponse, self.purpose
        )
