"""The DPO and regulator console as its officers use it: a real gateway, the console in its
own process, and a real browser (headless Chromium) signing in, searching, opening an
exchange, checking a receipt, downloading the evidence bundle, in French and Arabic."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.support import browser as kit
from tests.support import console_site, databases, processes, registry_rows

pytestmark = pytest.mark.integration

PURPOSE = "ASD_ELIGIBILITY"


@dataclass
class Scene:
    """A gateway with a few exchanges in its trail, and the console in front of it."""

    gateway: processes.Proc
    site: console_site.Site
    state_dir: Path
    pki_dir: Path
    person: str  # an IDCS DEMO looked up twice
    receipt: str  # DEMO's receipt for its first look-up of `person`
    url: str | None  # the PostgreSQL schema of the trail and the console, None for SQLite

    def env(self) -> dict[str, str]:
        """The environment `jisr console user` needs to reach the console's store."""
        return processes.environment({"JISR_DATABASE_URL": self.url} if self.url else {})


@contextmanager
def _scene(registry_dir: Path, pki_dir: Path, folder: Path, url: str | None) -> Iterator[Scene]:
    """The gateway's trail and the console's store on PostgreSQL when `url` is given (both
    in one schema, as a deployment may share one), else SQLite files."""
    state = folder / "state"
    state.mkdir()
    env = {"JISR_STATE_DIR": str(state), "JISR_AUDIT_CHECKPOINT_EVERY": "5"}
    if url:
        env["JISR_DATABASE_URL"] = url
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    gateway = processes.start([*args, "--pki-dir", str(pki_dir)], folder / "gateway.log", env)
    try:
        person, receipt = console_site.seed_trail(gateway.target, pki_dir, registry_dir)
        site = console_site.start(
            gateway.target, pki_dir, folder / "console", folder / "console.log", env
        )
        try:
            yield Scene(gateway, site, state, pki_dir, person, receipt, url)
        finally:
            site.proc.stop()
    finally:
        gateway.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scene(
    request: pytest.FixtureRequest,
    registry_dir: Path,
    pki_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scene]:
    """Shared by the tests that only read, on each backend."""
    folder = tmp_path_factory.mktemp("console")
    with (
        databases.for_backend(request.param) as url,
        _scene(registry_dir, pki_dir, folder, url) as scene,
    ):
        yield scene


def _forge(scene: Scene) -> str:
    """As an attacker with database access: record 3's purpose rewritten, behind the
    store's back (its no-update guard dropped). Returns the record's node."""
    forge = "UPDATE audit_record SET purpose = 'FORGED' WHERE seq = 3 AND node = %s"
    if scene.url:
        with psycopg.connect(scene.url, autocommit=True) as pg:
            pg.execute("ALTER TABLE audit_record DISABLE TRIGGER USER")
            row = pg.execute("SELECT node FROM audit_record LIMIT 1").fetchone()
            assert row is not None
            pg.execute(forge.encode(), (row[0],))
            return str(row[0])
    db = sqlite3.connect(scene.state_dir / "audit.sqlite", isolation_level=None)
    try:
        db.execute("DROP TRIGGER IF EXISTS audit_record_no_update")
        node = str(db.execute("SELECT node FROM audit_record LIMIT 1").fetchone()[0])
        db.execute(forge.replace("%s", "?"), (node,))
    finally:
        db.close()
    return node


def _search(driver: webdriver.Chrome, scene: Scene, **filters: str) -> None:
    """Fill the search form as an officer would and send it."""
    driver.get(f"{scene.site.url}/search")
    for name, value in filters.items():
        field = kit.wait_for(driver, f"#f-{name}")
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.send_keys(value)
    driver.find_element(By.ID, "search").click()
    kit.wait_for(driver, "#results-title, #error-title, [id^=error-]")


def _rows(driver: webdriver.Chrome) -> list[list[str]]:
    cells = driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in cells]


# -- signing in ----------------------------------------------------------------------


