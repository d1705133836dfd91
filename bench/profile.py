"""The gateway's VerifyEligibility path in-process, without gRPC, on one thread: the cost of
each step in µs per call, the whole handler's, and (`python -m bench.profile`) a cProfile
of where the handler's time goes.

Everything is the gateway's own code, built as `jisr serve` builds it
(gateway.server.build_security over a real PKI and trust store, the shipped policy, the
embedded adapters over the registry, an AuditWriter over a SQLite audit store in a
state directory of the bench's): request-token verification, the replay check, the
policy decision, the exchange pipeline, field projection, the durable audit record
(`AuditRecorder.record`: through the writer, one SQLite commit with synchronous=FULL per
call, since one thread has no one to share a group commit with), receipt signing, and
the very handler `jisr serve` registers, audit on (and, for comparison with earlier runs,
off), called with the bench's requests and a fresh token each. Tokens and every other
input are made before the timing starts.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import dataclasses
import io
import itertools
import json
import pstats
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.types import Options

from adapters.base import FetchContext
from adapters.registry_db import REGISTRY_FILE, Registry
from bench.common import INSTITUTION, UNARY_METHOD, UNARY_PURPOSE
from bench.identity import credentials, make_pki
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
from gateway.sdk.signing import Signer
from gateway.security import pki, projection
from gateway.security.policy import Grant
from gateway.security.receipts import PERMIT, Exchanged
from gateway.security.tokens import ReplayGuard, verify_request
from gateway.server import build_adapters, build_security, checkpoint_signer
from gateway.services import registry_exchange
from tests.support.grpc_context import FakeContext

WARMUP = 200
ROUNDS = 5
MAX_STEP_S = 60.0  # a cap on each timed loop, whatever its call count
AUDIT_NODE = "bench-profile"
METHOD_NAME = UNARY_METHOD.rsplit("/", 1)[1]
# A grant that withholds a field (score_band) of EligibilityDecision, for projection's
# cost when it has something to clear (DEMO's grant discloses every field).
MINIMISING = ("CNSS", "AMO_ENROLMENT")


@dataclass(frozen=True)
class _Details:
    """The part of grpc.HandlerCallDetails a generic handler reads."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


@dataclass
class Pipeline:
    """The gateway's parts, built once, and the signer of the calling institution."""

    security: Security
    exchange: Exchange
    signer: Signer
    audience: str
    pki_dir: Path
    registries: Registries
    registry: Registry
    audit: AuditRecorder

    def handler(
        self,
        *,
        audit: bool = True,
        consent: ConsentGate | None = None,
        method: str = UNARY_METHOD,
    ) -> Callable[[bytes, FakeContext], bytes]:
        """The behaviour `jisr serve` registers for `method` (VerifyEligibility), with its
        own replay guard (so tokens used by the step measurements are not refused); audit
        on, as `jisr serve` always runs, unless `audit=False`."""
        security = dataclasses.replace(
            self.security,
            replay=ReplayGuard(),
            audit=self.audit if audit else None,
            consent=consent,
        )
        generic = registry_exchange.handler(Engine(security), self.exchange)
        handler = generic.service(_Details(method))
        if handler is None or handler.unary_unary is None:
            raise RuntimeError(f"the gateway serves no {method}")
        behaviour: Callable[[bytes, FakeContext], bytes] = handler.unary_unary
        return behaviour

    def tokens(self, requests: Sequence[bytes], count: int) -> list[str]:
        """`count` request tokens, each with its own jti, token i over requests[i % n]."""
        n = len(requests)
        return [
            self.signer.request_token(UNARY_METHOD, UNARY_PURPOSE, requests[i % n], lifetime=300)
            for i in range(count)
        ]

    def grant(self, institution: str = INSTITUTION, purpose: str = UNARY_PURPOSE) -> Grant:
        grant = self.security.policy.authorize(institution, METHOD_NAME, purpose)
        if grant is None:
            raise RuntimeError(f"the policy grants {institution} no {METHOD_NAME} for {purpose}")
        return grant


