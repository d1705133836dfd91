"""A bare echo server on the gateway's method path: the baseline the gateway is held to.

`--api sync` is the gateway's own server API (grpc.server, a ThreadPoolExecutor of the
gateway's default size, a generic handler on raw bytes); `--api aio` is grpc.aio, for
reference. With `--pki-dir` it serves mTLS with the gateway's own credentials
(gateway.server.server_credentials: the PKI's server certificate, client certificates
from its CA required); without, plaintext. The response is the request's bytes, unparsed;
the request's metadata (the `x-jisr-signature` the load generator sends to every server)
is not looked at. Prints "... on 127.0.0.1:PORT" when ready, then serves until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from bench.common import GATEWAY_WORKERS, HOST, SERVICE
from gateway.server import server_credentials


def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _echo_async(request: bytes, context: Any) -> bytes:
    return request


def _handler(behaviour: Any) -> Any:
    return grpc.method_handlers_generic_handler(
        SERVICE, {"VerifyEligibility": grpc.unary_unary_rpc_method_handler(behaviour)}
    )


def _bind(server: Any, port: int, pki_dir: Path | None) -> int:
    address = f"{HOST}:{port}"
    if pki_dir is None:
        bound: int = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials(pki_dir))
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    return bound


def _transport(pki_dir: Path | None) -> str:
    return "plaintext" if pki_dir is None else "mTLS"


def serve_sync(port: int, workers: int, pki_dir: Path | None) -> None:
    """The gateway's server API, echoing, until a signal."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="echo"),
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers((_handler(_echo),))
    bound = _bind(server, port, pki_dir)
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"bench.echo: serving sync echo ({workers} workers, {_transport(pki_dir)})"
        f" on {HOST}:{bound}",
        flush=True,
    )
    stop.wait()
    server.stop(1.0).wait()


async def serve_aio(port: int, pki_dir: Path | None) -> None:
    """grpc.aio, echoing, until a signal."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_handler(_echo_async),))
    bound = _bind(server, port, pki_dir)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"bench.echo: serving aio echo ({_transport(pki_dir)}) on {HOST}:{bound}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--api", choices=("sync", "aio"), default="sync")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--workers", type=int, default=GATEWAY_WORKERS, help="sync only")
    parser.add_argument("--pki-dir", type=Path, help="serve mTLS with this PKI's server cert")
    args = parser.parse_args(argv)
    if args.api == "sync":
        serve_sync(args.port, args.workers, args.pki_dir)
    else:
        asyncio.run(serve_aio(args.port, args.pki_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
