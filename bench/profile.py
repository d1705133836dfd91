"""The gateway's VerifyEligibility path in-process, without gRPC, on one thread: µs per call
of each step, alone and in the handler's sequence, of the whole handler with the audit on
and off, bare ES256 and pyjwt beside them, and (`python -m bench.profile`) a cProfile of
the handler. The parts are built as `jisr serve` builds them; inputs are made untimed."""

from __future__ import annotations

import argparse
import base64
import cProfile
import itertools
import json
import pstats
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.types import Options

from adapters.base import FetchContext
from adapters.registry_db import REGISTRY_FILE, Registry
from bench.common import INSTITUTION, UNARY_METHOD, UNARY_PURPOSE
from bench.identity import tokens
from bench.workload import load_subjects, unary_requests
from gateway.audit.recorder import AuditRecorder, load_or_create_key
from gateway.audit.store import open_audit_store
from gateway.audit.writer import AuditWriter
from gateway.base.errors import ExchangeError
from gateway.base.jws import body_hash
from gateway.base.wire import SIGNATURE_METADATA
from gateway.config import Config
from gateway.engine.call import Engine, Security
from gateway.engine.consent_gate import ConsentGate
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pipeline import programmes, validation
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.registries import Registries
from gateway.sdk.client import Credentials
from gateway.sdk.signing import Signer
from gateway.security import pki, projection
from gateway.security.policy import Grant
from gateway.security.receipts import PERMIT, Exchanged
from gateway.security.tokens import ReplayGuard, verify_request
from gateway.server import build_adapters, build_security, checkpoint_signer
from gateway.services import registry_exchange
from tests.support.grpc_context import FakeCallDetails, FakeContext
from tests.support.identities import make_pki

WARMUP = 200
ROUNDS = 5
MAX_STEP_S = 60.0  # a cap on each timed loop, whatever its call count
METHOD_NAME = UNARY_METHOD.rsplit("/", 1)[1]
# A grant that withholds a field (score_band) of EligibilityDecision, for projection's
# cost when it has something to clear (DEMO's grant discloses every field).
MINIMISING = ("CNSS", "AMO_ENROLMENT")
Handle = Callable[[bytes, FakeContext], bytes]


@dataclass
class Pipeline:
    """The gateway's parts, built once, and the signer of the calling institution."""

    security: Security
    exchange: Exchange
    signer: Signer
    audience: str
    pki_dir: Path
    registries: Registries
    audit: AuditRecorder

    def handler(
        self, *, audit: bool = True, consent: ConsentGate | None = None, method: str = UNARY_METHOD
    ) -> Handle:
        """The behaviour `jisr serve` registers for `method`, with a replay guard of its own
        (tokens the steps used are not refused); audit on, as `jisr serve` runs, or off."""
        recorder = self.audit if audit else None
        security = replace(self.security, replay=ReplayGuard(), audit=recorder, consent=consent)
        generic = registry_exchange.handler(Engine(security), self.exchange)
        handler = generic.service(FakeCallDetails(method))
        if handler is None or handler.unary_unary is None:
            raise RuntimeError(f"the gateway serves no {method}")
        return cast(Handle, handler.unary_unary)

    def tokens(self, requests: Sequence[bytes], count: int) -> list[str]:
        return tokens(self.signer, UNARY_METHOD, UNARY_PURPOSE, requests, count)

    def grant(self, institution: str = INSTITUTION, purpose: str = UNARY_PURPOSE) -> Grant:
        grant = self.security.policy.authorize(institution, METHOD_NAME, purpose)
        if grant is None:
            raise RuntimeError(f"the policy grants {institution} no {METHOD_NAME} for {purpose}")
        return grant


@contextmanager
def pipeline(data_dir: Path, pki_dir: Path, state_dir: Path) -> Iterator[Pipeline]:
    """The gateway's security, exchange and audit writer as `jisr serve` builds them (the
    audit store: SQLite in `state_dir`); closed after."""
    config, sign = Config(data_dir=data_dir, pki_dir=pki_dir), checkpoint_signer(pki_dir)
    limits: dict[str, Any] = {"checkpoint_every": config.audit_checkpoint_every}
    limits["checkpoint_seconds"] = config.audit_checkpoint_seconds
    with (
        closing(Registry(data_dir / REGISTRY_FILE)) as registry,
        closing(Registries(build_adapters(config, registry))) as registries,
        closing(open_audit_store(None, state_dir)) as store,
        closing(AuditWriter(store, "bench-profile", sign, **limits)) as writer,
    ):
        yield Pipeline(
            security=build_security(config),
            exchange=Exchange(registries, programmes.load_default()),
            signer=Credentials.from_pki(pki_dir, INSTITUTION, sub="jisr-bench").signer,
            audience=pki.gateway_id(pki_dir),
            pki_dir=pki_dir,
            registries=registries,
            audit=AuditRecorder(writer, load_or_create_key(pki_dir)),
        )