@contextmanager
def pipeline(data_dir: Path, pki_dir: Path, state_dir: Path) -> Iterator[Pipeline]:
    """The gateway's security, exchange and audit writer as `jisr serve` builds them (the
    audit store: SQLite in `state_dir`); closed after."""
    config = Config(data_dir=data_dir, pki_dir=pki_dir)
    registry = Registry(data_dir / REGISTRY_FILE)
    registries = Registries(build_adapters(config, registry))
    store = open_audit_store(None, state_dir)
    writer = AuditWriter(
        store,
        AUDIT_NODE,
        checkpoint_signer(pki_dir),
        checkpoint_every=config.audit_checkpoint_every,
        checkpoint_seconds=config.audit_checkpoint_seconds,
    )
    try:
        yield Pipeline(
            security=build_security(config),
            exchange=Exchange(registries, programmes.load_default()),
            signer=credentials(pki_dir).signer,
            audience=pki.gateway_id(pki_dir),
            pki_dir=pki_dir,
            registries=registries,
            registry=registry,
            audit=AuditRecorder(writer, load_or_create_key(pki_dir)),
        )
    finally:
        writer.close()
        store.close()
        registries.close()
        registry.close()


def _timed(
    step: Callable[[int], object],
    calls: int,
    rounds: int = ROUNDS,
    seconds: float = MAX_STEP_S,
) -> float:
    """Median over `rounds` rounds of µs per call of step(0), step(1), ... (calls in all);
    a round that passes the `seconds` deadline ends there, and later rounds are skipped."""
    per_round = max(1, calls // rounds)
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    i = 0
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


IN_SEQUENCE = (
    "token_verify",
    "replay_check",
    "parse_request",
    "policy_authorize",
    "exchange_verify",
    "projection",
    "response_serialize_hash",
    "audit_record",
    "receipt_sign",
)


def in_sequence(
    p: Pipeline, requests: Sequence[bytes], tokens: Sequence[str], calls: int
) -> dict[str, float]:
    """The handler's steps called in its order, one call after the other, each step timed
    where it runs: µs per call of each (median of ROUNDS rounds). Unlike a step in a
    tight loop of its own, each one here pays for the caches the others evicted, so these
    add up to (nearly) the handler's total. Capped at MAX_STEP_S like `_timed`."""
    n, institution, purpose = len(requests), INSTITUTION, UNARY_PURPOSE
    guard, policy, trust, audit = ReplayGuard(), p.security.policy, p.security.trust, p.audit
    per_round = max(1, calls // ROUNDS)
    rounds: list[list[float]] = []
    clock = time.perf_counter
    deadline = time.monotonic() + MAX_STEP_S
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
                institution=institution,
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
            record_id = audit.record(
                requester=institution,
                sub=claims.sub,
                method=UNARY_METHOD,
                purpose=claims.purpose,
                basis=grant.basis,
                subjects=audit.subjects([validation.subject(request.subject)]),
                fields=grant.paths,
                decision=PERMIT,
                reason="",
                rh=claims.rh,
                sh=sh,
                jti=claims.jti,
                part=0,
                started=began,
            )
            t8 = clock()
            p.security.receipts.sign(
                Exchanged(
                    jti=claims.jti,
                    rh=claims.rh,
                    sh=sh,
                    method=UNARY_METHOD,
                    purpose=claims.purpose,
                    decision=PERMIT,
                    fields=grant.paths,
                    basis=grant.basis,
                    audit=record_id,
                )
            )
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
    started = time.time()

    def record(i: int) -> object:
        receipt = receipts[i]
        return audit.record(
            requester=INSTITUTION,
            sub="jisr-bench",
            method=UNARY_METHOD,
            purpose=UNARY_PURPOSE,
            basis=grant.basis,
            subjects=subjects[i % n],
            fields=grant.paths,
            decision=PERMIT,
            reason="",
            rh=receipt.rh,
            sh=receipt.sh,
            jti=jtis[i],
            part=0,
            started=started,
        )

    return record


def _cpu_us(step: Callable[[int], object], calls: int) -> float:
    """CPU µs per call of step(0), step(1), ... of every thread of this process."""
    cpu0, wall0, done = time.process_time(), time.perf_counter(), 0
    while done < calls and time.perf_counter() - wall0 < MAX_STEP_S:
        step(done)
        done += 1
    return (time.process_time() - cpu0) / max(1, done) * 1e6


def steps(p: Pipeline, requests: Sequence[bytes], calls: int) -> dict[str, Any]:
    """µs per call of each step of the unary path (alone in a tight loop, and in the
    handler's sequence), of the whole handler, and reference figures (DESIGN.md's)."""
    n = len(requests)
    purpose, institution = UNARY_PURPOSE, INSTITUTION
    warm, measured = p.tokens(requests, WARMUP), p.tokens(requests, calls)
    trust, now = p.security.trust, time.time()
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
    receipts_in = [
        Exchanged(
            jti=secrets.token_urlsafe(18),
            rh=body_hash(requests[i % n]),
            sh=body_hash(answers[i % len(answers)].SerializeToString()),
            method=UNARY_METHOD,
            purpose=purpose,
            decision=PERMIT,
            fields=grant.paths,
            basis=grant.basis,
        )
        for i in range(calls)
    ]
    guard = ReplayGuard()
    jtis = [secrets.token_urlsafe(18) for _ in range(calls)]
    exp = int(now) + 300
    trusted = trust.get(institution, p.signer.kid)
    if trusted is None or not isinstance(trusted.key, ec.EllipticCurvePublicKey):
        raise RuntimeError(f"{institution}'s ES256 key is not in the trust store")
    public_key = trusted.key
    gateway_key, _ = pki.load_gateway_signing_key(p.pki_dir)
    to_sign = measured[0].rpartition(".")[0].encode()
    ecdsa = ec.ECDSA(hashes.SHA256())

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
    context = FakeContext(institution)

    def whole(i: int, batch: Sequence[str]) -> object:
        context.metadata = ((SIGNATURE_METADATA, batch[i]),)
        return handle(requests[i % n], context)

    for i in range(WARMUP):
        whole(i, warm)
    # Fresh tokens: the audit store refuses a jti it has recorded (the replay index).
    in_sequence(p, requests, p.tokens(requests, WARMUP), WARMUP)
    record = _audit_step(p, parsed, receipts_in, grant)
    # The options gateway.security.tokens passes: the signature only, claims checked by the gateway.
    decode_options: Options = {
        "verify_signature": True,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": False,
        "verify_iss": False,
    }
    alone = {
        "token_verify": _timed(verify, calls),
        "replay_check": _timed(lambda i: guard.first_use(institution, jtis[i], exp), calls),
        "parse_request": _timed(
            lambda i: pb.VerifyEligibilityRequest.FromString(requests[i % n]), calls
        ),
        "policy_authorize": _timed(
            lambda _: p.security.policy.authorize(institution, METHOD_NAME, purpose), calls
        ),
        "exchange_verify": _timed(
            lambda i: p.exchange.verify(p.exchange.eligibility_query(parsed[i % n]), fetch), calls
        ),
        "projection": _timed(
            lambda i: projection.project(decisions[i % len(decisions)], grant.fields), calls
        ),
        "projection_minimising": _timed(
            lambda i: projection.project(decisions[i % len(decisions)], minimising.fields), calls
        ),
        "response_serialize_hash": _timed(
            lambda i: body_hash(answers[i % len(answers)].SerializeToString()), calls
        ),
        "audit_record": _timed(record, calls),
        "receipt_sign": _timed(lambda i: signer.sign(receipts_in[i]), calls),
    }
    # The audit record's CPU (every thread of the process: the caller's and the writer's),
    # beside its wall time above, most of which is the caller waiting for the fsync.
    audit_cpu = _cpu_us(_audit_step(p, parsed, receipts_in, grant), calls)
    references = {
        "es256_verify_raw": _timed(_raw_es256(measured[0], public_key), calls),
        "es256_sign_raw": _timed(lambda _: gateway_key.sign(to_sign, ecdsa), calls),
        "pyjwt_decode_verify": _timed(
            lambda i: jwt.decode(
                measured[i], public_key, algorithms=["ES256"], options=decode_options
            ),
            calls,
        ),
        "pyjwt_unverified_header": _timed(lambda i: jwt.get_unverified_header(measured[i]), calls),
    }
    total = _timed(lambda i: whole(i, measured), calls)
    unaudited = p.handler(audit=False)

    def whole_unaudited(i: int) -> object:
        context.metadata = ((SIGNATURE_METADATA, measured[i]),)
        return unaudited(requests[i % n], context)

    total_unaudited = _timed(whole_unaudited, calls)
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


def measure(
    data_dir: Path, pki_dir: Path, state_dir: Path, requests: Sequence[bytes], calls: int
) -> dict[str, Any]:
    """Every step's µs per call (see `steps`), the gateway built over `data_dir`/`pki_dir`
    with its audit store in `state_dir`."""
    with pipeline(data_dir, pki_dir, state_dir) as p:
        return steps(p, requests, calls)


def profile(p: Pipeline, requests: Sequence[bytes], calls: int, top: int) -> str:
    """cProfile of `calls` handler calls: the functions with the most own time."""
    handle = p.handler()
    context = FakeContext(INSTITUTION)
    tokens = p.tokens(requests, calls)
    n = len(requests)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        context.metadata = ((SIGNATURE_METADATA, tokens[i]),)
        handle(requests[i % n], context)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


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
            print(profile(p, requests, args.calls, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
