"""Registry change events from a subscriber's side: create a subscription, read it as a
stream of signed batches, acknowledge what was processed, and reconcile (docs/events.md).

Every batch's receipt is verified before the batch is handed over (it covers exactly the
batch's bytes, under this call's jti, at its place in the stream), and each batch must
continue from the cursor the previous one ended at: a batch that does not is a gap, and
the stream stops with `EventGapError` rather than hand over events with a hole before
them. Delivery is at least once: de-duplicate on `event.event_id`.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from gateway.base import event_types
from gateway.base.event_digest import Digest, digests
from gateway.base.jws import body_hash
from gateway.base.wire import REGISTRY_EVENTS
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.sdk.client import (
    Answer,
    JisrClient,
    JisrError,
    Receipt,
    error_from,
    subject,
)
from gateway.security import receipts
from gateway.security.receipts import ReceiptError

__all__ = ["EventGapError", "Events", "NotificationStream", "local_digest"]

M = TypeVar("M", bound=Message)


class EventGapError(Exception):
    """A batch did not continue from the previous batch's cursor."""


@dataclass(frozen=True)
class _Call:
    jti: str
    rh: str


class NotificationStream:
    """One Subscribe call. Iterating yields each batch's Answer (receipt and gap checked);
    once iteration ends, `closing` holds the stream's closing receipt, checked to cover
    every batch, and `cursor` the last cursor read (acknowledge it once processed)."""

    def __init__(self, answers: Generator[Answer[epb.NotificationBatch], None, Receipt]) -> None:
        self._answers = answers
        self.closing: Receipt | None = None
        self.cursor: int | None = None

    def __iter__(self) -> Iterator[Answer[epb.NotificationBatch]]:
        self.closing = yield from self._tracking()

    def _tracking(self) -> Generator[Answer[epb.NotificationBatch], None, Receipt]:
        while True:
            try:
                answer = next(self._answers)
            except StopIteration as end:
                closing: Receipt = end.value
                return closing
            self.cursor = answer.message.cursor
            yield answer


class Events:
    """The RegistryEvents service through one client, for one purpose."""

    def __init__(self, client: JisrClient, purpose: str) -> None:
        self.client = client
        self.purpose = purpose

    def create(
        self, types: Sequence[str], subjects: Iterable[str] = (), *, from_oldest: bool = False
    ) -> Answer[epb.CreateSubscriptionResponse]:
        """A subscription to `types` ("person.died"...), optionally only about `subjects`
        (IDCS or household ids), from the log's head (or its oldest event)."""
        request = epb.CreateSubscriptionRequest(
            purpose=self.purpose,
            types=[event_types.number(t) for t in types],
            subjects=[subject(s) for s in subjects],
            from_oldest=from_oldest,
        )
        return self._call("CreateSubscription", request, epb.CreateSubscriptionResponse)

    def get(self, subscription_id: str) -> Answer[epb.GetSubscriptionResponse]:
        request = epb.GetSubscriptionRequest(purpose=self.purpose, subscription_id=subscription_id)
        return self._call("GetSubscription", request, epb.GetSubscriptionResponse)

    def cancel(self, subscription_id: str) -> Answer[epb.CancelSubscriptionResponse]:
        request = epb.CancelSubscriptionRequest(
            purpose=self.purpose, subscription_id=subscription_id
        )
        return self._call("CancelSubscription", request, epb.CancelSubscriptionResponse)

    def acknowledge(self, subscription_id: str, cursor: int) -> Answer[epb.AcknowledgeResponse]:
        """Everything up to `cursor` is processed: a Subscribe naming no cursor resumes there."""
        request = epb.AcknowledgeRequest(
            purpose=self.purpose, subscription_id=subscription_id, cursor=cursor
        )
        return self._call("Acknowledge", request, epb.AcknowledgeResponse)

    def digest(
        self, subscription_id: str, after: int, through: int
    ) -> Answer[epb.GetDigestResponse]:
        """The gateway's count and hash of the subscription's events in (after, through]."""
        request = epb.GetDigestRequest(
            purpose=self.purpose, subscription_id=subscription_id, after=after, through=through
        )
        return self._call("GetDigest", request, epb.GetDigestResponse)

    def subscribe(
        self,
        subscription_id: str,
        *,
        after: int | None = None,
        follow: bool = False,
        max_batch: int = 0,
        timeout: float | None = None,
    ) -> NotificationStream:
        """The subscription's batches after `after` (None: after the acknowledged cursor);
        with `follow`, new events as they come until `timeout` or the gateway's stream
        limit."""
        request = epb.SubscribeRequest(
            purpose=self.purpose,
            subscription_id=subscription_id,
            follow=follow,
            max_batch=max_batch,
        )
        if after is not None:
            request.after = after
        return NotificationStream(self._batches(request, timeout))

    def _batches(
        self, request: epb.SubscribeRequest, timeout: float | None
    ) -> Generator[Answer[epb.NotificationBatch], None, Receipt]:
        client = self.client
        body = request.SerializeToString()
        jti = secrets.token_urlsafe(18)
        call = client.open_stream(
            REGISTRY_EVENTS, "Subscribe", body, self.purpose, jti=jti, timeout=timeout
        )
        received: list[str] = []
        cursor: int | None = request.after if request.HasField("after") else None
        try:
            for raw in call:
                envelope = epb.SubscribeResponse.FromString(raw)
                answer = self._batch(envelope, _Call(jti, body_hash(body)), received)
                if cursor is not None and answer.message.after != cursor:
                    raise EventGapError(
                        f"batch {len(received) - 1} continues from cursor "
                        f"{answer.message.after}, not {cursor}"
                    )
                cursor = answer.message.cursor
                yield answer
            trailers = call.trailing_metadata()
        except grpc.RpcError as exc:
            raise error_from(exc, client.credentials.gateway_jwks) from None
        return client.check_receipt(
            trailers, jti, body_hash(body), body_hash(".".join(received).encode())
        )

    def _batch(
        self, envelope: epb.SubscribeResponse, call: _Call, received: list[str]
    ) -> Answer[epb.NotificationBatch]:
        seq = len(received)
        sh = body_hash(envelope.batch)
        try:
            claims = receipts.verify(envelope.receipt, self.client.credentials.gateway_jwks)
        except ReceiptError as exc:
            raise _receipt_error(f"batch {seq}: {exc}") from None
        if (claims.get("jti"), claims.get("seq"), claims.get("rh"), claims.get("sh")) != (
            call.jti,
            seq,
            call.rh,
            sh,
        ):
            raise _receipt_error(f"batch {seq}: the receipt does not cover this batch")
        received.append(sh)
        batch = epb.NotificationBatch.FromString(envelope.batch)
        return Answer(batch, claims, tuple(batch.withheld.paths), envelope.receipt)

    def _call(self, name: str, request: Message, response: type[M]) -> Answer[M]:
        return self.client.call(name, request, response, self.purpose, REGISTRY_EVENTS)


def _receipt_error(message: str) -> JisrError:
    return JisrError(grpc.StatusCode.DATA_LOSS, "RECEIPT_INVALID", message)


def local_digest(events: Iterable[epb.ChangeEvent]) -> tuple[Digest, dict[str, Digest]]:
    """The digest of received events, in the order received (cursor order), each event id
    counted once however often it was delivered (at least once), to compare with
    `Events.digest` over the same range."""
    seen: set[str] = set()
    unique: list[tuple[str, str]] = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            unique.append((event.source, event.event_id))
    return digests(unique)
