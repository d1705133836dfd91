"""A citizen contests an access and follows the case in the reference portal, and sees and
revokes their consents: a real gateway, the portal in its own process, a real browser. The
accessing institution's DPO and the regulator act through the SDK here (their console
pages have their own scenarios, and test_contest_journey.py has the whole path)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from gateway.sdk.client import Credentials, JisrClient
from gateway.sdk.contests import HANDLING_PURPOSE, Contests
from gateway.sdk.trail import AccessQuery, Trail
from tests.integration.test_consent import FULL, grant
from tests.integration.test_consent_registry_calls import grant_claims, household, send_grant
from tests.support import browser as kit
from tests.support import portal_site, registry_rows
from tests.support.portal_site import Portal

pytestmark = pytest.mark.integration

# People of the first households, one per test: each test's case is the only one it sees.
_people = itertools.count(8)


@pytest.fixture(scope="module")
def portal(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Portal]:
    with portal_site.running(registry_dir, pki_dir, tmp_path_factory.mktemp("portal")) as site:
        yield site


def looked_up(portal: Portal) -> str:
    """A person DEMO has just looked up once (for AMO_ENROLMENT): their IDCS."""
    person = registry_rows.first_members(portal.registry_dir, 40)[next(_people)][1]
    credentials = Credentials.from_pki(portal.pki_dir, "DEMO")
    with JisrClient(portal.gateway.target, credentials) as demo:
        demo.person_status("AMO_ENROLMENT", person)
    return person


@contextmanager
def desk(portal: Portal, institution: str) -> Iterator[Contests]:
    """An officer of `institution` handling cases through the SDK."""
    credentials = Credentials.from_pki(portal.pki_dir, institution)
    with JisrClient(portal.gateway.target, credentials) as client:
        yield Contests(client.acting_as("officer-contest-test"), HANDLING_PURPOSE)


def contest(driver: webdriver.Chrome, portal: Portal, person: str, statement: str) -> str:
    """Sign in as `person`, contest the newest access of their report; the case id."""
    portal_site.sign_in(driver, portal, person)
    kit.wait_for(driver, "a.contest-link").click()
    kit.wait_for(driver, "#statement").send_keys(statement)
    driver.find_element(By.ID, "open-case").click()
    kit.wait_for(driver, "#case-state")
    return parse_qs(urlparse(driver.current_url).query)["id"][0]


def answer(portal: Portal, case_id: str, text: str) -> None:
    with desk(portal, "DEMO") as dpo:
        version = dpo.get(case_id).message.case.version
        dpo.answer(case_id, version, text)


def test_a_citizen_contests_an_access_from_their_report(
    browser: webdriver.Chrome, portal: Portal
) -> None:
    contest(browser, portal, looked_up(portal), "Je n'ai jamais demandé l'AMO.")
    assert kit.wait_for(browser, "#case-notice").text.startswith("Votre contestation est")
    state = browser.find_element(By.ID, "case-state").text
    assert state == "En attente de la réponse de l'institution de démonstration (DEMO)."
    assert browser.find_element(By.ID, "case-statement").text == "Je n'ai jamais demandé l'AMO."
    assert "Vous avez contesté la consultation." in browser.find_element(By.ID, "history").text


def test_the_case_reaches_the_accessing_institutions_dpo(
    browser: webdriver.Chrome, portal: Portal
) -> None:
    case_id = contest(browser, portal, looked_up(portal), "Pourquoi ?")
    with desk(portal, "DEMO") as dpo:
        queue = dpo.list().message.cases
    assert case_id in [c.case_id for c in queue]


def test_an_empty_statement_is_named_and_nothing_is_opened(
    browser: webdriver.Chrome, portal: Portal
) -> None:
    portal_site.sign_in(browser, portal, looked_up(portal))
    kit.wait_for(browser, "a.contest-link").click()
    kit.wait_for(browser, "#statement").send_keys("   ")
    browser.find_element(By.ID, "open-case").click()
    assert (
        kit.wait_for(browser, "#statement-error").text == "Votre demande : écrivez quelques mots."
    )
    browser.get(portal.url + "/contests")
    assert kit.wait_for(browser, "#no-cases").text.startswith("Vous n'avez contesté aucune")


def test_the_citizen_reads_the_answer_and_takes_it_to_the_cndp(
    browser: webdriver.Chrome, portal: Portal
) -> None:
    case_id = contest(browser, portal, looked_up(portal), "Qui a demandé cela ?")
    answer(portal, case_id, "Une vérification d'inscription à l'AMO.")
    browser.refresh()
    answered = kit.wait_for(browser, "#case-answer").text
    assert answered == "Une vérification d'inscription à l'AMO."
    browser.find_element(By.ID, "reason").send_keys("Je ne suis pas inscrit à l'AMO.")
    browser.find_element(By.ID, "escalate").click()
    kit.wait_for_text(browser, "Votre contestation est entre les mains de la CNDP")
    with desk(portal, "CNDP") as regulator:
        escalated = regulator.list().message.cases
    assert case_id in [c.case_id for c in escalated]


def test_an_escalation_without_a_reason_is_named_and_not_sent(
    browser: webdriver.Chrome, portal: Portal
) -> None:
    case_id = contest(browser, portal, looked_up(portal), "Pourquoi ?")
    answer(portal, case_id, "Une vérification.")
    browser.refresh()
    kit.wait_for(browser, "#escalate").click()
    assert kit.wait_for(browser, "#reason-error").text == "Votre demande : écrivez quelques mots."
    with desk(portal, "DEMO") as dpo:
        assert dpo.get(case_id).message.case.state == "answered"


def test_accepting_the_answer_closes_the_case(browser: webdriver.Chrome, portal: Portal) -> None:
    case_id = contest(browser, portal, looked_up(portal), "Pourquoi ?")
    answer(portal, case_id, "Une vérification.")
    browser.refresh()
    kit.wait_for(browser, "#accept").click()
    kit.wait_for_text(browser, "vous avez accepté la réponse")
    assert browser.find_elements(By.ID, "withdraw") == []


def test_a_citizen_withdraws_an_open_case(browser: webdriver.Chrome, portal: Portal) -> None:
    contest(browser, portal, looked_up(portal), "Finalement non.")
    browser.find_element(By.ID, "withdraw").click()
    kit.wait_for_text(browser, "vous l'avez retirée")
    browser.get(portal.url + "/contests")
    assert "close — vous l'avez retirée" in kit.wait_for(browser, "#cases").text


def test_a_case_answered_meanwhile_is_shown_as_it_now_stands(
    browser: webdriver.Chrome, portal: Portal
) -> None:
    case_id = contest(browser, portal, looked_up(portal), "Pourquoi ?")
    answer(portal, case_id, "Répondu pendant que vous lisiez.")
    browser.find_element(By.ID, "withdraw").click()  # the page read the case before the answer
    assert kit.wait_for(browser, "#case-notice").text.startswith("Votre contestation a changé")
    assert browser.find_element(By.ID, "case-answer").text == "Répondu pendant que vous lisiez."


def test_another_citizens_case_is_not_found(browser: webdriver.Chrome, portal: Portal) -> None:
    case_id = contest(browser, portal, looked_up(portal), "Pourquoi ?")
    browser.find_element(By.ID, "logout").click()
    portal_site.sign_in(browser, portal, looked_up(portal))
    kit.wait_for(browser, "#report-title")
    browser.get(f"{portal.url}/contests/case?id={case_id}")
    assert kit.wait_for(browser, "#error-title").text == "Erreur 404"


def test_contest_steps_are_recorded_under_the_sessions_pseudonym(
    browser: webdriver.Chrome, portal: Portal
) -> None:
    person = looked_up(portal)
    contest(browser, portal, person, "Pourquoi ?")
    with JisrClient(portal.gateway.target, Credentials.from_pki(portal.pki_dir, "CNDP")) as c:
        query = AccessQuery(requester="ANR", method="/jisr.v1.ContestCases/OpenCase")
        opened = list(Trail(c).query(query, limit=50))
    assert opened
    assert all(r.requester_sub.startswith("citizen-session-") for r in opened)
    assert all(r.purpose == "CITIZEN_CONTEST" for r in opened)
    assert not [r for r in opened if person in str(r)]


# -- consents ------------------------------------------------------------------------------


@pytest.fixture
def anss(portal: Portal) -> Iterator[JisrClient]:
    credentials = Credentials.from_pki(portal.pki_dir, "ANSS")
    with JisrClient(portal.gateway.target, credentials, timeout=30) as client:
        yield client


def test_a_citizen_sees_their_consents_and_their_households(
    browser: webdriver.Chrome, portal: Portal, anss: JisrClient
) -> None:
    hid, declarant, _ = household(portal.registry_dir)
    send_grant(anss, anss.sign_artefact(grant_claims(declarant, declarant, sub_kind="person")))
    grant(anss, hid, declarant, FULL)
    portal_site.sign_in(browser, portal, declarant)
    kit.wait_for(browser, "#nav-consents").click()
    items = [e.text for e in kit.wait_for(browser, "#consents").find_elements(By.TAG_NAME, "li")]
    assert len(items) == 2
    assert all(i.startswith("le ministère de l'Éducation nationale peut recevoir") for i in items)
    assert ["Vous concerne." in i for i in items] == [True, False]
    assert all("Donné par vous." in i and "En vigueur" in i for i in items)


def test_a_citizen_revokes_a_consent_they_gave(
    browser: webdriver.Chrome, portal: Portal, anss: JisrClient
) -> None:
    hid, declarant, _ = household(portal.registry_dir)
    grant(anss, hid, declarant, FULL)
    portal_site.sign_in(browser, portal, declarant)
    kit.wait_for(browser, "#nav-consents").click()
    kit.wait_for(browser, "button.revoke").click()
    assert kit.wait_for(browser, "#consents-notice").text == "Votre consentement est retiré."
    assert kit.wait_for(browser, "p.consent-status").text == "Retiré"
    assert browser.find_elements(By.CSS_SELECTOR, "button.revoke") == []


def test_a_member_cannot_revoke_what_the_declarant_gave(
    browser: webdriver.Chrome, portal: Portal, anss: JisrClient
) -> None:
    hid, declarant, member = household(portal.registry_dir)
    grant(anss, hid, declarant, FULL)
    portal_site.sign_in(browser, portal, member)
    kit.wait_for(browser, "#nav-consents").click()
    listed = kit.wait_for(browser, "#consents").text
    assert "Donné par le déclarant de votre ménage : lui seul peut le retirer." in listed
    assert browser.find_elements(By.CSS_SELECTOR, "button.revoke") == []


@pytest.mark.parametrize("browser", ["ar"], indirect=True)
def test_an_arabic_reader_follows_a_case_right_to_left(
    browser: webdriver.Chrome, portal: Portal
) -> None:
    browser.get(portal.url + "/login")
    kit.wait_for(browser, "#lang-ar").click()
    kit.wait_for(browser, "#lang-fr")
    person = looked_up(portal)
    portal_site.sign_in(browser, portal, person)
    kit.wait_for(browser, "a.contest-link").click()
    kit.wait_for(browser, "#statement").send_keys("لم أطلب ذلك.")
    browser.find_element(By.ID, "open-case").click()
    assert kit.wait_for(browser, "#case-state").text.startswith("في انتظار جواب")
    html = browser.find_element(By.TAG_NAME, "html")
    assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("ar", "rtl")
