"""The DCI facade's HTTP edge (Starlette): routes, bodies read within bounds, replies.

Everything a request is checked against is gateway/dci/facade.py's; this module reads the
request (at most MAX_BODY_BYTES, before anything else), runs the facade's work on a worker
thread (it waits on the audit commit and may wait on remote registries), and answers in
JSON. Paths the facade does not serve answer the standard's error envelope, never HTML.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.base.errors import Reason
from gateway.dci.envelopes import Reply
from gateway.dci.facade import (
    MAX_BODY_BYTES,
    MAX_CALLS_PER_INSTITUTION,
    MAX_OPEN_PER_INSTITUTION,
    Facade,
    RefusedError,
)

JSON = "application/json"
# Threads for the requests' work, all institutions together. Few on purpose: the work
# is CPU under one interpreter lock, and measured with 64 searches in flight a call cost
# 2.5 ms of CPU with one thread, 3.2 ms with two, 4.7 ms with four to thirty-two (the
# threads' hand-offs of the lock); docs/performance.md, "DCI facade".
THREADS = 8
log = logging.getLogger("jisr.dci")


def create_app(facade: Facade) -> Starlette:
    """The facade's ASGI application."""

    async def token(request: Request) -> Response:
        raw = await _body(request, 8192)
        if raw is None:
            return _json(facade.refused(_too_large()))
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        reply = await run_in_threadpool(facade.token, form, _basic(request))
        return _json(reply)

    async def jwks(request: Request) -> Response:
        return _json(facade.jwks())

    turns = _Turns()

    def enveloped(work: Callable[[bytes, str | None], Reply]) -> Callable[..., Any]:
        """A `/registry/*` endpoint: the body read within bounds, JSON only, the work on
        a worker thread when the institution's turn comes."""

        async def endpoint(request: Request) -> Response:
            raw = await _body(request, MAX_BODY_BYTES)
            if raw is None:
                return _json(facade.refused(_too_large()))
            if not request.headers.get("content-type", "").lower().startswith(JSON):
                return _json(facade.refused(_not_json()))
            authorization = request.headers.get("authorization")
            institution = facade.institution_of(authorization)
            if institution is None:  # refused by the work's own checks, at once
                return _json(await run_in_threadpool(work, raw, authorization))
            if not turns.may_wait(institution):
                return _json(facade.refused(_too_many()))
            async with turns.of(institution):
                return _json(await run_in_threadpool(work, raw, authorization))

        return endpoint

    async def fault(request: Request, exc: Exception) -> Response:
        """Whatever no check expected: the standard's envelope, never a traceback (its
        type only is logged: its message may quote request data)."""
        log.error("dci fault: %s", type(exc).__name__)
        refusal = RefusedError(500, "err.service.unavailable", Reason.INTERNAL, "facade fault")
        return _json(facade.refused(refusal))

    async def not_served(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = "err.request.not_found" if status in {404, 405} else "err.request.bad"
        reason = Reason.MALFORMED_REQUEST
        return _json(facade.refused(RefusedError(status, code, reason, "not served here")))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # anyio's default is 40 threads; see THREADS.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/oauth2/client/token", token, methods=["POST"]),
            Route("/.well-known/jwks.json", jwks, methods=["GET"]),
            Route("/registry/sync/search", enveloped(facade.sync_search), methods=["POST"]),
            Route("/registry/search", enveloped(facade.search), methods=["POST"]),
            Route("/registry/sync/txn/status", enveloped(facade.sync_txn_status), methods=["POST"]),
            Route("/registry/txn/status", enveloped(facade.txn_status), methods=["POST"]),
            Route("/registry/subscribe", enveloped(facade.subscribe), methods=["POST"]),
            Route("/registry/unsubscribe", enveloped(facade.unsubscribe), methods=["POST"]),
        ],
        exception_handlers={404: not_served, 405: not_served, Exception: fault},
    )


async def _body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds `limit` (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _basic(request: Request) -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 §2.3.1), if the client used it."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return client_id, secret


class _Turns:
    """Each institution's requests take their turn: MAX_CALLS_PER_INSTITUTION on threads
    at once (of THREADS for all), the rest waiting as coroutines (they hold no thread, so
    one partner's flood never starves the others), at most MAX_OPEN_PER_INSTITUTION in
    all; beyond that, 429 at once. The gateway's door does the same for gRPC."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Semaphore] = {}
        self._open: dict[str, int] = {}

    def may_wait(self, institution: str) -> bool:
        return self._open.get(institution, 0) < MAX_OPEN_PER_INSTITUTION

    @contextlib.asynccontextmanager
    async def of(self, institution: str) -> AsyncIterator[None]:
        running = self._running.setdefault(
            institution, asyncio.Semaphore(MAX_CALLS_PER_INSTITUTION)
        )
        self._open[institution] = self._open.get(institution, 0) + 1
        try:
            async with running:
                yield
        finally:
            self._open[institution] -= 1


def _too_many() -> RefusedError:
    why = f"at most {MAX_OPEN_PER_INSTITUTION} requests open at once per institution"
    return RefusedError(429, "err.request.too_many_requests", Reason.TOO_MANY_CALLS, why)


def _not_json() -> RefusedError:
    why = "Content-Type must be application/json"
    return RefusedError(415, "err.request.bad", Reason.MALFORMED_REQUEST, why)


def _too_large() -> RefusedError:
    return RefusedError(413, "err.request.bad", Reason.MESSAGE_TOO_LARGE, "the body is too large")


def _json(reply: Reply) -> Response:
    """The reply as JSON, ASCII-escaped: a lone surrogate the request carried (echoed in
    a transaction id) is written as an escape, never a failure to encode."""
    body = json.dumps(reply.body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return Response(body, reply.status, headers=reply.headers, media_type=JSON)
