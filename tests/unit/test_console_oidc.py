"""Signing in through an identity provider, the pure part (gateway/console/oidc.py): the
configuration file and its errors, the checks an ID token must pass, the pending sign-ins,
and who may come in. Tokens are signed here with pyjwt, independently of the console's
JOSE library."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import KeySet

from gateway.console import oidc
from gateway.console.accounts import Account, AccountError
from gateway.console.oidc import (
    IdTokenError,
    OidcConfigError,
    Provider,
    UnknownKeyError,
    load_config,
    verified_identity,
)

ISSUER = "https://idp.cnss.ma/realms/agents"
CLIENT = "jisr-console"
NONCE = "n-0S6_WzA2Mj"
NOW = 1_750_000_000
ENV = {"CNSS_SECRET": "s3cret-from-env"}

FULL = """
redirect_uri = "https://console.cnss.ma/login/oidc/callback"

[provider.cnss]
name = "CNSS (agents)"
issuer = "https://idp.cnss.ma/realms/agents"
client_id = "jisr-console"
client_secret_env = "CNSS_SECRET"
institution = "CNSS"
scopes = ["openid", "profile"]
algorithms = ["ES256"]
token_endpoint_auth = "client_secret_post"
"""

MINIMAL = """
[provider.cnss]
name = "CNSS"
issuer = "https://idp.cnss.ma/realms/agents"
client_id = "jisr-console"
client_secret_env = "CNSS_SECRET"
institution = "CNSS"
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "console-oidc.toml"
    path.write_text(text, encoding="utf-8")
    return path


# The configuration file.


def test_a_provider_reads_back_with_its_secret_from_the_environment(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), ENV)
    assert config.redirect_uri == "https://console.cnss.ma/login/oidc/callback"
    assert config.providers == (
        Provider(
            id="cnss",
            name="CNSS (agents)",
            issuer=ISSUER,
            client_id=CLIENT,
            client_secret="s3cret-from-env",
            institution="CNSS",
            scopes=("openid", "profile"),
            algorithms=("ES256",),
            token_endpoint_auth="client_secret_post",
        ),
    )


def test_a_provider_defaults_to_openid_rs256_es256_and_http_basic(tmp_path: Path) -> None:
    (provider,) = load_config(write(tmp_path, MINIMAL), ENV).providers
    assert provider.scopes == ("openid",)
    assert provider.algorithms == ("RS256", "ES256")
    assert provider.token_endpoint_auth == "client_secret_basic"


def test_a_secret_file_is_read_beside_the_configuration_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "cnss.secret").write_text("s3cret-from-file\n", encoding="utf-8")
    text = MINIMAL.replace(
        'client_secret_env = "CNSS_SECRET"', 'client_secret_file = "cnss.secret"'
    )
    (provider,) = load_config(write(tmp_path, text), {}).providers
    assert provider.client_secret == "s3cret-from-file"


def test_the_secret_is_never_in_a_providers_repr(tmp_path: Path) -> None:
    (provider,) = load_config(write(tmp_path, MINIMAL), ENV).providers
    assert "s3cret" not in repr(provider)


def test_loopback_issuers_may_be_http_for_development(tmp_path: Path) -> None:
    text = MINIMAL.replace(ISSUER, "http://127.0.0.1:8555")
    (provider,) = load_config(write(tmp_path, text), ENV).providers
    assert provider.issuer == "http://127.0.0.1:8555"


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ('client_id = "jisr-console"\n', "", "client_id: missing"),
        ('name = "CNSS"', "name = 3", "name: must be a non-empty string"),
        (ISSUER, "http://idp.cnss.ma", "issuer: 'http://idp.cnss.ma' must be https://"),
        (ISSUER, ISSUER + "?realm=x", "issuer: '" + ISSUER + "?realm=x' must have no query"),
        ('institution = "CNSS"', 'institution = "cnss"', "institution: 'cnss' is not 2 to 32"),
        ('institution = "CNSS"', 'institution = "CNSS"\nscopes = ["profile"]', "scopes: must"),
        ('institution = "CNSS"', 'institution = "CNSS"\nalgorithms = ["HS256"]', "'HS256'"),
        ('institution = "CNSS"', 'institution = "CNSS"\nalgorithms = ["none"]', "'none'"),
        ('institution = "CNSS"', 'institution = "CNSS"\ntoken_endpoint_auth = "x"', "one of"),
        ('institution = "CNSS"', 'institution = "CNSS"\nclient = "x"', "client: unknown"),
        ('client_secret_env = "CNSS_SECRET"', 'client_secret_env = "UNSET"', "UNSET is not set"),
        ('client_secret_env = "CNSS_SECRET"', "", "client_secret_env: name either"),
        (
            'client_secret_env = "CNSS_SECRET"',
            'client_secret_env = "CNSS_SECRET"\nclient_secret_file = "x"',
            "client_secret_env: name either",
        ),
        (
            'client_secret_env = "CNSS_SECRET"',
            'client_secret_file = "absent.secret"',
            "client_secret_file: ",
        ),
    ],
)
def test_an_error_names_the_file_the_provider_and_the_field(
    tmp_path: Path, old: str, new: str, error: str
) -> None:
    path = write(tmp_path, MINIMAL.replace(old, new))
    with pytest.raises(OidcConfigError) as raised:
        load_config(path, ENV)
    assert str(raised.value).startswith(f"{path}: provider 'cnss': ")
    assert error in str(raised.value)


