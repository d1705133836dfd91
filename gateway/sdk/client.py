"""The partner SDK: mTLS, a request token signed over each request's exact bytes, receipts
verified against the gateway's JWKS, and typed errors.

```python
creds = Credentials.from_pki(Path("var/pki"), "CNSS")
with JisrClient("127.0.0.1:50051", creds) as client:
    answer = client.verify("AMO_ENROLMENT", "H000123456", "AMOT")
    answer.message.eligible, answer.receipt["audit"], answer.withheld
```
Errors carry the gRPC code and the stable ErrorInfo reason from the status details, so a
partner branches on `err.reason`, never on message text.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import itertools
import json
import secrets
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from google.type.date_pb2 import Date
from grpc_status import rpc_status

from consent import artefact as artefacts
from gateway.base.jws import body_hash
from gateway.base.wire import (
    CONSENT_REGISTRY,
    RECEIPT_METADATA,
    REGISTRY_EXCHANGE,
    SIGNATURE_METADATA,
    method_path,
)
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.propagation import outgoing as trace_headers
from gateway.sdk.signing import Signer
from gateway.security import pki, receipts
from gateway.security.receipts import ReceiptError

M = TypeVar("M", bound=Message)


@dataclass
class JisrError(Exception):
    """A failed call: gRPC code, stable reason (e.g. INVALID_IDCS), message, metadata,
    and the gateway's signed receipt of the refusal when it knew the caller."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    receipt: dict[str, Any] | None = None
    # Seconds to wait before a retry can succeed (the status's RetryInfo); None: do not
    # retry the same call, it would fail the same way.
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


@dataclass(frozen=True)
class Answer(Generic[M]):
    """A response with its verified receipt claims and the fields the policy withheld."""

    message: M
    receipt: dict[str, Any]
    withheld: tuple[str, ...]
    receipt_token: str = ""


@dataclass(frozen=True)
class Streamed(Generic[M]):
    """A server stream's messages with the verified receipt that covers them all."""

    messages: tuple[M, ...]
    receipt: dict[str, Any]
    receipt_token: str = ""


@dataclass(frozen=True)
class Receipt:
    """A verified receipt that answers no single message: a batch stream's closing one."""

    claims: dict[str, Any]
    token: str


class BatchStream:
    """One VerifyEligibilityBatch call. Iterating yields each batch's Answer (its receipt
    checked, its claims and JWS kept); once iteration ends, `closing` holds the stream's
    closing receipt, checked to cover every batch. Callers that keep or show receipts
    (`jisr call batch`) need them; `verify_batches` yields the bare results."""

    def __init__(
        self, answers: Generator[Answer[pb.EligibilityBatchResults], None, Receipt | None]
    ) -> None:
        self._answers = answers
        self.closing: Receipt | None = None

    def __iter__(self) -> Iterator[Answer[pb.EligibilityBatchResults]]:
        self.closing = yield from self._answers


@dataclass(frozen=True)
class Credentials:
    """An institution's TLS identity, signing key, and the gateway's CA and receipt keys."""

    signer: Signer
    ca_cert: bytes
    tls_cert: bytes
    tls_key: bytes
    gateway_jwks: Mapping[str, Any]

    @classmethod
    def from_pki(cls, pki_dir: Path, institution: str, sub: str = "jisr-client") -> Credentials:
        """Files written by `jisr pki init` and `jisr pki issue INSTITUTION`."""
        files = pki.load_institution(pki_dir, institution)
        paths = pki.PkiPaths(pki_dir)
        return cls(
            signer=Signer.from_files(
                institution,
                files.signing_key,
                files.signing_key.with_name("signing.json"),
                pki.gateway_id(pki_dir),
                sub,
            ),
            ca_cert=paths.ca_cert.read_bytes(),
            tls_cert=files.tls_cert.read_bytes(),
            tls_key=files.tls_key.read_bytes(),
            gateway_jwks=pki.gateway_jwks(pki_dir),
        )


