"""The whole live trail verified with every core: each node's chain in its own process.

Nodes' chains are independent (each gateway process writes its own), so they can be
checked side by side: the checkpoints are verified once, here, and each node's records
are read and hashed by a worker process straight from the store's rows
(`AuditStore.record_rows`, `store_common.row_links`), which is what bounds the
verification (docs/performance.md, "Audit trail"). The report is the one `chain.verify`
gives over the same store, node for node.

Workers are forked when the caller runs a single thread on Linux (`jisr audit verify`):
a fork starts in milliseconds with the caller's modules loaded, where a spawned worker
imports them again, and through the `jisr` script the whole command line's (~0.35 s of a
~3 s verification, docs/performance.md "Audit trail"). They are forked while this module
holds no store open (it counts the nodes, closes, forks, then opens again), so no
connection of ours is shared; a caller's own open connections are inherited, unused (the
children end with `os._exit`). A process with another thread, even one only the kernel
sees (`/proc/self/task`: a C library's), gets spawned workers: forking beside a thread
that may hold a lock can leave the child waiting on it forever. Elsewhere than Linux too
(macOS's system libraries start threads). Either way each worker opens the store
read-only itself.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from pathlib import Path
from typing import Any

from gateway.audit import chain
from gateway.audit.store import open_audit_store
from gateway.audit.store_common import row_links

# How long a thread the kernel still lists, though Python joined it, may take to go.
THREADS_SETTLE_S = 0.2
# Called with (node, records verified) as each node's chain is done, in node order.
Progress = Callable[[str, int], None]


def verify_store(
    url: str | None,
    state_dir: Path,
    jwks: Mapping[str, Any],
    *,
    jobs: int,
    progress: Progress | None = None,
) -> chain.Report:
    """Verify the trail `open_audit_store(url, state_dir)` holds with up to `jobs`
    processes (one node per process at a time; in this process when `jobs` is 1 or the
    trail has one node). Store errors are raised as the store raises them."""
    with closing(open_audit_store(url, state_dir, read_only=True)) as store:
        known = len(store.nodes())  # how many processes are worth starting
        if jobs <= 1 or known <= 1:
            index = chain.index_checkpoints(store.checkpoints(), jwks)
            results = []
            for node in store.nodes():  # read after the checkpoints, as chain.verify does
                result = chain.verify_node(node, row_links(store.record_rows(node)), index)
                results.append(_done(node, result, progress))
            return chain.assemble(index, [r for r in results if r is not None])
    workers = min(jobs, known)
    context = multiprocessing.get_context(start_method())
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            # The workers start now: forked all at the first submit, spawned one a submit
            # (each finds no idle worker), while the checkpoints are checked.
            for _ in range(workers):
                pool.submit(_started)
            with closing(open_audit_store(url, state_dir, read_only=True)) as store:
                index = chain.index_checkpoints(store.checkpoints(), jwks)
                # After the checkpoints: a node that began meanwhile has records and no
                # checkpoint in the index, which is sound; the other way round, its
                # checkpoints without its records would read as a truncated chain.
                nodes = store.nodes()
            futures = [
                pool.submit(_verify_node, url, state_dir, node, index.only(node)) for node in nodes
            ]
            done = [_done(n, f.result(), progress) for n, f in zip(nodes, futures, strict=True)]
    except BrokenProcessPool as exc:  # at a submit or a result: a worker died
        raise VerifyProcessError(
            f"a process verifying the trail ended before it answered ({exc})"
        ) from None
    return chain.assemble(index, [r for r in done if r is not None])


def start_method() -> str:
    """How the workers start: "fork" when this process runs one thread only, on Linux;
    else "spawn" (see the module docstring)."""
    if sys.platform != "linux" or threading.active_count() != 1:
        return "spawn"
    # Threads Python did not start count too. A thread just joined (a closed connection
    # pool's) may still be leaving the kernel's list: give it a moment.
    deadline = time.monotonic() + THREADS_SETTLE_S
    while True:
        try:
            alone = len(os.listdir("/proc/self/task")) == 1
        except OSError:
            return "spawn"
        if alone or time.monotonic() >= deadline:
            return "fork" if alone else "spawn"
        time.sleep(0.005)


class VerifyProcessError(RuntimeError):
    """A worker process died (killed, out of memory): nothing can be said of its node."""


def _started() -> None:
    """Nothing: submitted first, once per worker, so that the pool starts them at once."""


def _verify_node(
    url: str | None, state_dir: Path, node: str, index: chain.CheckpointIndex
) -> chain.NodeResult | None:
    """In a worker: one node's chain, read from the store opened read-only."""
    with closing(open_audit_store(url, state_dir, read_only=True)) as store:
        return chain.verify_node(node, row_links(store.record_rows(node)), index)


def _done(
    node: str, result: chain.NodeResult | None, progress: Progress | None
) -> chain.NodeResult | None:
    if progress is not None and result is not None:
        progress(node, result.records)
    return result
