"""Contest cases in the console, as officers meet them: a real gateway, the console in its
own process and a real browser. A citizen's portal (ANR, through the SDK) contests an
exchange DEMO made; DEMO's DPO answers it in the console; the citizen takes a case to the
CNDP, whose officer decides it in the console. On SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from gateway.sdk.client import Credentials, JisrClient
from gateway.sdk.contests import CITIZEN_PURPOSE, HANDLING_PURPOSE, Contests
from tests.support import browser as kit
from tests.support import console_site, databases, processes, registry_rows

pytestmark = pytest.mark.integration

ACCESS_PURPOSE = "ASD_ELIGIBILITY"
OTHER_DPO = "dpo-cnss"  # a DPO of CNSS, an institution that did not make the exchanges
OTHER_PASSWORD = "Cnss-officer-42"


@dataclass
class Scene:
    """A gateway, the console in front of it, and the SDK clients of DEMO (whose
    exchanges are contested) and ANR (the citizens' portal)."""

    site: console_site.Site
    demo: JisrClient
    anr: JisrClient
    households: Iterator[registry_rows.Household]
    refs: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def portal(self, ref: str) -> Contests:
        return Contests(self.anr.acting_as(ref), CITIZEN_PURPOSE)

    def desk(self, sub: str = "officer-through-sdk") -> Contests:
        """DEMO's DPO desk through the SDK, as another officer than the console's."""
        return Contests(self.demo.acting_as(sub), HANDLING_PURPOSE)

    def contested(self, statement: str = "Je n'ai rien demandé.") -> tuple[str, str, str]:
        """An exchange DEMO just made about a fresh household, contested through ANR:
        (the household's id, the citizen's reference at the portal, the case id)."""
        household = next(self.households).household_id
        record = self.demo.verify(ACCESS_PURPOSE, household, "ASD").receipt["audit"]
        ref = f"citizen-ref-{next(self.refs)}"
        opened = self.portal(ref).open(household, str(record), statement)
        return household, ref, opened.message.case.case_id


def _add_officer(site: console_site.Site, env: dict[str, str]) -> None:
    add = ["console", "user", "add", OTHER_DPO, "--institution", "CNSS", "--password-stdin"]
    added = subprocess.run(
        [*processes.jisr(*add), "--state-dir", str(site.state_dir)],
        input=OTHER_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=processes.environment(env),
    )
    assert added.returncode == 0, added.stderr
    site.passwords[OTHER_DPO] = OTHER_PASSWORD


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scene(
    request: pytest.FixtureRequest,
    registry_dir: Path,
    pki_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scene]:
    folder = tmp_path_factory.mktemp("console-contests")
    with databases.for_backend(request.param) as url, ExitStack() as stack:
        state = folder / "state"
        state.mkdir()
        env = {"JISR_STATE_DIR": str(state)} | ({"JISR_DATABASE_URL": url} if url else {})
        serve = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
        gateway = processes.start([*serve, "--pki-dir", str(pki_dir)], folder / "gw.log", env)
        stack.callback(gateway.stop)
        site = console_site.start(
            gateway.target, pki_dir, folder / "console", folder / "console.log", env
        )
        stack.callback(site.proc.stop)
        _add_officer(site, {"JISR_DATABASE_URL": url} if url else {})
        demo, anr = (
            stack.enter_context(JisrClient(gateway.target, Credentials.from_pki(pki_dir, name)))
            for name in ("DEMO", "ANR")
        )
        yield Scene(site, demo, anr, iter(registry_rows.households(registry_dir, 100)))


def _open_case(driver: webdriver.Chrome, scene: Scene, case_id: str) -> None:
    driver.get(f"{scene.site.url}/contests/case?id={case_id}")
    kit.wait_for(driver, "#case-state")


def _history(driver: webdriver.Chrome) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def _answer(driver: webdriver.Chrome, text: str) -> None:
    kit.wait_for(driver, "#answer-text").send_keys(text)
    driver.find_element(By.ID, "send-answer").click()


# -- the DPO ---------------------------------------------------------------------------


def test_a_dpo_finds_a_new_case_in_its_queue_and_answers_it(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    _, _, case_id = scene.contested("Pourquoi avoir consulté mon ménage ?")
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    browser.find_element(By.ID, "nav-contests").click()
    row = kit.wait_for(browser, f"#row-{case_id}")
    assert "ouverte" in row.text
    row.find_element(By.CSS_SELECTOR, "a.open").click()
    assert kit.wait_for(browser, "#case-statement").text == "Pourquoi avoir consulté mon ménage ?"
    _answer(browser, "Votre ménage a demandé l'ASD ; nous avons vérifié son éligibilité.")
    kit.wait_for_text(browser, "répondue")
    assert console_site.text(browser, "case-state") == "répondue"
    last = _history(browser)[-1]
    assert last[1].startswith("DPO · DEMO officer-")
    assert last[2:] == [
        "réponse",
        "ouverte → répondue",
        "Votre ménage a demandé l'ASD ; nous avons vérifié son éligibilité.",
    ]
    assert browser.find_elements(By.ID, "answer-form") == []


def test_an_empty_answer_is_refused_with_the_field_named_and_nothing_sent(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    _, _, case_id = scene.contested()
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _open_case(browser, scene, case_id)
    _answer(browser, "   \n  ")
    assert kit.wait_for(browser, "#error-text").text == "Réponse : le texte est vide"
    assert console_site.text(browser, "case-state") == "ouverte"
    assert scene.desk().get(case_id).message.case.version == 1


def test_an_answer_from_a_page_read_before_another_answer_is_refused_and_its_text_kept(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    _, _, case_id = scene.contested()
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _open_case(browser, scene, case_id)
    scene.desk().answer(case_id, 1, "Réponse d'un collègue, arrivée la première.")
    _answer(browser, "Ma réponse, écrite sur une page périmée.")
    message = kit.wait_for(browser, "#case-message").text
    assert message.startswith("Cette contestation a changé entre-temps : relisez-la.")
    assert kit.wait_for(browser, "#unsent-text").get_attribute("value") == (
        "Ma réponse, écrite sur une page périmée."
    )
    assert console_site.text(browser, "case-state") == "répondue"
    assert console_site.text(browser, "case-answer") == (
        "Réponse d'un collègue, arrivée la première."
    )


def test_a_dpo_of_another_institution_is_told_the_case_does_not_exist(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    _, _, case_id = scene.contested()
    console_site.sign_in_as(browser, scene.site, OTHER_DPO)
    browser.get(f"{scene.site.url}/contests/case?id={case_id}")
    assert kit.wait_for(browser, "#error-title").text == "Erreur 404"
    told = console_site.text(browser, "error-text")
    browser.get(f"{scene.site.url}/contests/case?id=case-0000000000000000")
    assert kit.wait_for(browser, "#error-title").text == "Erreur 404"
    assert console_site.text(browser, "error-text") == told  # nothing to tell them apart
    browser.get(f"{scene.site.url}/contests?state=all")
    kit.wait_for(browser, "#cases-title")
    assert browser.find_elements(By.ID, f"row-{case_id}") == []


# -- the regulator ---------------------------------------------------------------------


def test_the_regulator_decides_a_case_the_citizen_escalated(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    household, ref, case_id = scene.contested()
    scene.desk().answer(case_id, 1, "L'accès était fondé sur la demande d'ASD.")
    scene.portal(ref).escalate(case_id, 2, household, "Je n'ai jamais demandé l'ASD.")
    console_site.sign_in_as(browser, scene.site, "cndp")
    browser.find_element(By.ID, "nav-contests").click()
    row = kit.wait_for(browser, f"#row-{case_id}")
    assert "transmise à la CNDP" in row.text
    row.find_element(By.CSS_SELECTOR, "a.open").click()
    kit.wait_for(browser, "#outcome-upheld").click()
    browser.find_element(By.ID, "decision-text").send_keys("L'accès n'avait pas de base.")
    browser.find_element(By.ID, "send-decision").click()
    kit.wait_for_text(browser, "fondée : le citoyen avait raison")
    assert console_site.text(browser, "case-state") == "close"
    assert console_site.text(browser, "case-outcome") == "fondée : le citoyen avait raison"
    assert console_site.text(browser, "case-decision") == "L'accès n'avait pas de base."
    actions = [row[2] for row in _history(browser)]
    assert actions == ["ouverture", "réponse", "saisine de la CNDP", "décision : fondée"]


def test_the_regulator_lists_an_institutions_closed_cases_once_it_names_the_institution(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    household, ref, case_id = scene.contested()
    scene.portal(ref).withdraw(case_id, 1, household)
    console_site.sign_in_as(browser, scene.site, "cndp")
    browser.get(f"{scene.site.url}/contests")
    Select(kit.wait_for(browser, "#f-state")).select_by_value("all")
    browser.find_element(By.ID, "filter").click()
    assert "indiquez une institution" in kit.wait_for(browser, "#error-state").text
    browser.find_element(By.ID, "f-institution").send_keys("demo")
    browser.find_element(By.ID, "filter").click()
    row = kit.wait_for(browser, f"#row-{case_id}")
    assert "close (retirée par le citoyen)" in row.text


# -- the trail -------------------------------------------------------------------------


def test_each_contest_page_and_step_is_in_the_trail_under_the_officers_pseudonym(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    _, _, case_id = scene.contested()
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    browser.get(f"{scene.site.url}/contests")
    kit.wait_for(browser, f"#row-{case_id}").find_element(By.CSS_SELECTOR, "a.open").click()
    _answer(browser, "Réponse tracée.")
    kit.wait_for_text(browser, "Réponse tracée.")
    officer = _history(browser)[-1][1].rsplit(" ", 1)[-1]
    assert officer.startswith("officer-")
    browser.find_element(By.ID, "logout").click()
    console_site.sign_in_as(browser, scene.site, "cndp")
    kit.wait_for(browser, "#f-requester").send_keys("DEMO")
    browser.find_element(By.ID, "f-purpose").send_keys(HANDLING_PURPOSE)
    browser.find_element(By.ID, "search").click()
    kit.wait_for(browser, "#results")
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    methods = {r[4] for r in cells if r[2] == officer}
    assert {"ListCases", "GetCase", "AnswerCase"} <= methods
