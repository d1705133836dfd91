"""The reference citizen portal's web app: its routes, and the guard around every request.

A citizen signs in (a DEVELOPMENT sign-in here: gateway/portal/pages_auth.py), reads who
looked at their data (pages_report), contests an access and follows the case
(pages_contests), and sees and revokes their consents (pages_consents). Every call to the
gateway is the portal institution's, naming the citizen by the session's pseudonym
(gateway/portal/web.py).
"""

from __future__ import annotations

from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.console.link import GatewayLink
from gateway.portal import pages_auth, pages_consents, pages_contests, pages_report
from gateway.portal.sessions import Sessions
from gateway.portal.web import HEADERS, Portal, http_error, server_error


class Guard(BaseHTTPMiddleware):
    """Security headers on every answer; a plain error page for any exception."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        try:
            response = await call_next(request)
        except Exception as exc:
            response = server_error(request, exc)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def create_app(link: GatewayLink, institution: str, *, secure_cookies: bool) -> Starlette:
    static = str(resources.files("gateway.console").joinpath("static"))
    app = Starlette(
        routes=[
            Route("/", pages_auth.home),
            Route("/login", pages_auth.login_page, methods=["GET"]),
            Route("/login", pages_auth.login, methods=["POST"]),
            Route("/logout", pages_auth.logout, methods=["POST"]),
            Route("/language", pages_auth.switch_language, methods=["POST"]),
            Route("/report", pages_report.report, methods=["GET"]),
            Route("/report/proofs.json", pages_report.proofs, methods=["GET"]),
            Route("/contest", pages_contests.new_case, methods=["GET"]),
            Route("/contest", pages_contests.open_case, methods=["POST"]),
            Route("/contests", pages_contests.cases, methods=["GET"]),
            Route("/contests/case", pages_contests.case, methods=["GET"]),
            Route("/contests/{action}", pages_contests.step, methods=["POST"]),
            Route("/consents", pages_consents.consents, methods=["GET"]),
            Route("/consents/revoke", pages_consents.revoke, methods=["POST"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ],
        middleware=[Middleware(Guard)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.portal = Portal(link, institution, Sessions(), secure_cookies)
    return app
