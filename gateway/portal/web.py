"""What every page of the reference portal shares: templates, the signed-in citizen, CSRF,
the security headers, and how the gateway's refusals read to a citizen.

Every call to the gateway is signed by the portal institution with the session's
pseudonym as `sub` (never the IDCS), so the trail records that the citizen acted, and the
gateway's policy (the `citizen_portal` role) decides what the portal may do.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from gateway.console import i18n
from gateway.console.link import GatewayLink
from gateway.portal.sessions import CitizenSession, Sessions, csrf_ok
from gateway.sdk.client import JisrClient, JisrError

T = TypeVar("T")

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
# The gateway's refusals as a citizen reads them: first by reason, then by gRPC code name
# (else 502). A case or record the citizen may not see reads as not found: the portal
# tells no more than the gateway does.
BY_REASON = {
    "CASE_NOT_YOURS": (404, "error.not_found"),
    "CASE_RECORD_NOT_FOUND": (404, "error.not_found"),
    "CONSENT_NOT_FOUND": (404, "error.not_found"),
    "CASE_STATE": (409, "error.case_state"),
    "CONCURRENT_CHANGE": (409, "error.changed"),
    "GRANTOR_NOT_ENTITLED": (403, "error.not_grantor"),
}
BY_CODE = {
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


def portal(request: Request) -> Portal:
    found: Portal = request.app.state.portal
    return found


def now_us() -> int:
    return time.time_ns() // 1000


def words(request: Request, session: CitizenSession | None) -> i18n.Words:
    lang = session.lang if session else request.cookies.get(LANG_COOKIE)
    return i18n.Words(i18n.language(lang), PACKAGE)


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    session: CitizenSession | None = None,
    status: int = 200,
) -> Response:
    """The template `name` in the citizen's language, with the security headers; `say`
    names a code in words (`known`: the language's message keys)."""
    t = words(request, session)
    known = set(i18n.catalogue(t.lang, PACKAGE))

    def say(kind: str, code: str) -> str:
        """An institution, purpose or kind of data in words, or its code when the portal
        has none (never dropped: a citizen must see what the gateway named)."""
        key = f"{kind}.{code}"
        return t(key) if key in known else code

    full = {
        "t": t,
        "lang": t.lang,
        "direction": t.direction,
        "signed_in": session is not None,
        "csrf": session.csrf if session else "",
        "known": known,
        "say": say,
        **context,
    }
    response = templates.TemplateResponse(request, name, full, status_code=status)
    response.headers.update(HEADERS)
    return response


def error_page(request: Request, session: CitizenSession | None, status: int, key: str) -> Response:
    return render(request, "error.html", {"status": status, "key": key}, session, status)


def current(request: Request, lang: str | None = None) -> CitizenSession | None:
    """The citizen's live session (touched now; its language changed when given)."""
    return portal(request).sessions.touch(request.cookies.get(COOKIE), now_us(), lang)


def to_login() -> Response:
    """Back to sign-in: a session ended or expired (nothing the citizen typed is kept
    by the portal, so nothing is lost that they did not yet send)."""
    return RedirectResponse("/login", status_code=303)


async def checked_form(request: Request, session: CitizenSession) -> FormData:
    """The posted form, once its CSRF token is the session's (403 otherwise)."""
    form = await request.form()
    if not csrf_ok(session, form.get("csrf")):
        raise HTTPException(403, "csrf")
    return form


def refusal(error: JisrError) -> tuple[int, str]:
    """The HTTP status and message key of a gateway's refusal."""
    return BY_REASON.get(error.reason) or BY_CODE.get(error.code.name, (502, "error.gateway"))


async def attempt(
    request: Request, session: CitizenSession, work: Callable[[JisrClient], T]
) -> T | JisrError | Response:
    """`work` with the portal's client acting as this session's pseudonym, in a worker
    thread: its result, the gateway's refusal, or the page of an unreachable gateway."""
    site = portal(request)
    try:
        client = site.link.client(site.institution).acting_as(session.pseudonym)
        return await run_in_threadpool(work, client)
    except JisrError as refused:
        return refused
    except (OSError, ValueError):
        return error_page(request, session, 503, "error.unavailable")


async def ask(
    request: Request, session: CitizenSession, work: Callable[[JisrClient], T]
) -> T | Response:
    """As `attempt`, a refusal shown as its page."""
    result = await attempt(request, session, work)
    if isinstance(result, JisrError):
        status, key = refusal(result)
        return error_page(request, session, status, key)
    return result


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    key = {403: "error.csrf", 404: "error.not_found", 405: "error.not_found"}.get(
        status, "error.internal"
    )
    return error_page(request, None, status, key)


def server_error(request: Request, exc: Exception) -> Response:
    """A plain page with a reference (the log names the exception's type only: its text
    could quote what a citizen typed)."""
    reference = secrets.token_hex(6)
    log.error("portal error %s: %s", reference, type(exc).__name__)
    context = {"status": 500, "key": "error.internal", "reference": reference}
    return render(request, "error.html", context, None, 500)
