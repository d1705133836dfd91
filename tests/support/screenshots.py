"""The console's and the portal's screenshots in docs/, taken the way their tests see them.

    .venv/bin/python -m tests.support.screenshots docs/images

A synthetic registry, a development PKI, a gateway and the console, each in a temporary
directory, on free loopback ports; a few exchanges and a burst of refusals; then headless
Chromium signs in as the DEMO institution's DPO and as the CNDP and saves each main page.
Nothing here is real: the registry is generated.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

from adapters.demo_data import generate
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.contests import CITIZEN_PURPOSE, Contests
from tests.support import (
    browser,
    console_site,
    identities,
    portal_site,
    processes,
    registry_rows,
)

HOUSEHOLDS = 500


def _burst(target: str, pki_dir: Path, registry_dir: Path) -> None:
    """21 refused checks by DEMO: a refusal burst on the attention list."""
    household = registry_rows.first_members(registry_dir, 1)[0][0]
    with JisrClient(target, Credentials.from_pki(pki_dir, "DEMO")) as demo:
        for _ in range(21):
            with contextlib.suppress(JisrError):
                demo.verify("SCHOOL_SUPPORT", household, "ASD")


def _contest(target: str, pki_dir: Path, registry_dir: Path) -> None:
    """A citizen's contest, through the ANR portal, of an eligibility check DEMO made."""
    household = registry_rows.first_members(registry_dir, 2)[1][0]
    with (
        JisrClient(target, Credentials.from_pki(pki_dir, "DEMO")) as demo,
        JisrClient(target, Credentials.from_pki(pki_dir, "ANR")) as anr,
    ):
        record = str(demo.verify("ASD_ELIGIBILITY", household, "ASD").receipt["audit"])
        statement = "Je n'ai jamais demandé l'ASD : pourquoi avoir consulté mon ménage ?"
        Contests(anr.acting_as("citizen-ref-1"), CITIZEN_PURPOSE).open(household, record, statement)


def _save(driver: webdriver.Chrome, out: Path, name: str) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(browser.WIDTH, min(int(height) + 140, 1600))
    driver.save_screenshot(str(out / name))
    driver.set_window_size(browser.WIDTH, browser.HEIGHT)
    print(f"screenshots: {out / name}", flush=True)


def _pages(driver: webdriver.Chrome, site: console_site.Site, person: str, out: Path) -> None:
    driver.get(site.url + "/login")
    browser.wait_for(driver, "#username")
    _save(driver, out, "console-login.png")
    console_site.sign_in_as(driver, site, "dpo-demo")
    browser.wait_for(driver, "#f-subject").send_keys(person)
    driver.find_element(By.ID, "search").click()
    browser.wait_for(driver, "#results")
    _save(driver, out, "console-search.png")
    driver.find_element(By.CSS_SELECTOR, "#results a.open").click()
    browser.wait_for(driver, "#exchange")
    _save(driver, out, "console-exchange.png")
    driver.find_element(By.ID, "nav-attention").click()
    browser.wait_for(driver, "#findings")
    _save(driver, out, "console-attention.png")
    driver.find_element(By.ID, "nav-contests").click()
    browser.wait_for(driver, "#cases a.open").click()
    browser.wait_for(driver, "#answer-text")
    _save(driver, out, "console-case.png")
    driver.find_element(By.ID, "lang-ar").click()
    browser.wait_for(driver, "#lang-fr")
    _save(driver, out, "console-attention-ar.png")
    driver.find_element(By.ID, "lang-fr").click()
    browser.wait_for(driver, "#lang-ar")
    driver.find_element(By.ID, "logout").click()
    console_site.sign_in_as(driver, site, "cndp")
    driver.get(site.url + "/integrity")
    browser.wait_for(driver, "#verdict")
    _save(driver, out, "console-integrity.png")


def _portal(driver: webdriver.Chrome, site: portal_site.Portal, person: str, out: Path) -> None:
    """The citizen's report and a contest on the reference portal."""
    portal_site.sign_in(driver, site, person)
    browser.wait_for(driver, "#accesses")
    _save(driver, out, "portal-report.png")
    browser.wait_for(driver, "a.contest-link").click()
    browser.wait_for(driver, "#statement").send_keys(
        "Je n'ai pas demandé l'AMO : pourquoi DEMO a-t-elle vérifié si je suis en vie ?"
    )
    driver.find_element(By.ID, "open-case").click()
    browser.wait_for(driver, "#case-state")
    _save(driver, out, "portal-case.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where the PNG files go (e.g. docs/images)")
    args = parser.parse_args(argv)
    if browser.missing():
        print(f"screenshots: needs Chromium: {browser.INSTALL}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jisr-screenshots-") as tmp:
        root = Path(tmp)
        generate(root / "registry", HOUSEHOLDS, 1)
        pki_dir = identities.make_pki(root / "pki")
        (root / "state").mkdir()
        serve = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(root / "registry")]
        gateway = processes.start(
            [*serve, "--pki-dir", str(pki_dir)],
            root / "gateway.log",
            {"JISR_STATE_DIR": str(root / "state")},
        )
        try:
            person, _ = console_site.seed_trail(gateway.target, pki_dir, root / "registry")
            _burst(gateway.target, pki_dir, root / "registry")
            _contest(gateway.target, pki_dir, root / "registry")
            site = console_site.start(gateway.target, pki_dir, root / "console", root / "c.log")
            portal = portal_site.start(gateway.target, pki_dir, root / "p.log")
            driver = browser.chrome("fr")
            try:
                _pages(driver, site, person, args.out)
                citizen = portal_site.Portal(gateway, portal, pki_dir, root / "registry")
                _portal(driver, citizen, person, args.out)
            finally:
                driver.quit()
                portal.stop()
                site.proc.stop()
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
