"""The DCI facade against the gRPC path, in one run: `python -m bench.dci`.

The same households, the same institution (DEMO) and purpose, 64 in flight: gRPC
GetHouseholdStatus (mTLS, a request token signed per call) against DCI
`/registry/sync/search` (a bearer token, an envelope signed per call), both pre-signed
before the clock starts, against a gateway and a facade serving the same registry and
state. Issue 17's target: the facade costs at most 2x the gRPC path per call (the ratio of
throughputs, and of the servers' CPU per call). Prints one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx2 as httpx

from bench import common, identity
from bench.procs import CLIENT_CPU, SERVER_CPU, Server, pinned, start_server
from gateway.base.wire import REGISTRY_EXCHANGE, SIGNATURE_METADATA, method_path
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials
from tests.support import registry_rows
from tests.support.dci import envelope, item, signed
from tests.support.identities import tls

METHOD = method_path(REGISTRY_EXCHANGE, "GetHouseholdStatus")
PURPOSE = "AMO_ENROLMENT"
TIMEOUT_S = 10.0


def _summary(
    latencies: list[float], errors: int, seconds: float, server_cpu_s: float
) -> dict[str, Any]:
    ordered = sorted(latencies)
    ok = len(ordered) - errors
    return {
        "server_cpu_us_per_call": round(server_cpu_s * 1e6 / max(ok, 1), 1),
        "calls": len(ordered),
        "errors": errors,
        "seconds": round(seconds, 3),
        "rps": round(ok / max(seconds, 1e-9), 1),
        "p50_ms": round(common.percentile(ordered, 0.5) * 1000, 2),
        "p99_ms": round(common.percentile(ordered, 0.99) * 1000, 2),
    }


async def _workers(
    call: Any, count: int, inflight: int, pid: int = 0
) -> tuple[list[float], int, float, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(count))

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            if not await call(i):
                errors += 1
            latencies.append(time.perf_counter() - started)

    before = common.process_clock(pid) if pid else None
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    seconds = time.perf_counter() - started
    after = common.process_clock(pid) if pid else None
    cpu = (after - before).cpu_s if before is not None and after is not None else 0.0
    return latencies, errors, seconds, cpu


async def grpc_leg(
    target: str, creds: Credentials, hids: list[str], *, calls: int, inflight: int, pid: int
) -> dict[str, Any]:
    requests = [
        pb.GetHouseholdStatusRequest(
            purpose=PURPOSE, subject=pb.Subject(household_id=h)
        ).SerializeToString()
        for h in hids
    ]
    tokens = identity.tokens(creds.signer, METHOD, PURPOSE, requests, calls + 200)
    async with grpc.aio.secure_channel(target, tls(creds)) as channel:
        stub = channel.unary_unary(METHOD)

        async def call(i: int) -> bool:
            try:
                await stub(
                    requests[i % len(requests)],
                    timeout=TIMEOUT_S,
                    metadata=((SIGNATURE_METADATA, tokens[i]),),
                )
            except grpc.aio.AioRpcError:
                return False
            return True

        await _workers(lambda i: call(calls + i), 200, inflight)  # warm-up
        measured = await _workers(call, calls, inflight, pid)
    return _summary(*measured)


async def dci_leg(
    url: str, token: str, pki_dir: Path, hids: list[str], *, calls: int, inflight: int, pid: int
) -> dict[str, Any]:
    bodies = [
        json.dumps(
            signed(
                pki_dir,
                envelope([item("HOUSEHOLD_ID", hids[i % len(hids)], PURPOSE)], sender="DEMO"),
                "DEMO",
            )
        ).encode()
        for i in range(calls + 200)
    ]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=TIMEOUT_S
    ) as client:

        async def call(i: int) -> bool:
            try:
                reply = await client.post("/registry/sync/search", content=bodies[i])
            except httpx.HTTPError:
                return False
            return reply.status_code == 200 and reply.json()["header"]["status"] == "succ"

        await _workers(lambda i: call(calls + i), 200, inflight)  # warm-up
        measured = await _workers(call, calls, inflight, pid)
    return _summary(*measured)


def _jisr(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return done.stdout.strip()


def measure(calls: int, inflight: int, households: int, work: Path) -> dict[str, Any]:
    data, pki_dir = work / "data", work / "pki"
    _jisr("demo-data", "--households", str(households), "--seed", "1", "--data-dir", str(data))
    identity.make_pki(pki_dir)
    secret = _jisr(
        "dci", "client", "add", "bench", "--institution", "DEMO", "--data-dir", str(data)
    )
    common_args = ["--data-dir", str(data), "--pki-dir", str(pki_dir)]
    # Each server on the same one CPU, the load generator (this process) on another: the
    # Python HTTP client costs more per call than grpc's, and on a shared CPU it would
    # slow the facade's leg for the client's sake (issue 18's rule for make bench).
    before = os.sched_getaffinity(0)
    pin = pinned if len(before) > 1 else lambda _cpu, argv: list(argv)
    if len(before) > 1:
        os.sched_setaffinity(0, {CLIENT_CPU})  # restored at the end (bench.run calls this)
    gateway: Server = start_server(
        "gateway",
        pin(SERVER_CPU, [sys.executable, "-m", "gateway.cli", "serve", "--listen", "127.0.0.1:0",
                         *common_args]),
        work / "gateway.log",
        tls=True,
    )  # fmt: skip
    facade: Server = start_server(
        "dci",
        pin(SERVER_CPU, [sys.executable, "-m", "gateway.cli", "dci", "serve", "--listen",
                         "127.0.0.1:0", *common_args]),
        work / "dci.log",
    )  # fmt: skip
    try:
        subjects = registry_rows.subjects(data)
        hids = random.Random(1).sample(
            subjects.household_ids, min(500, len(subjects.household_ids))
        )
        url = f"http://127.0.0.1:{facade.port}"
        form = {"grant_type": "client_credentials", "client_id": "bench", "client_secret": secret}
        token = httpx.post(f"{url}/oauth2/client/token", data=form, timeout=30).json()[
            "access_token"
        ]
        creds = Credentials.from_pki(pki_dir, "DEMO")
        grpc_result = asyncio.run(
            grpc_leg(
                f"127.0.0.1:{gateway.port}",
                creds,
                hids,
                calls=calls,
                inflight=inflight,
                pid=gateway.popen.pid,
            )
        )
        dci_result = asyncio.run(
            dci_leg(url, token, pki_dir, hids, calls=calls, inflight=inflight, pid=facade.popen.pid)
        )
    finally:
        facade.stop()
        gateway.stop()
        os.sched_setaffinity(0, before)
    ratio = grpc_result["rps"] / max(dci_result["rps"], 1e-9)
    cpu_ratio = dci_result["server_cpu_us_per_call"] / max(
        grpc_result["server_cpu_us_per_call"], 1e-9
    )
    return {
        "server_cpu_ratio": round(cpu_ratio, 2),
        "inflight": inflight,
        "grpc": grpc_result,
        "dci": dci_result,
        "cost_ratio": round(ratio, 2),
        "target": "dci costs at most 2x the gRPC path per call (cost_ratio <= 2)",
        "met": ratio <= 2.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dci", description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--households", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jisr-bench-dci-") as work:
        print(json.dumps(measure(args.calls, args.inflight, args.households, Path(work)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
