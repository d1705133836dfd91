"""How long a partner waits for `import gateway.sdk` (issue 13: under 0.2 s), against its
floor `import grpc` and an empty interpreter on the same machine, the three alternated so
that load falls on all alike; medians of whole-process times. `python -m bench.sdk_import`
prints them; bench/run.py calls `measure()`."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 10
COMMANDS = {"sdk_ms": "import gateway.sdk", "grpc_ms": "import grpc", "python_ms": "pass"}


def _once(code: str) -> float:
    """One fresh interpreter running `code`, in milliseconds, start to exit."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return (time.perf_counter() - began) * 1000


def measure(runs: int = RUNS) -> dict[str, float]:
    """Median milliseconds of each command over `runs` alternated runs (after one untimed
    run of each, which fills the OS's file cache and writes any missing .pyc), the SDK's
    time over grpc's (`ratio`), and each import's time beyond the empty interpreter."""
    for code in COMMANDS.values():
        _once(code)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, code in COMMANDS.items():
            times[name].append(_once(code))
    out = {name: round(statistics.median(values), 1) for name, values in times.items()}
    out["sdk_import_ms"] = round(out["sdk_ms"] - out["python_ms"], 1)
    out["grpc_import_ms"] = round(out["grpc_ms"] - out["python_ms"], 1)
    out["ratio"] = round(out["sdk_ms"] / out["grpc_ms"], 2)
    return out


def main() -> int:
    result = measure()
    print(
        f"import gateway.sdk: {result['sdk_ms']:.0f} ms ({result['sdk_import_ms']:.0f} ms"
        f" beyond the interpreter's {result['python_ms']:.0f} ms); import grpc:"
        f" {result['grpc_ms']:.0f} ms ({result['grpc_import_ms']:.0f} ms); ratio"
        f" {result['ratio']:.2f} (medians of {RUNS} runs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
