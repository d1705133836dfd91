"""Signing a citizen in and out, and their choice of language.

This reference has only a DEVELOPMENT sign-in (`--dev-login`: whoever types a well-formed
IDCS is that person), which a real portal replaces with the national digital identity or
its counter staff's check (docs/citizen-portal.md); nothing after sign-in changes.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.base.identifiers import is_valid_idcs
from gateway.console import i18n
from gateway.portal.sessions import csrf_ok
from gateway.portal.web import (
    COOKIE,
    LANG_COOKIE,
    LOGIN_COOKIE,
    current,
    now_us,
    portal,
    render,
    words,
)


def _login_form(request: Request, error: str = "", status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html", {"login_csrf": token, "error": error}, None, status)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=portal(request).secure_cookies,
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
    site = portal(request)
    token = site.sessions.start(idcs, words(request, None).lang, now_us())
    response = RedirectResponse("/report", status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", secure=site.secure_cookies, path="/"
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: Request) -> Response:
    session = current(request)
    form = await request.form()
    if session is not None and csrf_ok(session, form.get("csrf")):
        portal(request).sessions.end(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


async def switch_language(request: Request) -> Response:
    """Back to the page the citizen was on (a path of this portal only), in `lang`."""
    form = await request.form()
    lang = i18n.language(str(form.get("lang") or ""))
    session = current(request)
    back = "/login"
    if session is not None and csrf_ok(session, form.get("csrf")):
        current(request, lang)
        back = _same_site(str(form.get("back") or ""))
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(LANG_COOKIE, lang, samesite="strict", path="/", max_age=365 * 86400)
    return response


def _same_site(path: str) -> str:
    """`path` if it is one of this portal's pages, else the report."""
    safe = (
        path.startswith("/")
        and not path.startswith("//")
        and path.isascii()
        and path.isprintable()
        and "\\" not in path
        and len(path) <= 200
    )
    return path if safe else "/report"


async def home(request: Request) -> Response:
    return RedirectResponse("/report", status_code=303)
