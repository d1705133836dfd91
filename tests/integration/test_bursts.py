"""A burst bigger than grpc's own queue of calls not yet taken (1,000 then 3,000 by its
defaults, past which it cancels calls with a bare CANCELLED): every call of it is answered,
or refused with a documented reason, never cancelled by the gateway."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import grpc
import pytest

from gateway.base.wire import REGISTRY_EXCHANGE, SIGNATURE_METADATA, method_path
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials, error_from
from tests.support import processes, registry_rows
from tests.support.identities import tls

pytestmark = pytest.mark.integration
BURST = 4_000  # above grpc's hard limit of 3,000 calls waiting to be taken
PURPOSE = "AMO_ENROLMENT"
METHOD = method_path(REGISTRY_EXCHANGE, "GetHouseholdStatus")
DEADLINE_S = 300.0  # a slow machine answers 4,000 calls in tens of seconds


async def _burst(target: str, creds: Credentials, household: str) -> Counter[str]:
    """Every call sent at once over one connection; what each ended with."""
    body = pb.GetHouseholdStatusRequest(
        purpose=PURPOSE, subject=pb.Subject(household_id=household)
    ).SerializeToString()
    signed = [creds.signer.request_token(METHOD, PURPOSE, body) for _ in range(BURST)]
    outcomes: Counter[str] = Counter()
    async with grpc.aio.secure_channel(target, tls(creds)) as channel:
        call = channel.unary_unary(METHOD)

        async def one(token: str) -> None:
            try:
                await call(body, timeout=DEADLINE_S, metadata=((SIGNATURE_METADATA, token),))
                outcomes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                reason = error_from(exc).reason if exc.code() != grpc.StatusCode.CANCELLED else ""
                outcomes[f"{exc.code().name} {reason}".strip()] += 1

        await asyncio.gather(*(one(token) for token in signed))
    return outcomes


def test_a_burst_beyond_grpcs_queue_is_answered_not_cancelled(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    proc = processes.serve(registry_dir, pki_dir, tmp_path)
    try:
        household = registry_rows.households(registry_dir, 1)[0].household_id
        creds = Credentials.from_pki(pki_dir, "DEMO")
        outcomes = asyncio.run(_burst(proc.target, creds, household))
    finally:
        proc.stop()
    assert sum(outcomes.values()) == BURST
    assert "CANCELLED" not in outcomes, outcomes
    refused = {k for k in outcomes if k != "OK"}
    assert refused <= {"RESOURCE_EXHAUSTED TOO_MANY_CALLS"}, outcomes
    assert outcomes["OK"] > 0
