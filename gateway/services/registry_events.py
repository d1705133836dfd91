"""The RegistryEvents service: subscriptions to registry change events, and their delivery.

An institution creates a subscription to event types for a purpose (its Subscribe grant
for that purpose must allow every type), optionally restricted to subjects it names, then
reads it with Subscribe from a cursor: the acknowledged one unless it names another. Every
call passes through the engine's authentication, policy, audit record and receipt; each
batch of notifications is its own record and receipt (gateway/engine/notify.py). The log
and the cursors are gateway/events/store.py's, shared by replicas (docs/events.md).

A subscription is its creator's alone: another institution naming it, or a name that does
not exist, get the same SUBSCRIPTION_NOT_FOUND, so nothing is learnt of others'
subscriptions. The Subscribe grant is read again on every call, so a policy narrowed since
the subscription was made narrows what it delivers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from adapters.base import FetchContext
from gateway.base import event_types
from gateway.base.errors import ExchangeError, Reason, invalid
from gateway.base.times import now_us, timestamp
from gateway.engine.call import Engine, UnaryMethod
from gateway.engine.notify import Gone, NotifyMethod
from gateway.events import model
from gateway.events.model import Bounds, Page, StoredEvent, Subscription
from gateway.events.store import EventStore
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pipeline import validation
from gateway.pipeline.query import Key
from gateway.security.policy import SUBSCRIBE, Grant, Policy
from gateway.services.binding import service_handler

SERVICE = epb.DESCRIPTOR.services_by_name["RegistryEvents"].full_name
DEFAULT_BATCH = 500
MAX_BATCH = 1000
# How far one read of the log looks ahead for a subscription's events: a narrow
# subscription catching up over many others' events reads the log in these steps.
SCAN = 10_000
# The widest range one GetDigest may cover.
MAX_DIGEST_RANGE = 1_000_000


@dataclass(frozen=True)
class Delivery:
    """How a followed stream waits and when it ends.

    `poll_s`: how often a caught-up stream looks for new events; `empty_every_s`: a
    stream whose reads found none of its events tells the subscriber its cursor moved at
    most this often; `max_stream_s`: a followed stream ends (OK) after this long, and the
    subscriber resumes from its cursor, so no stream holds a worker for ever."""

    poll_s: float = 0.2
    empty_every_s: float = 5.0
    max_stream_s: float = 3600.0


def subscription_message(sub: Subscription) -> epb.Subscription:
    return epb.Subscription(
        subscription_id=sub.subscription_id,
        institution=sub.institution,
        purpose=sub.purpose,
        types=[event_types.number(t) for t in sub.types],
        subjects=sub.subjects,
        start_cursor=sub.start_cursor,
        acknowledged=sub.acknowledged,
        created=timestamp(sub.created_us),
        cancelled=timestamp(sub.cancelled_us),
    )


def notification(event: StoredEvent) -> epb.Notification:
    return epb.Notification(cursor=event.position, event=epb.ChangeEvent.FromString(event.payload))


def subject_key(event: StoredEvent) -> Key:
    """Whose consent a notification needs: its household's, else its person's."""
    if event.household_id:
        return ("household_id", event.household_id)
    return ("idcs", event.idcs)


def _not_found() -> ExchangeError:
    return ExchangeError(Reason.SUBSCRIPTION_NOT_FOUND, "no subscription of yours has this id")


def _types(values: Any) -> tuple[str, ...]:
    """The requested types, known and each once, or INVALID_ARGUMENT naming `types`."""
    names: list[str] = []
    for value in values:
        try:
            name = event_types.name(int(value))
        except KeyError:
            raise invalid(
                Reason.INVALID_EVENT_TYPE, "unknown or unspecified event type", "types"
            ) from None
        if name in names:
            raise invalid(Reason.INVALID_EVENT_TYPE, "an event type is listed twice", "types")
        names.append(name)
    if not names:
        raise invalid(Reason.INVALID_EVENT_TYPE, "name at least one event type", "types")
    return tuple(names)


def _subjects(subjects: Any) -> list[tuple[str, str]]:
    if len(subjects) > model.MAX_SUBJECTS:
        raise invalid(
            Reason.TOO_MANY_SUBJECTS, f"at most {model.MAX_SUBJECTS} subjects", "subjects"
        )
    stored: set[tuple[str, str]] = set()
    for subject in subjects:
        kind, value = validation.subject(subject)
        stored.add((model.PERSON if kind == "idcs" else model.HOUSEHOLD, value))
    return sorted(stored)


class RegistryEventsService:
    """Subscriptions and their delivery, behind the engine."""

    def __init__(
        self,
        store: EventStore,
        policy: Policy,
        *,
        delivery: Delivery | None = None,
        clock: Callable[[], int] = now_us,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.policy = policy
        self.delivery = delivery or Delivery()
        self.clock = clock
        self.sleep = sleep

    # -- what the caller may do ------------------------------------------------------------

    def _allowed(self, ctx: FetchContext) -> frozenset[str]:
        """The types the caller's Subscribe grant for this purpose allows."""
        grant = self.policy.authorize(ctx.requester, SUBSCRIBE, ctx.purpose)
        if grant is None:
            raise ExchangeError(
                Reason.PURPOSE_NOT_ALLOWED,
                "this institution may not receive events for this purpose",
            )
        return grant.events

    def _owned(self, subscription_id: str, ctx: FetchContext) -> Subscription:
        """The caller's subscription, for the purpose it was made for."""
        sub: Subscription | None = self._read(lambda: self.store.subscription(subscription_id))
        if sub is None or sub.institution != ctx.requester:
            raise _not_found()
        if sub.purpose != ctx.purpose:
            raise invalid(
                Reason.PURPOSE_MISMATCH,
                "the subscription was made for another purpose",
                "purpose",
            )
        return sub

    def _read(self, what: Callable[[], Any]) -> Any:
        """A store call; a store out of reach is UNAVAILABLE, the caller's to retry."""
        try:
            return what()
        except (ValueError, KeyError):
            raise
        except Exception as exc:
            raise ExchangeError(
                Reason.EVENTS_UNAVAILABLE, "the event log cannot be reached; retry later"
            ) from exc

    def _page(
        self, after: int, through: int, types: tuple[str, ...], restricted: str | None, limit: int
    ) -> Page:
        page: Page = self._read(
            lambda: self.store.page(
                after, through=through, types=types, subscription_id=restricted, limit=limit
            )
        )
        return page

    # -- the methods ----------------------------------------------------------------------

    def create(
        self, request: epb.CreateSubscriptionRequest, ctx: FetchContext
    ) -> epb.CreateSubscriptionResponse:
        types = _types(request.types)
        allowed = self._allowed(ctx)
        if not set(types) <= allowed:
            raise ExchangeError(
                Reason.EVENT_TYPE_NOT_ALLOWED,
                "your grant for this purpose does not cover every event type asked for",
                {"allowed": ",".join(t for t in event_types.NAMES if t in allowed)},
            )
        subjects = _subjects(request.subjects)
        bounds: Bounds = self._read(self.store.bounds)
        sub = Subscription(
            subscription_id=model.new_subscription_id(),
            institution=ctx.requester,
            purpose=ctx.purpose,
            types=types,
            subjects=len(subjects),
            start_cursor=bounds.floor if request.from_oldest else bounds.head,
            acknowledged=bounds.floor if request.from_oldest else bounds.head,
            created_us=self.clock(),
        )
        self._read(lambda: self.store.create_subscription(sub, subjects))
        return epb.CreateSubscriptionResponse(subscription=subscription_message(sub))

    def get(
        self, request: epb.GetSubscriptionRequest, ctx: FetchContext
    ) -> epb.GetSubscriptionResponse:
        sub = self._owned(request.subscription_id, ctx)
        return epb.GetSubscriptionResponse(subscription=subscription_message(sub))

    def cancel(
        self, request: epb.CancelSubscriptionRequest, ctx: FetchContext
    ) -> epb.CancelSubscriptionResponse:
        sub = self._owned(request.subscription_id, ctx)
        done = self._read(lambda: self.store.cancel(sub.subscription_id, self.clock()))
        return epb.CancelSubscriptionResponse(subscription=subscription_message(done or sub))

    def acknowledge(
        self, request: epb.AcknowledgeRequest, ctx: FetchContext
    ) -> epb.AcknowledgeResponse:
        sub = self._owned(request.subscription_id, ctx)
        bounds: Bounds = self._read(self.store.bounds)
        if request.cursor > bounds.head:
            raise model.out_of_range("the cursor is beyond the log's head", bounds)
        acked = self._read(lambda: self.store.acknowledge(sub.subscription_id, request.cursor))
        return epb.AcknowledgeResponse(acknowledged=acked)

    def digest(self, request: epb.GetDigestRequest, ctx: FetchContext) -> epb.GetDigestResponse:
        sub = self._owned(request.subscription_id, ctx)
        types = self._delivered(sub, ctx)
        bounds: Bounds = self._read(self.store.bounds)
        if request.through < request.after:
            raise invalid(Reason.MALFORMED_REQUEST, "`through` is below `after`", "through")
        if request.through - request.after > MAX_DIGEST_RANGE:
            raise invalid(
                Reason.MALFORMED_REQUEST,
                f"a digest covers at most {MAX_DIGEST_RANGE} cursors",
                "through",
            )
        model.check_cursor(request.after, bounds)
        if request.through > bounds.head:
            raise model.out_of_range("`through` is beyond the log's head", bounds)
        pairs = (
            (e.source, e.event_id) for e in self._events(sub, types, request.after, request.through)
        )
        total, per_source = model.digests(pairs)
        return epb.GetDigestResponse(
            after=request.after,
            through=request.through,
            count=total.count,
            sha256=total.sha256,
            sources=[
                epb.SourceDigest(source=source, count=d.count, sha256=d.sha256)
                for source, d in sorted(per_source.items())
            ],
        )

    def _events(
        self, sub: Subscription, types: tuple[str, ...], after: int, through: int
    ) -> Iterator[StoredEvent]:
        restricted = sub.subscription_id if sub.subjects else None
        while after < through:
            page = self._page(after, min(through, after + SCAN), types, restricted, MAX_BATCH * 5)
            yield from page.events
            after = page.cursor

    def _delivered(self, sub: Subscription, ctx: FetchContext) -> tuple[str, ...]:
        """The subscription's types the caller's Subscribe grant still allows."""
        return _still_allowed(sub, self._allowed(ctx))

    # -- delivery -------------------------------------------------------------------------

    def open(
        self, request: epb.SubscribeRequest, ctx: FetchContext, grant: Grant, gone: Gone
    ) -> Iterator[tuple[epb.NotificationBatch, list[Key]]]:
        """Check the subscription and the cursor (before anything is recorded), then the
        feed."""
        sub = self._owned(request.subscription_id, ctx)
        if not sub.active:
            raise ExchangeError(Reason.SUBSCRIPTION_CANCELLED, "the subscription was cancelled")
        types = _still_allowed(sub, grant.events)
        size = request.max_batch or DEFAULT_BATCH
        if size > MAX_BATCH:
            raise invalid(
                Reason.MALFORMED_REQUEST, f"max_batch is at most {MAX_BATCH}", "max_batch"
            )
        after = request.after if request.HasField("after") else sub.acknowledged
        model.check_cursor(after, self._read(self.store.bounds))
        return self._feed(
            sub, types=types, after=after, size=size, follow=request.follow, gone=gone
        )

    def _feed(
        self,
        sub: Subscription,
        *,
        types: tuple[str, ...],
        after: int,
        size: int,
        follow: bool,
        gone: Gone,
    ) -> Iterator[tuple[epb.NotificationBatch, list[Key]]]:
        """Batches from `after` on: each with notifications, or saying the cursor moved
        (at the end of a catch-up, and while following at most every `empty_every_s`)."""
        restricted = sub.subscription_id if sub.subjects else None
        started = time.monotonic()
        sent_at, sent_cursor, sent_any = started, after, False
        while True:
            bounds: Bounds = self._read(self.store.bounds)
            model.check_cursor(after, bounds)  # pruned under a slow subscriber: say so
            page = self._page(after, min(bounds.head, after + SCAN), types, restricted, size)
            caught_up = page.cursor >= page.head
            moved = page.cursor > sent_cursor
            quiet = time.monotonic() - sent_at >= self.delivery.empty_every_s
            # A catch-up always ends with a batch saying where the log's head is, even
            # when nothing came since the cursor: the subscriber learns it is caught up.
            closing = caught_up and not follow and (moved or not sent_any)
            if page.events or closing or (moved and caught_up and quiet):
                yield _batch(sub, page), [subject_key(e) for e in page.events]
                sent_at, sent_cursor, sent_any = time.monotonic(), page.cursor, True
            after = page.cursor
            if caught_up:
                if not follow or time.monotonic() - started >= self.delivery.max_stream_s:
                    return
                self.sleep(self.delivery.poll_s)
                ended = gone()
                if ended is not None:
                    raise ended


