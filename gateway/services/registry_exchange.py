"""gRPC glue for RegistryExchange: authenticate, authorize, run the pipeline, disclose, sign.

Handlers take the request's raw bytes (no deserializer): the token's `rh` is checked
against the exact bytes received, and the receipt's `sh` is the hash of the exact bytes
sent. Every call is authenticated (certificate + request token), then authorized by the
policy for its purpose; the answer keeps only the granted fields and lists the withheld
ones. Failures are statuses with google.rpc.Status details; once the caller is known, a
denial carries a receipt too.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from adapters.base import FetchContext
from gateway.audit.recorder import AuditRecorder
from gateway.audit.store import ReplayError
from gateway.audit.writer import AuditUnavailable
from gateway.base.errors import ExchangeError, Reason, caller_ended, invalid
from gateway.base.status import code_name, code_of
from gateway.base.wire import RECEIPT_METADATA, REGISTRY_EXCHANGE, SIGNATURE_METADATA
from gateway.engine import disclosure
from gateway.engine.consent_gate import ConsentGate, Permit
from gateway.engine.steps import OFFLOAD, Steps, Unary, drive
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pipeline import validation
from gateway.pipeline.exchange import Exchange, Key, Screen
from gateway.security import projection
from gateway.security.policy import Grant, Policy
from gateway.security.projection import FieldTree
from gateway.security.receipts import DENY, PERMIT, Exchanged, ReceiptSigner
from gateway.security.tokens import (
    ReplayGuard,
    RequestClaims,
    TokenError,
    body_hash,
    check_body,
    unverified_issuer,
    verify_batch,
    verify_request,
)
from gateway.security.trust import TrustStore
from gateway.services.edge import grpc_status
from gateway.telemetry import setup as telemetry
from gateway.telemetry import tracing

SERVICE = REGISTRY_EXCHANGE
log = logging.getLogger("jisr.exchange")

Req = TypeVar("Req", bound=Message)


@dataclass
class Security:
    """What every call is checked against; parsed once at start."""

    trust: TrustStore
    policy: Policy
    receipts: ReceiptSigner
    audience: str
    insecure_plaintext: bool = False
    consent: ConsentGate | None = None
    audit: AuditRecorder | None = None
    replay: ReplayGuard = field(default_factory=ReplayGuard)
    clock: Callable[[], float] = time.time
    # A consent check that may wait on the network (a PostgreSQL consent store) runs on
    # a worker thread, never on the event loop.
    consent_blocks: bool = False


class _Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _AbortStatus(_Status, grpc.Status):  # type: ignore[misc]
    """A grpc.Status whose trailers carry both the rich status and the receipt."""


def _unauthenticated(error: TokenError) -> ExchangeError:
    return ExchangeError(error.reason, error.message)


def _replayed() -> ExchangeError:
    return ExchangeError(Reason.REPLAYED, "this jti was already used")


def _parse(message_type: type[Req], raw: bytes) -> Req:
    try:
        return message_type.FromString(raw)
    except DecodeError:
        raise invalid(
            Reason.MALFORMED_REQUEST, f"request is not a valid {message_type.__name__}"
        ) from None


def _try_parse(message_type: type[Req], raw: bytes) -> Req | None:
    """The request, or None if the bytes are not one. Parsed before the token is checked
    only to name its subjects in the audit record of whatever comes; a malformed request
    is still refused after authentication, in the documented order."""
    try:
        return message_type.FromString(raw)
    except DecodeError:
        return None


@dataclass
class _Call:
    """What is known of a call as it goes: who, under which grant and consents."""

    method: str
    started: float = field(default_factory=time.time)
    requester: str = ""  # from the certificate, known before the token is checked
    named: list[disclosure.Named] = field(default_factory=list)  # in the request (or batch)
    read: set[tuple[str, str]] = field(default_factory=set)  # households the answer read
    audited: bool = False  # a record with this call's jti exists already
    claims: RequestClaims | None = None
    grant: Grant | None = None
    permit: Permit | None = None
    consents: set[str] = field(default_factory=set)
    rhs: list[str] = field(default_factory=list)
    shs: list[str] = field(default_factory=list)

    def basis(self) -> str:
        """What the receipt names as legal basis: the consent used, or the statute."""
        if self.permit is not None:
            return self.permit.consent_id
        return self.grant.basis if self.grant is not None else ""

    def fields(self) -> tuple[str, ...]:
        if self.permit is not None:
            return self.permit.paths
        return self.grant.paths if self.grant is not None else ()


class ExchangeService:
    """Binds an Exchange to the security checks and to gRPC."""

    def __init__(self, exchange: Exchange, security: Security) -> None:
        self.exchange = exchange
        self.security = security

    # -- checks -----------------------------------------------------------------------

    def _certificate_institution(self, context: grpc.ServicerContext) -> str:
        names = context.auth_context().get("x509_common_name")
        return bytes(names[0]).decode() if names else ""

    def _institution(self, context: grpc.ServicerContext, token: str) -> str:
        if self.security.insecure_plaintext:
            return unverified_issuer(token)
        names = context.auth_context().get("x509_common_name")
        if not names:
            raise TokenError(Reason.NO_CLIENT_CERTIFICATE, "no client certificate")
        return bytes(names[0]).decode()

    def _authenticate(
        self, call: _Call, context: grpc.ServicerContext, body: bytes | None
    ) -> RequestClaims:
        with tracing.span("jisr.authenticate"):
            claims = self._check_token(call, context, body)
        span = tracing.current()
        span.set_attribute("jisr.requester", claims.iss)
        span.set_attribute("jisr.purpose", claims.purpose)
        return claims

    def _check_token(
        self, call: _Call, context: grpc.ServicerContext, body: bytes | None
    ) -> RequestClaims:
        tokens = [v for k, v in context.invocation_metadata() if k == SIGNATURE_METADATA]
        if not self.security.insecure_plaintext:
            call.requester = self._certificate_institution(context)
        try:
            if len(tokens) != 1:
                raise TokenError(
                    Reason.MISSING_SIGNATURE, f"exactly one {SIGNATURE_METADATA} is required"
                )
            token = str(tokens[0])
            call.requester = self._institution(context, token)
            claims = verify_request(
                token,
                institution=call.requester,
                method=call.method,
                body=body,
                audience=self.security.audience,
                now=self.security.clock(),
                trust=self.security.trust,
            )
        except TokenError as exc:
            raise _unauthenticated(exc) from None
        # Known before the replay check: a replay, wherever it is caught (this process's
        # memory, or the durable store of another replica or of an earlier run), gets the
        # same deny receipt naming its record (docs/security.md, "Replays").
        call.claims = claims
        if not self.security.replay.first_use(claims.iss, claims.jti, claims.exp):
            raise _replayed()
        return claims

    def _authorize(self, call: _Call, claims: RequestClaims, purpose: str) -> Grant:
        with tracing.span("jisr.authorize"):
            return self._grant(call, claims, purpose)

    def _grant(self, call: _Call, claims: RequestClaims, purpose: str) -> Grant:
        if purpose != claims.purpose:
            raise invalid(
                Reason.PURPOSE_MISMATCH, "purpose differs from the token's purpose", "purpose"
            )
        name = call.method.rsplit("/", 1)[1]
        grant = self.security.policy.authorize(claims.iss, name, purpose)
        if grant is None:
            raise ExchangeError(
                Reason.PURPOSE_NOT_ALLOWED,
                "this institution may not call this method for this purpose",
            )
        call.grant = grant
        return grant

    # -- receipts and failures --------------------------------------------------------

    def _receipt(
        self,
        call: _Call,
        decision: str,
        *,
        rh: str,
        sh: str,
        reason: str = "",
        batches: int | None = None,
        seq: int | None = None,
        audit: str = "",
    ) -> str:
        assert call.claims is not None
        with tracing.span("jisr.receipt"):
            return self._sign(
                call=call,
                decision=decision,
                rh=rh,
                sh=sh,
                reason=reason,
                batches=batches,
                seq=seq,
                audit=audit,
            )

    def _sign(
        self,
        *,
        call: _Call,
        decision: str,
        rh: str,
        sh: str,
        reason: str,
        batches: int | None,
        seq: int | None,
        audit: str,
    ) -> str:
        assert call.claims is not None
        return self.security.receipts.sign(
            Exchanged(
                jti=call.claims.jti,
                rh=rh,
                sh=sh,
                method=call.method,
                purpose=call.claims.purpose,
                decision=decision,
                fields=call.fields() if decision == PERMIT else (),
                basis=call.basis(),
                reason=reason,
                batches=batches,
                seq=seq,
                consents=tuple(sorted(call.consents)),
                audit=audit,
                trace=tracing.trace_id(),
            )
        )

    def _audit(self, call: _Call, decision: str, **where: Any) -> str:
        """Make the record durable before any reply; fail closed (UNAVAILABLE) if not.
        `where`: the keyword arguments of `_audit_steps`."""
        return drive(self._audit_steps(call, decision, **where))

    def _audit_steps(
        self,
        call: _Call,
        decision: str,
        *,
        rh: str,
        sh: str,
        reason: str = "",
        part: int = 0,
        subjects: tuple[str, ...] | None = None,
        replay_checked: bool = True,
    ) -> Steps[str]:
        """`_audit` as steps: the wait for durability is yielded to the driver."""
        recorder = self.security.audit
        if recorder is None:
            return ""
        claims = call.claims
        try:
            with tracing.span("jisr.audit") as span:
                pending = recorder.submit(
                    requester=call.requester,
                    sub=claims.sub if claims is not None else "",
                    method=call.method,
                    purpose=claims.purpose if claims is not None else "",
                    basis=call.basis(),
                    subjects=self._hashes(call) if subjects is None else subjects,
                    fields=call.fields() if decision == PERMIT else (),
                    decision=decision,
                    reason=reason,
                    rh=rh,
                    sh=sh,
                    jti=claims.jti if claims is not None and replay_checked else "",
                    part=part,
                    started=call.started,
                    trace_id=tracing.trace_id(),
                )
                yield pending
                record_id = pending.outcome().record_id
                span.set_attribute("jisr.audit_id", record_id)
                call.audited = call.audited or part == 0
                return record_id
        except ReplayError:
            raise _replayed() from None
        except AuditUnavailable:
            raise ExchangeError(
                Reason.AUDIT_UNAVAILABLE,
                "the access could not be recorded; nothing was disclosed, retry later",
            ) from None

    def _done(self, call: _Call, decision: str, audit: str) -> None:
        """Close the books on a permitted call: span attributes and metrics."""
        span = tracing.current()
        span.set_attribute("jisr.decision", decision)
        span.set_attribute("jisr.audit_id", audit)
        span.set_attribute("rpc.grpc.status_code", 0)
        _measure(call, decision, "")

    def _fail(self, context: grpc.ServicerContext, call: _Call, exc: ExchangeError) -> None:
        drive(self._fail_steps(context, call, exc))

    def _fail_steps(
        self, context: grpc.ServicerContext, call: _Call, exc: ExchangeError
    ) -> Steps[None]:
        """Record the refusal, then abort with its status (and a receipt once the caller
        is known); the abort raises."""
        log.info(
            "refused",
            extra={"method": call.method, "code": code_name(exc.reason), "reason": exc.reason},
        )
        rh, batches = (call.claims.rh if call.claims else ""), None
        if _is_stream(call.method):
            rh, batches = _chain(call.rhs), len(call.shs)
        sh = _chain(call.shs) if batches else ""
        audit = ""
        if call.requester and exc.reason != Reason.AUDIT_UNAVAILABLE:
            exc, audit = yield from self._record_denial_steps(call, exc, rh=rh, sh=sh)
        span = tracing.current()
        span.set_attribute("jisr.decision", DENY)
        if audit:
            span.set_attribute("jisr.audit_id", audit)
        span.set_attribute("rpc.grpc.status_code", code_of(exc.reason))
        span.fail(exc.reason.value)
        _measure(call, DENY, exc.reason.value)
        status = grpc_status(exc)
        trailers: tuple[tuple[str, str | bytes], ...] = tuple(status.trailing_metadata)
        if call.claims is not None and exc.reason != Reason.AUDIT_UNAVAILABLE:
            receipt = self._receipt(
                call, DENY, rh=rh, sh=sh, reason=exc.reason.value, batches=batches, audit=audit
            )
            trailers += ((RECEIPT_METADATA, receipt),)
        context.abort_with_status(_AbortStatus(status.code, status.details, trailers))

    def _record_denial(
        self, call: _Call, exc: ExchangeError, *, rh: str, sh: str
    ) -> tuple[ExchangeError, str]:
        return drive(self._record_denial_steps(call, exc, rh=rh, sh=sh))

    def _record_denial_steps(
        self, call: _Call, exc: ExchangeError, *, rh: str, sh: str
    ) -> Steps[tuple[ExchangeError, str]]:
        """Exactly one record for a refusal: the refusal as answered, and its record id.

        The first attempt carries the jti, so it is also the durable replay check. If the
        store has that jti already (first used at another replica, or before a restart),
        the refusal becomes REPLAYED and is recorded as such, without the jti, so a replay
        leaves its own record whichever check caught it."""
        checked = exc.reason != Reason.REPLAYED and not call.audited
        try:
            return exc, (
                yield from self._audit_steps(
                    call, DENY, rh=rh, sh=sh, reason=exc.reason.value, replay_checked=checked
                )
            )
        except ExchangeError as unrecorded:
            if unrecorded.reason != Reason.REPLAYED:
                return unrecorded, ""
        replayed = _replayed()
        try:
            return replayed, (
                yield from self._audit_steps(
                    call, DENY, rh=rh, sh=sh, reason=replayed.reason.value, replay_checked=False
                )
            )
        except ExchangeError as unrecorded:
            return unrecorded, ""

    def refused_at_door(self, method: str, institution: str, error: ExchangeError) -> None:
        """Record a refusal made before any request was read (gateway/engine/door.py): a request
        that never came, a message too large. No token was checked, so no receipt."""
        call = _Call(method, requester=institution)
        self._record_denial(call, error, rh="", sh="")
        _measure(call, DENY, error.reason.value)

    def _hashes(self, call: _Call) -> tuple[str, ...]:
        """The audit record's subjects: every identifier the request named (a malformed one
        by the hash of its text, marked) and every household whose records were read."""
        recorder = self.security.audit
        if recorder is None:
            return ()
        valid = [(n.kind, n.value) for n in call.named if n.well_formed]
        malformed = {recorder.malformed(n.kind, n.value) for n in call.named if not n.well_formed}
        return tuple(sorted({*recorder.subjects([*valid, *call.read]), *malformed}))

    def _caller_ended(self, context: grpc.ServicerContext) -> ExchangeError:
        """The caller cancelled, or its deadline passed: its doing, not a gateway fault."""
        return caller_ended(context.time_remaining())

    def _abandoned(self, context: grpc.ServicerContext, call: _Call) -> None:
        """A stream the caller left while the gateway was writing to it (its generator is
        being closed): record the end; there is no one left to answer."""
        exc = self._caller_ended(context)
        log.info("ended by caller", extra={"method": call.method, "reason": exc.reason})
        rh, batches = (call.claims.rh if call.claims else ""), None
        if _is_stream(call.method):
            rh, batches = _chain(call.rhs), len(call.shs)
        if call.requester:
            self._record_denial(call, exc, rh=rh, sh=_chain(call.shs) if batches else "")
        _measure(call, DENY, exc.reason.value)

    def _bug(self, context: grpc.ServicerContext, call: _Call, exc: Exception) -> None:
        drive(self._bug_steps(context, call, exc))

    def _bug_steps(self, context: grpc.ServicerContext, call: _Call, exc: Exception) -> Steps[None]:
        if not context.is_active():
            # The caller left (cancel, deadline) and reading or writing the call failed.
            yield from self._fail_steps(context, call, self._caller_ended(context))
            return
        # Type and place only: an exception's message may quote request data.
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        log.error(
            "gateway fault %s at %s:%s",
            type(exc).__name__,
            frame.filename,
            frame.lineno,
            extra={"method": call.method},
        )
        error = ExchangeError(Reason.INTERNAL, "gateway fault")
        yield from self._fail_steps(context, call, error)

    # -- handlers ---------------------------------------------------------------------

    def unary(
        self,
        method: str,
        message_type: type[Req],
        run: Callable[[Req, FetchContext], Message],
        disclosed: str | None,
        subject_of: Callable[[Req], Key] | None = None,
        *,
        blocking: bool = False,
    ) -> grpc.RpcMethodHandler:
        """A unary handler: authenticate, authorize (and consent), run, disclose, sign.

        `disclosed` names the response field the grant's fields apply to (None: the whole
        response); `subject_of` gives the subject a consent must cover. The handler's
        steps may run on the event loop (gateway/engine/door.py) up to where they could block
        for long: a `blocking` method (store queries, remote registries) moves to a worker
        before it reads anything, a consent check on a networked store before the check."""

        def steps(raw: bytes, context: grpc.ServicerContext) -> Steps[bytes]:
            call = _Call(method)
            if blocking or self.exchange.registries.remote:
                yield OFFLOAD
            with _server_span(method, context), disclosure.watching(call.read):
                try:
                    parsed = _try_parse(message_type, raw)
                    call.named = disclosure.named(parsed)
                    claims = self._authenticate(call, context, raw)
                    request = parsed if parsed is not None else _parse(message_type, raw)
                    purpose = validation.purpose(getattr(request, "purpose"))  # noqa: B009
                    grant = self._authorize(call, claims, purpose)
                    ctx = FetchContext(purpose, context.time_remaining(), claims.iss)
                    fields = grant.fields
                    if grant.consent_based:
                        if self.security.consent_blocks:
                            yield OFFLOAD
                        with tracing.span("jisr.consent"):
                            call.permit = self._consent(grant, subject_of, request, ctx)
                        fields = call.permit.fields
                    response = run(request, ctx)
                    _disclose(response, disclosed, fields)
                    body = response.SerializeToString()
                    sh = body_hash(body)
                    audit = yield from self._audit_steps(call, PERMIT, rh=claims.rh, sh=sh)
                    receipt = self._receipt(call, PERMIT, rh=claims.rh, sh=sh, audit=audit)
                    context.set_trailing_metadata(((RECEIPT_METADATA, receipt),))
                    self._done(call, PERMIT, audit)
                    return body
                except ExchangeError as exc:
                    yield from self._fail_steps(context, call, exc)
                except Exception as exc:  # reported as INTERNAL, never as UNKNOWN
                    yield from self._bug_steps(context, call, exc)
            raise AssertionError("unreachable: abort raises")

        return grpc.unary_unary_rpc_method_handler(Unary(steps))

    def server_stream(
        self,
        method: str,
        message_type: type[Req],
        run: Callable[[Req, FetchContext], Iterator[Message]],
    ) -> grpc.RpcMethodHandler:
        """A server-streaming handler with the same checks; recorded before the first
        message, each message projected to the grant, one receipt in the trailers."""

        def handle(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            call = _Call(method)
            with _server_span(method, context):
                try:
                    parsed = _try_parse(message_type, raw)
                    call.named = disclosure.named(parsed)
                    claims = self._authenticate(call, context, raw)
                    request = parsed if parsed is not None else _parse(message_type, raw)
                    purpose = validation.purpose(getattr(request, "purpose"))  # noqa: B009
                    grant = self._authorize(call, claims, purpose)
                    ctx = FetchContext(purpose, context.time_remaining(), claims.iss)
                    messages = iter(run(request, ctx))
                    first = next(messages, None)  # bad filters fail here, before the record
                    audit = self._audit(call, PERMIT, rh=claims.rh, sh="")
                    for message in itertools.chain([first] if first else [], messages):
                        _disclose(message, None, grant.fields)
                        body = message.SerializeToString()
                        call.shs.append(body_hash(body))
                        yield body
                    receipt = self._receipt(
                        call, PERMIT, rh=claims.rh, sh=_chain(call.shs), audit=audit
                    )
                    context.set_trailing_metadata(((RECEIPT_METADATA, receipt),))
                    self._done(call, PERMIT, audit)
                except ExchangeError as exc:
                    self._fail(context, call, exc)
                except GeneratorExit:
                    self._abandoned(context, call)
                    raise
                except Exception as exc:  # reported as INTERNAL, never as UNKNOWN
                    self._bug(context, call, exc)

        return grpc.unary_stream_rpc_method_handler(handle)

    def _consent(
        self,
        grant: Grant,
        subject_of: Callable[[Req], Key] | None,
        request: Req,
        ctx: FetchContext,
    ) -> Permit:
        gate = self.security.consent
        if gate is None or subject_of is None:
            raise ExchangeError(
                Reason.CONSENT_MISSING,
                "consent-based exchanges are not available on this gateway",
            )
        return gate.check(grant, subject_of(request), ctx)

    def _batch_stream(self) -> grpc.RpcMethodHandler:
        method = f"/{SERVICE}/VerifyEligibilityBatch"

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            call = _Call(method)
            with _server_span(method, context):
                try:
                    claims = self._authenticate(call, context, None)
                    grant = self._authorize(call, claims, claims.purpose)
                    for seq, raw in enumerate(requests):
                        call.named = _batch_subjects(raw)
                        call.read.clear()
                        with (
                            tracing.span("jisr.batch", attributes={"jisr.batch_index": seq}),
                            disclosure.watching(call.read),
                        ):
                            answer = self._one_batch(
                                call=call,
                                claims=claims,
                                grant=grant,
                                seq=seq,
                                raw=raw,
                                context=context,
                            )
                        yield answer
                    call.named = []  # the close names no subject
                    call.read.clear()
                    rh, sh = _chain(call.rhs), _chain(call.shs)
                    audit = self._audit(call, PERMIT, rh=rh, sh=sh, subjects=())
                    receipt = self._receipt(
                        call, PERMIT, rh=rh, sh=sh, batches=len(call.shs), audit=audit
                    )
                    context.set_trailing_metadata(((RECEIPT_METADATA, receipt),))
                    self._done(call, PERMIT, audit)
                except ExchangeError as exc:
                    self._fail(context, call, exc)
                except GeneratorExit:
                    self._abandoned(context, call)
                    raise
                except Exception as exc:  # reported as INTERNAL, never as UNKNOWN
                    self._bug(context, call, exc)

        return grpc.stream_stream_rpc_method_handler(handle)

    def _one_batch(
        self,
        *,
        call: _Call,
        claims: RequestClaims,
        grant: Grant,
        seq: int,
        raw: bytes,
        context: grpc.ServicerContext,
    ) -> bytes:
        """Check one envelope's signature, decide its subjects, sign its results."""
        try:
            if seq == 0:
                check_body(claims.rh, raw)
            envelope = _parse(pb.VerifyEligibilityBatchRequest, raw)
            rh = verify_batch(
                envelope.batch_signature,
                institution=claims.iss,
                jti=claims.jti,
                seq=seq,
                batch=envelope.batch,
                trust=self.security.trust,
            )
        except TokenError as exc:
            raise _unauthenticated(exc) from None
        batch = _parse(pb.EligibilityBatch, envelope.batch)
        if validation.purpose(batch.purpose) != claims.purpose:
            raise invalid(Reason.PURPOSE_MISMATCH, "batch purpose differs from the token's")
        ctx = FetchContext(claims.purpose, context.time_remaining(), claims.iss)
        permits: list[Permit | ExchangeError] = []
        screen = None
        if grant.consent_based:
            screen = self._screen(grant, ctx, permits)
        results = self.exchange.verify_batch(batch, seq, ctx, screen)
        withheld: set[str] = set()
        for index, result in enumerate(results.results):
            if result.HasField("decision"):
                permit = permits[index] if permits else None
                fields = permit.fields if isinstance(permit, Permit) else grant.fields
                if isinstance(permit, Permit):
                    call.consents.add(permit.consent_id)
                projected, hidden = projection.project(result.decision, fields)
                result.decision.CopyFrom(projected)
                withheld.update(hidden)
        results.withheld.paths.extend(sorted(withheld))
        body = results.SerializeToString()
        sh = body_hash(body)
        failures = sorted({_reason_of(r.error) for r in results.results if r.HasField("error")})
        audit = self._audit(call, PERMIT, rh=rh, sh=sh, part=seq + 1, reason=",".join(failures))
        call.rhs.append(rh)
        call.shs.append(sh)
        receipt = self._receipt(call, PERMIT, rh=rh, sh=sh, seq=seq, audit=audit)
        return pb.VerifyEligibilityBatchResponse(results=body, receipt=receipt).SerializeToString()

    def _screen(
        self, grant: Grant, ctx: FetchContext, permits: list[Permit | ExchangeError]
    ) -> Screen:
        """A batch screen that refuses items without consent and keeps each item's permit."""
        gate = self.security.consent

        def screen(keys: list[Key | ExchangeError]) -> list[Key | ExchangeError]:
            if gate is None:
                denied = ExchangeError(
                    Reason.CONSENT_MISSING,
                    "consent-based exchanges are not available on this gateway",
                )
                permits.extend([denied] * len(keys))
            else:
                permits.extend(gate.check_many(grant, keys, ctx))
            return [
                key if isinstance(permit, Permit) else permit
                for key, permit in zip(keys, permits, strict=True)
            ]

        return screen

    def handler(self) -> grpc.GenericRpcHandler:
        """The RegistryExchange service."""
        exchange = self.exchange

        def path(name: str) -> str:
            return f"/{SERVICE}/{name}"

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "GetPersonStatus": self.unary(
                    path("GetPersonStatus"),
                    pb.GetPersonStatusRequest,
                    exchange.person_status,
                    "person",
                    lambda r: ("idcs", validation.idcs(r.idcs)),
                ),
                "GetHouseholdStatus": self.unary(
                    path("GetHouseholdStatus"),
                    pb.GetHouseholdStatusRequest,
                    exchange.household_status,
                    "household",
                    lambda r: validation.subject(r.subject),
                ),
                "VerifyEligibility": self.unary(
                    path("VerifyEligibility"),
                    pb.VerifyEligibilityRequest,
                    exchange.verify,
                    "decision",
                    lambda r: validation.subject(r.subject),
                ),
                "VerifyEligibilityBatch": self._batch_stream(),
            },
        )


