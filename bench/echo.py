"""A bare echo server on the gateway's method path, the baseline: `--api sync` (grpc.server,
`--workers` threads) or `aio`; mTLS with the gateway's own credentials with `--pki-dir`,
else plaintext. Answers the request's bytes; prints "... on 127.0.0.1:PORT" when ready."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from bench.common import GATEWAY_WORKERS, HOST
from gateway.base.wire import REGISTRY_EXCHANGE
from gateway.server import server_credentials


async def _echo_async(request: bytes, context: Any) -> bytes:
    return request


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


async def serve_aio(pki_dir: Path | None) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    banner = _serve(server, _echo_async, pki_dir)
    await server.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    print(f"bench.echo: serving aio echo {banner}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--api", choices=("sync", "aio"), default="sync")
    parser.add_argument("--workers", type=int, default=GATEWAY_WORKERS, help="sync only")
    parser.add_argument("--pki-dir", type=Path, help="serve mTLS with this PKI's server cert")
    args = parser.parse_args(argv)
    if args.api == "aio":
        asyncio.run(serve_aio(args.pki_dir))
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
