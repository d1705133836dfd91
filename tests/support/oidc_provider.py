"""A small, real OpenID Connect provider for the console's tests: a FAKE at a boundary this
project does not own, the institution's identity provider (Keycloak, an Active Directory's
ADFS, a national identity service...). The console is tested against the protocol, over
HTTP on 127.0.0.1, in a process of its own, as it meets a real provider.

What it does, as a provider must:
- a discovery document (/.well-known/openid-configuration) and its JWKS (one RSA key);
- an authorization endpoint that checks the client, the redirect URI (any on loopback),
  the `openid` scope and a PKCE S256 challenge, and shows a form where the tester types
  the subject who signs in (or cancels: `error=access_denied` goes back);
- a token endpoint that authenticates the client (HTTP Basic or the form's fields), takes
  each code once, within 60 s, for the redirect URI it was issued for, and ENFORCES PKCE:
  the code verifier's S256 must be the challenge, else `invalid_grant`;
- ID tokens signed RS256 with `iss`, `sub`, `aud`, `exp`, `iat`, `auth_time`, `nonce` and
  `at_hash`. Signed with pyjwt, not the console's JOSE library (joserfc), so that one
  library's mistake cannot hide itself.

It misbehaves on request, for the tests of what the console refuses: the form's
"misbehave" choice makes that sign-in's ID token carry a wrong nonce, a wrong audience,
be expired, or be signed with another key under the same key id. GET /_test/redirects
lists the redirects back it made (code and state included), for replaying one.

Run it as `python -m tests.support.oidc_provider --listen 127.0.0.1:0 --client-id ID
--client-secret SECRET`; it prints "... serving on 127.0.0.1:PORT" like the project's
servers (tests/support/processes.py), and its issuer is http://127.0.0.1:PORT.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit
from urllib.request import urlopen

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support import processes

KID = "fake-key-1"
CODE_TTL_S = 60
TOKEN_TTL_S = 300
MISBEHAVIOURS = ("none", "wrong_nonce", "wrong_audience", "expired", "bad_signature")


@dataclass
class _Grant:
    """What a code stands for, until it is exchanged (once)."""

    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    subject: str
    misbehave: str
    issued: float


@dataclass
class _Provider:
    issuer: str
    client_id: str
    client_secret: str
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    other_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    requests: dict[str, dict[str, str]] = field(default_factory=dict)
    grants: dict[str, _Grant] = field(default_factory=dict)
    redirects: list[str] = field(default_factory=list)

    # Discovery and keys.

    def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
            }
        )

    def jwks(self, request: Request) -> Response:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**public, "kid": KID, "use": "sig", "alg": "RS256"}]})

    # The authorization endpoint: a form, then a redirect back with a code.

    async def authorize(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._signed_in(request)
        asked = dict(request.query_params)
        if asked.get("client_id") != self.client_id:
            return _page("Unknown client", "<p id='idp-error'>unknown client_id</p>", 400)
        redirect_uri = asked.get("redirect_uri", "")
        if not _loopback_uri(redirect_uri):
            return _page("Bad redirect", "<p id='idp-error'>redirect_uri refused</p>", 400)
        problem = _authorization_problem(asked)
        if problem:
            return self._back(redirect_uri, asked.get("state"), error="invalid_request")
        request_id = secrets.token_urlsafe(16)
        self.requests[request_id] = asked
        options = "".join(f"<option value='{m}'>{m}</option>" for m in MISBEHAVIOURS)
        body = f"""
<form method="post" action="/authorize">
  <input type="hidden" name="request" value="{html.escape(request_id)}">
  <label for="subject">Subject</label> <input id="subject" name="subject">
  <label for="misbehave">Misbehave</label>
  <select id="misbehave" name="misbehave">{options}</select>
  <button id="idp-sign-in" name="action" value="sign-in">Sign in</button>
  <button id="idp-cancel" name="action" value="cancel">Cancel</button>