def test_a_wrong_password_is_refused_without_saying_which_part(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in(browser, scene.site, "dpo-demo", "not-the-password-1")
    shown = kit.wait_for(browser, "#login-error").text
    assert shown == "Identifiant, mot de passe ou code incorrect."
    console_site.sign_in(browser, scene.site, "nobody-here", "not-the-password-1")
    assert kit.wait_for(browser, "#login-error").text == shown


def test_five_failures_lock_the_account_even_against_the_right_password(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    password = "Locked-officer-42"
    add = ["console", "user", "add", "locked-officer", "--institution", "DEMO"]
    added = subprocess.run(
        [*processes.jisr(*add), "--password-stdin", "--state-dir", str(scene.site.state_dir)],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=scene.env(),
    )
    assert added.returncode == 0, added.stderr
    for _ in range(5):
        console_site.sign_in(browser, scene.site, "locked-officer", "wrong-Password-0")
        kit.wait_for(browser, "#login-error")
    assert "verrouillé" in console_site.text(browser, "login-error")
    console_site.sign_in(browser, scene.site, "locked-officer", password)
    assert "verrouillé" in kit.wait_for(browser, "#login-error").text
    assert browser.find_elements(By.ID, "search-form") == []


def test_a_page_asked_before_signing_in_opens_after_it(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    browser.get(f"{scene.site.url}/integrity")
    kit.wait_for(browser, "#username")
    browser.find_element(By.ID, "username").send_keys("cndp")
    browser.find_element(By.ID, "password").send_keys(scene.site.passwords["cndp"])
    browser.find_element(By.ID, "login").click()
    kit.wait_for(browser, "#verdict")
    assert browser.current_url == f"{scene.site.url}/integrity"


def test_signing_out_ends_the_session(browser: webdriver.Chrome, scene: Scene) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    browser.find_element(By.ID, "logout").click()
    assert kit.wait_for(browser, "#note").text == "Vous êtes déconnecté."
    browser.get(f"{scene.site.url}/search")
    kit.wait_for(browser, "#username")


def test_a_form_without_its_csrf_token_is_refused(browser: webdriver.Chrome, scene: Scene) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    browser.execute_script(
        "document.querySelector('form[action=\"/logout\"] input[name=csrf]').value = 'forged';"
    )
    browser.find_element(By.ID, "logout").click()
    assert kit.wait_for(browser, "#error-title").text == "Erreur 403"
    browser.get(f"{scene.site.url}/search")
    kit.wait_for(browser, "#search-form")  # still signed in: nothing was done


# -- the trail -----------------------------------------------------------------------


def test_a_dpo_finds_the_exchanges_about_a_person_by_idcs(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _search(browser, scene, subject=scene.person)
    rows = _rows(browser)
    assert [(r[1], r[3], r[4]) for r in rows] == [("DEMO", "AMO_ENROLMENT", "GetPersonStatus")] * 2
    assert scene.person not in browser.current_url  # posted: in no URL, history or log
    assert scene.person not in browser.find_element(By.ID, "results").text  # only a count


def test_a_bad_filter_is_named_and_nothing_is_asked(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _search(browser, scene, subject="12345")
    assert console_site.text(browser, "error-subject").startswith("Personne ou ménage")
    assert browser.find_elements(By.ID, "results") == []


def test_a_dpo_sees_only_its_own_institutions_requests(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _search(browser, scene, purpose="AMO_ENROLMENT", method="VerifyEligibility")
    assert _rows(browser) == []  # CNSS's check is not DEMO's to see


def test_a_dpo_asking_for_another_institution_is_refused_and_the_refusal_audited(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    officer = browser.find_element(By.ID, "who").text
    _search(browser, scene, requester="CNSS")
    assert console_site.text(browser, "error-title") == "Erreur 403"
    assert "Ce refus est lui-même tracé" in console_site.text(browser, "error-text")
    assert officer.startswith("dpo-demo")
    browser.find_element(By.ID, "logout").click()
    console_site.sign_in_as(browser, scene.site, "cndp")
    _search(browser, scene, requester="DEMO", method="QueryAccess", decision="deny")
    refused = [r for r in _rows(browser) if "NOT_AN_AUDITOR" in r[5]]
    assert refused, _rows(browser)
    assert refused[0][2].startswith("officer-")  # the officer's pseudonym, not the name


def test_every_search_is_itself_an_audited_exchange_under_the_officers_pseudonym(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _search(browser, scene, purpose="ASD_ELIGIBILITY")
    browser.find_element(By.ID, "logout").click()
    console_site.sign_in_as(browser, scene.site, "cndp")
    _search(browser, scene, requester="DEMO", method="QueryAccess", decision="permit")
    looks = _rows(browser)
    assert looks
    assert all(r[2].startswith("officer-") for r in looks)
    assert all(r[3] == "DATA_PROTECTION_AUDIT" for r in looks)


def test_opening_a_refusal_shows_its_reason_and_that_nothing_was_disclosed(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _search(browser, scene, decision="deny", reason="PURPOSE_NOT_ALLOWED")
    browser.find_element(By.CSS_SELECTOR, "#results a.open").click()
    kit.wait_for(browser, "#exchange")
    assert console_site.text(browser, "x-decision") == "refusé"
    assert console_site.text(browser, "x-reason") == "PURPOSE_NOT_ALLOWED"
    assert console_site.text(browser, "x-purpose") == "SCHOOL_SUPPORT"
    assert console_site.text(browser, "x-fields") == "rien n'a été communiqué"
    assert "ok" in str(browser.find_element(By.ID, "x-hash").get_attribute("class"))


def test_a_receipt_pasted_on_its_exchange_is_verified_claim_by_claim(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _search(browser, scene, subject=scene.person)
    links = browser.find_elements(By.CSS_SELECTOR, "#results a.open")
    links[-1].click()  # the oldest: the first look, whose receipt the scene kept
    kit.wait_for(browser, "#receipt").send_keys(scene.receipt)
    browser.find_element(By.ID, "check-receipt").click()
    verdict = kit.wait_for(browser, "#receipt-verdict")
    assert "ok" in str(verdict.get_attribute("class")), verdict.text
    assert "✗" not in verdict.text


def test_a_forged_receipt_is_named_as_not_signed(browser: webdriver.Chrome, scene: Scene) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    _search(browser, scene, subject=scene.person)
    browser.find_elements(By.CSS_SELECTOR, "#results a.open")[-1].click()
    head, payload, signature = scene.receipt.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    kit.wait_for(browser, "#receipt").send_keys(forged)
    browser.find_element(By.ID, "check-receipt").click()
    verdict = kit.wait_for(browser, "#receipt-verdict")
    assert "bad" in str(verdict.get_attribute("class"))


def test_a_record_outside_the_officers_view_is_not_found(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "cndp")
    _search(browser, scene, requester="CNSS", method="VerifyEligibility")
    cnss_record = _rows(browser)[0][7]
    browser.find_element(By.ID, "logout").click()
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    browser.get(f"{scene.site.url}/exchange?id={cnss_record}")
    assert kit.wait_for(browser, "#error-title").text == "Erreur 404"


def test_a_burst_of_refusals_is_on_the_attention_list_with_its_records(
    browser: webdriver.Chrome, scene: Scene, registry_dir: Path
) -> None:
    household = registry_rows.first_members(registry_dir, 1)[0][0]
    with JisrClient(scene.gateway.target, Credentials.from_pki(scene.pki_dir, "DEMO")) as demo:
        for _ in range(21):
            with pytest.raises(JisrError):
                demo.verify("SCHOOL_SUPPORT", household, "ASD")
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    browser.find_element(By.ID, "nav-attention").click()
    burst = kit.wait_for(browser, "#findings tr.refusal_burst")
    assert "DEMO" in burst.text
    burst.find_element(By.CSS_SELECTOR, "a").click()
    kit.wait_for(browser, "#exchange")
    assert console_site.text(browser, "x-reason") == "PURPOSE_NOT_ALLOWED"


# -- integrity -----------------------------------------------------------------------


def test_the_regulator_downloads_a_bundle_that_jisr_audit_verify_accepts(
    browser: webdriver.Chrome, scene: Scene, download_dir: Path, tmp_path: Path
) -> None:
    console_site.sign_in_as(browser, scene.site, "cndp")
    browser.get(f"{scene.site.url}/integrity")
    assert kit.wait_for(browser, "#verdict").text.startswith("VALIDE")
    browser.find_element(By.ID, "download-bundle").click()
    archive = kit.wait_for_download(download_dir, ".zip")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path)
    checked = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", str(tmp_path / "evidence")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "VALID" in checked.stdout


def test_a_dpo_is_told_the_bundle_is_the_regulators(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    browser.get(f"{scene.site.url}/integrity/evidence.zip")
    assert kit.wait_for(browser, "#error-title").text == "Erreur 403"
    assert "régulateur" in console_site.text(browser, "error-text")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_tampered_record_is_named_on_the_integrity_page(
    browser: webdriver.Chrome, registry_dir: Path, pki_dir: Path, tmp_path: Path, backend: str
) -> None:
    with (
        databases.for_backend(backend) as url,
        _scene(registry_dir, pki_dir, tmp_path, url) as scene,
    ):
        node = _forge(scene)
        console_site.sign_in_as(browser, scene.site, "cndp")
        browser.get(f"{scene.site.url}/integrity")
        assert kit.wait_for(browser, "#verdict").text.startswith("ALTÉRÉE")
        findings = browser.find_element(By.ID, "findings").text
        assert f"{node}" in findings
        assert "modified" in findings
        browser.find_element(By.CSS_SELECTOR, "#findings a").click()
        kit.wait_for(browser, "#exchange")
        assert console_site.text(browser, "x-purpose") == "FORGED"
        assert "bad" in str(browser.find_element(By.ID, "x-hash").get_attribute("class"))


# -- languages -----------------------------------------------------------------------


@pytest.mark.parametrize("browser", ["ar"], indirect=True)
def test_an_arabic_reader_gets_right_to_left_pages_and_can_switch(
    browser: webdriver.Chrome, scene: Scene
) -> None:
    console_site.sign_in_as(browser, scene.site, "dpo-demo")
    browser.find_element(By.ID, "lang-ar").click()
    kit.wait_for(browser, "#lang-fr")
    html = browser.find_element(By.TAG_NAME, "html")
    assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("ar", "rtl")
    assert browser.execute_script("return getComputedStyle(document.body).direction") == "rtl"
    browser.find_element(By.ID, "lang-fr").click()
    kit.wait_for(browser, "#lang-ar")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "ltr"
