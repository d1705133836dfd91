"""Signing in to the console through an institution's identity provider (OpenID Connect):
the console in its own process (`jisr console serve --oidc-config`), a real provider in
another (tests/support/oidc_provider.py, a fake at that boundary), and headless Chromium
clicking through, on SQLite and on PostgreSQL (the pending sign-ins are in the store).

The browser shows what an officer sees; where a test needs what no browser lets a page
do (replay a callback with its cookie, come back in another browser, reach the provider
directly), a scripted client (httpx2) walks the same HTTP steps.

No gateway runs: the pages these tests reach (the login page, the empty search form) ask
nothing of it.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import httpx2
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from gateway.console import accounts
from gateway.console.store import open_console_store
from tests.support import browser as kit
from tests.support import databases, oidc_provider, processes

pytestmark = pytest.mark.integration

PROVIDER = "demo-idp"  # the provider's id in the console's URLs
SECRET_ENV = "JISR_TEST_OIDC_SECRET"
PASSWORD = "a long Pass phrase 1"
# Subjects at the provider, and the accounts they are linked to.
AMINA, KARIM, GONE, LOCKED = "amina-7f3a", "karim-0c1d", "gone-5e2b", "locked-9a8b"
STRANGER = "stranger-1234"

UNLINKED = "Votre fournisseur d'identité vous a reconnu, mais cette identité n'est liée"
NOT_VERIFIED = "La réponse du fournisseur d'identité n'a pas pu être vérifiée"
STALE = "Cette tentative de connexion a expiré ou a déjà servi"


@dataclass
class Site:
    """The console, its store's database and the provider it trusts."""

    proc: processes.Proc
    idp: oidc_provider.FakeIdentityProvider

    @property
    def url(self) -> str:
        return f"http://{self.proc.target}"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[oidc_provider.FakeIdentityProvider]:
    provider = oidc_provider.start(tmp_path_factory.mktemp("idp") / "idp.log")
    yield provider
    provider.stop()


def _accounts(url: str | None, state: Path, issuer: str) -> None:
    """The officers, as `jisr console user add` and `link-oidc` would leave them."""
    store = open_console_store(url, state)
    try:
        for username, institution, subject in (
            ("amina.b", "DEMO", AMINA),
            ("karim.t", "CNSS", KARIM),  # another institution than the provider's
            ("gone.c", "DEMO", GONE),
            ("locked.d", "DEMO", LOCKED),
        ):
            store.add_account(
                accounts.new_account(username, institution, PASSWORD, totp=False, now_us=0)
            )
            store.link_oidc(username, issuer, subject, 0)
        gone = store.account("gone.c")
        assert gone is not None
        store.update_account(replace(gone, disabled=True))
        now = time.time_ns() // 1000
        for i in range(accounts.MAX_FAILURES):  # a guesser's failures: locked for 15 minutes
            store.record_failure("locked.d", now - i)
    finally:
        store.close()


def _config(folder: Path, issuer: str) -> Path:
    config = folder / "console-oidc.toml"
    config.write_text(
        f"""
[provider.{PROVIDER}]
name = "DEMO (fournisseur d'essai)"
issuer = "{issuer}"
client_id = "jisr-console"
client_secret_env = "{SECRET_ENV}"
institution = "DEMO"

[provider.down]
name = "Un fournisseur injoignable"
issuer = "http://127.0.0.1:{processes.free_port()}"
client_id = "jisr-console"
client_secret_env = "{SECRET_ENV}"
institution = "DEMO"
""",
        encoding="utf-8",
    )
    return config


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest,
    idp: oidc_provider.FakeIdentityProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("console-oidc")
    state = folder / "state"
    with databases.for_backend(request.param) as url:
        _accounts(url, state, idp.issuer)
        env = {SECRET_ENV: idp.client_secret, **({"JISR_DATABASE_URL": url} if url else {})}
        argv = ["console", "serve", "--listen", "127.0.0.1:0", "--gateway", "127.0.0.1:9"]
        argv += ["--pki-dir", str(folder / "no-pki"), "--state-dir", str(state)]
        argv += ["--oidc-config", str(_config(folder, idp.issuer))]
        proc = processes.start(argv, folder / "console.log", env)
        try:
            yield Site(proc, idp)
        finally:
            proc.stop()


