"""The console's public transparency page, in a real browser against `jisr console serve`:
anyone, without signing in, reads the month's signed indicators, small counts masked; a
publication that does not verify is not shown (docs/transparency.md, "The public page")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from gateway.security import pki
from gateway.transparency import disclosure, publication
from gateway.transparency.indicators import Counts
from gateway.transparency.publication import Method
from tests.support import browser as kit
from tests.support import processes

pytestmark = pytest.mark.integration

ROWS: dict[tuple[str, ...], int] = {
    ("CNSS", "AMO_ENROLMENT", "VerifyEligibility", "permit", ""): 120,
    ("ANSS", "ASD_ELIGIBILITY", "VerifyEligibility", "permit", ""): 45,
    ("MEN", "SCHOOL_SUPPORT", "VerifyEligibility", "deny", "CONSENT_MISSING"): 3,
    ("MS", "HEALTH_COVERAGE_CHECK", "GetPersonStatus", "deny", "PURPOSE_NOT_ALLOWED"): 4,
}


def _publish(folder: Path, pki_dir: Path, month: str) -> None:
    counts = Counts(
        "exchanges",
        "Exchanges through the gateway.",
        ("institution", "purpose", "method", "decision", "reason"),
        ROWS,
    )
    key, kid = pki.load_gateway_signing_key(pki_dir)
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    tables = [disclosure.protect(counts, 10)]
    files = publication.contents(month, now, Method(10), tables, [])
    publication.write(folder / month, month, files, key=key, kid=kid, now=now)


@pytest.fixture(scope="module")
def console(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("public")
    publications = folder / "publications"
    _publish(publications, pki_dir, "2026-11")
    _publish(publications, pki_dir, "2026-10")
    tampered = publications / "2026-10" / "exchanges.csv"
    tampered.write_text(tampered.read_text(encoding="utf-8").replace("120", "12"), "utf-8")
    proc = processes.start(
        [
            "console",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--gateway",
            "127.0.0.1:9",  # not needed by the public page
            "--pki-dir",
            str(pki_dir),
            "--state-dir",
            str(folder),
            "--publications",
            str(publications),
        ],
        folder / "console.log",
    )
    try:
        yield f"http://{proc.target}"
    finally:
        proc.stop()


def test_anyone_reads_the_latest_signed_month_without_signing_in(
    browser: webdriver.Chrome, console: str
) -> None:
    browser.get(console + "/transparency")
    assert kit.wait_for(browser, "#signature").text == (
        "Publication de 2026-11 : signature de la passerelle vérifiée, fichiers intacts."
    )
    section = browser.find_element(By.ID, "table-exchanges")
    assert "CNSS" in section.text
    assert "120" in section.text
    assert browser.find_elements(By.ID, "logout") == []


def test_small_counts_and_the_total_that_would_reveal_them_are_masked(
    browser: webdriver.Chrome, console: str
) -> None:
    browser.get(console + "/transparency?month=2026-11")
    section = kit.wait_for(browser, "#table-exchanges")
    masked = [e.text for e in section.find_elements(By.CSS_SELECTOR, ".suppressed")]
    # 3 and 4 masked; their sum, 7, is below 10, so the total (172) would bound each.
    assert masked == ["masqué (moins de 10)", "masqué (moins de 10)", "masqué"]
    assert "172" not in section.text


def test_the_chart_is_drawn_in_the_page_from_the_published_figures(
    browser: webdriver.Chrome, console: str
) -> None:
    browser.get(console + "/transparency")
    bars = kit.wait_for(browser, "#table-exchanges svg").find_elements(By.TAG_NAME, "rect")
    assert len(bars) == 2  # the two published cells; masked ones are not drawn


def test_a_publication_that_does_not_verify_is_not_shown(
    browser: webdriver.Chrome, console: str
) -> None:
    browser.get(console + "/transparency?month=2026-10")
    assert "ne se vérifie pas" in kit.wait_for(browser, "#signature").text
    assert (
        "exchanges.csv: changed since it was signed" in browser.find_element(By.ID, "problems").text
    )
    assert browser.find_elements(By.ID, "table-exchanges") == []
