"""Where and how the facade delivers asynchronous answers (`on-search`, `txn/on-status`).

A callback carries personal data, so it goes only where the partner said at onboarding:
`header.sender_uri` must start with one of its client's registered callback prefixes
(`jisr dci client add --callback`); the conformance client may also use a loopback http
address (the compliance suite's receiver). Delivery runs on a few threads of its own with a
bound on what waits, per institution and in all, so that a slow or dead receiver delays
its own answers, never another partner's nor the facade's requests (docs/dci.md).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx

log = logging.getLogger("jisr.dci.callbacks")

WORKERS = 4
MAX_PENDING = 64  # answers waiting for delivery, all institutions together
MAX_PENDING_PER_INSTITUTION = 16
ATTEMPTS = 3
TIMEOUT_S = 10.0
BACKOFF_S = (0.5, 2.0)


def allowed(uri: str, prefixes: Sequence[str], *, loopback: bool) -> bool:
    """May an answer be sent to `uri`? A registered prefix (compared on the whole URL), or,
    for the conformance client, an http(s) address on loopback."""
    parts = urlsplit(uri)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return False
    if any(uri.startswith(p) for p in prefixes):
        return True
    if not loopback:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return parts.hostname == "localhost"


class Deliveries:
    """Runs answers' work and posts them, bounded."""

    def __init__(
        self,
        post: Callable[[str, dict[str, Any]], int] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="dci-callback")
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._post = post or post_json
        self._sleep = sleep

    def submit(
        self, institution: str, work: Callable[[], tuple[str, dict[str, Any]] | None]
    ) -> bool:
        """Run `work` (which answers and returns where to send what, or None) and deliver
        its answer; False, at once, when too much waits already."""
        with self._lock:
            total = sum(self._pending.values())
            mine = self._pending.get(institution, 0)
            if total >= MAX_PENDING or mine >= MAX_PENDING_PER_INSTITUTION:
                return False
            self._pending[institution] = mine + 1
        self._pool.submit(self._run, institution, work)
        return True

    def _run(self, institution: str, work: Callable[[], tuple[str, dict[str, Any]] | None]) -> None:
        try:
            found = work()
            if found is not None:
                self._deliver(*found)
        except Exception as exc:  # a callback never kills the worker; no data in the log
            log.error("callback failed: %s", type(exc).__name__)
        finally:
            with self._lock:
                self._pending[institution] -= 1

    def _deliver(self, uri: str, body: dict[str, Any]) -> None:
        for attempt in range(ATTEMPTS):
            try:
                status = self._post(uri, body)
            except httpx.HTTPError as exc:
                status, why = 0, type(exc).__name__
            else:
                why = f"HTTP {status}"
            if 200 <= status < 300:
                return
            if attempt < len(BACKOFF_S):
                self._sleep(BACKOFF_S[attempt])
        log.warning("callback not delivered after %d attempts: %s", ATTEMPTS, why)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def post_json(uri: str, body: dict[str, Any], timeout: float = TIMEOUT_S) -> int:
    """POST `body` as JSON; the HTTP status (no redirect followed)."""
    reply = httpx.post(uri, json=body, timeout=timeout, follow_redirects=False)
    return reply.status_code
