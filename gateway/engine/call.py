"""The call engine: the order of checks every call goes through, and what each outcome
records and signs.

Every method of every service (RegistryExchange, ConsentRegistry, AuditTrail) is a call
through this engine: identify the institution (certificate), check the request token
(signature, claims, `rh` over the bytes received, replay), parse, check the purpose and
the grant, the consent where the grant's basis is consent, run, keep the granted fields,
make the audit record durable, sign the receipt. Any failure on the way is a `Refused`
outcome: recorded once the caller is known, with a deny receipt once its token is.

The engine knows nothing of gRPC. It reads a call as a plain `Invocation` (who, which
tokens, how much time is left) and returns plain outcomes (`Answered`, `Refused`); the
gRPC edge (gateway/services/binding.py) builds the one and applies the other. So the
fail-closed order is tested in-process, outcome by outcome (tests/unit/test_engine.py).
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import DecodeError, Message

from adapters.base import FetchContext
from gateway.audit.recorder import AuditRecorder
from gateway.audit.store import ReplayError
from gateway.audit.writer import AuditUnavailable, Pending
from gateway.base.errors import ExchangeError, Reason, caller_ended, invalid
from gateway.base.jws import TokenError, body_hash
from gateway.base.status import code_name, code_of
from gateway.base.wire import SIGNATURE_METADATA
from gateway.engine.consent_gate import ConsentGate, Permit
from gateway.engine.steps import OFFLOAD, Sent, Steps, drive
from gateway.pipeline import disclosure, validation
from gateway.pipeline.query import Key
from gateway.pipeline.registries import fetched_once
from gateway.security.policy import Grant, Policy
from gateway.security.projection import FieldTree, project
from gateway.security.receipts import DENY, PERMIT, Exchanged, ReceiptSigner
from gateway.security.tokens import ReplayGuard, RequestClaims, unverified_issuer, verify_request
from gateway.security.trust import TrustStore
from gateway.telemetry import setup as telemetry
from gateway.telemetry import tracing

log = logging.getLogger("jisr.exchange")

Req = TypeVar("Req", bound=Message)
Q = TypeVar("Q")
Metadata = tuple[tuple[str, str | bytes], ...]


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


@dataclass(frozen=True)
class Invocation:
    """A call as the engine sees it, whatever carried it.

    `certificate`: the client certificate's institution ("" when there is none);
    `tokens`: every request-token value the call carried (exactly one is allowed);
    `metadata`: the call's metadata, for the caller's traceparent; `remaining` and
    `active`: the call's time left and whether its caller is still there.

    `verified`: claims an edge of another protocol checked itself, in place of a request
    token: the DCI facade (gateway/dci/) verifies the caller's signature over the envelope
    it sent, by the institution's own key, and names the request by the hash of those
    bytes. `certificate` is then the institution its transport authenticated (the bearer
    token's); the engine still checks that the two agree, the replay, and all the rest."""

    method: str
    certificate: str
    tokens: tuple[str, ...]
    metadata: Metadata = ()
    remaining: Callable[[], float | None] = lambda: None
    active: Callable[[], bool] = lambda: True
    verified: RequestClaims | None = None

    @property
    def service(self) -> str:
        return rpc_names(self.method)[0]

    @property
    def name(self) -> str:
        return rpc_names(self.method)[1]


@functools.lru_cache(maxsize=256)
def rpc_names(method: str) -> tuple[str, str]:
    """(service, method) of a full method path, as spans and metrics name them: a few
    dozen paths, split once rather than on every call."""
    service, _, name = method.strip("/").rpartition("/")
    return service, name


@dataclass(frozen=True)
class Answered:
    """The call succeeded: `body` (empty for a stream, whose messages went before) and
    the permit receipt for the trailers."""

    body: bytes
    receipt: str


@dataclass(frozen=True)
class Refused:
    """The call failed with `error`; `receipt` is the deny receipt once the caller's token
    was verified (None before that, or when nothing could be recorded)."""

    error: ExchangeError
    receipt: str | None


Outcome = Answered | Refused
# A response stream as the engine runs it: yields message bodies, returns the outcome.
Streamed = Generator[bytes, None, Outcome]
# A batch stream's also yields messages deferred until their record is durable, and a
# flush (gateway/engine/steps.py).
S = TypeVar("S", bound=Sent)


@dataclass(frozen=True)
class UnaryMethod(Generic[Req, Q]):
    """One unary method: its request type, how it is read, what it runs, and what the
    grant applies to.

    `read` turns the request into its typed query once, after the policy allowed the call
    (None: the request is the query); the consent check (`subject_of`) and `run` share
    that query. `disclosed` names the response field the grant's fields apply to (None:
    the whole response); a `blocking` method (store queries, remote registries) runs on a
    worker from its start."""

    request: type[Req]
    run: Callable[[Q, FetchContext], Message]
    disclosed: str | None = None
    subject_of: Callable[[Q], Key] | None = None
    blocking: bool = False
    read: Callable[[Req], Q] | None = None


@dataclass(frozen=True)
class StreamMethod(Generic[Req]):
    """One server-streaming method: each message is projected to the grant; the record is
    made before the first message, one receipt in the trailers."""

    request: type[Req]
    run: Callable[[Req, FetchContext], Iterator[Message]]


@dataclass
class Call:
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
    streamed: bool = False  # signs and records per batch; receipts chain the batches

    def basis(self) -> str:
        """What the receipt names as legal basis: the consent used, or the statute."""
        if self.permit is not None:
            return self.permit.consent_id
        return self.grant.basis if self.grant is not None else ""

    def fields(self) -> tuple[str, ...]:
        if self.permit is not None:
            return self.permit.paths
        return self.grant.paths if self.grant is not None else ()

    def hashes(self) -> tuple[str, str, int | None]:
        """The request hash, response hash and batch count a refusal's receipt names."""
        if self.streamed:
            return chain(self.rhs), chain(self.shs) if self.shs else "", len(self.shs)
        return (self.claims.rh if self.claims else ""), "", None


@dataclass(frozen=True, slots=True)
class RefusalPlan:
    """What a refusal leaves behind, decided from what was known when it came.

    `record`: an audit record names it (the caller is known from its certificate, and
    the audit itself did not fail); `replay_checked`: that record carries the token's jti,
    so writing it is also the durable replay check; `receipt`: the caller gets a signed
    deny receipt (its token verified, and the audit did not fail: a receipt always names
    a record)."""

    record: bool
    replay_checked: bool
    receipt: bool


def refusal_plan(
    *, requester_known: bool, token_verified: bool, audited: bool, reason: Reason
) -> RefusalPlan:
    """The fail-closed rules of docs/security.md as one pure function (tested for every
    combination in tests/unit/test_engine.py)."""
    audit_failed = reason == Reason.AUDIT_UNAVAILABLE
    return RefusalPlan(
        record=requester_known and not audit_failed,
        replay_checked=token_verified and reason != Reason.REPLAYED and not audited,
        receipt=token_verified and not audit_failed,
    )


class Engine:
    """The checks, records and receipts of every call, over plain values."""

    def __init__(self, security: Security) -> None:
        self.security = security

    # -- checks -----------------------------------------------------------------------

    def authenticate(self, call: Call, inv: Invocation, body: bytes | None) -> RequestClaims:
        """The institution and its verified request token; replay checked in memory."""
        with tracing.span("jisr.authenticate"):
            claims = self._check_token(call, inv, body)
        span = tracing.current()
        span.set_attribute("jisr.requester", claims.iss)
        span.set_attribute("jisr.purpose", claims.purpose)
        return claims

    def _check_token(self, call: Call, inv: Invocation, body: bytes | None) -> RequestClaims:
        if inv.verified is not None:
            return self._check_verified(call, inv, inv.verified)
        secure = not self.security.insecure_plaintext
        if secure:
            call.requester = inv.certificate
        try:
            if len(inv.tokens) != 1:
                raise TokenError(
                    Reason.MISSING_SIGNATURE, f"exactly one {SIGNATURE_METADATA} is required"
                )
            token = inv.tokens[0]
            if secure and not inv.certificate:
                raise TokenError(Reason.NO_CLIENT_CERTIFICATE, "no client certificate")
            call.requester = inv.certificate if secure else unverified_issuer(token)
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
            raise ExchangeError(exc.reason, exc.message) from None
        # Known before the replay check: a replay, wherever it is caught (this process's
        # memory, or the durable store of another replica or of an earlier run), gets the
        # same deny receipt naming its record (docs/security.md, "Replays").
        call.claims = claims
        if not self.security.replay.first_use(claims.iss, claims.jti, claims.exp):
            raise replayed()
        return claims

    def _check_verified(self, call: Call, inv: Invocation, claims: RequestClaims) -> RequestClaims:
        """Claims an edge verified (Invocation.verified): they must name the transport's
        institution and this method; then the same replay check as a token's."""
        call.requester = inv.certificate
        if not inv.certificate or claims.iss != inv.certificate:
            raise ExchangeError(
                Reason.ISSUER_MISMATCH, "the signer is not the authenticated institution"
            )
        if claims.method != call.method:
            raise ExchangeError(Reason.METHOD_MISMATCH, "the claims name another method")
        call.claims = claims
        if not self.security.replay.first_use(claims.iss, claims.jti, claims.exp):
            raise replayed()
        return claims

    def authorize(self, call: Call, claims: RequestClaims, purpose: str) -> Grant:
        """The policy's grant for this institution, method and purpose."""
        with tracing.span("jisr.authorize"):
            if purpose != claims.purpose:
                raise invalid(
                    Reason.PURPOSE_MISMATCH, "purpose differs from the token's purpose", "purpose"
                )
            grant = self.security.policy.authorize(
                claims.iss, call.method.rsplit("/", 1)[1], purpose
            )
            if grant is None:
                raise ExchangeError(
                    Reason.PURPOSE_NOT_ALLOWED,
                    "this institution may not call this method for this purpose",
                )
            call.grant = grant
            return grant

    def consent(self, grant: Grant, subject: Callable[[], Key] | None, ctx: FetchContext) -> Permit:
        """The consent that covers the call's subject for this grant, its use counted."""
        with tracing.span("jisr.consent"):
            gate = self.security.consent
            if gate is None or subject is None:
                raise no_consent_here()
            return gate.check(grant, subject(), ctx)

    # -- receipts and records -----------------------------------------------------------

    def receipt(self, call: Call, decision: str, **said: Any) -> str:
        """The gateway's signed receipt for this call (or one batch of it). `said`: the
        keyword arguments of `exchanged`."""
        exchanged = self.exchanged(call, decision, **said)
        with tracing.span("jisr.receipt"):
            return self.security.receipts.sign(exchanged)

    def exchanged(
        self,
        call: Call,
        decision: str,
        *,
        rh: str,
        sh: str,
        reason: str = "",
        batches: int | None = None,
        seq: int | None = None,
        audit: str = "",
    ) -> Exchanged:
        """What a receipt says of this call (or one batch of it), as the call stands now:
        a batch's receipt is signed once its record is durable, while the stream has gone
        on to the next batch (gateway/engine/batch.py)."""
        assert call.claims is not None
        return Exchanged(
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

    def audit(self, call: Call, decision: str, **where: Any) -> str:
        """Make the record durable before any reply; fail closed (UNAVAILABLE) if not.
        `where`: the keyword arguments of `submit_audit`."""
        return drive(self.audit_steps(call, decision, **where))

    def audit_steps(self, call: Call, decision: str, **where: Any) -> Steps[str]:
        """`audit` as steps: the wait for durability is yielded to the driver. `where`: the
        keyword arguments of `submit_audit`."""
        if self.security.audit is None:
            return ""
        with tracing.span("jisr.audit") as span:
            pending = self.submit_audit(call, decision, **where)
            yield pending
            record_id = recorded(pending)
            span.set_attribute("jisr.audit_id", record_id)
            call.audited = call.audited or where.get("part", 0) == 0
            return record_id

    def submit_audit(
        self,
        call: Call,
        decision: str,
        *,
        rh: str,
        sh: str,
        reason: str = "",
        part: int = 0,
        subjects: tuple[str, ...] | None = None,
        replay_checked: bool = True,
    ) -> Pending:
        """Hand the call's record to the audit writer; `recorded(pending)` once it has
        settled says its id, or raises the refusal. The audit must be configured."""
        recorder = self.security.audit
        assert recorder is not None
        claims = call.claims
        try:
            return recorder.submit(
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
        except (ReplayError, AuditUnavailable) as exc:
            raise _refusal_of(exc) from None

    def _hashes(self, call: Call) -> tuple[str, ...]:
        """The audit record's subjects: every identifier the request named (a malformed one
        by the hash of its text, marked) and every household whose records were read."""
        recorder = self.security.audit
        if recorder is None:
            return ()
        valid = [(n.kind, n.value) for n in call.named if n.well_formed]
        malformed = {recorder.malformed(n.kind, n.value) for n in call.named if not n.well_formed}
        return tuple(sorted({*recorder.subjects([*valid, *call.read]), *malformed}))

    def answered(self, call: Call, body: bytes, receipt: str, audit: str) -> Answered:
        """Close the books on a permitted call: span attributes and metrics."""
        span = tracing.current()
        span.set_attribute("jisr.decision", PERMIT)
        span.set_attribute("jisr.audit_id", audit)
        span.set_attribute("rpc.grpc.status_code", 0)
        measure(call, PERMIT, "")
        return Answered(body, receipt)

    # -- refusals -----------------------------------------------------------------------

    def refuse(self, call: Call, exc: ExchangeError) -> Steps[Refused]:
        """Record the refusal (once the caller is known) and sign a deny receipt (once its
        token is): the outcome to answer with."""
        log.info(
            "refused",
            extra={"method": call.method, "code": code_name(exc.reason), "reason": exc.reason},
        )
        rh, sh, batches = call.hashes()
        audit = ""
        if self._plan(call, exc).record:
            exc, audit = yield from self._record_denial_steps(call, exc, rh=rh, sh=sh)
        span = tracing.current()
        span.set_attribute("jisr.decision", DENY)
        if audit:
            span.set_attribute("jisr.audit_id", audit)
        span.set_attribute("rpc.grpc.status_code", code_of(exc.reason))
        span.fail(exc.reason.value)
        measure(call, DENY, exc.reason.value)
        receipt = None
        if self._plan(call, exc).receipt:
            receipt = self.receipt(
                call, DENY, rh=rh, sh=sh, reason=exc.reason.value, batches=batches, audit=audit
            )
        return Refused(exc, receipt)

    def _record_denial_steps(
        self, call: Call, exc: ExchangeError, *, rh: str, sh: str
    ) -> Steps[tuple[ExchangeError, str]]:
        """Exactly one record for a refusal: the refusal as answered, and its record id.

        The first attempt carries the jti, so it is also the durable replay check. If the
        store has that jti already (first used at another replica, or before a restart),
        the refusal becomes REPLAYED and is recorded as such, without the jti, so a replay
        leaves its own record whichever check caught it."""
        checked = self._plan(call, exc).replay_checked
        try:
            return exc, (
                yield from self.audit_steps(
                    call, DENY, rh=rh, sh=sh, reason=exc.reason.value, replay_checked=checked
                )
            )
        except ExchangeError as unrecorded:
            if unrecorded.reason != Reason.REPLAYED:
                return unrecorded, ""
        again = replayed()
        try:
            return again, (
                yield from self.audit_steps(
                    call, DENY, rh=rh, sh=sh, reason=again.reason.value, replay_checked=False
                )
            )
        except ExchangeError as unrecorded:
            return unrecorded, ""

    @staticmethod
    def _plan(call: Call, exc: ExchangeError) -> RefusalPlan:
        return refusal_plan(
            requester_known=bool(call.requester),
            token_verified=call.claims is not None,
            audited=call.audited,
            reason=exc.reason,
        )

    def fault(self, inv: Invocation, call: Call, exc: Exception) -> Steps[Refused]:
        """An exception no check expected: the caller's leaving if it left, else a gateway
        fault (INTERNAL, never UNKNOWN), logged by type and place only (its message may
        quote request data)."""
        if not inv.active():
            # The caller left (cancel, deadline) and reading or writing the call failed.
            return (yield from self.refuse(call, caller_ended(inv.remaining())))
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        log.error(
            "gateway fault %s at %s:%s",
            type(exc).__name__,
            frame.filename,
            frame.lineno,
            extra={"method": call.method},
        )
        return (yield from self.refuse(call, ExchangeError(Reason.INTERNAL, "gateway fault")))

    def abandoned(self, inv: Invocation, call: Call) -> None:
        """A stream the caller left while the gateway was writing to it: record the end;
        there is no one left to answer."""
        exc = caller_ended(inv.remaining())
        log.info("ended by caller", extra={"method": call.method, "reason": exc.reason})
        rh, sh, _ = call.hashes()
        if call.requester:
            drive(self._record_denial_steps(call, exc, rh=rh, sh=sh))
        measure(call, DENY, exc.reason.value)

    def refused_at_door(self, method: str, institution: str, error: ExchangeError) -> None:
        """Record a refusal made before any request was read (gateway/services/door.py): a
        request that never came, a message too large. No token was checked, so no
        receipt."""
        call = Call(method, requester=institution)
        drive(self._record_denial_steps(call, error, rh="", sh=""))
        measure(call, DENY, error.reason.value)

    def overloaded(self, method: str, institution: str, error: ExchangeError) -> None:
        """Count a refusal of a flood (too many calls, rate, quota) as every call is
        counted, by method, status code and requester, so that throttling shows in the
        metrics. Not in the duration histogram: thousands of refusals in no time would
        pull every percentile down. Never recorded: a flood would fill the trail."""
        labels = _labels(method, institution, DENY, error.reason.value)
        telemetry.instruments().requests.add(1, labels)

    # -- the shapes of a call -----------------------------------------------------------

    def unary(self, inv: Invocation, raw: bytes, method: UnaryMethod[Req, Q]) -> Steps[Outcome]:
        """A unary call: authenticate, authorize (and consent), run, disclose, record, sign.

        The steps may run on the event loop (gateway/services/door.py) up to where they
        could block for long: a blocking method moves to a worker before it reads
        anything, a consent check on a networked store before the check."""
        call = Call(inv.method)
        if method.blocking:
            yield OFFLOAD
        with server_span(inv), disclosure.watching(call.read), fetched_once():
            try:
                parsed = try_parse(method.request, raw)
                call.named = disclosure.named(parsed)
                claims = self.authenticate(call, inv, raw)
                request = parsed if parsed is not None else parse(method.request, raw)
                purpose = validation.purpose(getattr(request, "purpose"))  # noqa: B009
                grant = self.authorize(call, claims, purpose)
                query = method.read(request) if method.read else cast(Q, request)
                ctx = FetchContext(purpose, inv.remaining(), claims.iss, claims.sub)
                fields = grant.fields
                if grant.consent_based:
                    if self.security.consent_blocks:
                        yield OFFLOAD
                    subject_of = method.subject_of
                    subject = (lambda: subject_of(query)) if subject_of else None
                    call.permit = self.consent(grant, subject, ctx)
                    fields = call.permit.fields
                response = method.run(query, ctx)
                disclose(response, method.disclosed, fields)
                body = response.SerializeToString()
                sh = body_hash(body)
                audit = yield from self.audit_steps(call, PERMIT, rh=claims.rh, sh=sh)
                receipt = self.receipt(call, PERMIT, rh=claims.rh, sh=sh, audit=audit)
                return self.answered(call, body, receipt, audit)
            except ExchangeError as exc:
                return (yield from self.refuse(call, exc))
            except Exception as exc:  # reported as INTERNAL, never as UNKNOWN
                return (yield from self.fault(inv, call, exc))

    def server_stream(self, inv: Invocation, raw: bytes, method: StreamMethod[Req]) -> Streamed:
        """A server-streaming call with the same checks: recorded before the first
        message, each message projected to the grant, one receipt at the end."""
        call = Call(inv.method)
        return self.streamed(inv, call, self._messages(inv, call, raw, method))

    def _messages(
        self, inv: Invocation, call: Call, raw: bytes, method: StreamMethod[Req]
    ) -> Streamed:
        parsed = try_parse(method.request, raw)
        call.named = disclosure.named(parsed)
        claims = self.authenticate(call, inv, raw)
        request = parsed if parsed is not None else parse(method.request, raw)
        purpose = validation.purpose(getattr(request, "purpose"))  # noqa: B009
        grant = self.authorize(call, claims, purpose)
        ctx = FetchContext(purpose, inv.remaining(), claims.iss, claims.sub)
        messages = iter(method.run(request, ctx))
        first = next(messages, None)  # bad filters fail here, before the record
        audit = self.audit(call, PERMIT, rh=claims.rh, sh="")
        for message in itertools.chain([first] if first else [], messages):
            disclose(message, None, grant.fields)
            body = message.SerializeToString()
            call.shs.append(body_hash(body))
            yield body
        receipt = self.receipt(call, PERMIT, rh=claims.rh, sh=chain(call.shs), audit=audit)
        return self.answered(call, b"", receipt, audit)

    def streamed(
        self, inv: Invocation, call: Call, messages: Generator[S, None, Outcome]
    ) -> Generator[S, None, Outcome]:
        """A response stream in its server span, every way it can end turned into its
        outcome: a refusal (also one thrown in where it waits: the caller stopped reading,
        the gateway stops), a fault, or the caller leaving (recorded, then closed)."""
        with server_span(inv):
            try:
                return (yield from messages)
            except ExchangeError as exc:
                return drive(self.refuse(call, exc))
            except GeneratorExit:
                self.abandoned(inv, call)
                raise
            except Exception as exc:  # reported as INTERNAL, never as UNKNOWN
                return drive(self.fault(inv, call, exc))


def recorded(pending: Pending) -> str:
    """The id of a settled record, or the refusal its failure means: a replayed token, or
    an audit that could not record (nothing is disclosed then: the call fails closed)."""
    try:
        return pending.outcome().record_id
    except (ReplayError, AuditUnavailable) as exc:
        raise _refusal_of(exc) from None


def _refusal_of(exc: ReplayError | AuditUnavailable) -> ExchangeError:
    if isinstance(exc, ReplayError):
        return replayed()
    return ExchangeError(
        Reason.AUDIT_UNAVAILABLE,
        "the access could not be recorded; nothing was disclosed, retry later",
    )


def server_span(inv: Invocation) -> tracing.ServerSpan:
    """The call's server span, continuing the caller's traceparent."""
    return tracing.server_span(
        f"{inv.service}/{inv.name}",
        inv.metadata,
        {"rpc.system": "grpc", "rpc.service": inv.service, "rpc.method": inv.name},
    )


def measure(call: Call, decision: str, reason: str) -> None:
    """Count the call and its duration (seconds) by method, as the spans name it, status
    code, institution and decision (never a subject)."""
    ins = telemetry.instruments()
    attributes = _labels(call.method, call.requester, decision, reason)
    ins.requests.add(1, attributes)
    ins.latency.record(time.time() - call.started, attributes)
    if reason.startswith("CONSENT_"):
        ins.consent_denials.add(1, {"jisr.requester": call.requester, "jisr.reason": reason})


def _labels(method: str, requester: str, decision: str, reason: str) -> dict[str, str | int]:
    service, name = rpc_names(method)
    return {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": name,
        "rpc.grpc.status_code": code_of(Reason(reason)) if reason else 0,
        "jisr.requester": requester,
        "jisr.decision": decision,
    }


def disclose(response: Message, field_name: str | None, fields: FieldTree) -> None:
    """Keep only the granted fields of the response's status message; list the rest."""
    if field_name is None:
        projected, _ = project(response, fields)
        response.CopyFrom(projected)
        return
    inner = getattr(response, field_name)
    projected, withheld = project(inner, fields)
    inner.CopyFrom(projected)
    getattr(response, "withheld").paths.extend(withheld)  # noqa: B009


def parse(message_type: type[Req], raw: bytes) -> Req:
    """The request, or MALFORMED_REQUEST naming the message type."""
    try:
        return message_type.FromString(raw)
    except DecodeError:
        raise invalid(
            Reason.MALFORMED_REQUEST, f"request is not a valid {message_type.__name__}"
        ) from None


def try_parse(message_type: type[Req], raw: bytes) -> Req | None:
    """The request, or None if the bytes are not one. Parsed before the token is checked
    only to name its subjects in the audit record of whatever comes; a malformed request
    is still refused after authentication, in the documented order."""
    try:
        return message_type.FromString(raw)
    except DecodeError:
        return None


def replayed() -> ExchangeError:
    return ExchangeError(Reason.REPLAYED, "this jti was already used")


def no_consent_here() -> ExchangeError:
    return ExchangeError(
        Reason.CONSENT_MISSING, "consent-based exchanges are not available on this gateway"
    )


def chain(hashes: Sequence[str]) -> str:
    """The hash of a stream's per-batch hashes joined by '.' (docs/security.md)."""
    return body_hash(".".join(hashes).encode())
