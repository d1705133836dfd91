"""Signed batches: a stream whose every envelope is signed, decided, recorded and receipted
on its own, under the one token that opened the stream (docs/security.md, "Batches").

The stream is one call through the engine (gateway/engine/call.py): authenticated and
authorized once, each batch then checked against its own signature, its subjects decided
by the pipeline (item by item, a consent screen first where the grant needs one), the
answer projected to the grant (or the item's consent), recorded as part `seq + 1`, and
answered with its own receipt. The close is one more record and one receipt chaining the
batches' hashes.

A batch's answer is yielded as a `Deferred`: the driver (gateway/services/door.py) sends it
once its record is durable, signing its receipt then, while this stream's thread decides
the next batches (up to `door.SEND_WINDOW` answers wait at once): the commit of batch k and
the work of the batches after it overlap, answers leave in order, and none before its
record. Before the close the stream yields `FLUSH`, so that a batch
whose record or delivery failed ends the stream with that reason rather than a permit.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace

from google.rpc import error_details_pb2, status_pb2

from adapters.base import FetchContext
from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.base.jws import TokenError, body_hash
from gateway.engine.call import (
    Call,
    Engine,
    Invocation,
    Outcome,
    chain,
    no_consent_here,
    parse,
    recorded,
    try_parse,
)
from gateway.engine.consent_gate import Permit
from gateway.engine.steps import FLUSH, Deferred, Sent
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pipeline import disclosure, validation
from gateway.pipeline.exchange import Screen
from gateway.pipeline.query import Key
from gateway.pipeline.registries import fetched_once
from gateway.security.policy import Grant
from gateway.security.projection import minimise
from gateway.security.receipts import PERMIT
from gateway.security.tokens import RequestClaims, check_body, verify_batch
from gateway.telemetry import tracing

# A batch stream: its answers are deferred until their records are durable.
BatchStreamed = Generator[Sent, None, Outcome]
# What decides one batch: the pipeline's bulk eligibility (gateway/pipeline/exchange.py).
Decide = Callable[
    [pb.EligibilityBatch, int, FetchContext, Screen | None], pb.EligibilityBatchResults
]


@dataclass(frozen=True)
class BatchMethod:
    """The signed-batch method: what decides one batch's subjects."""

    decide: Decide


def batch_stream(
    engine: Engine, inv: Invocation, requests: Iterator[bytes], method: BatchMethod
) -> BatchStreamed:
    """The stream: one answer per envelope, then the closing record and receipt."""
    call = Call(inv.method, streamed=True)
    return engine.streamed(inv, call, _answers(engine, inv, call, requests, method))


def _answers(
    engine: Engine, inv: Invocation, call: Call, requests: Iterator[bytes], method: BatchMethod
) -> BatchStreamed:
    claims = engine.authenticate(call, inv, None)
    grant = engine.authorize(call, claims, claims.purpose)
    try:
        for seq, raw in enumerate(requests):
            call.named = _batch_subjects(raw)
            call.read.clear()
            with (
                tracing.span("jisr.batch", attributes={"jisr.batch_index": seq}),
                disclosure.watching(call.read),
                fetched_once(),
            ):
                answer = _Stream(engine, inv, call, claims, grant, method).one(seq, raw)
            yield answer
    except Exception:
        # A refusal of the stream (a bad envelope, a read that failed, a fault) comes after
        # every answer already recorded is delivered, or fails with that answer's own
        # reason: its receipt chains the answers delivered, none still being made.
        yield FLUSH
        raise
    yield FLUSH  # every batch's answer delivered before the close is recorded
    call.named = []  # the close names no subject
    call.read.clear()
    rh, sh = chain(call.rhs), chain(call.shs)
    audit = engine.audit(call, PERMIT, rh=rh, sh=sh, subjects=())
    receipt = engine.receipt(call, PERMIT, rh=rh, sh=sh, batches=len(call.shs), audit=audit)
    return engine.answered(call, b"", receipt, audit)