def error_from(exc: grpc.RpcError, jwks: Mapping[str, Any] | None = None) -> JisrError:
    """Decode a gRPC error's google.rpc.Status details (and receipt) into a JisrError."""
    if not isinstance(exc, grpc.Call):
        return JisrError(grpc.StatusCode.UNKNOWN, "", str(exc))
    code, message = exc.code(), exc.details() or ""
    receipt = _receipt_claims(exc.trailing_metadata(), jwks) if jwks is not None else None
    status = rpc_status.from_call(exc)
    if status is None:
        return JisrError(code, "", message, receipt=receipt)
    found: JisrError | None = None
    delay: float | None = None
    for detail in status.details:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if found is None and detail.Unpack(info):
            found = JisrError(code, info.reason, status.message, dict(info.metadata), receipt)
        elif detail.Unpack(retry):
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    if found is None:
        return JisrError(code, "", message, receipt=receipt, retry_after=delay)
    found.retry_after = delay
    return found


def _receipt_claims(
    trailers: Sequence[tuple[str, str | bytes]] | None, jwks: Mapping[str, Any]
) -> dict[str, Any] | None:
    values = [v for k, v in trailers or () if k == RECEIPT_METADATA]
    if len(values) != 1:
        return None
    try:
        return receipts.verify(str(values[0]), jwks)
    except ReceiptError:
        return None


def subject(value: str) -> pb.Subject:
    """A Subject from text: household ids start with H, anything else is an IDCS."""
    if value.startswith("H"):
        return pb.Subject(household_id=value)
    return pb.Subject(idcs=value)


def date(value: dt.date | None) -> Date | None:
    """google.type.Date from a date (None stays None: the gateway uses today)."""
    return None if value is None else Date(year=value.year, month=value.month, day=value.day)


def _receipt_error(message: str) -> JisrError:
    return JisrError(grpc.StatusCode.DATA_LOSS, "RECEIPT_INVALID", message)


