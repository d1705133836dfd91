"""Notification streams: a Subscribe call whose every batch of notifications is projected,
recorded and receipted on its own, like a batch of the signed-batch stream
(gateway/engine/batch.py), under the one token that opened the stream.

The stream is one call through the engine (gateway/engine/call.py): authenticated and
authorized once (the Subscribe grant for the subscription's purpose), the subscription
opened (its owner, purpose and cursor checked before anything is recorded), then for each
batch the log yields: each notification's subject screened by consent where the grant's
basis is consent (a notification without consent is not sent at all: its mere existence
would tell something of the subject), each event projected to the grant's fields, the
batch recorded as part `index + 1` naming every subject it discloses, and sent with its
own receipt. The close is one more record and one receipt chaining the batches' hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from adapters.base import FetchContext
from gateway.base.errors import ExchangeError, caller_ended
from gateway.base.jws import body_hash
from gateway.engine.call import Call, Engine, Invocation, Streamed, chain, parse, try_parse
from gateway.engine.consent_gate import Permit
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pipeline import validation
from gateway.pipeline.query import Key
from gateway.security.policy import Grant
from gateway.security.projection import project
from gateway.security.receipts import PERMIT
from gateway.telemetry import tracing

# Why the caller is gone (it cancelled, its deadline passed, the gateway is stopping), or
# None while it is there: a stream waiting for new events asks between its reads.
Gone = Callable[[], ExchangeError | None]
# What a Subscribe request opens: validated before the first record (an unknown
# subscription, another institution's, a cursor out of range raise there), then the
# batches of unprojected notifications, each with the subject key of each notification.
Open = Callable[
    [epb.SubscribeRequest, FetchContext, Grant, Gone],
    Iterator[tuple[epb.NotificationBatch, list[Key]]],
]


@dataclass(frozen=True)
class NotifyMethod:
    """The Subscribe method: how a request opens its feed."""

    open: Open


def notification_stream(
    engine: Engine, inv: Invocation, raw: bytes, method: NotifyMethod
) -> Streamed:
    """The stream: one envelope per batch, then the closing record and receipt."""
    call = Call(inv.method, streamed=True)
    return engine.streamed(inv, call, _envelopes(engine, inv, call, raw, method))


def _envelopes(
    engine: Engine, inv: Invocation, call: Call, raw: bytes, method: NotifyMethod
) -> Streamed:
    parsed = try_parse(epb.SubscribeRequest, raw)
    claims = engine.authenticate(call, inv, raw)
    request = parsed if parsed is not None else parse(epb.SubscribeRequest, raw)
    grant = engine.authorize(call, claims, validation.purpose(request.purpose))
    ctx = FetchContext(claims.purpose, None, claims.iss, claims.sub)
    feed = method.open(request, ctx, grant, lambda: _gone(inv))
    for index, (batch, keys) in enumerate(feed):
        with tracing.span("jisr.batch", attributes={"jisr.batch_index": index}):
            yield _one(engine, call, grant, ctx, index=index, batch=batch, keys=keys)
    rh, sh = claims.rh, chain(call.shs)
    audit = engine.audit(call, PERMIT, rh=rh, sh=sh, subjects=())
    receipt = engine.receipt(call, PERMIT, rh=rh, sh=sh, batches=len(call.shs), audit=audit)
    return engine.answered(call, b"", receipt, audit)


def _gone(inv: Invocation) -> ExchangeError | None:
    return None if inv.active() else caller_ended(inv.remaining())


def _one(
    engine: Engine,
    call: Call,
    grant: Grant,
    ctx: FetchContext,
    *,
    index: int,
    batch: epb.NotificationBatch,
    keys: list[Key],
) -> bytes:
    """Screen, project, record and sign one batch."""
    assert call.claims is not None
    about = _screened(engine, call, grant, ctx, batch=batch, keys=keys)
    batch.batch_index = index
    body = batch.SerializeToString()
    sh = body_hash(body)
    recorder = engine.security.audit
    subjects = recorder.subjects(about) if recorder is not None else ()
    rh = call.claims.rh
    audit = engine.audit(call, PERMIT, rh=rh, sh=sh, part=index + 1, subjects=subjects)
    call.shs.append(sh)
    receipt = engine.receipt(call, PERMIT, rh=rh, sh=sh, seq=index, audit=audit)
    return epb.SubscribeResponse(batch=body, receipt=receipt).SerializeToString()


def _screened(
    engine: Engine,
    call: Call,
    grant: Grant,
    ctx: FetchContext,
    *,
    batch: epb.NotificationBatch,
    keys: list[Key],
) -> list[Key]:
    """Keep the batch's notifications the caller may see, each projected to its fields
    (the grant's, or its subject's consent's). Returns every identifier of the events
    sent, whether or not their fields were disclosed, for the batch's audit record: the
    access is about those subjects either way."""
    permits: list[Permit | None] = [None] * len(keys)
    gate = engine.security.consent
    if grant.consent_based and gate is not None and keys:
        permits = [p if isinstance(p, Permit) else None for p in gate.check_many(grant, keys, ctx)]
    kept: list[epb.Notification] = []
    about: list[Key] = []
    withheld: set[str] = set()
    for notification, permit in zip(batch.notifications, permits, strict=True):
        if grant.consent_based and permit is None:
            continue
        fields = permit.fields if permit is not None else grant.fields
        if permit is not None:
            call.consents.add(permit.consent_id)
        about.extend(_identifiers(notification.event))
        projected, hidden = project(notification.event, fields)
        kept.append(epb.Notification(cursor=notification.cursor, event=projected))
        withheld.update(hidden)
    del batch.notifications[:]
    batch.notifications.extend(kept)
    batch.withheld.paths.extend(sorted(withheld))
    return about


def _identifiers(event: epb.ChangeEvent) -> list[Key]:
    keys: list[Key] = []
    if event.idcs:
        keys.append(("idcs", event.idcs))
    if event.household_id:
        keys.append(("household_id", event.household_id))
    return keys
