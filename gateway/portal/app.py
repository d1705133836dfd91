"""The reference citizen portal's web app: sign in, read one's access report, sign out.

The citizen is signed in by the portal's own means. This reference has only a
DEVELOPMENT sign-in (`--dev-login`: whoever types a well-formed IDCS is that person),
which a real portal replaces with the national digital identity or its counter staff's
check; what follows does not change. Every report is an AuditTrail call signed by the
portal institution, purpose CITIZEN_ACCESS_REQUEST, with the session's pseudonym as `sub`
(never the IDCS), so the trail records that the citizen looked, and the gateway's policy
(the `citizen_portal` role) decides what the portal may ask.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.base.identifiers import is_valid_idcs
from gateway.console import i18n
from gateway.console.link import GatewayLink
from gateway.portal import plain
from gateway.portal.sessions import CitizenSession, Sessions, csrf_ok
from gateway.sdk.client import JisrError
from gateway.sdk.trail import REPORT_PURPOSE

PACKAGE = "gateway.portal"
COOKIE = "jisr_portal"
LOGIN_COOKIE = "jisr_portal_login"
LANG_COOKIE = "jisr_portal_lang"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none';"
        " form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# The gateway's refusals as the citizen reads them, by gRPC code name (else: 502).
REFUSALS = {
    "PERMISSION_DENIED": (403, "error.forbidden"),
    "UNAVAILABLE": (503, "error.unavailable"),
    "DEADLINE_EXCEEDED": (503, "error.unavailable"),
}

log = logging.getLogger("jisr.portal")


templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader(PACKAGE, "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
)
templates.env.filters["when"] = i18n.when


@dataclass
class Portal:
    link: GatewayLink
    institution: str  # the portal institution whose credentials sign the calls
    sessions: Sessions
    secure_cookies: bool


def _portal(request: Request) -> Portal:
    found: Portal = request.app.state.portal
    return found


def _now_us() -> int:
    return time.time_ns() // 1000


def _words(request: Request, session: CitizenSession | None) -> i18n.Words:
    lang = session.lang if session else request.cookies.get(LANG_COOKIE)
    return i18n.Words(i18n.language(lang), PACKAGE)


def _render(
    request: Request,
    name: str,
    context: dict[str, Any],
    session: CitizenSession | None = None,
    status: int = 200,
) -> Response:
    t = _words(request, session)
    full = {
        "t": t,
        "lang": t.lang,
        "direction": t.direction,
        "signed_in": session is not None,
        "csrf": session.csrf if session else "",
        **context,
    }
    response = templates.TemplateResponse(request, name, full, status_code=status)
    response.headers.update(HEADERS)
    return response


def _login_form(request: Request, error: str = "", status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = _render(request, "login.html", {"login_csrf": token, "error": error}, None, status)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_portal(request).secure_cookies,
        path="/login",
    )
    return response


async def login_page(request: Request) -> Response:
    return _login_form(request)


async def login(request: Request) -> Response:
    """DEVELOPMENT sign-in: a well-formed IDCS is taken as proved (see the module doc)."""
    form = await request.form()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    submitted = str(form.get("csrf") or "")
    if not expected or not hmac.compare_digest(submitted, expected):
        return _login_form(request, "login.stale", 400)
    idcs = str(form.get("idcs") or "").strip()[:32]
    if not is_valid_idcs(idcs):
        return _login_form(request, "login.invalid_idcs", 400)
    portal = _portal(request)
    token = portal.sessions.start(idcs, _words(request, None).lang, _now_us())
    response = RedirectResponse("/report", status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", secure=portal.secure_cookies, path="/"
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _session(request: Request, lang: str | None = None) -> CitizenSession | None:
    return _portal(request).sessions.touch(request.cookies.get(COOKIE), _now_us(), lang)


async def report(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    portal = _portal(request)
    sub = session.pseudonym  # the citizen in the trail: this session's, never the IDCS

    def ask() -> list[plain.Access]:
        trail = portal.link.trail(portal.institution, sub, REPORT_PURPOSE)
        return plain.report(trail.report(session.subject).message.entries)

    try:
        accesses = await run_in_threadpool(ask)
    except JisrError as refused:
        status, key = REFUSALS.get(refused.code.name, (502, "error.gateway"))
        return _render(request, "error.html", {"status": status, "key": key}, session, status)
    except (OSError, ValueError):
        context = {"status": 503, "key": "error.unavailable"}
        return _render(request, "error.html", context, session, 503)
    known = set(i18n.catalogue(_words(request, session).lang, PACKAGE))
    return _render(request, "report.html", {"accesses": accesses, "known": known}, session)


async def logout(request: Request) -> Response:
    session = _session(request)
    form = await request.form()
    if session is not None and csrf_ok(session, form.get("csrf")):
        _portal(request).sessions.end(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


async def switch_language(request: Request) -> Response:
    form = await request.form()
    lang = i18n.language(str(form.get("lang") or ""))
    current = _session(request)
    back = "/login"
    if current is not None and csrf_ok(current, form.get("csrf")):
        _session(request, lang)
        back = "/report"
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(LANG_COOKIE, lang, samesite="strict", path="/", max_age=365 * 86400)
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/report", status_code=303)


class Guard(BaseHTTPMiddleware):
    """Security headers on every answer; a plain error page for any exception (its
    type only in the log: its text could quote what a citizen typed)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        try:
            response = await call_next(request)
        except Exception as exc:
            reference = secrets.token_hex(6)
            log.error("portal error %s: %s", reference, type(exc).__name__)
            context = {"status": 500, "key": "error.internal", "reference": reference}
            response = _render(request, "error.html", context, None, 500)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def create_app(link: GatewayLink, institution: str, *, secure_cookies: bool) -> Starlette:
    static = str(resources.files("gateway.console").joinpath("static"))
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/language", switch_language, methods=["POST"]),
            Route("/report", report, methods=["GET"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ],
        middleware=[Middleware(Guard)],
    )
    app.state.portal = Portal(link, institution, Sessions(), secure_cookies)
    return app
