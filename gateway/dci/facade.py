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
import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.base.errors import ExchangeError, Reason
from gateway.base.jws import Keys, TokenError, body_hash
from gateway.base.status import code_of
from gateway.base.wire import REGISTRY_EXCHANGE, method_path
from gateway.dci import access, schemas, signature
from gateway.dci.clients import Clients
from gateway.dci.search import Lookup, Rejected, plan
from gateway.engine.call import Answered, Engine, Invocation, UnaryMethod
from gateway.engine.steps import drive
from gateway.security.tokens import RequestClaims

log = logging.getLogger("jisr.dci")

VERSION = "1.0.0"
MAX_BODY_BYTES = 256 * 1024
MAX_ITEMS = 20  # search_request items per message: more is rjct.total_count.limit_exceeded
SYNC_SEARCH = "/registry/sync/search"
# The method a refusal before any item is recorded under (no RegistryExchange call yet).
DOOR_METHOD = "/dci.v1.SocialRegistry/SyncSearch"
# What the compliance suite sends in place of a signature; accepted only in conformance mode.
UNSIGNED = frozenset({"", "unsigned", "unsigned-stub"})
_SUB = re.compile(r"[^A-Za-z0-9._:@-]")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


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

    # -- sync search -------------------------------------------------------------------

    def sync_search(self, raw: bytes, authorization: str | None) -> Reply:
        """`/registry/sync/search`: each item through the engine, one signed envelope."""
        try:
            caller = self._caller(authorization)
        except RefusedError as refusal:
            return self.refused(refusal)
        try:
            body = self._envelope(SYNC_SEARCH, raw)
            header, message = body["header"], body["message"]
            verified = self._signed(body, caller)
            items = message["search_request"]
            rejected = _header_reject(header, items)
            if rejected is not None:
                return self._answer(caller, message, [], {}, rejected=rejected)
            asked = _Asked(raw, caller, verified, str(header["message_id"]))
            answers, receipts = self._search(asked, items)
        except RefusedError as refusal:
            self.engine.refused_at_door(
                DOOR_METHOD, caller.institution, ExchangeError(refusal.reason, refusal.message)
            )
            return self.refused(refusal)
        except _DuplicateError:
            return self._answer(caller, message, [], {}, rejected=_DUPLICATE)
        return self._answer(caller, message, answers, receipts)

    def _caller(self, authorization: str | None) -> access.Access:
        try:
            caller = self.issuer.check(authorization, int(self.clock()))
        except access.AccessError as exc:
            raise RefusedError(
                401, "err.request.unauthorized", Reason.MISSING_SIGNATURE, str(exc)
            ) from None
        if self.clients.get(caller.client_id) is None:
            raise RefusedError(
                401, "err.request.unauthorized", Reason.MISSING_SIGNATURE, "client removed"
            )
        return caller

    def _envelope(self, path: str, raw: bytes) -> dict[str, Any]:
        """The parsed body, valid against the standard's schema; else a 400 naming where."""
        if len(raw) > MAX_BODY_BYTES:
            raise RefusedError(
                413, "err.request.bad", Reason.MESSAGE_TOO_LARGE, "the body is too large"
            )
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise RefusedError(
                400, "err.request.bad", Reason.MALFORMED_REQUEST, "the body is not JSON"
            ) from None
        problems = self.schemas.request(path, body)
        if problems:
            said = "; ".join(f"{p.where or 'body'}: {p.message}" for p in problems[:5])
            raise RefusedError(400, "err.request.bad", Reason.MALFORMED_REQUEST, said[:999])
        assert isinstance(body, dict)
        if body["header"].get("is_msg_encrypted"):
            raise RefusedError(
                400, "err.encryption.invalid", Reason.MALFORMED_REQUEST,
                "encrypted messages are not accepted: the transport is TLS",
            )  # fmt: skip
        return body

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
                answers.append(_item(reference, "rjct", planned.code, planned.message))
                continue
            answer, receipt = self._ask(asked, index, planned)
            answers.append(answer | {"reference_id": reference})
            if receipt:
                receipts[reference] = receipt
        return answers, receipts

    def _ask(self, asked: _Asked, index: int, lookup: Lookup) -> tuple[dict[str, Any], str | None]:
        """One item as the engine's call; its answer and receipt."""
        raw, caller, verified = asked.raw, asked.caller, asked.verified
        method = method_path(REGISTRY_EXCHANGE, lookup.method)
        claims = RequestClaims(
            iss=caller.institution,
            sub=_SUB.sub("_", caller.client_id)[:64],
            jti=_jti(asked.message_id, index),
            purpose=lookup.purpose,
            method=method,
            rh=body_hash(raw),
            iat=verified.created,
            exp=verified.expires,
            kid=verified.kid,
        )
        invocation = Invocation(method, caller.institution, (), verified=claims)
        outcome = drive(
            self.engine.unary(
                invocation, lookup.request.SerializeToString(), self.lookups[lookup.method]
            )
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

    # -- replies -----------------------------------------------------------------------

    def _answer(
        self,
        caller: access.Access,
        message: Mapping[str, Any],
        answers: list[dict[str, Any]],
        receipts: dict[str, str],
        *,
        rejected: tuple[str, str] | None = None,
    ) -> Reply:
        """The signed sync response: header on-search, each item's answer, receipts in
        header.meta (by reference_id)."""
        now = self.clock()
        reply_header: dict[str, Any] = {
            "version": VERSION,
            "message_id": uuid.uuid4().hex,
            "message_ts": _ts(now),
            "action": "on-search",
            "status": "rjct" if rejected else "succ",
            "total_count": len(message.get("search_request", [])),
            "completed_count": len(answers),
            "sender_id": self.issuer.gateway_id,
            "receiver_id": caller.institution,
            "is_msg_encrypted": False,
        }
        if rejected is not None:
            reply_header["status_reason_code"], reply_header["status_reason_message"] = rejected
        if receipts:
            reply_header["meta"] = {"jisr_receipts": receipts}
        reply_message = {
            "transaction_id": message["transaction_id"],
            "correlation_id": uuid.uuid4().hex,
            "search_response": [a | {"timestamp": _ts(now)} for a in answers],
        }
        signed = signature.sign(
            reply_header,
            reply_message,
            sender_id=self.issuer.gateway_id,
            kid=self.issuer.kid,
            key=self.issuer.key,
            created=int(now),
        )
        return Reply(200, {"signature": signed, "header": reply_header, "message": reply_message})

    def refused(self, refusal: RefusedError) -> Reply:
        """The standard's error envelope (an ACK with ERR), its HTTP status."""
        log.info("refused", extra={"code": refusal.code, "reason": refusal.reason.value})
        body = {
            "message": {
                "ack_status": "ERR",
                "timestamp": _ts(self.clock()),
                "correlation_id": uuid.uuid4().hex,
                "error": {"code": refusal.code, "message": refusal.message[:999]},
            }
        }
        headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else {}
        return Reply(refusal.status, body, headers)


@dataclass(frozen=True, slots=True)
class _Asked:
    """The request its items are asked under: its bytes, caller, signature, message id."""

    raw: bytes
    caller: access.Access
    verified: signature.Verified
    message_id: str


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
            "total_count": len(found) if lookup.page_number == 1 else 1,
        },
    }


def _jti(message_id: str, index: int) -> str:
    """The replay key of item `index`: a message_id is used once, whatever its shape."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(message_id.encode()).digest())
    return f"dci-{digest.decode().rstrip('=')}-{index}"


def _ts(at: float) -> str:
    return (
        dt.datetime.fromtimestamp(at, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _oauth_error(status: int, error: str, description: str) -> Reply:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="jisr-dci"'
    return Reply(status, {"error": error, "error_description": description}, headers)
