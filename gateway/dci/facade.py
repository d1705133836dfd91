"""The DCI facade's work, free of HTTP: a request's bytes and bearer in, a reply out.

Every DCI search item is a call through the same engine as gRPC (gateway/engine/call.py):
the facade only authenticates the transport (its bearer tokens, gateway/dci/access.py),
checks the envelope against the standard's schemas (schemas.py) and its signature by the
institution's own key (signature.py), and hands the engine the claims it verified
(`Invocation.verified`) with the equivalent RegistryExchange request. Policy, consent,
minimisation, the durable audit record and the signed receipt are the engine's, so a DCI
search and its gRPC equivalent leave equivalent records (docs/dci.md, "Same rules").
Refusals before any item is asked are recorded as the gateway's door refusals are.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from gateway.base import strict_json
from gateway.base.errors import ExchangeError, Reason
from gateway.base.jws import Keys, TokenError, body_hash
from gateway.base.status import code_of
from gateway.base.wire import REGISTRY_EVENTS, REGISTRY_EXCHANGE, method_path
from gateway.dci import access, callbacks, envelopes, schemas, signature, subscribe
from gateway.dci.clients import Clients
from gateway.dci.envelopes import VERSION, Reply
from gateway.dci.search import Lookup, Rejected, plan
from gateway.dci.standing import Standing, Standings
from gateway.dci.transactions import Transactions
from gateway.engine.call import Answered, Engine, Invocation, Outcome, UnaryMethod
from gateway.engine.steps import drive
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.security.tokens import RequestClaims

log = logging.getLogger("jisr.dci")

MAX_BODY_BYTES = 256 * 1024
MAX_CALLS_PER_INSTITUTION = 1  # requests of one institution running at once, on a thread
MAX_OPEN_PER_INSTITUTION = 256  # running and waiting their turn (as the gateway's door)
REQUEST_BUDGET_S = 30.0  # a search's time, all items together (remote registries wait within it)
MAX_ITEMS = 20  # search_request items per message: more is rjct.total_count.limit_exceeded
SYNC_SEARCH = "/registry/sync/search"
SEARCH = "/registry/search"
SYNC_TXN_STATUS = "/registry/sync/txn/status"
TXN_STATUS = "/registry/txn/status"
SUBSCRIBE = "/registry/subscribe"
UNSUBSCRIBE = "/registry/unsubscribe"
CREATE_SUBSCRIPTION = method_path(REGISTRY_EVENTS, "CreateSubscription")
CANCEL_SUBSCRIPTION = method_path(REGISTRY_EVENTS, "CancelSubscription")
# The method a refusal before any item is asked is recorded under, by path.
DOOR_METHODS = {
    SYNC_SEARCH: "/dci.v1.SocialRegistry/SyncSearch",
    SEARCH: "/dci.v1.SocialRegistry/Search",
    SYNC_TXN_STATUS: "/dci.v1.SocialRegistry/SyncTxnStatus",
    TXN_STATUS: "/dci.v1.SocialRegistry/TxnStatus",
    SUBSCRIBE: "/dci.v1.SocialRegistry/Subscribe",
    UNSUBSCRIBE: "/dci.v1.SocialRegistry/Unsubscribe",
}
# What the compliance suite sends in place of a signature; accepted only in conformance mode.
UNSIGNED = frozenset({"", "unsigned", "unsigned-stub"})
_SUB = re.compile(r"[^A-Za-z0-9._:@-]")


class RefusedError(Exception):
    """The whole request is refused: HTTP status, the standard's `err.*` code, and the
    Jisr reason its audit record names."""

    def __init__(self, status: int, code: str, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.reason, self.message = status, code, reason, message


@dataclass
class Facade:
    """What a DCI request is checked against and run through; built once at start."""

    engine: Engine
    lookups: Mapping[str, UnaryMethod[Any, Any]]
    issuer: access.Issuer
    clients: Clients
    keys: Keys
    gateway_jwks: dict[str, Any]
    conformance_client: str | None = None
    clock: Callable[[], float] = time.time
    schemas: schemas.Schemas = field(default_factory=schemas.load)
    events: Mapping[str, Any] = field(default_factory=dict)  # RegistryEvents' method table
    standings: Standings = field(default_factory=lambda: Standings(None))
    transactions: Transactions = field(default_factory=Transactions)
    deliveries: callbacks.Deliveries = field(default_factory=callbacks.Deliveries)

    # -- tokens and keys ---------------------------------------------------------------

    def token(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> Reply:
        """The client-credentials grant (RFC 6749 §4.4): a bearer token, or its error."""
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "grant_type: client_credentials")
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        client = self.clients.authenticate(client_id, secret)
        if client is None:
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
        token = self.issuer.issue(client, int(self.clock()))
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": str(self.issuer.lifetime),
        }
        return Reply(200, body, {"Cache-Control": "no-store"})

    def jwks(self) -> Reply:
        """The gateway's public keys, which sign responses, callbacks and tokens."""
        keys = [{"use": "sig", "alg": "ES256", **k} for k in self.gateway_jwks["keys"]]
        return Reply(200, {"keys": keys})

    # -- search ------------------------------------------------------------------------

    def sync_search(self, raw: bytes, authorization: str | None) -> Reply:
        """`/registry/sync/search`: each item through the engine, one signed envelope."""
        try:
            asked = self._admit(SYNC_SEARCH, raw, authorization)
            answered = self._searched(asked)
        except _ReplayedError as replay:
            return self._replayed(replay)
        except RefusedError as refusal:
            return self.refused(refusal)
        now = self.clock()
        body = envelopes.signed(
            self.issuer, asked.caller.institution, "on-search",
            _search_message(asked, envelopes.new_id(), answered, now), answered.outcome, now=now,
        )  # fmt: skip
        return Reply(200, body)

    def _replayed(self, replay: _ReplayedError) -> Reply:
        now = self.clock()
        message = {
            "transaction_id": replay.asked.get("transaction_id", ""),
            "correlation_id": envelopes.new_id(),
            "search_response": [],
        }
        total = len(replay.asked.get("search_request") or [])
        outcome = envelopes.Outcome(total, 0, _DUPLICATE)
        institution = replay.caller.institution
        body = envelopes.signed(self.issuer, institution, "on-search", message, outcome, now=now)
        return Reply(200, body)

    def search(self, raw: bytes, authorization: str | None) -> Reply:
        """`/registry/search`: checked now, ACKed (202), answered by an `on-search`
        callback to the client's registered address."""
        try:
            asked = self._admit(SEARCH, raw, authorization)
            target = self._callback(asked, SEARCH)
        except RefusedError as refusal:
            return self.refused(refusal)
        correlation = envelopes.new_id()
        transaction = str(asked.message["transaction_id"])
        references = [str(i.get("reference_id")) for i in asked.message["search_request"]]
        self.transactions.received(asked.caller.institution, transaction, correlation, references)

        def later() -> tuple[str, dict[str, Any]] | None:
            try:
                answered = self._searched(asked)
            except RefusedError as refusal:
                answered = _Answered([], {}, _outcome(asked, [], ("", refusal.message)))
            self.transactions.answered(asked.caller.institution, transaction, answered.answers)
            if target is None:
                return None
            now = self.clock()
            message = _search_message(asked, correlation, answered, now)
            return target, envelopes.signed(
                self.issuer, asked.caller.institution, "on-search", message, answered.outcome,
                now=now,
            )  # fmt: skip

        return self._accepted(asked, correlation, later)

    # -- transaction status -------------------------------------------------------------

    def sync_txn_status(self, raw: bytes, authorization: str | None) -> Reply:
        """`/registry/sync/txn/status`: the statuses of the caller's own searches."""
        try:
            asked = self._admit(SYNC_TXN_STATUS, raw, authorization)
        except RefusedError as refusal:
            return self.refused(refusal)
        now = self.clock()
        body = envelopes.signed(
            self.issuer, asked.caller.institution, "txn-on-status",
            self._status_message(asked, envelopes.new_id(), now), _outcome(asked, [1], None),
            now=now,
        )  # fmt: skip
        return Reply(200, body)

    def txn_status(self, raw: bytes, authorization: str | None) -> Reply:
        """`/registry/txn/status`: ACKed, answered by a `txn/on-status` callback."""
        try:
            asked = self._admit(TXN_STATUS, raw, authorization)
            target = self._callback(asked, TXN_STATUS)
        except RefusedError as refusal:
            return self.refused(refusal)
        correlation = envelopes.new_id()

        def later() -> tuple[str, dict[str, Any]] | None:
            if target is None:
                return None
            now = self.clock()
            message = self._status_message(asked, correlation, now)
            return target, envelopes.signed(
                self.issuer, asked.caller.institution, "txn-on-status", message,
                _outcome(asked, [1], None), now=now,
            )  # fmt: skip

        return self._accepted(asked, correlation, later)

    def _status_message(self, asked: _Asked, correlation: str, now: float) -> dict[str, Any]:
        request = asked.message["txnstatus_request"]
        found = self.transactions.find(
            asked.caller.institution, request["attribute_type"], request["attribute_value"]
        )
        asked_for = request["attribute_value"]
        txn = found[0] if found else None
        statuses = [
            {"reference_id": ref, "timestamp": envelopes.timestamp(now), **status}
            for ref, status in (txn.statuses.items() if txn else ())
        ]
        return {
            "transaction_id": asked.message["transaction_id"],
            "correlation_id": correlation,
            "txnstatus_response": {
                "txn_type": "search",
                "txn_status": {
                    "transaction_id": txn.transaction_id if txn else str(asked_for)[:99],
                    "correlation_id": txn.correlation_id if txn else correlation,
                    "search_response": statuses,
                },
            },
        }

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, raw: bytes, authorization: str | None) -> Reply:
        """`/registry/subscribe`: ACKed; each item a CreateSubscription through the engine,
        answered by an `on-subscribe` callback; events then pushed to `notify`."""
        try:
            asked = self._admit(SUBSCRIBE, raw, authorization)
            target = self._callback(asked, SUBSCRIBE)
            notify_uri = self._notify_address(asked, target)
        except RefusedError as refusal:
            return self.refused(refusal)
        correlation = envelopes.new_id()

        def later() -> tuple[str, dict[str, Any]] | None:
            items = asked.message["subscribe_request"]
            answers = [self._subscribed(asked, i, item, notify_uri) for i, item in enumerate(items)]
            message = {
                "transaction_id": asked.message["transaction_id"],
                "correlation_id": correlation,
                "subscribe_response": answers,
            }
            outcome = envelopes.Outcome(len(items), len(answers))
            now = self.clock()
            assert target is not None  # _notify_address refused a subscription without one
            return target, envelopes.signed(
                self.issuer, asked.caller.institution, "on-subscribe", message, outcome, now=now
            )

        return self._accepted(asked, correlation, later)

    def _subscribed(
        self, asked: _Asked, index: int, item: Mapping[str, Any], notify_uri: str
    ) -> dict[str, Any]:
        at = envelopes.timestamp(self.clock())
        reference = str(item["reference_id"])
        planned = subscribe.plan(item["subscribe_criteria"])
        if isinstance(planned, Rejected):
            return subscribe.refused(reference, at, planned.code, planned.message)
        outcome = self.through_engine(
            asked, index, CREATE_SUBSCRIPTION, self.events["CreateSubscription"],
            request=planned.request, purpose=planned.purpose,
        )  # fmt: skip
        if not isinstance(outcome, Answered):
            reason = outcome.error.reason.value
            said = f"{reason}: {outcome.error.message}"
            return subscribe.refused(reference, at, subscribe.reason_code(reason), said)
        made = epb.CreateSubscriptionResponse.FromString(outcome.body).subscription
        caller = asked.caller
        standing = Standing(
            made.subscription_id, caller.institution, caller.client_id, planned.purpose, notify_uri
        )
        self.standings.add(standing)
        return subscribe.subscribed(reference, made.subscription_id, at)

    def unsubscribe(self, raw: bytes, authorization: str | None) -> Reply:
        """`/registry/unsubscribe`: ACKed; each code cancelled through the engine,
        answered by an `on-unsubscribe` callback."""
        try:
            asked = self._admit(UNSUBSCRIBE, raw, authorization)
            target = self._callback(asked, UNSUBSCRIBE)
        except RefusedError as refusal:
            return self.refused(refusal)
        correlation = envelopes.new_id()

        def later() -> tuple[str, dict[str, Any]] | None:
            codes = [str(c) for c in asked.message["subscription_codes"]]
            done = [c for i, c in enumerate(codes) if self._cancelled(asked, i, c)]
            message: dict[str, Any] = {
                "transaction_id": asked.message["transaction_id"],
                "correlation_id": correlation,
                "timestamp": envelopes.timestamp(self.clock()),
                "status": "succ" if len(done) == len(codes) else "rjct",
                "subscription_status": [{"code": c, "status": "unsubscribe"} for c in done],
            }
            if len(done) != len(codes):
                message["status_reason_code"] = "rjct.subscription_code.invalid"
                message["status_reason_message"] = (
                    f"{len(codes) - len(done)} code(s) name no subscription of yours"
                )
            if target is None:
                return None
            outcome = envelopes.Outcome(len(codes), len(done))
            now = self.clock()
            return target, envelopes.signed(
                self.issuer, asked.caller.institution, "on-unsubscribe", message, outcome,
                now=now,
            )  # fmt: skip

        return self._accepted(asked, correlation, later)

    def _cancelled(self, asked: _Asked, index: int, code: str) -> bool:
        standing = self.standings.get(code)
        if standing is None or standing.institution != asked.caller.institution:
            return False
        request = epb.CancelSubscriptionRequest(purpose=standing.purpose, subscription_id=code)
        outcome = self.through_engine(
            asked, index, CANCEL_SUBSCRIPTION, self.events["CancelSubscription"],
            request=request, purpose=standing.purpose,
        )  # fmt: skip
        if isinstance(outcome, Answered):
            self.standings.remove(code)
            return True
        return False

    def _notify_address(self, asked: _Asked, target: str | None) -> str:
        """Where the subscription's events go: beside its on-subscribe address, the
        `notify` the standard names (…/registry/on-subscribe → …/registry/notify)."""
        if target is None:
            raise RefusedError(
                400, "err.sender_uri.invalid", Reason.MALFORMED_REQUEST,
                "a subscription needs header.sender_uri (its on-subscribe address)",
            )  # fmt: skip
        notify = target.rsplit("/", 1)[0] + "/notify"
        self._callback_allowed(asked, notify, SUBSCRIBE)
        return notify

    # -- admission -------------------------------------------------------------------

    def _admit(self, path: str, raw: bytes, authorization: str | None) -> _Asked:
        """Token, envelope, signature: the request as it may be asked, or RefusedError
        (recorded as a door refusal once the token named the institution)."""
        caller = self._caller(authorization)
        try:
            body = self._parsed(raw)
            # The signature before the schema: a caller without the institution's key
            # cannot make the facade spend on validating what it sends.
            verified = self._signed(body, caller)
            self._valid(path, body)
            self._addressed(body["header"])
            message_id = str(body["header"]["message_id"])
            if not self.engine.security.replay.first_use(
                caller.institution, _jti(message_id, 0) + "-m", verified.expires
            ):
                raise _ReplayedError(caller, body["message"])
        except _ReplayedError:
            self._record(path, caller.institution, Reason.REPLAYED, _DUPLICATE[1])
            raise
        except RefusedError as refusal:
            self._record(path, caller.institution, refusal.reason, refusal.message)
            raise
        header, message = body["header"], body["message"]
        return _Asked(raw, caller, verified, message_id, header, message, path)

    def _record(self, path: str, institution: str, reason: Reason, message: str) -> None:
        """A refusal before (or instead of) any call of the engine's, in the audit trail."""
        error = ExchangeError(reason, message)
        self.engine.refused_at_door(DOOR_METHODS[path], institution, error)

    def _addressed(self, header: Mapping[str, Any]) -> None:
        """`receiver_id`, when given, must be this gateway: the signature then binds the
        envelope to it, as a request token's `aud` does."""
        receiver = header.get("receiver_id")
        if receiver is not None and receiver != self.issuer.gateway_id:
            raise RefusedError(
                400, "err.receiver_id.invalid", Reason.WRONG_AUDIENCE,
                f"header.receiver_id must be this gateway's id, {self.issuer.gateway_id}",
            )  # fmt: skip

    def _callback(self, asked: _Asked, path: str) -> str | None:
        """Where the asynchronous answer goes: `sender_uri`, if the client may receive
        there (none given: no callback, the partner asks txn/status)."""
        uri = asked.header.get("sender_uri")
        if not uri:
            return None
        self._callback_allowed(asked, str(uri), path)
        return str(uri)

    def _callback_allowed(self, asked: _Asked, uri: str, path: str) -> None:
        client = self.clients.get(asked.caller.client_id)
        prefixes = client.callbacks if client is not None else ()
        loopback = asked.caller.client_id == self.conformance_client
        if not callbacks.allowed(uri, prefixes, loopback=loopback):
            why = "header.sender_uri is not a callback address registered for this client"
            error = ExchangeError(Reason.MALFORMED_REQUEST, why)
            self.engine.refused_at_door(DOOR_METHODS[path], asked.caller.institution, error)
            raise RefusedError(400, "err.sender_uri.invalid", Reason.MALFORMED_REQUEST, why)

    def _accepted(
        self,
        asked: _Asked,
        correlation: str,
        later: Callable[[], tuple[str, dict[str, Any]] | None],
    ) -> Reply:
        if not self.deliveries.submit(asked.caller.institution, later):
            return self.refused(
                RefusedError(
                    429,
                    "err.request.too_many_requests",
                    Reason.TOO_MANY_CALLS,
                    "too many answers wait for delivery; retry later",
                )
            )
        return envelopes.ack(correlation, self.clock())

    def _searched(self, asked: _Asked) -> _Answered:
        """Each item through the engine (or the whole message rejected)."""
        items = asked.message["search_request"]
        rejected = _header_reject(asked.header, items)
        if rejected is not None:
            self._record(
                asked.path, asked.caller.institution, Reason.MALFORMED_REQUEST, rejected[1]
            )
        else:
            try:
                answers, receipts = self._search(asked, items)
            except _DuplicateError:
                rejected = _DUPLICATE
            else:
                return _Answered(answers, receipts, _outcome(asked, answers, None, receipts))
        return _Answered([], {}, _outcome(asked, [], rejected))

    def institution_of(self, authorization: str | None) -> str | None:
        """The institution a bearer token names, if it is valid (cached: cheap enough for
        the event loop); None otherwise, and the request's own checks refuse it."""
        try:
            return self._caller(authorization).institution
        except RefusedError:
            return None

    def _caller(self, authorization: str | None) -> access.Access:
        try:
            caller = self.issuer.check(authorization, int(self.clock()))
        except access.AccessError as exc:
            raise RefusedError(
                401, "err.request.unauthorized", Reason.MISSING_SIGNATURE, str(exc)
            ) from None
        client = self.clients.get(caller.client_id)
        if client is None or client.institution != caller.institution:
            raise RefusedError(
                401, "err.request.unauthorized", Reason.MISSING_SIGNATURE, "client removed"
            )
        return caller

    def _parsed(self, raw: bytes) -> dict[str, Any]:
        """The body as strict JSON (no repeated member, no NaN), with a header and a
        message object at least; else a 400."""
        if len(raw) > MAX_BODY_BYTES:
            raise RefusedError(
                413, "err.request.bad", Reason.MESSAGE_TOO_LARGE, "the body is too large"
            )
        try:
            body = strict_json.loads(raw)
        except (ValueError, RecursionError):
            raise RefusedError(
                400, "err.request.bad", Reason.MALFORMED_REQUEST, "the body is not strict JSON"
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("header"), dict):
            raise RefusedError(400, "err.request.bad", Reason.MALFORMED_REQUEST, _NO_HEADER)
        if not isinstance(body.get("message"), dict):
            raise RefusedError(400, "err.request.bad", Reason.MALFORMED_REQUEST, _NO_MESSAGE)
        return body

    def _valid(self, path: str, body: dict[str, Any]) -> None:
        """Valid against the standard's schema for `path`; else a 400 naming where."""
        problems = self.schemas.request(path, body)
        if problems:
            said = "; ".join(f"{p.where or 'body'}: {p.message}" for p in problems[:5])
            raise RefusedError(400, "err.request.bad", Reason.MALFORMED_REQUEST, said[:999])
        if body["header"].get("is_msg_encrypted"):
            raise RefusedError(
                400, "err.encryption.invalid", Reason.MALFORMED_REQUEST,
                "encrypted messages are not accepted: the transport is TLS",
            )  # fmt: skip

    def _signed(self, body: Mapping[str, Any], caller: access.Access) -> signature.Verified:
        """The envelope's signature by the caller's institution (or, in conformance mode,
        none from the one test client)."""
        value, header = body.get("signature"), body["header"]
        if header.get("sender_id") != caller.institution:
            raise RefusedError(
                403, "err.sender_id.invalid", Reason.ISSUER_MISMATCH,
                "header.sender_id is not the institution the token names",
            )  # fmt: skip
        now = self.clock()
        if caller.client_id == self.conformance_client and (value is None or value in UNSIGNED):
            log.warning(
                "conformance mode: unsigned envelope accepted", extra={"client": caller.client_id}
            )
            return signature.Verified(caller.institution, "", "none", int(now), int(now) + 300)
        try:
            return signature.verify(
                value,
                header,
                body["message"],
                institution=caller.institution,
                keys=self.keys,
                now=now,
            )
        except TokenError as exc:
            missing = exc.reason == Reason.MISSING_SIGNATURE
            code = "err.signature.missing" if missing else "err.signature.invalid"
            raise RefusedError(401, code, exc.reason, exc.message) from None

    def _search(
        self, asked: _Asked, items: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        answers: list[dict[str, Any]] = []
        receipts: dict[str, str] = {}
        seen: set[str] = set()
        for index, item in enumerate(items):
            reference = item["reference_id"]
            if reference in seen:
                answers.append(_item(reference, "rjct", "rjct.reference_id.duplicate", "repeated"))
                continue
            seen.add(reference)
            planned = plan(item["search_criteria"])
            if isinstance(planned, Rejected):
                self._record(
                    asked.path, asked.caller.institution, Reason.MALFORMED_REQUEST, planned.message
                )
                answers.append(_item(reference, "rjct", planned.code, planned.message))
                continue
            try:
                answer, receipt = self._ask(asked, index, planned)
            except RefusedError as refusal:
                if not any(a.get("status") == "succ" for a in answers):
                    raise  # nothing answered yet: the request fails as a whole
                said = f"{refusal.reason.value}: {refusal.message}"  # the others stand
                answers.append(_item(reference, "rjct", "rjct.search_criteria.invalid", said))
                continue
            answers.append(answer | {"reference_id": reference})
            if receipt:
                receipts[reference] = receipt
        return answers, receipts

    def through_engine(
        self, asked: _Asked, index: int, method: str, entry: Any, *, request: Message, purpose: str
    ) -> Outcome:
        """Item `index` of an admitted request as the engine's call of `method`, under the
        claims the facade verified: the institution, the client as `sub`, a jti from the
        message id and the item's place, `rh` the hash of the request's exact bytes."""
        caller, verified = asked.caller, asked.verified
        claims = RequestClaims(
            iss=caller.institution,
            sub=_SUB.sub("_", caller.client_id)[:64],
            jti=_jti(asked.message_id, index),
            purpose=purpose,
            method=method,
            rh=body_hash(asked.raw),
            iat=verified.created,
            exp=verified.expires,
            kid=verified.kid,
        )
        deadline = asked.started + REQUEST_BUDGET_S
        invocation = Invocation(
            method,
            caller.institution,
            (),
            remaining=lambda: max(0.0, deadline - time.monotonic()),
            verified=claims,
        )
        return drive(self.engine.unary(invocation, request.SerializeToString(), entry))

    def _ask(self, asked: _Asked, index: int, lookup: Lookup) -> tuple[dict[str, Any], str | None]:
        """One item as the engine's call; its answer and receipt."""
        method = method_path(REGISTRY_EXCHANGE, lookup.method)
        entry = self.lookups[lookup.method]
        outcome = self.through_engine(
            asked, index, method, entry, request=lookup.request, purpose=lookup.purpose
        )
        if isinstance(outcome, Answered):
            found = lookup.records(outcome.body)
            return _found(found, lookup), outcome.receipt
        reason = outcome.error.reason
        if reason == Reason.REPLAYED and index == 0:
            raise _DuplicateError
        if reason == Reason.SUBJECT_NOT_FOUND:
            return _found([], lookup), outcome.receipt
        if code_of(reason) in _WHOLE:
            status, code = _WHOLE[code_of(reason)]
            raise RefusedError(status, code, reason, outcome.error.message)
        said = f"{reason.value}: {outcome.error.message}"
        return _item("", "rjct", "rjct.search_criteria.invalid", said), outcome.receipt

    def refused(self, refusal: RefusedError) -> Reply:
        """The standard's error envelope (an ACK with ERR), its HTTP status."""
        log.info("refused", extra={"code": refusal.code, "reason": refusal.reason.value})
        return envelopes.error(refusal.status, refusal.code, refusal.message, self.clock())


@dataclass(frozen=True, slots=True)
class _Asked:
    """An admitted request: its bytes, caller, signature, message id, header, message."""

    raw: bytes
    caller: access.Access
    verified: signature.Verified
    message_id: str
    header: dict[str, Any]
    message: dict[str, Any]
    path: str
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class _Answered:
    """A search's item answers, receipts by reference id, and its header's outcome."""

    answers: list[dict[str, Any]]
    receipts: dict[str, str]
    outcome: envelopes.Outcome


def _outcome(
    asked: _Asked,
    answers: list[Any],
    rejected: tuple[str, str] | None,
    receipts: dict[str, str] | None = None,
) -> envelopes.Outcome:
    total = asked.header.get("total_count")
    return envelopes.Outcome(
        total if isinstance(total, int) else len(answers),
        len(answers),
        rejected,
        {"jisr_receipts": receipts} if receipts else None,
    )


def _search_message(
    asked: _Asked, correlation: str, answered: _Answered, now: float
) -> dict[str, Any]:
    return {
        "transaction_id": asked.message["transaction_id"],
        "correlation_id": correlation,
        "search_response": [a | {"timestamp": envelopes.timestamp(now)} for a in answered.answers],
    }


_NO_HEADER = "the body must be an object with a header object"
_NO_MESSAGE = "the body must have a message object"


class _ReplayedError(RefusedError):
    """The whole message is a replay, caught before any item is asked: a sync search
    answers it in its header, as the standard's `rjct.message_id.duplicate`; the other
    endpoints with the error envelope (HTTP 409)."""

    def __init__(self, caller: access.Access, message: dict[str, Any]) -> None:
        super().__init__(409, "err.request.bad", Reason.REPLAYED, "rjct.message_id.duplicate")
        self.caller, self.asked = caller, message


class _DuplicateError(Exception):
    """The message_id was used before: the whole message is a replay."""


_DUPLICATE = ("rjct.message_id.duplicate", "this message_id was used before")
# Refusals that fail the whole request rather than one item, by gRPC code.
_WHOLE = {
    14: (503, "err.service.unavailable"),  # UNAVAILABLE: the audit or a registry is down
    4: (504, "err.request.timeout"),  # DEADLINE_EXCEEDED
    8: (429, "err.request.too_many_requests"),  # RESOURCE_EXHAUSTED
    13: (500, "err.service.unavailable"),  # INTERNAL
}


def _header_reject(header: Mapping[str, Any], items: list[Any]) -> tuple[str, str] | None:
    if header.get("version", VERSION) != VERSION:
        return "rjct.version.invalid", f"only version {VERSION} is served"
    if header["total_count"] != len(items):
        return "rjct.total_count.invalid", "total_count is not the number of search_request items"
    if len(items) > MAX_ITEMS:
        return "rjct.total_count.limit_exceeded", f"at most {MAX_ITEMS} items per message"
    return None


def _item(reference: str, status: str, code: str, message: str) -> dict[str, Any]:
    answer = {"status": status, "status_reason_code": code, "status_reason_message": message[:999]}
    return answer | ({"reference_id": reference} if reference else {})


def _found(found: list[dict[str, Any]], lookup: Lookup) -> dict[str, Any]:
    return {
        "status": "succ",
        "data": {"version": VERSION, "reg_records": found},
        "pagination": {
            "page_size": lookup.page_size,
            "page_number": lookup.page_number,
            "total_count": len(found),
        },
    }


def _jti(message_id: str, index: int) -> str:
    """The replay key of item `index`: a message_id is used once, whatever its shape."""
    raw_id = message_id.encode("utf-8", "surrogatepass")
    digest = base64.urlsafe_b64encode(hashlib.sha256(raw_id).digest())
    return f"dci-{digest.decode().rstrip('=')}-{index}"


def _oauth_error(status: int, error: str, description: str) -> Reply:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="jisr-dci"'
    return Reply(status, {"error": error, "error_description": description}, headers)
