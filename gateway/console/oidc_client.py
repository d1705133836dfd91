"""The console as an OpenID Connect client of the institutions' identity providers.

authlib does the protocol (the authorization URL with state, nonce and the S256 code
challenge; the code's exchange with the code verifier and the client's authentication;
the discovery document's checks; the ID token's claims) over httpx2, its HTTP client;
gateway/console/oidc.py decides what an ID token must satisfy. Each provider's discovery
document and JWKS are fetched when first needed and kept for METADATA_TTL_S, the JWKS
fetched again (at most every JWKS_REFRESH_S) when a token names a key it lacks: the
console starts, and password logins work, while a provider is down.

What can go wrong is one of two errors: ProviderUnavailableError (the provider cannot be
reached or answers nonsense: 503, try later) and ProviderRefusedError (it refused, or its
answer cannot be accepted: 400). Neither carries a token or a claim's value.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.console import oidc
from gateway.console.oidc import (
    Identity,
    OidcConfig,
    PendingLogin,
    Provider,
    UnknownKeyError,
)

TIMEOUT_S = 10.0  # each request to a provider; a sign-in waits at most a few of them
METADATA_TTL_S = 3600.0
JWKS_REFRESH_S = 60.0
DISCOVERY_PATH = "/.well-known/openid-configuration"
# Errors of the token endpoint that say "later", not "no" (RFC 6749, 5.2 and 4.1.2.1).
_TRANSIENT = frozenset({"server_error", "temporarily_unavailable"})


class ProviderUnavailableError(Exception):
    """The provider cannot be reached, or answers what is no answer (try again later)."""


class ProviderRefusedError(Exception):
    """The provider refused the sign-in, or its answer is not acceptable."""


@dataclass(frozen=True)
class _Endpoints:
    authorization: str
    token: str
    jwks_uri: str
    fetched: float


class IdentityProvider:
    """One configured provider, its discovery document and keys cached."""

    def __init__(self, provider: Provider, *, timeout_s: float = TIMEOUT_S) -> None:
        self.provider = provider
        self._timeout = timeout_s
        self._endpoints: _Endpoints | None = None
        self._keys: KeySet | None = None
        self._keys_fetched = 0.0

    async def authorization_url(self, state: str, pending: PendingLogin, redirect_uri: str) -> str:
        """Where to send the browser: the provider's authorization endpoint with the state,
        the nonce and the S256 challenge of the pending sign-in's code verifier."""
        endpoints = await self._discover()
        async with self._oauth(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoints.authorization,
                state=state,
                code_verifier=pending.code_verifier,
                nonce=pending.nonce,
            )
        return str(url)

    async def identity(
        self, code: str, pending: PendingLogin, redirect_uri: str, now_s: int | None = None
    ) -> Identity:
        """Exchange the code (with the pending sign-in's code verifier, the client
        authenticated) and return the identity its ID token states, once checked."""
        endpoints = await self._discover()
        async with self._oauth(redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    endpoints.token,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending.code_verifier,
                )
            except OAuthError as exc:
                if exc.error in _TRANSIENT:
                    raise ProviderUnavailableError(f"token endpoint: {exc.error}") from None
                raise ProviderRefusedError(f"token endpoint: {exc.error}") from None
            except httpx2.TransportError as exc:
                raise ProviderUnavailableError(f"token endpoint: {type(exc).__name__}") from None
            except (ValueError, TypeError, KeyError) as exc:  # not a JSON token response
                raise ProviderUnavailableError(
                    f"token endpoint: {type(exc).__name__} (no token response)"
                ) from None
        id_token = token.get("id_token") if isinstance(token, Mapping) else None
        if not isinstance(id_token, str):
            raise ProviderRefusedError("token endpoint: no id_token in its answer")
        access = token.get("access_token")
        access_token = access if isinstance(access, str) else None
        now = int(time.time()) if now_s is None else now_s
        keys = await self._jwks(refresh=False)
        try:
            return self._verified(id_token, keys, pending, access_token, now)
        except UnknownKeyError:
            keys = await self._jwks(refresh=True)
            return self._verified(id_token, keys, pending, access_token, now)

    def _verified(
        self, id_token: str, keys: KeySet, pending: PendingLogin, access: str | None, now: int
    ) -> Identity:
        return oidc.verified_identity(
            id_token, keys, self.provider, nonce=pending.nonce, access_token=access, now_s=now
        )

    def _oauth(self, redirect_uri: str) -> AsyncOAuth2Client:
        """authlib's client for one exchange (an httpx2 client underneath)."""
        p = self.provider
        return AsyncOAuth2Client(
            client_id=p.client_id,
            client_secret=p.client_secret,
            token_endpoint_auth_method=p.token_endpoint_auth,
            scope=" ".join(p.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=self._timeout,
            follow_redirects=False,
        )

    def _http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False)

    async def _get_json(self, what: str, url: str) -> dict[str, Any]:
        try:
            async with self._http() as http:
                response = await http.get(url, headers={"Accept": "application/json"})
        except httpx2.TransportError as exc:
            raise ProviderUnavailableError(f"{what}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ProviderUnavailableError(f"{what}: HTTP {response.status_code}")
        try:
            document = response.json()
        except (ValueError, UnicodeDecodeError):
            raise ProviderUnavailableError(f"{what}: not JSON") from None
        if not isinstance(document, dict):
            raise ProviderUnavailableError(f"{what}: not a JSON object")
        return document

    async def _discover(self) -> _Endpoints:
        """The provider's endpoints from its discovery document (OpenID Connect Discovery
        1.0, 4), whose issuer must be the configured one exactly."""
        cached = self._endpoints
        if cached is not None and time.monotonic() - cached.fetched < METADATA_TTL_S:
            return cached
        issuer = self.provider.issuer
        document = await self._get_json("discovery", issuer.rstrip("/") + DISCOVERY_PATH)
        metadata = AuthorizationServerMetadata(document)
        try:
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(name), str):  # all three required here
                    raise ValueError(f'"{name}" is required')
            metadata.validate_issuer()
            metadata.validate_authorization_endpoint()
            metadata.validate_token_endpoint()
            metadata.validate_jwks_uri()
        except ValueError as exc:
            raise ProviderUnavailableError(f"discovery: {exc}") from None
        if document.get("issuer") != issuer:
            raise ProviderUnavailableError("discovery: its issuer is not the configured one")
        self._endpoints = _Endpoints(
            str(document["authorization_endpoint"]),
            str(document["token_endpoint"]),
            str(document["jwks_uri"]),
            time.monotonic(),
        )
        return self._endpoints

    async def _jwks(self, *, refresh: bool) -> KeySet:
        """The provider's keys; fetched again when asked and not fetched in the last
        JWKS_REFRESH_S (a token naming an unknown key cannot make us fetch in a loop)."""
        now = time.monotonic()
        stale = now - self._keys_fetched >= METADATA_TTL_S
        recent = now - self._keys_fetched < JWKS_REFRESH_S
        if self._keys is not None and not stale and (not refresh or recent):
            return self._keys
        endpoints = await self._discover()
        document = await self._get_json("jwks", endpoints.jwks_uri)
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderUnavailableError(f"jwks: {type(exc).__name__}") from None
        self._keys, self._keys_fetched = keys, now
        return keys


class OidcLogins:
    """The configured providers by id, and the callback URL registered at them."""

    def __init__(self, config: OidcConfig, *, timeout_s: float = TIMEOUT_S) -> None:
        self.redirect_uri = config.redirect_uri
        self.providers = {p.id: IdentityProvider(p, timeout_s=timeout_s) for p in config.providers}

    def get(self, provider_id: str) -> IdentityProvider | None:
        return self.providers.get(provider_id)

    def buttons(self) -> list[Provider]:
        """The providers as the login page shows them, in the file's order."""
        return [idp.provider for idp in self.providers.values()]