def _still_allowed(sub: Subscription, allowed: frozenset[str]) -> tuple[str, ...]:
    """The subscription's types a grant (read again at each call) still allows."""
    types = tuple(t for t in sub.types if t in allowed)
    if not types:
        raise ExchangeError(
            Reason.EVENT_TYPE_NOT_ALLOWED,
            "your grant for this purpose no longer covers any of this subscription's types",
        )
    return types


def _batch(sub: Subscription, page: Page) -> epb.NotificationBatch:
    return epb.NotificationBatch(
        subscription_id=sub.subscription_id,
        after=page.after,
        cursor=page.cursor,
        head=page.head,
        notifications=[notification(e) for e in page.events],
    )


def methods(service: RegistryEventsService) -> Mapping[str, UnaryMethod[Any, Any] | NotifyMethod]:
    """The service's method table over the engine (gateway/services/binding.py)."""
    return {
        "CreateSubscription": UnaryMethod(
            epb.CreateSubscriptionRequest, service.create, blocking=True
        ),
        "Subscribe": NotifyMethod(service.open),
        "Acknowledge": UnaryMethod(epb.AcknowledgeRequest, service.acknowledge, blocking=True),
        "GetDigest": UnaryMethod(epb.GetDigestRequest, service.digest, blocking=True),
        "GetSubscription": UnaryMethod(epb.GetSubscriptionRequest, service.get, blocking=True),
        "CancelSubscription": UnaryMethod(
            epb.CancelSubscriptionRequest, service.cancel, blocking=True
        ),
    }


def handler(engine: Engine, service: RegistryEventsService) -> grpc.GenericRpcHandler:
    """RegistryEvents behind the engine's authentication, policy and audit."""
    return service_handler(engine, SERVICE, methods(service))
