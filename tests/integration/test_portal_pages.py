"""The reference citizen portal as a citizen uses it: a real gateway, the portal in its own
process, a real browser signing in (development sign-in) and reading the access report,
in French and Arabic."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from gateway.sdk.client import Credentials, JisrClient
from gateway.sdk.trail import AccessQuery, Trail
from tests.support import browser as kit
from tests.support import console_site, portal_site, processes, registry_rows

pytestmark = pytest.mark.integration


@dataclass
class Seeded:
    site: portal_site.Portal
    person: str  # DEMO looked this person up twice, and refused twice at the household
    stranger: str  # nobody looked this person up

    @property
    def url(self) -> str:
        return self.site.url

    @property
    def gateway(self) -> processes.Proc:
        return self.site.gateway

    @property
    def pki_dir(self) -> Path:
        return self.site.pki_dir


@pytest.fixture(scope="module")
def portal(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    with portal_site.running(registry_dir, pki_dir, tmp_path_factory.mktemp("portal")) as site:
        person, _ = console_site.seed_trail(site.gateway.target, pki_dir, registry_dir)
        stranger = registry_rows.first_members(registry_dir, 40)[-1][1]
        yield Seeded(site, person, stranger)


def _sign_in(driver: webdriver.Chrome, portal: Seeded, idcs: str) -> None:
    portal_site.sign_in(driver, portal.site, idcs)


def test_a_malformed_idcs_is_named_and_nothing_is_asked(
    browser: webdriver.Chrome, portal: Seeded
) -> None:
    _sign_in(browser, portal, "1234567890")
    assert kit.wait_for(browser, "#login-error").text.startswith("Identifiant : ")


def test_the_sign_in_says_it_is_for_development_only(
    browser: webdriver.Chrome, portal: Seeded
) -> None:
    browser.get(portal.url + "/login")
    assert "DÉVELOPPEMENT" in kit.wait_for(browser, "#dev-note").text


def test_a_citizen_reads_who_looked_at_their_data_in_plain_words(
    browser: webdriver.Chrome, portal: Seeded
) -> None:
    _sign_in(browser, portal, portal.person)
    kit.wait_for(browser, "#accesses")
    lines = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "li.access.permit")]
    demo = "l'institution de démonstration (DEMO), pour l'inscription à l'assurance maladie"
    looks = [line for line in lines if line.startswith(demo)]
    assert len(looks) == 2
    assert "votre identité" in looks[0]
    assert "si vous êtes en vie" in looks[0]
    assert "Base légale : illustrative" in looks[0]


def test_a_citizen_nobody_looked_up_is_told_so(browser: webdriver.Chrome, portal: Seeded) -> None:
    _sign_in(browser, portal, portal.stranger)
    assert kit.wait_for(browser, "#no-accesses").text.startswith("Aucune consultation")


def test_reading_the_report_is_itself_recorded_without_the_idcs(
    browser: webdriver.Chrome, portal: Seeded
) -> None:
    _sign_in(browser, portal, portal.person)
    kit.wait_for(browser, "#report-title")
    with JisrClient(portal.gateway.target, Credentials.from_pki(portal.pki_dir, "CNDP")) as c:
        query = AccessQuery(requester="ANR", method="/jisr.v1.AuditTrail/AccessReport")
        looks = list(Trail(c).query(query, limit=50))
    assert looks
    assert all(r.requester_sub.startswith("citizen-session-") for r in looks)
    assert all(r.purpose == "CITIZEN_ACCESS_REQUEST" for r in looks)
    assert not [r for r in looks if portal.person in str(r)]


_FETCH_PROOFS = """
const done = arguments[arguments.length - 1];
fetch("/report/proofs.json").then(r => r.json()).then(done, e => done(String(e)));
"""


def test_the_report_offers_proofs_that_name_each_access_of_the_trail(
    browser: webdriver.Chrome, portal: Seeded
) -> None:
    _sign_in(browser, portal, portal.person)
    link = kit.wait_for(browser, "#proofs-link")
    assert link.text == "Télécharger les preuves de ce relevé"
    deadline = time.monotonic() + 30
    while True:
        proofs = browser.execute_async_script(_FETCH_PROOFS)["proofs"]
        demo = [p for p in proofs if p["record"]["requester"] == "DEMO"]
        if len(demo) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(demo) >= 2, proofs
    assert all(p["checkpoint"].count(".") == 2 and p["path"] is not None for p in demo)
    assert portal.person not in json.dumps(proofs)


def test_signing_out_ends_the_session(browser: webdriver.Chrome, portal: Seeded) -> None:
    _sign_in(browser, portal, portal.person)
    kit.wait_for(browser, "#logout").click()
    kit.wait_for(browser, "#idcs")
    browser.get(portal.url + "/report")
    kit.wait_for(browser, "#idcs")


@pytest.mark.parametrize("browser", ["ar"], indirect=True)
def test_an_arabic_reader_gets_the_report_right_to_left(
    browser: webdriver.Chrome, portal: Seeded
) -> None:
    browser.get(portal.url + "/login")
    kit.wait_for(browser, "#lang-ar").click()
    kit.wait_for(browser, "#lang-fr")
    _sign_in(browser, portal, portal.person)
    kit.wait_for(browser, "#accesses")
    html = browser.find_element(By.TAG_NAME, "html")
    assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("ar", "rtl")
    assert "المؤسسة التجريبية (DEMO)" in browser.find_element(By.ID, "accesses").text
