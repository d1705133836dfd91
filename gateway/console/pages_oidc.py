"""Signing in through an institution's identity provider: the two routes of the
authorization code flow with PKCE (gateway/console/oidc.py says what is checked).

GET /login/oidc/{provider} keeps a pending sign-in (state, nonce, code verifier, where to
go after) in the store, puts the state in a cookie of this browser, and sends the browser
to the provider. GET /login/oidc/callback takes the pending sign-in of the returned state
(once: a replayed callback finds none), checks that the state is this browser's, exchanges
the code, checks the ID token, and opens a session as the password login does, on the
account linked to the provider's subject, if it is enabled and of the provider's
institution. The lock of repeated password failures holds here too (the lock is the
account's); a refused sign-in through a provider is no failure against the account:
nothing the console checks was guessed.

The session cookie is SameSite=Strict, and a browser sends no such cookie on a navigation
that a redirect from another site started; so the callback answers with a page that moves
on by itself (a meta refresh, no script), a navigation of this site's own.

Every refusal is the login page with a message (400: try again; 403: no account; 429:
locked; 503: the provider cannot be reached), and one line in the log naming the provider
and the reason, never the person (no subject, no claim, no token).
"""

from __future__ import annotations

import hmac
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.base.times import now_us
from gateway.console import accounts, oidc
from gateway.console.oidc_client import (
    IdentityProvider,
    ProviderRefusedError,
    ProviderUnavailableError,
)
from gateway.console.pages_auth import form_page, open_session, safe_next
from gateway.console.web import console, render, set_session_cookie

STATE_COOKIE = "jisr_oidc"
COOKIE_PATH = "/login/oidc"
MAX_PARAM = 2048  # a code or a state longer than this is no provider's

log = logging.getLogger("jisr.console")


def _provider(request: Request, provider_id: str) -> IdentityProvider | None:
    logins = console(request).oidc
    return logins.get(provider_id) if logins is not None else None


def _redirect_uri(request: Request) -> str:
    """The console's callback URL as registered at the providers: the configured one, else
    the URL this request came to (right when the browser reaches the console directly)."""
    logins = console(request).oidc
    configured = logins.redirect_uri if logins is not None else None
    return configured or str(request.url_for("oidc_callback"))


def _refused(request: Request, provider: str, reason: str, key: str, status: int) -> Response:
    """The login page with the message `key`; the reason (no personal data) in the log."""
    log.warning("console sign-in through %s refused: %s", provider or "?", reason)
    response = form_page(request, error=key, status=status)
    response.delete_cookie(STATE_COOKIE, path=COOKIE_PATH)
    return response


async def start(request: Request) -> Response:
    provider_id = request.path_params["provider"]
    idp = _provider(request, provider_id)
    if idp is None:
        return form_page(request, error="login.oidc.unknown", status=404)
    now = now_us()
    state, pending = oidc.new_pending(provider_id, safe_next(request.query_params.get("next")), now)
    try:
        url = await idp.authorization_url(state, pending, _redirect_uri(request))
    except ProviderUnavailableError as exc:
        return _refused(request, provider_id, str(exc), "login.oidc.unavailable", 503)
    store = console(request).store
    live_since = oidc.pending_cutoff_us(now)
    if not await run_in_threadpool(store.save_oidc_login, pending, live_since, oidc.MAX_PENDING):
        why = f"{oidc.MAX_PENDING} sign-ins under way already"
        return _refused(request, provider_id, why, "login.oidc.busy", 503)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=oidc.STATE_TTL_S,
        httponly=True,
        samesite="lax",  # sent on the provider's redirect back, a navigation from its site
        secure=console(request).secure_cookies,
        path=COOKIE_PATH,
    )
    return response


async def callback(request: Request) -> Response:
    params = request.query_params
    state = params.get("state", "")
    now = now_us()
    pending = None
    if state and len(state) <= MAX_PARAM:
        store = console(request).store
        pending = await run_in_threadpool(store.take_oidc_login, oidc.state_hash(state))
    if pending is None or oidc.pending_expired(pending, now):
        return _refused(request, "", "unknown, used or expired state", "login.oidc.stale", 400)
    provider_id = pending.provider
    cookie = request.cookies.get(STATE_COOKIE, "")
    if not hmac.compare_digest(cookie.encode(), state.encode()):
        why = "the state is not this browser's"
        return _refused(request, provider_id, why, "login.oidc.stale", 400)
    idp = _provider(request, provider_id)
    if idp is None:  # no longer configured
        return _refused(request, provider_id, "provider gone", "login.oidc.stale", 400)
    if "error" in params:
        error = params["error"][:64]
        why = f"the provider answered {error!r}"
        return _refused(request, provider_id, why, "login.oidc.cancelled", 400)
    issuer = params.get("iss")  # RFC 9207: whoever answers must be the provider asked
    if issuer is not None and issuer != idp.provider.issuer:
        return _refused(request, provider_id, "iss mismatch", "login.oidc.failed", 400)
    code = params.get("code", "")
    if not code or len(code) > MAX_PARAM:
        return _refused(request, provider_id, "no code", "login.oidc.failed", 400)
    try:
        identity = await idp.identity(code, pending, _redirect_uri(request))
    except ProviderUnavailableError as exc:
        return _refused(request, provider_id, str(exc), "login.oidc.unavailable", 503)
    except (ProviderRefusedError, oidc.IdTokenError) as exc:
        return _refused(request, provider_id, str(exc), "login.oidc.failed", 400)
    return await _open(request, idp, identity, pending.next, now)


async def _open(
    request: Request, idp: IdentityProvider, identity: oidc.Identity, target: str, now: int
) -> Response:
    """The session of the account linked to `identity`, if it may have one."""
    store = console(request).store
    account = await run_in_threadpool(store.oidc_account, identity.issuer, identity.subject)
    refusal = oidc.login_refusal(account, idp.provider)
    if refusal is not None or account is None:
        why = refusal or "no account"
        return _refused(request, idp.provider.id, why, "login.oidc.unlinked", 403)
    since = accounts.failures_since_us(now)
    failures = await run_in_threadpool(store.failures_since, account.username, since)
    if accounts.locked_until_us(failures, now) is not None:
        return _refused(request, idp.provider.id, "account locked", "login.locked", 429)
    token = await open_session(request, account, now)
    response = render(request, "login_continue.html", {"next": safe_next(target)})
    set_session_cookie(request, response, token)
    response.delete_cookie(STATE_COOKIE, path=COOKIE_PATH)
    return response
