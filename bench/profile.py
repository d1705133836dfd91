"""The gateway's VerifyEligibility handler called in-process, without gRPC: its cost per
call on one thread, and (`python -m bench.profile`) a cProfile of where that time goes.

It drives the very handler `jisr serve` registers (gateway.service.handler) with the
bench's serialized requests, so the figure is the pipeline's own CPU per call: parse,
validation, registry reads, decision, serialization.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.registry_db import REGISTRY_FILE, Registry
from bench.common import UNARY_METHOD
from bench.workload import load_subjects, unary_requests
from gateway import programmes, service
from gateway.config import Config
from gateway.exchange import Exchange
from gateway.registries import Registries
from gateway.server import build_adapters


@dataclass(frozen=True)
class _Details:
    """The part of grpc.HandlerCallDetails a generic handler reads."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class _Context:
    """The part of grpc.ServicerContext the handler uses on a successful call."""

    def time_remaining(self) -> float:
        return 10.0

    def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"call failed: {status.code} {status.details}")


def unary_handler(data_dir: Path) -> tuple[Callable[[bytes], bytes], Callable[[], None]]:
    """The gateway's VerifyEligibility behaviour on raw bytes, and a closer."""
    registry = Registry(data_dir / REGISTRY_FILE)
    registries = Registries(build_adapters(Config(data_dir=data_dir), registry))
    generic = service.handler(Exchange(registries, programmes.load_default()))
    behaviour = generic.service(_Details(UNARY_METHOD)).unary_unary
    context = _Context()

    def call(raw: bytes) -> bytes:
        response: bytes = behaviour(raw, context)
        return response

    def close() -> None:
        registries.close()
        registry.close()

    return call, close


def us_per_call(data_dir: Path, requests: Sequence[bytes], calls: int) -> float:
    """Mean microseconds per handler call on one thread (after a short warm-up)."""
    call, close = unary_handler(data_dir)
    try:
        for raw in requests[:200]:
            call(raw)
        n = len(requests)
        started = time.perf_counter()
        for i in range(calls):
            call(requests[i % n])
        return (time.perf_counter() - started) / calls * 1e6
    finally:
        close()


def profile(data_dir: Path, requests: Sequence[bytes], calls: int, top: int) -> str:
    """cProfile of `calls` handler calls: the functions with the most own time."""
    call, close = unary_handler(data_dir)
    try:
        n = len(requests)
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(calls):
            call(requests[i % n])
        profiler.disable()
    finally:
        close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="holds registry.sqlite")
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    requests = unary_requests(load_subjects(args.data_dir), 10_000, seed=11)
    print(f"{us_per_call(args.data_dir, requests, args.calls):.1f} us per call, one thread")
    print(profile(args.data_dir, requests, args.calls, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
