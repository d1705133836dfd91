"""The console as its tests meet it: `jisr console serve` in its own process beside a real
gateway, its development logins, and signing in through a real browser."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.support import browser, processes

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
