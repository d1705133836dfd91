"""DCI `notify`: registry events pushed to the subscribers that asked through the facade.

Each round (every `poll_s`), for each standing subscription (standing.py) whose cursor is
behind the event log's head, the notifier opens the subscription's feed through the
engine (gateway/engine/notify.py: the Subscribe grant, consent screening, projection to
the grant's fields, one audit record and one receipt per batch), exactly as a gRPC
Subscribe stream would, under the authority the subscriber signed when it subscribed.
Each batch with notifications is posted to the subscriber's `notify` address as the
standard's envelope, signed by the gateway; the cursor is acknowledged only once the
subscriber answered 2xx, so a notification is delivered at least once (its
`reference_id` is its cursor, for de-duplication). A subscriber that does not answer
keeps its events for the next round; it holds one of the notifier's threads for at most
one timeout, never the others' deliveries (docs/dci.md, "Subscriptions").
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from google.protobuf.json_format import MessageToDict

from gateway.base.errors import Reason
from gateway.base.jws import body_hash
from gateway.base.wire import REGISTRY_EVENTS, method_path
from gateway.dci import envelopes
from gateway.dci.access import Issuer
from gateway.dci.standing import Standing, Standings
from gateway.engine.call import Answered, Engine, Invocation, Refused
from gateway.engine.notify import notification_stream
from gateway.engine.steps import drive
from gateway.events.store import EventStore
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.security.tokens import RequestClaims

log = logging.getLogger("jisr.dci.notify")

SUBSCRIBE = method_path(REGISTRY_EVENTS, "Subscribe")
ACKNOWLEDGE = method_path(REGISTRY_EVENTS, "Acknowledge")
WORKERS = 8
MAX_BATCH = 100
NOTIFY_TIMEOUT_S = 5.0  # one attempt per round: the next round tries again
Post = Callable[[str, dict[str, Any]], int]


class Notifier:
    """The delivery rounds, on a thread of their own, each subscription on a worker."""

    def __init__(
        self,
        engine: Engine,
        events: Mapping[str, Any],
        store: EventStore,
        standings: Standings,
        issuer: Issuer,
        *,
        post: Post,
        poll_s: float = 1.0,
    ) -> None:
        self.engine, self.events, self.store = engine, events, store
        self.standings, self.issuer, self.post = standings, issuer, post
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="dci-notify")
        self._busy: dict[str, Future[None]] = {}
        self._thread = threading.Thread(target=self._rounds, name="dci-notifier", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _rounds(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._round()
            except Exception as exc:  # the log out of reach: the next round tries again
                log.warning("notify round failed: %s", type(exc).__name__)

    def _round(self) -> None:
        head = self.store.bounds().head
        for standing in self.standings.all():
            running = self._busy.get(standing.subscription_id)
            if running is not None and not running.done():
                continue  # its receiver is still answering the previous round
            sub = self.store.subscription(standing.subscription_id)
            if sub is None or not sub.active:
                self.standings.remove(standing.subscription_id)
            elif sub.acknowledged < head:
                self._busy[standing.subscription_id] = self._pool.submit(self.deliver, standing)

    def deliver(self, standing: Standing) -> None:
        """One pass over the subscription's feed: each batch posted, then acknowledged."""
        request = epb.SubscribeRequest(
            purpose=standing.purpose, subscription_id=standing.subscription_id,
            follow=False, max_batch=MAX_BATCH,
        )  # fmt: skip
        raw = request.SerializeToString()
        stream = notification_stream(
            self.engine, self._invocation(standing, SUBSCRIBE, raw), raw, self.events["Subscribe"]
        )
        try:
            while True:
                response = epb.SubscribeResponse.FromString(next(stream))
                batch = epb.NotificationBatch.FromString(response.batch)
                if batch.notifications and not self._posted(standing, batch, response.receipt):
                    stream.close()  # recorded as ended; the events wait for the next round
                    return
                self._acknowledge(standing, batch.cursor)
        except StopIteration as end:
            outcome = end.value
            if isinstance(outcome, Refused) and outcome.error.reason in _GONE:
                self.standings.remove(standing.subscription_id)

    def _posted(self, standing: Standing, batch: epb.NotificationBatch, receipt: str) -> bool:
        now = time.time()
        message = {
            "transaction_id": uuid.uuid4().hex,
            "notify_event": [
                {
                    "reference_id": str(n.cursor),
                    "timestamp": envelopes.timestamp(now),
                    "data": {
                        "version": envelopes.VERSION,
                        "reg_type": "jisr:RegistryEvents",
                        "reg_record_type": "jisr:ChangeEvent",
                        "reg_records": MessageToDict(n.event, preserving_proto_field_name=True),
                    },
                }
                for n in batch.notifications
            ],
        }
        meta = {
            "subscription_code": standing.subscription_id,
            "after": batch.after,
            "cursor": batch.cursor,
            "jisr_receipt": receipt,
        }
        count = len(batch.notifications)
        outcome = envelopes.Outcome(count, count, None, meta)
        body = envelopes.signed(
            self.issuer, standing.institution, "notify", message, outcome, now=now
        )
        try:
            status = self.post(standing.notify_uri, body)
        except Exception as exc:
            log.info("notify not delivered: %s", type(exc).__name__)
            return False
        return 200 <= status < 300

    def _acknowledge(self, standing: Standing, cursor: int) -> None:
        request = epb.AcknowledgeRequest(
            purpose=standing.purpose, subscription_id=standing.subscription_id, cursor=cursor
        )
        raw = request.SerializeToString()
        inv = self._invocation(standing, ACKNOWLEDGE, raw)
        outcome = drive(self.engine.unary(inv, raw, self.events["Acknowledge"]))
        if not isinstance(outcome, Answered):
            log.info("acknowledge refused: %s", outcome.error.reason.value)

    def _invocation(self, standing: Standing, method: str, raw: bytes) -> Invocation:
        """The subscriber's standing authority for one call of the notifier's."""
        now = int(time.time())
        claims = RequestClaims(
            iss=standing.institution,
            sub=standing.client_id[:64],
            jti=f"dci-notify-{uuid.uuid4().hex}",
            purpose=standing.purpose,
            method=method,
            rh=body_hash(raw),
            iat=now,
            exp=now + 300,
            kid="",
        )
        return Invocation(method, standing.institution, (), verified=claims)


# A subscription the gateway no longer serves: the facade stops delivering it.
_GONE = {Reason.SUBSCRIPTION_CANCELLED, Reason.SUBSCRIPTION_NOT_FOUND, Reason.PURPOSE_NOT_ALLOWED}