class JisrClient:
    """One channel to a gateway; every method raises JisrError on failure."""

    def __init__(
        self,
        target: str,
        credentials: Credentials,
        *,
        timeout: float = 10.0,
        insecure_plaintext: bool = False,
    ) -> None:
        if insecure_plaintext:
            self._channel = grpc.insecure_channel(target)
        else:
            tls = grpc.ssl_channel_credentials(
                credentials.ca_cert, credentials.tls_key, credentials.tls_cert
            )
            self._channel = grpc.secure_channel(target, tls)
        self.credentials = credentials
        self.target = target
        self.timeout = timeout

    def __enter__(self) -> JisrClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def acting_as(self, sub: str) -> JisrClient:
        """This client's channel, its calls signed with `sub` as the caller: an
        application serving several people (the console's officers) names each one by a
        pseudonymous id, which the gateway records. Close the original, not the view."""
        view = copy.copy(self)
        signer = dataclasses.replace(self.credentials.signer, sub=sub)
        view.credentials = dataclasses.replace(self.credentials, signer=signer)
        return view

    # -- unary ------------------------------------------------------------------------

    def call(
        self,
        name: str,
        request: Message,
        response_type: type[M],
        purpose: str,
        service: str = REGISTRY_EXCHANGE,
    ) -> Answer[M]:
        """Sign `request` over its bytes, call `name`, verify the receipt, parse the answer."""
        method = method_path(service, name)
        body = request.SerializeToString()
        jti = secrets.token_urlsafe(18)
        token = self.credentials.signer.request_token(method, purpose, body, jti=jti)
        stub = self._channel.unary_unary(method)
        try:
            raw, call = stub.with_call(
                body,
                timeout=self.timeout,
                metadata=((SIGNATURE_METADATA, token), *trace_headers()),
            )
        except grpc.RpcError as exc:
            raise error_from(exc, self.credentials.gateway_jwks) from None
        trailers = call.trailing_metadata()
        claims = self._checked(trailers, jti, body_hash(body), body_hash(raw))
        message = response_type.FromString(raw)
        mask = getattr(message, "withheld", None)
        withheld = tuple(mask.paths) if mask is not None else ()
        return Answer(message, claims, withheld, _receipt_token(trailers))

    def stream(
        self,
        name: str,
        request: Message,
        response_type: type[M],
        purpose: str,
        service: str,
    ) -> Streamed[M]:
        """Sign `request`, call the server-streaming method `name`, and return its messages
        once the stream's receipt is verified to cover them all (so nothing of an answer
        is used before the gateway has signed for it)."""
        method = method_path(service, name)
        body = request.SerializeToString()
        jti = secrets.token_urlsafe(18)
        token = self.credentials.signer.request_token(method, purpose, body, jti=jti)
        call = self._channel.unary_stream(method)(
            body,
            timeout=self.timeout,
            metadata=((SIGNATURE_METADATA, token), *trace_headers()),
        )
        raws: list[bytes] = []
        try:
            raws.extend(call)
        except grpc.RpcError as exc:
            raise error_from(exc, self.credentials.gateway_jwks) from None
        trailers = call.trailing_metadata()
        sh = _chain([body_hash(raw) for raw in raws])
        claims = self._checked(trailers, jti, body_hash(body), sh)
        messages = tuple(response_type.FromString(raw) for raw in raws)
        return Streamed(messages, claims, _receipt_token(trailers))

    def open_stream(
        self, service: str, name: str, body: bytes, purpose: str, *, jti: str, timeout: float | None
    ) -> Any:
        """Start the server-streaming method `name` with `body`, signed under `jti`, and
        return grpc's call (iterate it for the raw messages, then read its trailers): for
        streams whose messages carry receipts of their own (gateway/sdk/events.py)."""
        method = method_path(service, name)
        token = self.credentials.signer.request_token(method, purpose, body, jti=jti)
        return self._channel.unary_stream(method)(
            body, timeout=timeout, metadata=((SIGNATURE_METADATA, token), *trace_headers())
        )

    def check_receipt(
        self, trailers: Sequence[tuple[str, str | bytes]] | None, jti: str, rh: str, sh: str
    ) -> Receipt:
        """The call's closing receipt, verified to cover `jti`, `rh` and `sh`."""
        return Receipt(self._checked(trailers, jti, rh, sh), _receipt_token(trailers))

    def _checked(
        self, trailers: Sequence[tuple[str, str | bytes]] | None, jti: str, rh: str, sh: str
    ) -> dict[str, Any]:
        claims = _receipt_claims(trailers, self.credentials.gateway_jwks)
        if claims is None:
            raise _receipt_error("the answer has no valid gateway receipt")
        if (claims.get("jti"), claims.get("rh"), claims.get("sh")) != (jti, rh, sh):
            raise _receipt_error("the receipt does not cover this request and answer")
        return claims

    def person_status(self, purpose: str, idcs: str) -> Answer[pb.GetPersonStatusResponse]:
        request = pb.GetPersonStatusRequest(purpose=purpose, idcs=idcs)
        return self.call("GetPersonStatus", request, pb.GetPersonStatusResponse, purpose)

    def household_status(self, purpose: str, who: str) -> Answer[pb.GetHouseholdStatusResponse]:
        request = pb.GetHouseholdStatusRequest(purpose=purpose, subject=subject(who))
        return self.call("GetHouseholdStatus", request, pb.GetHouseholdStatusResponse, purpose)

    def verify(
        self, purpose: str, who: str, programme: str, as_of: dt.date | None = None
    ) -> Answer[pb.VerifyEligibilityResponse]:
        request = pb.VerifyEligibilityRequest(
            purpose=purpose, subject=subject(who), programme=programme, as_of=date(as_of)
        )
        return self.call("VerifyEligibility", request, pb.VerifyEligibilityResponse, purpose)

    # -- consents ---------------------------------------------------------------------

    def consent(
        self, name: str, request: Message, response_type: type[M], purpose: str
    ) -> Answer[M]:
        """A ConsentRegistry call (GrantConsent, RevokeConsent, GetConsent, ...)."""
        return self.call(name, request, response_type, purpose, CONSENT_REGISTRY)

    def sign_artefact(self, claims: dict[str, Any]) -> str:
        """A consent artefact signed with this institution's key (consent collectors)."""
        signer = self.credentials.signer
        return artefacts.sign(
            {"iss": signer.institution, **claims}, signer.key, signer.kid, signer.alg
        )

    # -- bulk -------------------------------------------------------------------------

    def verify_batches(
        self,
        purpose: str,
        programme: str,
        batches: Iterable[Sequence[str]],
        as_of: dt.date | None = None,
        timeout: float | None = None,
    ) -> Iterator[pb.EligibilityBatchResults]:
        """Stream batches of subjects; yields each batch's results in order, after checking
        its receipt; the stream's closing receipt is checked to cover every batch."""
        for answer in self.verify_batch_stream(purpose, programme, batches, as_of, timeout):
            yield answer.message

    def verify_batch_stream(
        self,
        purpose: str,
        programme: str,
        batches: Iterable[Sequence[str]],
        as_of: dt.date | None = None,
        timeout: float | None = None,
    ) -> BatchStream:
        """As `verify_batches`, keeping every receipt: each batch's Answer carries its
        receipt, and the stream's `closing` receipt is set once iteration ends (None when
        there was no batch, so nothing was sent)."""
        return BatchStream(self._batch_answers(purpose, programme, batches, as_of, timeout))

    def _batch_answers(
        self,
        purpose: str,
        programme: str,
        batches: Iterable[Sequence[str]],
        as_of: dt.date | None,
        timeout: float | None,
    ) -> Generator[Answer[pb.EligibilityBatchResults], None, Receipt | None]:
        method = method_path(REGISTRY_EXCHANGE, "VerifyEligibilityBatch")
        signer = self.credentials.signer
        jti = secrets.token_urlsafe(18)
        sent: list[str] = []

        def envelopes() -> Iterator[bytes]:
            for seq, subjects in enumerate(batches):
                batch = pb.EligibilityBatch(
                    purpose=purpose,
                    programme=programme,
                    as_of=date(as_of),
                    subjects=[subject(s) for s in subjects],
                ).SerializeToString()
                sent.append(body_hash(batch))
                yield pb.VerifyEligibilityBatchRequest(
                    batch=batch, batch_signature=signer.batch_token(jti, seq, batch)
                ).SerializeToString()

        stream = envelopes()
        first = next(stream, None)
        if first is None:
            return None
        token = signer.request_token(method, purpose, first, jti=jti)
        call = self._channel.stream_stream(method)(
            itertools.chain([first], stream),
            timeout=timeout,
            metadata=((SIGNATURE_METADATA, token), *trace_headers()),
        )
        received: list[str] = []
        try:
            for raw in call:
                envelope = pb.VerifyEligibilityBatchResponse.FromString(raw)
                yield self._batch_answer(envelope, jti, sent, received)
            trailers = call.trailing_metadata()
        except grpc.RpcError as exc:
            raise error_from(exc, self.credentials.gateway_jwks) from None
        claims = self._checked(trailers, jti, _chain(sent), _chain(received))
        return Receipt(claims, _receipt_token(trailers))

    def _batch_answer(
        self,
        envelope: pb.VerifyEligibilityBatchResponse,
        jti: str,
        sent: list[str],
        received: list[str],
    ) -> Answer[pb.EligibilityBatchResults]:
        seq = len(received)
        sh = body_hash(envelope.results)
        try:
            claims = receipts.verify(envelope.receipt, self.credentials.gateway_jwks)
        except ReceiptError as exc:
            raise _receipt_error(f"batch {seq}: {exc}") from None
        if (claims.get("jti"), claims.get("seq"), claims.get("rh"), claims.get("sh")) != (
            jti,
            seq,
            sent[seq],
            sh,
        ):
            raise _receipt_error(f"batch {seq}: the receipt does not cover this batch")
        received.append(sh)
        results = pb.EligibilityBatchResults.FromString(envelope.results)
        return Answer(results, claims, tuple(results.withheld.paths), envelope.receipt)


def _receipt_token(trailers: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The receipt JWS itself (already verified by `_checked`), for callers that keep it."""
    return next(str(v) for k, v in trailers or () if k == RECEIPT_METADATA)


def _chain(hashes: Sequence[str]) -> str:
    return body_hash(".".join(hashes).encode())


def load_jwks(path: Path) -> dict[str, Any]:
    """A gateway JWKS file (as `jisr keys export` writes it)."""
    return dict(json.loads(path.read_text(encoding="utf-8")))
