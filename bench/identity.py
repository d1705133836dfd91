"""The partner side of the wire contract, as the SDK builds it: request tokens pre-signed
per call (a fresh `jti` each: the gateway refuses replays), and signed batch envelopes
built exactly as `gateway.sdk.client.JisrClient.verify_batches` does."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import BATCH_METHOD
from gateway.base.jws import body_hash
from gateway.base.wire import SIGNATURE_METADATA
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.signing import DEFAULT_LIFETIME_S, Signer
from gateway.security.tokens import MAX_LIFETIME_S, SKEW_S
from tests.support import identities

make_pki = identities.make_pki  # where bench.tracing imports it from
Metadata = tuple[tuple[str, str], ...]
LIFETIME_MARGIN_S = 30  # a loop's tokens are signed just before it starts
MAX_LOOP_S = MAX_LIFETIME_S - LIFETIME_MARGIN_S - SKEW_S


def lifetime_for(loop_seconds: float) -> int:
    """A token lifetime that outlives a loop of `loop_seconds` (60 s at least, the SDK's
    default; 300 s at most, the gateway's limit)."""
    if loop_seconds > MAX_LOOP_S:
        raise ValueError(f"a signed loop may last at most {MAX_LOOP_S} s (tokens live 300 s)")
    return max(DEFAULT_LIFETIME_S, math.ceil(loop_seconds) + LIFETIME_MARGIN_S)


def tokens(
    signer: Signer,
    method: str,
    purpose: str,
    requests: Sequence[bytes],
    count: int,
    *,
    lifetime: int = MAX_LIFETIME_S,
) -> list[str]:
    """`count` request tokens, token i over requests[i % n], each with its own `jti`."""
    n, sign = len(requests), signer.request_token
    return [sign(method, purpose, requests[i % n], lifetime=lifetime) for i in range(count)]


@dataclass(frozen=True)
class SignedStream:
    """One VerifyEligibilityBatch call: its jti, token, envelopes and the batches' hashes."""

    jti: str
    metadata: Metadata
    envelopes: list[bytes]
    batch_hashes: list[str]


def signed_stream(
    signer: Signer, purpose: str, batches: Sequence[bytes], lifetime: int
) -> SignedStream:
    """Each serialized EligibilityBatch signed with (jti, seq, rh); the call's token signed
    over the first envelope's bytes."""
    jti = secrets.token_urlsafe(18)
    envelopes = [
        pb.VerifyEligibilityBatchRequest(
            batch=batch, batch_signature=signer.batch_token(jti, seq, batch)
        ).SerializeToString()
        for seq, batch in enumerate(batches)
    ]
    token = signer.request_token(BATCH_METHOD, purpose, envelopes[0], jti=jti, lifetime=lifetime)
    return SignedStream(
        jti, ((SIGNATURE_METADATA, token),), envelopes, [body_hash(b) for b in batches]
    )


def chain(hashes: Sequence[str]) -> str:
    """A stream's `rh`/`sh`: the hash of its per-batch hashes joined by '.'."""
    return body_hash(".".join(hashes).encode())