</form>"""
        return _page("Fake identity provider", body)

    async def _signed_in(self, request: Request) -> Response:
        form = await request.form()
        asked = self.requests.pop(str(form.get("request") or ""), None)
        if asked is None:
            return _page("Expired", "<p id='idp-error'>unknown or used request</p>", 400)
        redirect_uri, state = asked["redirect_uri"], asked.get("state")
        if form.get("action") == "cancel":
            return self._back(redirect_uri, state, error="access_denied")
        misbehave = str(form.get("misbehave") or "none")
        code = secrets.token_urlsafe(24)
        self.grants[code] = _Grant(
            client_id=asked["client_id"],
            redirect_uri=redirect_uri,
            challenge=asked["code_challenge"],
            nonce=asked.get("nonce"),
            subject=str(form.get("subject") or "").strip(),
            misbehave=misbehave if misbehave in MISBEHAVIOURS else "none",
            issued=time.time(),
        )
        return self._back(redirect_uri, state, code=code)

    def _back(self, redirect_uri: str, state: str | None, **params: str) -> Response:
        if state is not None:
            params["state"] = state
        sep = "&" if urlsplit(redirect_uri).query else "?"
        target = f"{redirect_uri}{sep}{urlencode(params)}"
        self.redirects.append(target)
        return RedirectResponse(target, status_code=303)

    # The token endpoint.

    async def token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not self._client_ok(request, form):
            return _oauth_error("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type")
        grant = self.grants.pop(form.get("code", ""), None)  # one use, whatever follows
        if (
            grant is None
            or time.time() - grant.issued > CODE_TTL_S
            or grant.client_id != self.client_id
            or grant.redirect_uri != form.get("redirect_uri")
            or not _pkce_ok(form.get("code_verifier", ""), grant.challenge)
        ):
            return _oauth_error("invalid_grant")
        access_token = secrets.token_urlsafe(32)
        body = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL_S,
            "id_token": self._id_token(grant, access_token),
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def _client_ok(self, request: Request, form: Mapping[str, str]) -> bool:
        """client_secret_basic (RFC 6749, 2.3.1: form-encoded id and secret) or _post."""
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except ValueError:
                return False
            encoded_id, _, encoded_secret = decoded.partition(":")
            client_id, secret = unquote_plus(encoded_id), unquote_plus(encoded_secret)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.client_id and hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        )

    def _id_token(self, grant: _Grant, access_token: str) -> str:
        now = int(time.time())
        digest = hashlib.sha256(access_token.encode()).digest()[:16]
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.subject,
            "aud": self.client_id,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "auth_time": now,
            "at_hash": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        key = self.key
        if grant.misbehave == "wrong_nonce":
            claims["nonce"] = "not-" + str(grant.nonce)
        elif grant.misbehave == "wrong_audience":
            claims["aud"] = "another-client"
        elif grant.misbehave == "expired":
            claims |= {"iat": now - 3 * TOKEN_TTL_S, "exp": now - 2 * TOKEN_TTL_S}
        elif grant.misbehave == "bad_signature":
            key = self.other_key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})

    def test_redirects(self, request: Request) -> Response:
        return JSONResponse(self.redirects)


def _authorization_problem(asked: Mapping[str, str]) -> str | None:
    """What makes an authorization request unacceptable (PKCE S256 is required)."""
    if asked.get("response_type") != "code":
        return "response_type"
    if "openid" not in asked.get("scope", "").split():
        return "scope"
    if asked.get("code_challenge_method") != "S256" or not asked.get("code_challenge"):
        return "code_challenge"
    return None


def _pkce_ok(verifier: str, challenge: str) -> bool:
    """RFC 7636, 4.6: BASE64URL(SHA256(verifier)) == challenge."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return bool(verifier) and hmac.compare_digest(computed, challenge)


def _loopback_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")


def _oauth_error(error: str, status: int = 400) -> Response:
    return JSONResponse({"error": error}, status_code=status, headers={"Cache-Control": "no-store"})


def _page(title: str, body: str, status: int = 200) -> Response:
    page = f"<!doctype html><html><head><title>{html.escape(title)}</title></head><body>"
    return HTMLResponse(f"{page}<h1>{html.escape(title)}</h1>{body}</body></html>", status)


def app(issuer: str, client_id: str, client_secret: str) -> Starlette:
    provider = _Provider(issuer, client_id, client_secret)
    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", provider.discovery),
            Route("/jwks", provider.jwks),
            Route("/authorize", provider.authorize, methods=["GET", "POST"]),
            Route("/token", provider.token, methods=["POST"]),
            Route("/_test/redirects", provider.test_redirects),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    parser.add_argument("--client-id", required=True, help="the one client it knows")
    parser.add_argument("--client-secret", required=True, help="that client's secret")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(64)
    bound_port = sock.getsockname()[1]
    issuer = f"http://{host}:{bound_port}"
    config = uvicorn.Config(
        app(issuer, args.client_id, args.client_secret), log_level="warning", access_log=False
    )
    print(f"fake identity provider: serving on {host}:{bound_port} ({issuer})", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class FakeIdentityProvider:
    """A running fake provider, as the tests hold it."""

    proc: processes.Proc
    client_id: str
    client_secret: str

    @property
    def issuer(self) -> str:
        return f"http://{self.proc.target}"

    def redirects(self) -> list[str]:
        """The redirects back to the client it made, oldest first."""
        with urlopen(f"{self.issuer}/_test/redirects", timeout=10) as answer:
            found: list[str] = json.loads(answer.read())
        return found

    def stop(self) -> None:
        self.proc.stop()


def start(log: Path, client_id: str = "jisr-console") -> FakeIdentityProvider:
    """The fake provider in its own process on a free loopback port, knowing one client
    (`client_id`, with a new random secret)."""
    secret = secrets.token_urlsafe(24)
    argv = [sys.executable, "-m", "tests.support.oidc_provider", "--client-id", client_id]
    # "--opt=value": a random secret may begin with "-", which argparse would read as an
    # option of its own.
    proc = processes.spawn([*argv, f"--client-secret={secret}"], log)
    return FakeIdentityProvider(proc, client_id, secret)


if __name__ == "__main__":
    main()
