"""Concurrency in the store tests: jobs released at once, as replicas would race."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def run_together(n: int, job: Callable[[int], object]) -> list[object]:
    """Run job(0..n-1) in n threads released at once; exceptions are returned, not raised."""
    barrier = threading.Barrier(n)

    def one(i: int) -> object:
        barrier.wait()
        try:
            return job(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))
