"""Signing in through an institution's identity provider (OpenID Connect): the providers'
configuration, the pending sign-ins, the checks an ID token must pass, and who may come in.

Pure (no network, no store): gateway/console/oidc_client.py talks to the providers,
gateway/console/pages_oidc.py serves the two routes, the store keeps the pending sign-ins
and the links between accounts and providers' subjects.

- The provider proves who the person is; the console's own account (institution,
  disabled flag, pseudonymous officer id) decides what they may do. An account is linked
  to one (issuer, subject) per issuer by `jisr console user link-oidc`; a provider signs in
  the officers of one institution only, and an account of another institution is refused.
- A sign-in is the authorization code flow with PKCE (S256): `new_pending` makes the state,
  nonce and code verifier, kept in the store for STATE_TTL_S and used once.
- An ID token is accepted when signed by a key of the provider's JWKS with one of the
  provider's pinned asymmetric algorithms (never `none` or HMAC), issued by the provider,
  for this client, not expired, carrying the nonce of its sign-in (`verified_identity`).
- The configuration is a TOML file (`jisr console serve --oidc-config FILE`); a client
  secret is read from an environment variable or a file it names, never written in it.
  Every error names the file, the provider and the field.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import ClaimError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from gateway.console.accounts import INSTITUTION, Account, AccountError, UnknownAccountError

# Asymmetric signatures only: an HMAC token would be signed with the client secret, which
# the console holds too, and `none` is no signature.
ALLOWED_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
)  # fmt: skip
DEFAULT_ALGORITHMS = ("RS256", "ES256")
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
PROVIDER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
RESERVED_IDS = frozenset({"callback"})  # /login/oidc/callback is the route back
CALLBACK_PATH = "/login/oidc/callback"
MAX_SECRET = 4096
MAX_LABEL = 80

STATE_TTL_S = 600  # a sign-in must come back within 10 minutes
MAX_PENDING = 10_000  # sign-ins under way at once, all providers together
LEEWAY_S = 60  # clock difference tolerated with the provider
MAX_SUBJECT = 255  # OpenID Connect Core 1.0, 2: `sub` is at most 255 ASCII characters

_US = 1_000_000
_FIELDS = frozenset(
    {
        "name",
        "issuer",
        "client_id",
        "client_secret_env",
        "client_secret_file",
        "institution",
        "scopes",
        "algorithms",
        "token_endpoint_auth",
    }
)


@dataclass(frozen=True)
class Provider:
    """One identity provider as configured: `id` is in the console's URLs, `name` on the
    login page's button."""

    id: str
    name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    institution: str
    scopes: tuple[str, ...] = ("openid",)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    token_endpoint_auth: str = "client_secret_basic"


@dataclass(frozen=True)
class OidcConfig:
    """The providers, in the file's order, and the console's callback URL as registered at
    them (None: the URL the request came to, right when the browser reaches the console
    directly, as on loopback)."""

    providers: tuple[Provider, ...]
    redirect_uri: str | None = None


class OidcConfigError(ValueError):
    """The configuration cannot be used; the message names the file, the provider and the
    field ("console-oidc.toml: provider 'cnss': client_id: missing")."""


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """A sign-in sent to a provider and not back yet, keyed by the SHA-256 of its state
    (the state itself travels in URLs and a cookie, never in the store)."""

    state_hash: str
    provider: str
    nonce: str
    code_verifier: str
    next: str
    created_us: int


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in: `sub` is unique within its issuer only."""

    issuer: str
    subject: str


class IdTokenError(Exception):
    """An ID token that is not accepted; the message names the check that failed (a claim's
    name, "signature", "algorithm"...), never a claim's value."""


class UnknownKeyError(IdTokenError):
    """The token names a key the JWKS at hand lacks: the provider may have rotated its keys
    (fetch the JWKS again, once)."""


class LinkTakenError(AccountError):
    """The subject is linked to an account already, or the account has a link at that
    issuer already."""