@dataclass(frozen=True)
class _Stream:
    """What every batch of one stream is checked and decided under."""

    engine: Engine
    inv: Invocation
    call: Call
    claims: RequestClaims
    grant: Grant
    method: BatchMethod

    def one(self, seq: int, raw: bytes) -> bytes | Deferred:
        """Check one envelope's signature, decide its subjects, record them; the answer,
        sent once its record is durable, with its receipt."""
        engine, call, claims, grant = self.engine, self.call, self.claims, self.grant
        try:
            if seq == 0:
                check_body(claims.rh, raw)
            envelope = parse(pb.VerifyEligibilityBatchRequest, raw)
            rh = verify_batch(
                envelope.batch_signature,
                institution=claims.iss,
                jti=claims.jti,
                seq=seq,
                batch=envelope.batch,
                trust=engine.security.trust,
            )
        except TokenError as exc:
            raise ExchangeError(exc.reason, exc.message) from None
        batch = parse(pb.EligibilityBatch, envelope.batch)
        if validation.purpose(batch.purpose) != claims.purpose:
            raise invalid(Reason.PURPOSE_MISMATCH, "batch purpose differs from the token's")
        ctx = FetchContext(claims.purpose, self.inv.remaining(), claims.iss)
        permits: list[Permit | ExchangeError] = []
        screen = _screen(engine, grant, ctx, permits) if grant.consent_based else None
        results = self.method.decide(batch, seq, ctx, screen)
        self._project(results, permits)
        body = results.SerializeToString()
        sh = body_hash(body)
        failures = sorted({_reason_of(r.error) for r in results.results if r.HasField("error")})
        # The receipt says what this batch was as decided; it is signed once the record is
        # durable, while the stream goes on to the next batch (which may add consents).
        said = engine.exchanged(call, PERMIT, rh=rh, sh=sh, seq=seq)
        signer = engine.security.receipts

        def answer(audit: str) -> bytes:
            """Once recorded (on the loop): the batch counts in the stream's hashes (its
            close, or a refusal's receipt) from now on."""
            receipt = signer.sign(replace(said, audit=audit))
            call.rhs.append(rh)
            call.shs.append(sh)
            return pb.VerifyEligibilityBatchResponse(
                results=body, receipt=receipt
            ).SerializeToString()

        if engine.security.audit is None:
            return answer("")
        with tracing.span("jisr.audit"):
            pending = engine.submit_audit(
                call, PERMIT, rh=rh, sh=sh, part=seq + 1, reason=",".join(failures)
            )
        return Deferred(pending, lambda: answer(recorded(pending)))

    def _project(
        self, results: pb.EligibilityBatchResults, permits: list[Permit | ExchangeError]
    ) -> None:
        """Each decision keeps the fields its grant (or its item's consent) allows."""
        withheld: set[str] = set()
        for index, result in enumerate(results.results):
            if result.HasField("decision"):
                permit = permits[index] if permits else None
                fields = permit.fields if isinstance(permit, Permit) else self.grant.fields
                if isinstance(permit, Permit):
                    self.call.consents.add(permit.consent_id)
                withheld.update(minimise(result.decision, fields))
        results.withheld.paths.extend(sorted(withheld))


def _screen(
    engine: Engine, grant: Grant, ctx: FetchContext, permits: list[Permit | ExchangeError]
) -> Screen:
    """A batch screen that refuses items without consent and keeps each item's permit."""
    gate = engine.security.consent

    def screen(keys: list[Key | ExchangeError]) -> list[Key | ExchangeError]:
        if gate is None:
            permits.extend([no_consent_here()] * len(keys))
        else:
            permits.extend(gate.check_many(grant, keys, ctx))
        return [
            key if isinstance(permit, Permit) else permit
            for key, permit in zip(keys, permits, strict=True)
        ]

    return screen


def _batch_subjects(raw: bytes) -> list[disclosure.Named]:
    """The identifiers of one batch envelope, read before its signature is checked (for
    the record of whatever comes); nothing if the bytes are not a batch."""
    envelope = try_parse(pb.VerifyEligibilityBatchRequest, raw)
    batch = try_parse(pb.EligibilityBatch, envelope.batch) if envelope is not None else None
    return disclosure.subjects(batch.subjects) if batch is not None else []


def _reason_of(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""
