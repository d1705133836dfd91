"""The gateway's VerifyEligibility path in-process, without gRPC, on one thread: the cost of
each step in µs per call, the whole handler's, and (`python -m bench.profile`) a cProfile
of where the handler's time goes.

Everything is the gateway's own code, built as `jisr serve` builds it
(gateway.server.build_security over a real PKI and trust store, the shipped policy, the
embedded adapters over the registry): request-token verification, the replay check, the
policy decision, the exchange pipeline, field projection, receipt signing, and the very
handler `jisr serve` registers, called with the bench's requests and a fresh token each.
Tokens and every other input are made before the timing starts.
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
from gateway import pki, programmes, projection
from gateway.config import Config
from gateway.errors import ExchangeError
from gateway.exchange import Exchange
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.policy import Grant
from gateway.receipts import PERMIT, Exchanged
from gateway.registries import Registries
from gateway.server import build_adapters, build_security
from gateway.service import SIGNATURE_METADATA, ExchangeService, Security
from gateway.signing import Signer
from gateway.tokens import ReplayGuard, body_hash, verify_request

WARMUP = 200
ROUNDS = 5
METHOD_NAME = UNARY_METHOD.rsplit("/", 1)[1]
# A grant that withholds a field (score_band) of EligibilityDecision, for projection's
# cost when it has something to clear (DEMO's grant discloses every field).
MINIMISING = ("CNSS", "AMO_ENROLMENT")


@dataclass(frozen=True)
class _Details:
    """The part of grpc.HandlerCallDetails a generic handler reads."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class _Context:
    """The part of grpc.ServicerContext the gateway's unary handler uses: the metadata
    (one token), the client certificate's common name, the deadline, the trailers."""

    def __init__(self, institution: str) -> None:
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.trailers: Sequence[tuple[str, str | bytes]] = ()
        self._auth = {"x509_common_name": [institution.encode()]}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def time_remaining(self) -> float:
        return 10.0

    def set_trailing_metadata(self, trailers: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailers = trailers

    def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"call failed: {status.code} {status.details}")


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

    def handler(self) -> Callable[[bytes, _Context], bytes]:
        """The VerifyEligibility behaviour `jisr serve` registers, with its own replay
        guard (so tokens used by the step measurements are not refused)."""
        security = dataclasses.replace(self.security, replay=ReplayGuard())
        generic = ExchangeService(self.exchange, security).handler()
        handler = generic.service(_Details(UNARY_METHOD))
        if handler is None or handler.unary_unary is None:
            raise RuntimeError(f"the gateway serves no {UNARY_METHOD}")
        behaviour: Callable[[bytes, _Context], bytes] = handler.unary_unary
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
def pipeline(data_dir: Path, pki_dir: Path) -> Iterator[Pipeline]:
    """The gateway's security and exchange as `jisr serve` builds them; closed after."""
    config = Config(data_dir=data_dir, pki_dir=pki_dir)
    registry = Registry(data_dir / REGISTRY_FILE)
    registries = Registries(build_adapters(config, registry))
    try:
        yield Pipeline(
            security=build_security(config),
            exchange=Exchange(registries, programmes.load_default()),
            signer=credentials(pki_dir).signer,
            audience=pki.gateway_id(pki_dir),
            pki_dir=pki_dir,
            registries=registries,
            registry=registry,
        )
    finally:
        registries.close()
        registry.close()


def _timed(step: Callable[[int], object], calls: int, rounds: int = ROUNDS) -> float:
    """Median over `rounds` rounds of µs per call of step(0), step(1), ... (calls in all)."""
    per_round = max(1, calls // rounds)
    samples: list[float] = []
    i = 0
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            step(i)
            i += 1
        samples.append((time.perf_counter() - started) / per_round)
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
    "receipt_sign",
)


def in_sequence(
    p: Pipeline, requests: Sequence[bytes], tokens: Sequence[str], calls: int
) -> dict[str, float]:
    """The handler's steps called in its order, one call after the other, each step timed
    where it runs: µs per call of each (median of ROUNDS rounds). Unlike a step in a
    tight loop of its own, each one here pays for the caches the others evicted, so these
    add up to (nearly) the handler's total."""
    n, institution, purpose = len(requests), INSTITUTION, UNARY_PURPOSE
    guard, policy, trust = ReplayGuard(), p.security.policy, p.security.trust
    per_round = max(1, calls // ROUNDS)
    rounds: list[list[float]] = []
    clock = time.perf_counter
    for r in range(ROUNDS):
        spent = [0.0] * len(IN_SEQUENCE)
        for i in range(r * per_round, (r + 1) * per_round):
            raw = requests[i % n]
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
            response = p.exchange.verify(request, FetchContext(purpose, 10.0))
            t5 = clock()
            assert grant is not None
            projected, withheld = projection.project(response.decision, grant.fields)
            response.decision.CopyFrom(projected)
            response.withheld.paths.extend(withheld)
            t6 = clock()
            sh = body_hash(response.SerializeToString())
            t7 = clock()
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
                )
            )
            t8 = clock()
            for k, (a, b) in enumerate(itertools.pairwise((t0, t1, t2, t3, t4, t5, t6, t7, t8))):
                spent[k] += b - a
        rounds.append([x / per_round * 1e6 for x in spent])
    return {
        name: round(statistics.median(r[k] for r in rounds), 1)
        for k, name in enumerate(IN_SEQUENCE)
    }


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
            answers.append(p.exchange.verify(request, fetch))
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
    context = _Context(institution)

    def whole(i: int, batch: Sequence[str]) -> object:
        context.metadata = ((SIGNATURE_METADATA, batch[i]),)
        return handle(requests[i % n], context)

    for i in range(WARMUP):
        whole(i, warm)
    in_sequence(p, requests, warm, WARMUP)
    # The options gateway.tokens passes: the signature only, claims checked by the gateway.
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
        "exchange_verify": _timed(lambda i: p.exchange.verify(parsed[i % n], fetch), calls),
        "projection": _timed(
            lambda i: projection.project(decisions[i % len(decisions)], grant.fields), calls
        ),
        "projection_minimising": _timed(
            lambda i: projection.project(decisions[i % len(decisions)], minimising.fields), calls
        ),
        "response_serialize_hash": _timed(
            lambda i: body_hash(answers[i % len(answers)].SerializeToString()), calls
        ),
        "receipt_sign": _timed(lambda i: signer.sign(receipts_in[i]), calls),
    }
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
    sequence = in_sequence(p, requests, p.tokens(requests, calls), calls)
    return {
        "calls": calls,
        "alone": {k: round(v, 1) for k, v in alone.items()},
        "in_sequence": sequence,
        "in_sequence_sum": round(sum(sequence.values()), 1),
        "handler_total": round(total, 1),
        "references": {k: round(v, 1) for k, v in references.items()},
    }


def measure(data_dir: Path, pki_dir: Path, requests: Sequence[bytes], calls: int) -> dict[str, Any]:
    """Every step's µs per call (see `steps`), the gateway built over `data_dir`/`pki_dir`."""
    with pipeline(data_dir, pki_dir) as p:
        return steps(p, requests, calls)


def profile(p: Pipeline, requests: Sequence[bytes], calls: int, top: int) -> str:
    """cProfile of `calls` handler calls: the functions with the most own time."""
    handle = p.handler()
    context = _Context(INSTITUTION)
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
        with pipeline(args.data_dir, pki_dir) as p:
            print(json.dumps(steps(p, requests, args.calls), indent=2))
            print(profile(p, requests, args.calls, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
