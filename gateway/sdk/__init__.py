"""The partner SDK: a client that signs requests and checks receipts.

`import gateway.sdk` is all a partner needs (docs/integration.md). It loads grpcio,
protobuf, the generated messages, pyjwt and cryptography and a few light gateway modules
(wire names, token and receipt rules, PKI file layout, consent artefacts), never the
server, its telemetry or its stores: a partner installs `jisr` without the `server` extra
and imports this in a fraction of the server's start-up time (tests/unit/test_sdk_imports.py
names what must stay out).
"""

from gateway.base.wire import MAX_BATCH
from gateway.sdk.client import (
    Answer,
    BatchStream,
    Credentials,
    JisrClient,
    JisrError,
    Receipt,
    error_from,
    load_jwks,
)
from gateway.sdk.signing import Signer

__all__ = [
    "MAX_BATCH",
    "Answer",
    "BatchStream",
    "Credentials",
    "JisrClient",
    "JisrError",
    "Receipt",
    "Signer",
    "error_from",
    "load_jwks",
]
