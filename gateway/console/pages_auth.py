"""Signing in and out, and the language switch.

A login checks, in order: the form's CSRF token, the account's lock (repeated failures
lock it for a while, whatever the password), the password (argon2id), then the TOTP
code when the account has one. Every failure shows the same message, so the page never
tells which usernames exist; each one counts towards the lock. A sign-in through an
identity provider (gateway/console/pages_oidc.py) ends in the same `open_session`.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import replace
from functools import cache
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.base.times import now_us
from gateway.console import accounts, i18n, sessions
from gateway.console.oidc import Provider
from gateway.console.web import (
    LANG_COOKIE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Officer,
    checked_form,
    console,
    login_token,
    render,
    set_session_cookie,
    signed_in,
    words,
)

NOTES = ("expired", "signed_out")


def safe_next(value: str | None) -> str:
    """Where to go after login: a path of this site only (never another origin)."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value  # browsers read "/\\host" as "//host"
        or any(c < " " or c == "\x7f" for c in value)
    ):
        return "/search"
    parts = urlsplit(value)
    return "/search" if parts.scheme or parts.netloc else value


@cache
def _nobody() -> accounts.Account:
    """An account no one can use, so that an unknown username costs the same argon2
    verification as a known one (the time of a failure tells nothing)."""
    return accounts.new_account("nobody", "NONE", secrets.token_urlsafe(24), totp=False, now_us=0)


def _password_ok(account: accounts.Account | None, password: str) -> bool:
    if account is None:
        accounts.password_ok(_nobody(), password)
        return False
    return accounts.password_ok(account, password)


def form_page(request: Request, *, error: str = "", status: int = 200) -> Response:
    """The login page, with an error's message key when a sign-in failed."""
    token = login_token(request)
    note = request.query_params.get("note", "")
    context = {
        "login_csrf": token,
        "error": error,
        "note": note if note in NOTES else "",
        "next": safe_next(request.query_params.get("next")),
        "username": "",
        "providers": oidc_buttons(request),
    }
    response = render(request, "login.html", context, status=status)
    secure = console(request).secure_cookies
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/login"
    )
    return response


async def login_page(request: Request) -> Response:
    return form_page(request)


async def login(request: Request) -> Response:
    form = await request.form()
    submitted = str(form.get("csrf") or "")
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(submitted, expected):
        return form_page(request, error="login.stale", status=400)
    username = str(form.get("username") or "").strip().lower()
    password = str(form.get("password") or "")
    code = str(form.get("totp") or "").strip()
    store = console(request).store
    now = now_us()
    since = accounts.failures_since_us(now)
    failures = await run_in_threadpool(store.failures_since, username, since)
    if accounts.locked_until_us(failures, now) is not None:
        await run_in_threadpool(store.record_failure, username, now)
        return form_page(request, error="login.locked", status=429)
    found = await run_in_threadpool(store.account, username)
    account = found if found is not None and not found.disabled else None
    ok = await run_in_threadpool(_password_ok, account, password)
    if ok and account is not None and account.totp_secret:
        ok = accounts.totp_ok(account, code, now / 1_000_000)
    if not ok or account is None:
        await run_in_threadpool(store.record_failure, username, now)
        failures = [*failures, now]
        locked = accounts.locked_until_us(failures, now) is not None
        return form_page(request, error="login.locked" if locked else "login.failed", status=401)
    await run_in_threadpool(store.clear_failures, username)
    if accounts.needs_rehash(account):
        rehashed = await run_in_threadpool(accounts.with_password, account, password)
        await run_in_threadpool(store.update_account, rehashed)
    token = await open_session(request, account, now)
    response = RedirectResponse(safe_next(str(form.get("next") or "")), status_code=303)
    set_session_cookie(request, response, token)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


async def open_session(request: Request, account: accounts.Account, now: int) -> str:
    """A new session for `account`, whose sign-in passed every check: stored, and the
    token for its cookie (`set_session_cookie`) returned. The password login and the
    identity providers' sign-ins (pages_oidc.py) both end here."""
    token, session = sessions.new_session(account.username, words(request).lang, now)
    await run_in_threadpool(console(request).store.save_session, session)
    return token


def oidc_buttons(request: Request) -> list[Provider]:
    """The identity providers the login page offers (none when not configured)."""
    logins = console(request).oidc
    return logins.buttons() if logins is not None else []


async def logout(request: Request) -> Response:
    who = await signed_in(request)
    if not isinstance(who, Officer):
        return who
    await checked_form(request, who)
    await run_in_threadpool(console(request).store.delete_session, who.session.token_hash)
    response = RedirectResponse("/login?note=signed_out", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


async def switch_language(request: Request) -> Response:
    """The language of this session (and of the login page, by cookie)."""
    form = await request.form()
    lang = i18n.language(str(form.get("lang") or ""))
    back = safe_next(str(form.get("back") or ""))
    who = await signed_in(request)
    if isinstance(who, Officer):
        await checked_form(request, who)
        changed = replace(who.session, lang=lang)
        await run_in_threadpool(console(request).store.update_session, changed)
    elif back != "/login":
        back = "/login"
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(LANG_COOKIE, lang, samesite="strict", path="/", max_age=365 * 86400)
    return response
