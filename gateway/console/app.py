"""The console's web application: its routes, and the guard around every request.

`create_app` wires the pages to a store and a gateway link; `jisr console serve` runs it
under uvicorn. The guard turns any unexpected exception into a plain error page with a
reference (never a traceback in a browser, never the exception's text in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.base.times import now_us
from gateway.console import (
    pages_attention,
    pages_auth,
    pages_contests,
    pages_integrity,
    pages_oidc,
    pages_trail,
    pages_transparency,
)
from gateway.console.link import GatewayLink
from gateway.console.oidc import CALLBACK_PATH
from gateway.console.oidc_client import OidcLogins
from gateway.console.store import ConsoleStore
from gateway.console.web import SECURITY_HEADERS, Console, http_error, server_error

PURGE_EVERY_S = 300.0
log = logging.getLogger("jisr.console")


class Guard(BaseHTTPMiddleware):
    """Security headers on every answer; an error page instead of any exception."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        try:
            response = await call_next(request)
        except Exception as exc:
            response = await server_error(request, exc)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


async def home(request: Request) -> Response:
    return RedirectResponse("/search", status_code=303)


async def _purge_forever(store: ConsoleStore) -> None:
    """Expired sessions and stale login failures deleted every PURGE_EVERY_S: a session's
    expiry is checked at each request anyway; this keeps the tables small."""
    while True:
        try:
            await run_in_threadpool(store.purge_expired, now_us())
        except Exception as exc:  # the store is down for a moment: try again later
            log.warning("console purge failed: %s", type(exc).__name__)
        await asyncio.sleep(PURGE_EVERY_S)


def _lifespan(store: ConsoleStore) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_purge_forever(store))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def create_app(
    store: ConsoleStore,
    link: GatewayLink,
    *,
    secure_cookies: bool,
    oidc: OidcLogins | None = None,
    publications: Path | None = None,
) -> Starlette:
    static = str(resources.files("gateway.console").joinpath("static"))
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/login", pages_auth.login_page, methods=["GET"]),
            Route("/login", pages_auth.login, methods=["POST"]),
            Route(CALLBACK_PATH, pages_oidc.callback, methods=["GET"], name="oidc_callback"),
            Route("/login/oidc/{provider}", pages_oidc.start, methods=["GET"]),
            Route("/logout", pages_auth.logout, methods=["POST"]),
            Route("/language", pages_auth.switch_language, methods=["POST"]),
            Route("/search", pages_trail.search, methods=["GET", "POST"]),
            Route("/exchange", pages_trail.exchange, methods=["GET"]),
            Route("/exchange/receipt", pages_trail.check_receipt, methods=["POST"]),
            Route("/integrity", pages_integrity.integrity, methods=["GET"]),
            Route("/attention", pages_attention.attention, methods=["GET"]),
            Route("/integrity/evidence.zip", pages_integrity.evidence, methods=["GET"]),
            Route("/contests", pages_contests.contests, methods=["GET"]),
            Route("/contests/case", pages_contests.case, methods=["GET"]),
            Route("/contests/answer", pages_contests.answer, methods=["POST"]),
            Route("/contests/decide", pages_contests.decide, methods=["POST"]),
            Route("/transparency", pages_transparency.transparency, methods=["GET"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ],
        middleware=[Middleware(Guard)],
        exception_handlers={HTTPException: http_error},
        lifespan=_lifespan(store),
    )
    app.state.console = Console(store, link, secure_cookies, oidc, publications)
    return app