# The configuration file.


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> OidcConfig:
    """Read and check the file; secrets from `environ` (default: os.environ) or their
    files. Raises OidcConfigError naming the file, the provider and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OidcConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OidcConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data, path, os.environ if environ is None else environ)


def parse_config(data: Mapping[str, Any], path: Path, environ: Mapping[str, str]) -> OidcConfig:
    """The configuration of a parsed file (`path` names it in errors and anchors relative
    secret files)."""
    unknown = sorted(set(data) - {"redirect_uri", "provider"})
    if unknown:
        raise OidcConfigError(f"{path}: {unknown[0]}: unknown setting (redirect_uri, provider)")
    redirect_uri = data.get("redirect_uri")
    if redirect_uri is not None:
        problem = _redirect_uri_problem(redirect_uri)
        if problem:
            raise OidcConfigError(f"{path}: redirect_uri: {problem}")
    tables = data.get("provider")
    if not isinstance(tables, dict) or not tables:
        raise OidcConfigError(
            f"{path}: provider: no provider; add a [provider.ID] table for each one"
        )
    providers = tuple(_provider(str(pid), table, path, environ) for pid, table in tables.items())
    return OidcConfig(providers, redirect_uri)


def _provider(pid: str, table: Any, path: Path, environ: Mapping[str, str]) -> Provider:
    where = f"{path}: provider {pid!r}"
    if not PROVIDER_ID.fullmatch(pid) or pid in RESERVED_IDS:
        raise OidcConfigError(
            f"{where}: the provider's id (in its URL) must be 1 to 32 characters of a-z, 0-9,"
            " '-', and not 'callback'"
        )
    if not isinstance(table, dict):
        raise OidcConfigError(f"{where}: not a table of settings")
    if "client_secret" in table:
        raise OidcConfigError(
            f"{where}: client_secret: never in this file; name an environment variable"
            " (client_secret_env) or a file (client_secret_file) that holds it"
        )
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise OidcConfigError(f"{where}: {unknown[0]}: unknown setting")

    def text(name: str, default: str | None = None) -> str:
        value = table.get(name, default)
        if value is None:
            raise OidcConfigError(f"{where}: {name}: missing")
        if not isinstance(value, str) or not value.strip():
            raise OidcConfigError(f"{where}: {name}: must be a non-empty string")
        return value

    label = text("name")
    if len(label) > MAX_LABEL:
        raise OidcConfigError(f"{where}: name: longer than {MAX_LABEL} characters")
    issuer = text("issuer")
    problem = issuer_problem(issuer)
    if problem:
        raise OidcConfigError(f"{where}: issuer: {problem}")
    institution = text("institution")
    if not INSTITUTION.fullmatch(institution):
        raise OidcConfigError(
            f"{where}: institution: {institution!r} is not 2 to 32 characters of A-Z, 0-9, '_'"
        )
    auth = text("token_endpoint_auth", "client_secret_basic")
    if auth not in AUTH_METHODS:
        raise OidcConfigError(f"{where}: token_endpoint_auth: one of {', '.join(AUTH_METHODS)}")
    scopes = _strings(table, "scopes", ("openid",), where)
    if "openid" not in scopes:
        raise OidcConfigError(f"{where}: scopes: must include 'openid'")
    algorithms = _strings(table, "algorithms", DEFAULT_ALGORITHMS, where)
    refused = [a for a in algorithms if a not in ALLOWED_ALGORITHMS]
    if refused:
        raise OidcConfigError(
            f"{where}: algorithms: {refused[0]!r} is not one of {', '.join(ALLOWED_ALGORITHMS)}"
            " (asymmetric signatures only)"
        )
    return Provider(
        id=pid,
        name=label,
        issuer=issuer,
        client_id=text("client_id"),
        client_secret=_secret(table, path, where, environ),
        institution=institution,
        scopes=scopes,
        algorithms=algorithms,
        token_endpoint_auth=auth,
    )


def _strings(
    table: Mapping[str, Any], name: str, default: tuple[str, ...], where: str
) -> tuple[str, ...]:
    value = table.get(name, list(default))
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v and " " not in v for v in value)
    ):
        raise OidcConfigError(f"{where}: {name}: must be a non-empty list of words")
    return tuple(value)


def _secret(table: Mapping[str, Any], path: Path, where: str, environ: Mapping[str, str]) -> str:
    """The client secret from the variable or the file the table names (exactly one)."""
    env, file = table.get("client_secret_env"), table.get("client_secret_file")
    if (env is None) == (file is None):
        raise OidcConfigError(
            f"{where}: client_secret_env: name either an environment variable"
            " (client_secret_env) or a file (client_secret_file) holding the client secret"
        )
    if env is not None:
        if not isinstance(env, str) or not env:
            raise OidcConfigError(f"{where}: client_secret_env: must be a variable's name")
        secret = environ.get(env, "").strip()
        if not secret:
            raise OidcConfigError(f"{where}: client_secret_env: {env} is not set or empty")
    else:
        if not isinstance(file, str) or not file:
            raise OidcConfigError(f"{where}: client_secret_file: must be a file's path")
        secret_path = path.parent / file  # relative to the configuration file
        try:
            secret = secret_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise OidcConfigError(
                f"{where}: client_secret_file: {secret_path} cannot be read ({why})"
            ) from None
        if not secret:
            raise OidcConfigError(f"{where}: client_secret_file: {secret_path} is empty")
    field_name = "client_secret_env" if env is not None else "client_secret_file"
    if len(secret) > MAX_SECRET or not secret.isprintable():
        raise OidcConfigError(f"{where}: {field_name}: not a usable secret")
    return secret


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def issuer_problem(issuer: str) -> str | None:
    """What is wrong with an issuer URL (None: nothing): https, or http on loopback only
    (development and tests); no query or fragment (OpenID Connect Discovery 1.0, 2)."""
    try:
        parts = urlsplit(issuer)
        host = parts.hostname
    except ValueError:
        return f"{issuer!r} is not a URL"
    if parts.scheme not in ("https", "http") or not host:
        return f"{issuer!r} is not an https:// URL"
    if parts.scheme == "http" and not _loopback(host):
        return f"{issuer!r} must be https:// (http only on loopback, for development)"
    if parts.query or parts.fragment or "?" in issuer or "#" in issuer:
        return f"{issuer!r} must have no query or fragment"
    return None


def _redirect_uri_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    problem = issuer_problem(value)
    if problem:
        return problem
    if not urlsplit(value).path.endswith(CALLBACK_PATH):
        return f"{value!r} must end with {CALLBACK_PATH} (the console's route back)"
    return None


# Links between accounts and providers' subjects.


def check_issuer(issuer: str) -> None:
    """Raise AccountError ("issuer: ...") unless `issuer` can be a provider's issuer."""
    problem = issuer_problem(issuer)
    if problem:
        raise AccountError(f"issuer: {problem}")