def timed(
    step: Callable[[int], object], calls: int, rounds: int = ROUNDS, seconds: float = MAX_STEP_S
) -> float:
    """Median over `rounds` rounds of µs per call of step(0), step(1), ... (calls in all);
    a round that passes the `seconds` deadline ends there, and later rounds are skipped."""
    per_round, deadline, i = max(1, calls // rounds), time.monotonic() + seconds, 0
    samples: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        done = 0
        while done < per_round:
            step(i)
            i += 1
            done += 1
            if not done % 64 and time.monotonic() > deadline:
                break
        samples.append((time.perf_counter() - started) / done)
        if time.monotonic() > deadline:
            break
    return statistics.median(samples) * 1e6


def _raw_es256(token: str, key: ec.EllipticCurvePublicKey) -> Callable[[int], object]:
    """The bare ES256 verify of a token's signature (cryptography, DER prepared)."""
    signing_input, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    data = signing_input.encode()
    algorithm = ec.ECDSA(hashes.SHA256())
    return lambda _: key.verify(der, data, algorithm)


STEP_LABELS = {  # the steps, in the handler's order, and their rows in the table
    "token_verify": "request token verify (pyjwt, trust store, rh)",
    "replay_check": "replay check (iss, jti)",
    "parse_request": "parse request",
    "policy_authorize": "policy authorize",
    "exchange_verify": "exchange pipeline (Exchange.verify)",
    "projection": "projection (DEMO: every field)",
    "projection_minimising": "projection (CNSS: score_band withheld)",
    "response_serialize_hash": "serialize response + sha256",
    "audit_record": "audit record (AuditRecorder.record, SQLite)",
    "receipt_sign": "receipt sign (ReceiptSigner.sign)",
}
IN_SEQUENCE = tuple(name for name in STEP_LABELS if name != "projection_minimising")


def _record(
    audit: AuditRecorder, grant: Grant, subjects: tuple[str, ...], started: float, *call: str
) -> str:
    """One permitted exchange's audit record, durable (`call`: sub, purpose, rh, sh, jti)."""
    sub, purpose, rh, sh, jti = call
    return audit.record(
        requester=INSTITUTION,
        method=UNARY_METHOD,
        basis=grant.basis,
        subjects=subjects,
        fields=grant.paths,
        decision=PERMIT,
        reason="",
        part=0,
        started=started,
        sub=sub,
        purpose=purpose,
        rh=rh,
        sh=sh,
        jti=jti,
    )


def _exchanged(grant: Grant, jti: str, rh: str, sh: str, audit: str = "") -> Exchanged:
    """What a receipt says of a permitted VerifyEligibility."""
    return Exchanged(
        jti, rh, sh, UNARY_METHOD, UNARY_PURPOSE, PERMIT, grant.paths, grant.basis, audit=audit
    )


def caller(
    handle: Handle, institution: str, requests: Sequence[bytes], tokens: Sequence[str]
) -> Callable[[int], bytes]:
    """Call i of `handle`: requests[i % n] with tokens[i], from `institution`."""
    context, n = FakeContext(institution), len(requests)

    def call(i: int) -> bytes:
        context.metadata = ((SIGNATURE_METADATA, tokens[i]),)
        return handle(requests[i % n], context)

    return call


def in_sequence(
    p: Pipeline, requests: Sequence[bytes], tokens: Sequence[str], calls: int
) -> dict[str, float]:
    """The handler's steps called in its order, one call after the other, each step timed
    where it runs: µs per call of each (median of ROUNDS rounds). Unlike a step in a
    tight loop of its own, each one here pays for the caches the others evicted, so these
    add up to (nearly) the handler's total. Capped at MAX_STEP_S like `timed`."""
    n, purpose, per_round = len(requests), UNARY_PURPOSE, max(1, calls // ROUNDS)
    guard, policy, trust, audit = ReplayGuard(), p.security.policy, p.security.trust, p.audit
    rounds: list[list[float]] = []
    clock, deadline = time.perf_counter, time.monotonic() + MAX_STEP_S
    for r in range(ROUNDS):
        if rounds and time.monotonic() > deadline:
            break
        spent = [0.0] * len(IN_SEQUENCE)
        for i in range(r * per_round, (r + 1) * per_round):
            raw = requests[i % n]
            began = time.time()
            t0 = clock()
            claims = verify_request(
                tokens[i],
                institution=INSTITUTION,
                method=UNARY_METHOD,
                body=raw,
                audience=p.audience,
                now=time.time(),
                trust=trust,
            )
            t1 = clock()
            guard.first_use(claims.iss, claims.jti, claims.exp)
            t2 = clock()
            request = pb.VerifyEligibilityRequest.FromString(raw)
            t3 = clock()
            grant = policy.authorize(claims.iss, METHOD_NAME, purpose)
            t4 = clock()
            query = p.exchange.eligibility_query(request)
            response = p.exchange.verify(query, FetchContext(purpose, 10.0))
            t5 = clock()
            assert grant is not None
            projected, withheld = projection.project(response.decision, grant.fields)
            response.decision.CopyFrom(projected)
            response.withheld.paths.extend(withheld)
            t6 = clock()
            sh = body_hash(response.SerializeToString())
            t7 = clock()
            subjects = audit.subjects([validation.subject(request.subject)])
            call = (claims.sub, claims.purpose, claims.rh, sh, claims.jti)
            record_id = _record(audit, grant, subjects, began, *call)
            t8 = clock()
            p.security.receipts.sign(_exchanged(grant, claims.jti, claims.rh, sh, record_id))
            t9 = clock()
            stamps = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9)
            for k, (a, b) in enumerate(itertools.pairwise(stamps)):
                spent[k] += b - a
        rounds.append([x / per_round * 1e6 for x in spent])
    return {
        name: round(statistics.median(r[k] for r in rounds), 1)
        for k, name in enumerate(IN_SEQUENCE)
    }


def _audit_step(
    p: Pipeline,
    parsed: Sequence[pb.VerifyEligibilityRequest],
    receipts: Sequence[Exchanged],
    grant: Grant,
) -> Callable[[int], object]:
    """Call i records exchange i durably through the pipeline's AuditRecorder (its own
    fresh jti: the store's replay index refuses one it holds)."""
    audit, n = p.audit, len(parsed)
    subjects = [audit.subjects([validation.subject(r.subject)]) for r in parsed]
    jtis = [secrets.token_urlsafe(18) for _ in receipts]
    hashes, started = [(r.rh, r.sh) for r in receipts], time.time()
    return lambda i: _record(
        audit, grant, subjects[i % n], started, "jisr-bench", UNARY_PURPOSE, *hashes[i], jtis[i]
    )


def cpu_us(step: Callable[[int], object], calls: int) -> float:
    """CPU µs per call of step(0), step(1), ... of every thread of this process."""
    cpu0, wall0, done = time.process_time(), time.perf_counter(), 0
    while done < calls and time.perf_counter() - wall0 < MAX_STEP_S:
        step(done)
        done += 1
    return (time.process_time() - cpu0) / max(1, done) * 1e6


def steps(p: Pipeline, requests: Sequence[bytes], calls: int) -> dict[str, Any]:
    """µs per call of each step of the unary path (alone in a tight loop, and in the
    handler's sequence), of the whole handler, and reference figures (DESIGN.md's)."""
    n, purpose, institution = len(requests), UNARY_PURPOSE, INSTITUTION
    measured, trust, now = p.tokens(requests, calls), p.security.trust, time.time()
    parsed = [pb.VerifyEligibilityRequest.FromString(raw) for raw in requests]
    fetch = FetchContext(purpose, 10.0)
    answers: list[pb.VerifyEligibilityResponse] = []
    for request in parsed:
        try:
            answers.append(p.exchange.verify(p.exchange.eligibility_query(request), fetch))
        except ExchangeError:
            continue
    decisions = [a.decision for a in answers]
    grant, minimising = p.grant(), p.grant(*MINIMISING)
    signer = p.security.receipts
    sh = [body_hash(a.SerializeToString()) for a in answers]
    receipts_in = [
        _exchanged(grant, secrets.token_urlsafe(18), body_hash(requests[i % n]), sh[i % len(sh)])
        for i in range(calls)
    ]
    guard, exp = ReplayGuard(), int(now) + 300
    jtis = [secrets.token_urlsafe(18) for _ in range(calls)]
    trusted = trust.get(institution, p.signer.kid)
    if trusted is None or not isinstance(trusted.key, ec.EllipticCurvePublicKey):
        raise RuntimeError(f"{institution}'s ES256 key is not in the trust store")
    public_key, (gateway_key, _) = trusted.key, pki.load_gateway_signing_key(p.pki_dir)
    to_sign, ecdsa = measured[0].rpartition(".")[0].encode(), ec.ECDSA(hashes.SHA256())

    def verify(i: int) -> object:
        return verify_request(
            measured[i],
            institution=institution,
            method=UNARY_METHOD,
            body=requests[i % n],
            audience=p.audience,
            now=now,
            trust=trust,
        )

    handle = p.handler()
    warm = caller(handle, institution, requests, p.tokens(requests, WARMUP))
    for i in range(WARMUP):
        warm(i)
    # Fresh tokens: the audit store refuses a jti it has recorded (the replay index).
    in_sequence(p, requests, p.tokens(requests, WARMUP), WARMUP)
    # pyjwt checking the signature only (the claims are the gateway's to check).
    unchecked = ("verify_exp", "verify_nbf", "verify_iat", "verify_aud", "verify_iss")
    decode_options = cast(Options, {"verify_signature": True, **dict.fromkeys(unchecked, False)})
    step: dict[str, Callable[[int], object]] = {
        "token_verify": verify,
        "replay_check": lambda i: guard.first_use(institution, jtis[i], exp),
        "parse_request": lambda i: pb.VerifyEligibilityRequest.FromString(requests[i % n]),
        "policy_authorize": lambda _: p.security.policy.authorize(
            institution, METHOD_NAME, purpose
        ),
        "exchange_verify": (
            lambda i: p.exchange.verify(p.exchange.eligibility_query(parsed[i % n]), fetch)
        ),
        "projection": lambda i: projection.project(decisions[i % len(decisions)], grant.fields),
        "projection_minimising": (
            lambda i: projection.project(decisions[i % len(decisions)], minimising.fields)
        ),
        "response_serialize_hash": lambda i: body_hash(
            answers[i % len(answers)].SerializeToString()
        ),
        "audit_record": _audit_step(p, parsed, receipts_in, grant),
        "receipt_sign": lambda i: signer.sign(receipts_in[i]),
    }
    alone = {name: timed(each, calls) for name, each in step.items()}
    # The audit record's CPU (every thread of the process: the caller's and the writer's),
    # beside its wall time above, most of which is the caller waiting for the fsync.
    audit_cpu = cpu_us(_audit_step(p, parsed, receipts_in, grant), calls)
    reference: dict[str, Callable[[int], object]] = {
        "es256_verify_raw": _raw_es256(measured[0], public_key),
        "es256_sign_raw": lambda _: gateway_key.sign(to_sign, ecdsa),
        "pyjwt_decode_verify": (
            lambda i: jwt.decode(
                measured[i], public_key, algorithms=["ES256"], options=decode_options
            )
        ),
        "pyjwt_unverified_header": lambda i: jwt.get_unverified_header(measured[i]),
    }
    references = {name: timed(each, calls) for name, each in reference.items()}
    total = timed(caller(handle, institution, requests, measured), calls)
    unaudited = caller(p.handler(audit=False), institution, requests, measured)
    total_unaudited = timed(unaudited, calls)
    sequence = in_sequence(p, requests, p.tokens(requests, calls), calls)
    return {
        "calls": calls,
        "alone": {k: round(v, 1) for k, v in alone.items()},
        "in_sequence": sequence,
        "in_sequence_sum": round(sum(sequence.values()), 1),
        "handler_total": round(total, 1),
        "handler_total_no_audit": round(total_unaudited, 1),
        "audit_record_cpu_us": round(audit_cpu, 1),
        "references": {k: round(v, 1) for k, v in references.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="holds registry.sqlite")
    parser.add_argument("--pki-dir", type=Path, help="a PKI with DEMO (default: a fresh one)")
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    requests = unary_requests(load_subjects(args.data_dir), 10_000, seed=11)
    with tempfile.TemporaryDirectory(prefix="jisr-profile-") as tmp:
        pki_dir = args.pki_dir or make_pki(Path(tmp) / "pki")
        with pipeline(args.data_dir, pki_dir, Path(tmp) / "state") as p:
            print(json.dumps(steps(p, requests, args.calls), indent=2))
            call = caller(p.handler(), INSTITUTION, requests, p.tokens(requests, args.calls))
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [call(i) for i in range(args.calls)])
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
