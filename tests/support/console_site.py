"""The console as its tests meet it: `jisr console serve` in its own process beside a real
gateway, its development logins, and signing in through a real browser."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.support import browser, processes, registry_rows

PURPOSE = "ASD_ELIGIBILITY"

_DEV_LOGIN = re.compile(r"development login (\S+) / (\S+) ")


@dataclass
class Site:
    """A running console: its process, base URL, state directory and dev passwords."""

    proc: processes.Proc
    state_dir: Path
    passwords: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{self.proc.target}"


def start(
    gateway: str, pki_dir: Path, state_dir: Path, log: Path, env: Mapping[str, str] | None = None
) -> Site:
    """`jisr console serve --dev-accounts` on a free loopback port, against `gateway`
    (its store on PostgreSQL when `env` names JISR_DATABASE_URL)."""
    proc = processes.start(
        [
            "console",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--gateway",
            gateway,
            "--pki-dir",
            str(pki_dir),
            "--state-dir",
            str(state_dir),
            "--dev-accounts",
        ],
        log,
        env,
    )
    passwords = dict(_DEV_LOGIN.findall(proc.output()))
    return Site(proc, state_dir, passwords)


def seed_trail(target: str, pki_dir: Path, registry_dir: Path) -> tuple[str, str]:
    """A few exchanges for the console to show. DEMO: five eligibility checks, two looks at
    one person, two refusals; CNSS: one check. Returns the person's IDCS and the receipt
    of the first look."""
    members = registry_rows.first_members(registry_dir, 6)
    person = members[0][1]
    with JisrClient(target, Credentials.from_pki(pki_dir, "DEMO")) as demo:
        for household, _ in members[1:]:
            demo.verify(PURPOSE, household, "ASD")
        receipt = demo.person_status("AMO_ENROLMENT", person).receipt_token
        demo.person_status("AMO_ENROLMENT", person)
        for household, _ in members[1:3]:
            _refused(functools.partial(demo.verify, "SCHOOL_SUPPORT", household, "ASD"))
    with JisrClient(target, Credentials.from_pki(pki_dir, "CNSS")) as cnss:
        cnss.verify("AMO_ENROLMENT", members[1][0], "AMOT")
    return person, receipt


def _refused(call: Callable[[], object]) -> None:
    """Make a call the policy must refuse (its purpose is not granted)."""
    try:
        call()
    except JisrError as refused:
        if refused.reason != "PURPOSE_NOT_ALLOWED":
            raise
        return
    raise AssertionError("a call outside DEMO's purposes was not refused")


def sign_in(driver: webdriver.Chrome, site: Site, username: str, password: str) -> None:
    """Fill and send the login form (whatever the outcome)."""
    driver.get(site.url + "/login")
    browser.wait_for(driver, "#username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()


def sign_in_as(driver: webdriver.Chrome, site: Site, username: str) -> None:
    """Sign in with a development login and wait for the search page."""
    sign_in(driver, site, username, site.passwords[username])
    browser.wait_for(driver, "#search-form")


def text(driver: webdriver.Chrome, element_id: str) -> str:
    """The visible text of the element with that id."""
    return driver.find_element(By.ID, element_id).text
