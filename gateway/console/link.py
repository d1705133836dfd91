"""The console's link to the gateway: one mTLS channel per institution whose officers
use the console, each call signed by that institution's key with the officer's
pseudonymous id as `sub`.

The console holds institutions' credentials (`jisr pki issue INSTITUTION` in its PKI
directory) and nothing else: what an officer may see is the gateway's policy's answer to
the institution's call, and the gateway records every call in the trail it reads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.sdk.client import Credentials, JisrClient
from gateway.sdk.contests import HANDLING_PURPOSE, Contests
from gateway.sdk.trail import AUDIT_PURPOSE, Trail
from gateway.security import pki


class GatewayLink:
    """Clients made on first use and kept; safe to use from several threads."""

    def __init__(
        self,
        target: str,
        pki_dir: Path,
        *,
        timeout: float = 15.0,
        insecure_plaintext: bool = False,
    ) -> None:
        self.target = target
        self.pki_dir = pki_dir
        self.timeout = timeout
        self.insecure_plaintext = insecure_plaintext
        self._clients: dict[str, JisrClient] = {}
        self._lock = threading.Lock()

    def client(self, institution: str) -> JisrClient:
        """The institution's client (OSError or ValueError: its credentials are missing)."""
        with self._lock:
            found = self._clients.get(institution)
            if found is None:
                credentials = Credentials.from_pki(self.pki_dir, institution)
                found = JisrClient(
                    self.target,
                    credentials,
                    timeout=self.timeout,
                    insecure_plaintext=self.insecure_plaintext,
                )
                self._clients[institution] = found
            return found

    def trail(self, institution: str, officer_id: str, purpose: str = AUDIT_PURPOSE) -> Trail:
        """The AuditTrail as this officer of this institution."""
        return Trail(self.client(institution).acting_as(officer_id), purpose)

    def contests(self, institution: str, officer_id: str) -> Contests:
        """The ContestCases service as this officer of this institution (a DPO or the
        regulator handling cases: purpose CONTEST_HANDLING)."""
        return Contests(self.client(institution).acting_as(officer_id), HANDLING_PURPOSE)

    def gateway_jwks(self) -> Mapping[str, Any]:
        """The gateway's published receipt and checkpoint keys."""
        return pki.gateway_jwks(self.pki_dir)

    def has_credentials(self, institution: str) -> bool:
        try:
            pki.load_institution(self.pki_dir, institution)
        except (OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
