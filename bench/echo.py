"""A bare echo server on the gateway's method path, the baseline: `--api sync` (grpc.server,
`--workers` threads) or `aio`; mTLS with the gateway's own credentials with `--pki-dir`,
else plaintext. Answers the request's bytes; prints "... on 127.0.0.1:PORT" when ready.

`--api floor` is the **signed floor** (issue 18): the aio echo plus only what no design of
a signed, receipted exchange can avoid, on the same requests and tokens as the gateway's:
the request token verified as the gateway verifies it (ES256 over the claims, the
institution of the client certificate, audience, times, method, and `rh` the hash of the
request bytes) and an ES256 receipt of the answer signed with the gateway's key, sent in
the trailers. No policy, consent, registry, audit or tracing: the gateway's distance to
this floor is what those cost."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from bench.common import GATEWAY_WORKERS, HOST
from gateway.base.jws import TokenError, body_hash
from gateway.base.wire import RECEIPT_METADATA, REGISTRY_EXCHANGE, SIGNATURE_METADATA
from gateway.config import load
from gateway.security.receipts import Exchanged
from gateway.security.tokens import verify_request
from gateway.server import build_security, server_credentials


async def _echo_async(request: bytes, context: Any) -> bytes:
    return request


def _floor(pki_dir: Path) -> Any:
    """The signed floor's behaviour: verify the request token, sign a receipt, echo."""
    security = build_security(load(None, {"JISR_PKI_DIR": str(pki_dir)}))
    method = f"/{REGISTRY_EXCHANGE}/VerifyEligibility"

    async def floor(request: bytes, context: Any) -> bytes:
        names = context.auth_context().get("x509_common_name")
        institution = bytes(names[0]).decode() if names else ""
        token = dict(context.invocation_metadata()).get(SIGNATURE_METADATA, "")
        try:
            claims = verify_request(
                token, institution=institution, method=method, body=request,
                audience=security.audience, now=time.time(), trust=security.trust,
            )  # fmt: skip
        except TokenError as refused:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refused.reason.value)
        receipt = security.receipts.sign(
            Exchanged(
                jti=claims.jti, rh=claims.rh, sh=body_hash(request), method=method,
                purpose=claims.purpose, decision="permit", fields=(), basis="floor",
            )
        )  # fmt: skip
        context.set_trailing_metadata(((RECEIPT_METADATA, receipt),))
        return request

    return floor


def _serve(server: Any, behaviour: Any, pki_dir: Path | None) -> str:
    handler = grpc.unary_unary_rpc_method_handler(behaviour)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REGISTRY_EXCHANGE, {"VerifyEligibility": handler}),)
    )
    address = f"{HOST}:0"  # any free port
    if pki_dir is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials(pki_dir))
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    return f"({'plaintext' if pki_dir is None else 'mTLS'}) on {HOST}:{bound}"


async def serve_aio(pki_dir: Path | None, *, floor: bool = False) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    if floor and pki_dir is None:
        raise SystemExit("bench.echo: --api floor needs --pki-dir (it verifies and signs)")
    banner = _serve(server, _floor(pki_dir) if floor and pki_dir else _echo_async, pki_dir)
    await server.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    print(f"bench.echo: serving {'signed floor' if floor else 'aio echo'} {banner}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--api", choices=("sync", "aio", "floor"), default="sync")
    parser.add_argument("--workers", type=int, default=GATEWAY_WORKERS, help="sync only")
    parser.add_argument("--pki-dir", type=Path, help="serve mTLS with this PKI's server cert")
    args = parser.parse_args(argv)
    if args.api in ("aio", "floor"):
        asyncio.run(serve_aio(args.pki_dir, floor=args.api == "floor"))
        return 0
    pool = futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="echo")
    server = grpc.server(pool, options=[("grpc.so_reuseport", 0)])
    banner = _serve(server, lambda request, _: request, args.pki_dir)
    server.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop(1.0))
    print(f"bench.echo: serving sync echo, {args.workers} workers {banner}", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