def test_a_secret_written_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'client_secret = "oops"\n')
    with pytest.raises(OidcConfigError, match="client_secret: never in this file"):
        load_config(path, ENV)


@pytest.mark.parametrize("pid", ["CNSS", "callback", "a b", "x" * 33])
def test_a_provider_id_unfit_for_a_url_is_refused(tmp_path: Path, pid: str) -> None:
    path = write(tmp_path, MINIMAL.replace("[provider.cnss]", f'[provider."{pid}"]'))
    with pytest.raises(OidcConfigError, match=f"provider '{pid}': the provider's id"):
        load_config(path, ENV)


def test_a_file_without_a_provider_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'redirect_uri = "https://c.example/login/oidc/callback"\n')
    with pytest.raises(OidcConfigError, match=r": provider: no provider"):
        load_config(path, ENV)


def test_a_redirect_uri_must_be_the_consoles_callback(tmp_path: Path) -> None:
    path = write(tmp_path, 'redirect_uri = "https://c.example/callback"\n' + MINIMAL)
    with pytest.raises(OidcConfigError, match=r": redirect_uri: .* must end with /login/oidc/"):
        load_config(path, ENV)


def test_a_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[provider.cnss\n")
    with pytest.raises(OidcConfigError, match=f"^{path}: not valid TOML"):
        load_config(path, ENV)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(OidcConfigError, match=f"^{tmp_path / 'absent.toml'}: cannot be read"):
        load_config(tmp_path / "absent.toml", ENV)


# ID tokens.

PROVIDER = Provider("cnss", "CNSS", ISSUER, CLIENT, "client-secret", "CNSS")
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def key_set(*keys: tuple[str, Any]) -> KeySet:
    """The JWKS a provider publishes: (kid, private key) pairs, public halves only."""
    found = []
    for kid, key in keys:
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else None
        public = (
            algorithm.to_jwk(key.public_key(), as_dict=True)
            if algorithm
            else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        )
        found.append({**public, "kid": kid, "use": "sig"})
    return KeySet.import_key_set({"keys": found})


KEYS = key_set(("rsa-1", RSA_KEY), ("ec-1", EC_KEY))


def at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "248289761001",
        "aud": CLIENT,
        "iat": NOW,
        "exp": NOW + 300,
        "nonce": NONCE,
        "at_hash": at_hash("access-1"),
    }
    return {k: v for k, v in (base | changes).items() if v is not None}


def signed(
    payload: dict[str, Any], key: Any = RSA_KEY, alg: str = "RS256", kid: str = "rsa-1"
) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def verify(token: str, provider: Provider = PROVIDER, now: int = NOW) -> oidc.Identity:
    return verified_identity(token, KEYS, provider, nonce=NONCE, access_token="access-1", now_s=now)


def test_a_valid_token_states_its_issuer_and_subject() -> None:
    assert verify(signed(claims())) == oidc.Identity(ISSUER, "248289761001")


def test_an_es256_token_is_accepted_by_default() -> None:
    token = signed(claims(), EC_KEY, "ES256", "ec-1")
    assert verify(token).subject == "248289761001"


def test_a_clock_a_little_behind_the_providers_is_tolerated() -> None:
    assert verify(signed(claims(exp=NOW - 30))).issuer == ISSUER


def test_an_audience_list_with_this_client_as_authorized_party_is_accepted() -> None:
    token = signed(claims(aud=[CLIENT, "another-api"], azp=CLIENT))
    assert verify(token).subject == "248289761001"