def _server_span(method: str, context: grpc.ServicerContext) -> tracing.ServerSpan:
    """The RPC's server span, continuing the caller's traceparent."""
    service, name = method.strip("/").split("/", 1)
    return tracing.server_span(
        f"{service}/{name}",
        context.invocation_metadata(),
        {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )


def _measure(call: _Call, decision: str, reason: str) -> None:
    ins = telemetry.instruments()
    attributes = {
        "rpc.method": call.method,
        "jisr.requester": call.requester,
        "jisr.decision": decision,
    }
    ins.requests.add(1, attributes)
    ins.latency.record((time.time() - call.started) * 1000.0, attributes)
    if reason.startswith("CONSENT_"):
        ins.consent_denials.add(1, {"jisr.requester": call.requester, "jisr.reason": reason})


def _disclose(response: Message, field_name: str | None, fields: FieldTree) -> None:
    """Keep only the granted fields of the response's status message; list the rest."""
    if field_name is None:
        projected, _ = projection.project(response, fields)
        response.CopyFrom(projected)
        return
    inner = getattr(response, field_name)
    projected, withheld = projection.project(inner, fields)
    inner.CopyFrom(projected)
    mask: FieldMask = getattr(response, "withheld")  # noqa: B009
    mask.paths.extend(withheld)


def _batch_subjects(raw: bytes) -> list[disclosure.Named]:
    """The identifiers of one batch envelope, read before its signature is checked (for
    the record of whatever comes); nothing if the bytes are not a batch."""
    envelope = _try_parse(pb.VerifyEligibilityBatchRequest, raw)
    batch = _try_parse(pb.EligibilityBatch, envelope.batch) if envelope is not None else None
    return disclosure.subjects(batch.subjects) if batch is not None else []


def _is_stream(method: str) -> bool:
    """Streams sign and record per batch (their receipts chain the batches' hashes)."""
    return method == f"/{SERVICE}/VerifyEligibilityBatch"


def _reason_of(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def _chain(hashes: Sequence[str]) -> str:
    """The hash of a stream's per-batch hashes joined by '.' (docs/security.md)."""
    return body_hash(".".join(hashes).encode())