# In the browser.


def _sign_in_at_provider(
    driver: webdriver.Chrome, site: Site, subject: str, misbehave: str = "none"
) -> None:
    """From the console's login page: the provider's button, then its form."""
    kit.wait_for(driver, f"#oidc-{PROVIDER}").click()
    kit.wait_for(driver, "#subject").send_keys(subject)
    Select(driver.find_element(By.ID, "misbehave")).select_by_value(misbehave)
    driver.find_element(By.ID, "idp-sign-in").click()


def test_an_officer_signs_in_through_the_provider_as_the_linked_account(
    browser: webdriver.Chrome, site: Site
) -> None:
    asked = f"{site.url}/search?purpose=ASD_ELIGIBILITY"
    browser.get(asked)
    _sign_in_at_provider(browser, site, AMINA)
    assert kit.wait_for(browser, "#who").text == "amina.b (DEMO)"
    assert browser.current_url == asked  # back where the officer was going
    browser.get(f"{site.url}/search")
    kit.wait_for(browser, "#search-form")  # the session holds


def test_an_unlinked_subject_is_refused_on_the_login_page(
    browser: webdriver.Chrome, site: Site
) -> None:
    browser.get(f"{site.url}/login")
    _sign_in_at_provider(browser, site, STRANGER)
    assert kit.wait_for(browser, "#login-error").text.startswith(UNLINKED)
    browser.get(f"{site.url}/search")
    kit.wait_for(browser, "#username")  # no session


@pytest.mark.parametrize("misbehave", ["wrong_nonce", "wrong_audience", "expired", "bad_signature"])
def test_an_id_token_that_fails_a_check_is_refused(
    browser: webdriver.Chrome, site: Site, misbehave: str
) -> None:
    browser.get(f"{site.url}/login")
    _sign_in_at_provider(browser, site, AMINA, misbehave)
    assert kit.wait_for(browser, "#login-error").text.startswith(NOT_VERIFIED)
    browser.get(f"{site.url}/search")
    kit.wait_for(browser, "#username")


def test_a_replayed_callback_is_refused_on_the_login_page(
    browser: webdriver.Chrome, site: Site
) -> None:
    browser.get(f"{site.url}/login")
    _sign_in_at_provider(browser, site, AMINA)
    kit.wait_for(browser, "#who")
    browser.find_element(By.ID, "logout").click()
    kit.wait_for(browser, "#note")
    browser.get(site.idp.redirects()[-1])
    assert kit.wait_for(browser, "#login-error").text.startswith(STALE)
    browser.get(f"{site.url}/search")
    kit.wait_for(browser, "#username")


# Scripted: the same steps over HTTP.


class Walk:
    """One browser's cookies, walking the sign-in step by step."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.http = httpx2.Client(follow_redirects=False, timeout=20)

    def start(self, provider: str = PROVIDER, next_path: str = "/search") -> httpx2.Response:
        return self.http.get(f"{self.site.url}/login/oidc/{provider}?next={quote(next_path)}")

    def to_provider(self) -> str:
        """The provider's authorization URL the console sends the browser to."""
        started = self.start()
        assert started.status_code == 303, started.text
        return started.headers["location"]

    def at_provider(self, subject: str, action: str = "sign-in") -> str:
        """Sign in (or cancel) at the provider; the callback URL it sends the browser to."""
        form = self.http.get(self.to_provider())
        found = re.search(r'name="request" value="([^"]+)"', form.text)
        assert found, form.text
        sent = self.http.post(
            f"{self.site.idp.issuer}/authorize",
            data={"request": found.group(1), "subject": subject, "action": action},
        )
        assert sent.status_code == 303, sent.text
        return sent.headers["location"]

    def back(self, callback: str) -> httpx2.Response:
        return self.http.get(callback)