@pytest.mark.parametrize(
    ("payload", "check"),
    [
        (claims(nonce="another-nonce"), "nonce: invalid_claim"),
        (claims(nonce=None), "nonce: missing_claim"),
        (claims(aud="another-client"), "aud: invalid_claim"),
        (claims(aud=[CLIENT, "another-api"]), "azp: missing_claim"),
        (claims(iss="https://evil.example"), "iss: invalid_claim"),
        (claims(exp=NOW - 120), "exp: expired_token"),
        (claims(sub=None), "sub: missing_claim"),
        (claims(sub=""), "sub: "),
        (claims(at_hash=at_hash("another-access-token")), "at_hash: invalid_claim"),
    ],
)
def test_a_token_failing_a_claim_check_is_refused_naming_it(
    payload: dict[str, Any], check: str
) -> None:
    with pytest.raises(IdTokenError, match=f"^{check}"):
        verify(signed(payload))


def test_a_token_signed_by_another_key_under_a_known_kid_is_refused() -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(IdTokenError, match=r"^signature: "):
        verify(signed(claims(), impostor))


def test_a_token_signed_with_the_client_secret_is_refused() -> None:
    """HS256 with the secret both sides hold proves nothing about the provider."""
    token = jwt.encode(claims(), "client-secret" * 3, algorithm="HS256")
    with pytest.raises(IdTokenError, match=r"^signature: "):
        verify(token)


def test_an_unsigned_token_is_refused() -> None:
    with pytest.raises(IdTokenError, match=r"^signature: "):
        verify(jwt.encode(claims(), "", algorithm="none"))


def test_an_algorithm_the_provider_does_not_pin_is_refused() -> None:
    only_es256 = replace(PROVIDER, algorithms=("ES256",))
    with pytest.raises(IdTokenError, match=r"^signature: "):
        verify(signed(claims()), only_es256)


def test_a_token_naming_an_unknown_key_asks_for_the_keys_again() -> None:
    with pytest.raises(UnknownKeyError):
        verify(signed(claims(), kid="rotated-2"))


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "e30.e30."])
def test_garbage_is_refused_as_a_bad_signature(garbage: str) -> None:
    with pytest.raises(IdTokenError, match=r"^signature: "):
        verify(garbage)


def test_a_refusal_never_quotes_a_claims_value() -> None:
    with pytest.raises(IdTokenError) as raised:
        verify(signed(claims(nonce="secret-looking-nonce-value")))
    assert "secret-looking" not in str(raised.value)


# Pending sign-ins.


def test_a_pending_sign_in_lasts_ten_minutes() -> None:
    _, pending = oidc.new_pending("cnss", "/search", NOW * 1_000_000)
    assert not oidc.pending_expired(pending, (NOW + 599) * 1_000_000)
    assert oidc.pending_expired(pending, (NOW + 600) * 1_000_000)


def test_the_store_is_given_the_hash_of_the_state_never_the_state() -> None:
    state, pending = oidc.new_pending("cnss", "/search", 0)
    assert state not in repr(pending)
    assert pending.state_hash == hashlib.sha256(state.encode()).hexdigest()


def test_each_sign_in_has_its_own_state_nonce_and_verifier_of_rfc_7636_length() -> None:
    made = [oidc.new_pending("cnss", "/search", 0) for _ in range(2)]
    (state_a, a), (state_b, b) = made
    assert len({state_a, state_b, a.nonce, b.nonce, a.code_verifier, b.code_verifier}) == 6
    assert 43 <= len(a.code_verifier) <= 128


# Who may come in.

OFFICER = Account("amina.b", "CNSS", "officer-0011223344556677", "$argon2id$x", None, False, 0)


@pytest.mark.parametrize(
    ("account", "refused"),
    [
        (OFFICER, None),
        (None, "no account is linked"),
        (replace(OFFICER, disabled=True), "disabled"),
        (replace(OFFICER, institution="DEMO"), "another institution"),
    ],
)
def test_the_linked_account_decides_who_may_come_in(
    account: Account | None, refused: str | None
) -> None:
    found = oidc.login_refusal(account, PROVIDER)
    assert found is None if refused is None else refused in str(found)


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (oidc.check_subject, ""),
        (oidc.check_subject, "x" * 256),
        (oidc.check_subject, "amina\n"),
        (oidc.check_subject, "amïna"),
        (oidc.check_issuer, "http://idp.example"),
        (oidc.check_issuer, "idp.example"),
    ],
)
def test_a_link_needs_a_real_issuer_and_subject(check: Callable[[str], None], value: str) -> None:
    with pytest.raises(AccountError, match=r"^(subject|issuer): "):
        check(value)
