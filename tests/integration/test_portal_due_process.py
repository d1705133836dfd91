"""A household learns of a proposed end of its benefit in the citizen portal and contests
it there (docs/events.md, "Due process"): a real gateway on a registry of its own, `jisr
registry apply` rescoring the household, the portal in its own process, a real browser."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.trail import REPORT_PURPOSE, Trail
from tests.support import browser as kit
from tests.support import portal_site
from tests.support.event_site import ASD, Site, started_site
from tests.support.portal_site import Portal

pytestmark = pytest.mark.integration

# ASD's notice outlasts the test: the action stays pending while the citizen contests it.
NOTICE_S = {"ASD": 600.0, "AMOT": 600.0}
WORDS = "vous prévenir qu'une aide de votre ménage prendrait fin"


@pytest.fixture(scope="module")
def site(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("portal-due")
    with started_site("sqlite", 1, pki_dir, folder, NOTICE_S) as started:
        yield started


@pytest.fixture(scope="module")
def portal(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    log = tmp_path_factory.mktemp("portal-due-log") / "portal.log"
    proc = portal_site.start(site.gateways[0].target, site.pki_dir, log)
    try:
        yield Portal(site.gateways[0], proc, site.pki_dir, site.data_dir)
    finally:
        proc.stop()


def _until(done: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


def _proposed(site: Site) -> tuple[str, str]:
    """A member of a household whose ASD benefit a rescoring proposes to end, once the
    proposal is in the household's report: (member IDCS, household id)."""
    household = next(h for h in site.households if h.score < 9.3 and not h.schemes)
    site.apply(
        {
            "id": f"RSU-PORTAL-{next(site.serial)}",
            "source": "RSU",
            "type": "household.rescored",
            "effective": "2026-11-04",
            "household_id": household.household_id,
            "score": 12.0,
        }
    )
    anss = site.client("ANSS")

    def pending() -> bool:
        decision = anss.verify(ASD, household.household_id, "ASD").message.decision
        return decision.payment == pb.PAYMENT_HELD

    _until(pending)
    member = household.members[0]
    trail = Trail(site.client("ANR"), REPORT_PURPOSE)

    def recorded() -> bool:
        """The sweep has written ASD's proposal in ANSS's name (AMO Tadamon's, in CNSS's, may
        come before or after it)."""
        entries = trail.report(member).message.entries
        return any(e.purpose == "DUE_PROCESS" and e.institution == "ANSS" for e in entries)

    _until(recorded)
    return member, household.household_id


def test_the_household_sees_the_proposed_action_in_its_report(
    browser: webdriver.Chrome, portal: Portal, site: Site
) -> None:
    person, _ = _proposed(site)
    portal_site.sign_in(browser, portal, person)
    kit.wait_for(browser, ".access-line")
    lines = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".access-line")]
    assert any(WORDS in line and "ANSS" in line for line in lines), lines


def test_the_household_contests_the_proposed_action_from_its_report(
    browser: webdriver.Chrome, portal: Portal, site: Site
) -> None:
    person, household = _proposed(site)
    portal_site.sign_in(browser, portal, person)
    kit.wait_for(browser, "li.access")
    entries = browser.find_elements(By.CSS_SELECTOR, "li.access")
    entry = next(e for e in entries if WORDS in e.text and "ANSS" in e.text)
    entry.find_element(By.CSS_SELECTOR, "a.contest-link").click()
    assert WORDS in kit.wait_for(browser, "#contested-access").text
    kit.wait_for(browser, "#statement").send_keys("Notre revenu n'a pas changé.")
    browser.find_element(By.ID, "open-case").click()
    state = kit.wait_for(browser, "#case-state").text
    assert "ANSS" in state
    anss = site.client("ANSS")

    def contested() -> bool:
        decision = anss.verify(ASD, household, "ASD").message.decision
        return decision.pending_action.contested

    _until(contested)