def shown(answer: httpx2.Response) -> str:
    """A page's text as a browser shows it (the templates escape apostrophes)."""
    return html.unescape(answer.text)


@pytest.fixture
def walk(site: Site) -> Iterator[Walk]:
    walking = Walk(site)
    yield walking
    walking.http.close()


def test_the_same_state_is_used_once_even_with_its_cookie(walk: Walk) -> None:
    callback = walk.at_provider(AMINA)
    cookie = walk.http.cookies.get("jisr_oidc")
    assert walk.back(callback).status_code == 200
    walk.http.cookies.set("jisr_oidc", str(cookie))
    replayed = walk.back(callback)
    assert replayed.status_code == 400
    assert STALE in shown(replayed)


def test_a_callback_brought_to_another_browser_is_refused(walk: Walk, site: Site) -> None:
    callback = walk.at_provider(AMINA)  # an attacker's own sign-in, to plant on a victim
    with httpx2.Client(follow_redirects=False, timeout=20) as victim:
        planted = victim.get(callback)
    assert planted.status_code == 400
    assert STALE in shown(planted)
    assert "jisr_console" not in planted.cookies


def test_a_way_back_naming_another_issuer_is_refused(walk: Walk) -> None:
    """RFC 9207: an `iss` on the way back must be the provider the sign-in went to."""
    answer = walk.back(walk.at_provider(AMINA) + "&iss=https%3A%2F%2Fevil.example")
    assert answer.status_code == 400
    assert NOT_VERIFIED in shown(answer)


def test_an_officer_of_another_institution_than_the_providers_is_refused(walk: Walk) -> None:
    answer = walk.back(walk.at_provider(KARIM))
    assert answer.status_code == 403
    assert UNLINKED in shown(answer)


def test_a_disabled_officer_is_refused(walk: Walk) -> None:
    answer = walk.back(walk.at_provider(GONE))
    assert answer.status_code == 403
    assert UNLINKED in shown(answer)


def test_a_locked_account_is_locked_through_the_provider_too(walk: Walk) -> None:
    answer = walk.back(walk.at_provider(LOCKED))
    assert answer.status_code == 429
    assert "verrouillé" in shown(answer)


def test_cancelling_at_the_provider_comes_back_to_the_login_page(walk: Walk) -> None:
    answer = walk.back(walk.at_provider(AMINA, action="cancel"))
    assert answer.status_code == 400
    assert "annulée ou refusée par le fournisseur" in shown(answer)


def test_a_provider_that_cannot_be_reached_is_a_503_on_the_login_page(walk: Walk) -> None:
    answer = walk.start(provider="down")
    assert answer.status_code == 503
    assert "Le fournisseur d'identité ne répond pas" in shown(answer)


def test_an_unknown_provider_is_a_404_on_the_login_page(walk: Walk) -> None:
    answer = walk.start(provider="nobody")
    assert answer.status_code == 404
    assert "n'est pas configuré" in shown(answer)


def test_the_login_page_offers_one_button_per_provider(walk: Walk, site: Site) -> None:
    page = walk.http.get(f"{site.url}/login?next=/integrity").text
    buttons = re.findall(r'id="oidc-([a-z0-9-]+)" href="([^"]+)"', page)
    assert buttons == [
        (PROVIDER, f"/login/oidc/{PROVIDER}?next=/integrity"),
        ("down", "/login/oidc/down?next=/integrity"),
    ]


def test_the_fake_provider_refuses_a_code_without_its_verifier(walk: Walk, site: Site) -> None:
    """The console's successful sign-ins prove its PKCE only if the provider enforces it."""
    code = re.search(r"code=([^&]+)", walk.at_provider(AMINA))
    assert code
    refused = walk.http.post(
        f"{site.idp.issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code.group(1),
            "code_verifier": "x" * 64,
            "redirect_uri": f"{site.url}/login/oidc/callback",
        },
        auth=(site.idp.client_id, site.idp.client_secret),
    )
    assert (refused.status_code, refused.json()) == (400, {"error": "invalid_grant"})
