"""What every page of the console shares: templates, the signed-in officer, CSRF, the
security headers, and the pages shown when something goes wrong.

Sessions live in the console's store, not in the cookie: the cookie holds a random token
(HttpOnly, SameSite=Strict, Secure unless served on loopback for development) whose hash
names the session, so signing out, disabling an account or an idle timeout ends it on
every replica at once. Every form carries the session's CSRF token (the login form, a
token of its own cookie), checked before anything is done.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from gateway.base.times import now_us
from gateway.console import i18n, sessions
from gateway.console.accounts import Account
from gateway.console.link import GatewayLink
from gateway.console.oidc_client import OidcLogins
from gateway.console.sessions import Session
from gateway.console.store import ConsoleStore
from gateway.sdk.client import JisrError
from gateway.sdk.trail import Trail

T = TypeVar("T")
D = TypeVar("D")

# The gateway's refusals as HTTP answers, by gRPC code name (anything else: 502).
REFUSALS = {
    "PERMISSION_DENIED": (403, "error.forbidden"),
    "UNAUTHENTICATED": (403, "error.forbidden"),
    "UNAVAILABLE": (503, "error.unavailable"),
    "DEADLINE_EXCEEDED": (503, "error.unavailable"),
    "INVALID_ARGUMENT": (400, "error.invalid"),
    "NOT_FOUND": (404, "error.no_record"),
    # A step on something another step changed meanwhile, or that its state does not allow.
    "ABORTED": (409, "error.changed"),
    "FAILED_PRECONDITION": (409, "error.conflict"),
}

log = logging.getLogger("jisr.console")

SESSION_COOKIE = "jisr_console"
LOGIN_COOKIE = "jisr_login"
LANG_COOKIE = "jisr_lang"
SECURITY_HEADERS = {
    # Nothing from elsewhere: no script, font or style from the internet in a page.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Pages show personal records: never kept by a browser or a proxy.
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("gateway.console", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
)


templates.env.filters["when"] = i18n.when


@dataclass
class Console:
    """What the pages need: the store of accounts and sessions, the gateway, settings."""

    store: ConsoleStore
    link: GatewayLink
    secure_cookies: bool
    oidc: OidcLogins | None = None  # the identity providers, when configured
    publications: Path | None = None  # the public transparency page's directory


@dataclass(frozen=True)
class Officer:
    account: Account
    session: Session


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def words(request: Request, session: Session | None = None) -> i18n.Words:
    lang = session.lang if session is not None else request.cookies.get(LANG_COOKIE)
    return i18n.Words(i18n.language(lang))


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    officer: Officer | None = None,
    status: int = 200,
) -> Response:
    """The template `name` in the officer's language, with the security headers."""
    t = words(request, officer.session if officer else None)
    full = {
        "t": t,
        "lang": t.lang,
        "direction": t.direction,
        "officer": officer.account if officer else None,
        "csrf": officer.session.csrf if officer else "",
        **context,
    }
    response = templates.TemplateResponse(request, name, full, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def to_login(request: Request, note: str = "") -> RedirectResponse:
    """Back to the login page, remembering where the officer was going (GET only: a form
    sent with an expired session is shown again after login, not replayed)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    where = f"/login?next={quote(target, safe='')}" if request.method == "GET" else "/login"
    if note:
        where += ("&" if "?" in where else "?") + f"note={note}"
    response = RedirectResponse(where, status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


async def signed_in(request: Request) -> Officer | Response:
    """The officer whose live session the cookie names, or a redirect to login."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return to_login(request)
    store = console(request).store
    digest = sessions.token_hash(token)
    session = await run_in_threadpool(store.session, digest)
    now = now_us()
    if session is None:
        return to_login(request, "expired")
    if sessions.expired(session, now):
        await run_in_threadpool(store.delete_session, digest)
        return to_login(request, "expired")
    account = await run_in_threadpool(store.account, session.username)
    if account is None or account.disabled:
        await run_in_threadpool(store.delete_session, digest)
        return to_login(request)
    touched = replace(session, last_seen_us=now)
    if not await run_in_threadpool(store.update_session, touched):
        return to_login(request)  # signed out (or disabled) while this request ran
    return Officer(account, touched)


async def checked_form(request: Request, officer: Officer) -> FormData:
    """The posted form, once its CSRF token is the session's (403 otherwise)."""
    form = await request.form()
    submitted = form.get("csrf")
    if not sessions.csrf_ok(officer.session, submitted if isinstance(submitted, str) else None):
        raise HTTPException(403, "csrf")
    return form


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=sessions.ABSOLUTE_TIMEOUT_S,
        httponly=True,
        samesite="strict",
        secure=console(request).secure_cookies,
        path="/",
    )


def login_token(request: Request) -> str:
    """The login form's CSRF token: its own cookie's value (a new one if absent)."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)


def refusal_status(error: JisrError) -> tuple[int, str]:
    """The HTTP status and message key of a gateway's refusal, by the gRPC code's name (the
    console stays free of grpc: the SDK is its one edge); anything unforeseen is 502."""
    return REFUSALS.get(error.code.name, (502, "error.gateway"))


def refusal_page(request: Request, officer: Officer, error: JisrError) -> Response:
    """What the gateway refused, as the officer should read it: 403 when the policy
    does not let this institution see it (the refusal is in the trail), 503 when the
    gateway cannot be reached, 400 for a filter it refused."""
    status, key = refusal_status(error)
    context = {"status": status, "key": key, "reason": error.reason}
    return render(request, "error.html", context, officer=officer, status=status)


async def attempt(
    request: Request,
    officer: Officer,
    desk: Callable[[GatewayLink, str, str], D],
    work: Callable[[D], T],
) -> T | JisrError | Response:
    """`work` on the officer's desk (`desk(link, institution, officer_id)`: the trail, the
    contest cases) in a worker thread: its result, the gateway's refusal (for the page to
    explain), or the page saying the console holds no credentials of the institution."""
    account = officer.account
    try:
        opened = desk(console(request).link, account.institution, account.officer_id)
    except (OSError, ValueError):
        context = {"status": 503, "key": "error.no_credentials", "reason": ""}
        return render(request, "error.html", context, officer=officer, status=503)
    try:
        return await run_in_threadpool(work, opened)
    except JisrError as refused:
        return refused


async def ask(request: Request, officer: Officer, work: Callable[[Trail], T]) -> T | Response:
    """`work` on the officer's trail (the officer's institution, the officer's id as
    `sub`); a refusal becomes its page."""
    result = await attempt(request, officer, GatewayLink.trail, work)
    if isinstance(result, JisrError):
        return refusal_page(request, officer, result)
    return result


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    key = {403: "error.csrf", 404: "error.not_found", 405: "error.not_found"}.get(
        status, "error.internal"
    )
    return render(
        request, "error.html", {"status": status, "key": key, "reason": ""}, status=status
    )


async def server_error(request: Request, exc: Exception) -> Response:
    """Never a traceback in a browser: a reference the operator finds in the log, which
    names the exception's type only (its text may quote what an officer typed)."""
    reference = secrets.token_hex(6)
    log.error("console error %s: %s", reference, type(exc).__name__)
    context = {"status": 500, "key": "error.internal", "reason": reference}
    return render(request, "error.html", context, status=500)
