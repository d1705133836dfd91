"""A contest from end to end, as the people in it live it, each in their own browser
window: a citizen contests an access on the portal, the accessing institution's DPO
answers in the console, the citizen takes the answer to the CNDP, the regulator decides
in the console, and the citizen reads the decision. Real gateway, console and portal
processes; the trail and stores on SQLite, or on one PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from gateway.sdk.client import Credentials, JisrClient
from tests.support import browser as kit
from tests.support import console_site, databases, portal_site, processes, registry_rows
from tests.support.portal_site import Portal

pytestmark = pytest.mark.integration


@dataclass
class Stage:
    portal: Portal
    console: console_site.Site
    person: str  # DEMO looked this person up: the access the citizen contests


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stage(
    request: pytest.FixtureRequest,
    registry_dir: Path,
    pki_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stage]:
    folder = tmp_path_factory.mktemp("journey")
    with databases.for_backend(request.param) as url, ExitStack() as stack:
        state = folder / "state"
        state.mkdir()
        env = {"JISR_STATE_DIR": str(state)} | ({"JISR_DATABASE_URL": url} if url else {})
        serve = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
        gateway = processes.start([*serve, "--pki-dir", str(pki_dir)], folder / "gw.log", env)
        stack.callback(gateway.stop)
        console = console_site.start(
            gateway.target, pki_dir, folder / "console", folder / "console.log", env
        )
        stack.callback(console.proc.stop)
        site = portal_site.start(gateway.target, pki_dir, folder / "portal.log")
        stack.callback(site.stop)
        person = registry_rows.first_members(registry_dir, 40)[30][1]
        with JisrClient(gateway.target, Credentials.from_pki(pki_dir, "DEMO")) as demo:
            demo.person_status("AMO_ENROLMENT", person)
        yield Stage(Portal(gateway, site, pki_dir, registry_dir), console, person)


@pytest.fixture
def officer_window(browser: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """A second browser for the officers (the citizen keeps the first)."""
    driver = kit.chrome()
    try:
        yield driver
    finally:
        driver.quit()


def test_a_citizens_contest_is_answered_escalated_and_decided(
    browser: webdriver.Chrome, officer_window: webdriver.Chrome, stage: Stage
) -> None:
    citizen, officer = browser, officer_window
    # The citizen contests DEMO's look at their data, from their report.
    portal_site.sign_in(citizen, stage.portal, stage.person)
    kit.wait_for(citizen, "a.contest-link").click()
    kit.wait_for(citizen, "#statement").send_keys("Je n'ai rien demandé à DEMO.")
    citizen.find_element(By.ID, "open-case").click()
    kit.wait_for(citizen, "#case-notice")
    # DEMO's DPO finds it in the console's queue and answers.
    console_site.sign_in_as(officer, stage.console, "dpo-demo")
    officer.find_element(By.ID, "nav-contests").click()
    kit.wait_for(officer, "#cases-title")
    officer.find_element(By.CSS_SELECTOR, "a.open").click()
    assert kit.wait_for(officer, "#case-statement").text == "Je n'ai rien demandé à DEMO."
    kit.wait_for(officer, "#answer-text").send_keys("Une vérification d'inscription AMO.")
    officer.find_element(By.ID, "send-answer").click()
    kit.wait_for_text(officer, "répondue")
    # The citizen reads the answer and takes it to the CNDP.
    citizen.refresh()
    assert kit.wait_for(citizen, "#case-answer").text == "Une vérification d'inscription AMO."
    citizen.find_element(By.ID, "reason").send_keys("Je ne suis pas concerné par l'AMO.")
    citizen.find_element(By.ID, "escalate").click()
    kit.wait_for_text(citizen, "Votre contestation est entre les mains de la CNDP")
    # The regulator decides.
    officer.find_element(By.ID, "logout").click()
    console_site.sign_in_as(officer, stage.console, "cndp")
    officer.find_element(By.ID, "nav-contests").click()
    kit.wait_for(officer, "#cases-title")
    officer.find_element(By.CSS_SELECTOR, "a.open").click()
    kit.wait_for(officer, "#outcome-upheld").click()
    officer.find_element(By.ID, "decision-text").send_keys("DEMO n'avait pas de base.")
    officer.find_element(By.ID, "send-decision").click()
    kit.wait_for_text(officer, "fondée : le citoyen avait raison")
    # The citizen reads the decision.
    citizen.refresh()
    assert kit.wait_for(citizen, "#case-decision").text == "DEMO n'avait pas de base."
    assert "la CNDP vous a donné raison" in citizen.find_element(By.ID, "case-state").text
    steps = citizen.find_element(By.ID, "history").text
    assert "l'institution de démonstration (DEMO) a répondu." in steps
    assert "Vous avez saisi la CNDP." in steps
