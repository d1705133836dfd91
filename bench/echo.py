"""A bare echo server on the gateway's method path: the baseline the gateway is held to.

`--api sync` is the gateway's own server API (grpc.server, a ThreadPoolExecutor of the
gateway's default size, a generic handler on raw bytes); `--api aio` is grpc.aio, for
reference. The response is the request's bytes, unparsed. Prints "... on 127.0.0.1:PORT"
when ready, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from typing import Any

import grpc

from bench.common import GATEWAY_WORKERS, HOST, SERVICE


def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _echo_async(request: bytes, context: Any) -> bytes:
    return request


def _handler(behaviour: Any) -> Any:
    return grpc.method_handlers_generic_handler(
        SERVICE, {"VerifyEligibility": grpc.unary_unary_rpc_method_handler(behaviour)}
    )


def _bind(server: Any, port: int) -> int:
    bound: int = server.add_insecure_port(f"{HOST}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {HOST}:{port}")
    return bound


def serve_sync(port: int, workers: int) -> None:
    """The gateway's server API, echoing, until a signal."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="echo"),
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers((_handler(_echo),))
    bound = _bind(server, port)
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"bench.echo: serving sync echo ({workers} workers) on {HOST}:{bound}", flush=True)
    stop.wait()
    server.stop(1.0).wait()


async def serve_aio(port: int) -> None:
    """grpc.aio, echoing, until a signal."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_handler(_echo_async),))
    bound = _bind(server, port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"bench.echo: serving aio echo on {HOST}:{bound}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--api", choices=("sync", "aio"), default="sync")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--workers", type=int, default=GATEWAY_WORKERS, help="sync only")
    args = parser.parse_args(argv)
    if args.api == "sync":
        serve_sync(args.port, args.workers)
    else:
        asyncio.run(serve_aio(args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