def check_subject(subject: str) -> None:
    """A provider's `sub`: 1 to 255 printable ASCII characters, compared exactly."""
    if (
        not subject
        or len(subject) > MAX_SUBJECT
        or not subject.isascii()
        or not subject.isprintable()
    ):
        raise AccountError(
            f"subject: not 1 to {MAX_SUBJECT} printable ASCII characters (the provider's"
            " `sub` claim, exactly)"
        )


def link_refused(username: str, issuer: str, *, known: bool, holder: str | None) -> AccountError:
    """Why a link was not made, for the store to raise: no such account, the subject
    linked already (to `holder`), or the account linked at that issuer already."""
    if not known:
        return UnknownAccountError(f"username: no account {username!r}")
    if holder is not None:
        return LinkTakenError(f"subject: linked already, to {holder!r}")
    return LinkTakenError(
        f"issuer: {username!r} has a link at {issuer} already (unlink-oidc it first)"
    )


def login_refusal(account: Account | None, provider: Provider) -> str | None:
    """Why the provider's identity may not open a session on `account` (the account linked
    to it, if any), for the log; None when it may. Authorization stays the console's."""
    if account is None:
        return "no account is linked to this subject"
    if account.disabled:
        return "the linked account is disabled"
    if account.institution != provider.institution:
        return "the linked account is of another institution than the provider's"
    return None


# Pending sign-ins.


def new_pending(provider: str, next_path: str, now_us: int) -> tuple[str, PendingLogin]:
    """A new sign-in: (the state, for the URL and the cookie only, and what to store).
    The code verifier is 64 characters of RFC 7636's alphabet (43 to 128 allowed)."""
    state = secrets.token_urlsafe(32)
    pending = PendingLogin(
        state_hash=state_hash(state),
        provider=provider,
        nonce=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(48),
        next=next_path,
        created_us=now_us,
    )
    return state, pending


def state_hash(state: str) -> str:
    """How the store finds a pending sign-in (a plain hash: the state is random)."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def pending_expired(pending: PendingLogin, now_us: int) -> bool:
    return now_us - pending.created_us >= STATE_TTL_S * _US


def pending_cutoff_us(now_us: int) -> int:
    """Pending sign-ins created at or before this are expired at `now_us` (for purging and
    for counting those under way)."""
    return now_us - STATE_TTL_S * _US


# ID tokens.


def verified_identity(
    id_token: str,
    keys: KeySet,
    provider: Provider,
    *,
    nonce: str,
    access_token: str | None,
    now_s: int,
) -> Identity:
    """The identity an ID token from the token endpoint states, once its signature (a key
    of `keys`, an algorithm of the provider's) and claims (issuer, audience, expiry, issue
    time, nonce, authorized party, access-token hash) are checked; IdTokenError otherwise."""
    try:
        token = jwt.decode(id_token, keys, algorithms=list(provider.algorithms))
    except InvalidKeyIdError:
        raise UnknownKeyError("kid: no such key in the provider's JWKS") from None
    except (JoseError, ValueError) as exc:
        raise IdTokenError(f"signature: {_why(exc)}") from None
    options = {
        "iss": {"essential": True, "value": provider.issuer},
        "aud": {"essential": True, "value": provider.client_id},
        "sub": {"essential": True},
    }
    params = {"nonce": nonce, "client_id": provider.client_id, "access_token": access_token}
    claims = CodeIDToken(token.claims, token.header, options, params)
    try:
        claims.validate(now=now_s, leeway=LEEWAY_S)
    except ClaimError as exc:
        raise IdTokenError(f"{exc.claim}: {exc.error}") from None
    except (JoseError, ValueError, TypeError) as exc:
        raise IdTokenError(f"claims: {_why(exc)}") from None
    subject = claims["sub"]
    if not isinstance(subject, str):
        raise IdTokenError("sub: invalid_claim")
    try:
        check_subject(subject)
    except AccountError:
        raise IdTokenError("sub: invalid_claim") from None
    return Identity(provider.issuer, subject)


def _why(exc: Exception) -> str:
    """A JOSE error's code (never its text, which may quote the token)."""
    return getattr(exc, "error", "") or type(exc).__name__
