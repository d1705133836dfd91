"""Names on the wire that both ends share: services and the metadata keys of the contract.

Kept here, below the services and the SDK alike, so a partner's client needs none of the
server's modules to name what it calls (docs/integration.md).
"""

from __future__ import annotations

from typing import Final

REGISTRY_EXCHANGE: Final = "jisr.v1.RegistryExchange"
CONSENT_REGISTRY: Final = "jisr.v1.ConsentRegistry"
AUDIT_TRAIL: Final = "jisr.v1.AuditTrail"
CONTEST_CASES: Final = "jisr.v1.ContestCases"
REGISTRY_EVENTS: Final = "jisr.v1.RegistryEvents"
TRANSPARENCY: Final = "jisr.v1.Transparency"
MINISTRY_BACKEND: Final = "jisr.v1.MinistryBackend"

# The request token (a compact JWS) rides in this metadata key; the receipt in this trailer.
SIGNATURE_METADATA: Final = "x-jisr-signature"
RECEIPT_METADATA: Final = "x-jisr-receipt"


# Subjects per VerifyEligibilityBatch batch (docs/security.md §5): the gateway refuses
# more, the SDK splits at this size.
MAX_BATCH: Final = 1000
# The gateway's own client identity, issued by `jisr pki init`: what it presents to a
# remote MinistryBackend.
GATEWAY_CLIENT: Final = "JISR"


def method_path(service: str, name: str) -> str:
    """The gRPC path of a method, as tokens name it in `method`."""
    return f"/{service}/{name}"
