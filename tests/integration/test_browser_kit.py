"""The test kit's browser (tests/support/browser.py) against a real page: Debian's headless
Chromium reads French and right-to-left Arabic text, sends the reader's language, and
saves a download where the kit looks for it, with no Selenium Manager and no download of
a browser or driver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager

from tests.support.browser import (
    chrome,
    require_browser,
    wait_for,
    wait_for_download,
    wait_for_text,
)

pytest_plugins = ("tests.support.browser",)

FRENCH = "Décision : ménage éligible à l'AMO Tadamon"
ARABIC = "الأسرة مؤهلة للتغطية الصحية"
EXPORT = "idcs;décision\nAB1234567;éligible\n".encode()

PAGES = {
    "/": f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Jisr</title></head>
<body>
<h1>{FRENCH}</h1>
<p id="ar" lang="ar" dir="rtl">{ARABIC}</p>
<a id="export" href="/export.csv" download>Exporter</a>
</body></html>""",
    "/ar": f"""<!doctype html>
<html lang="ar" dir="rtl"><head><meta charset="utf-8"><title>جسر</title></head>
<body><h1>{ARABIC}</h1></body></html>""",
}


class _Handler(BaseHTTPRequestHandler):
    languages: list[str]  # Accept-Language of each request, set per server

    def do_GET(self) -> None:
        self.languages.append(self.headers.get("Accept-Language", ""))
        if self.path in PAGES:
            self._send(PAGES[self.path].encode(), "text/html; charset=utf-8")
        elif self.path == "/export.csv":
            self._send(EXPORT, "text/csv; charset=utf-8", "attachment; filename=export.csv")
        else:
            self.send_error(404)

    def _send(self, body: bytes, kind: str, disposition: str | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if disposition:
            self.send_header("Content-Disposition", disposition)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows no server log."""


class Site:
    def __init__(self) -> None:
        self.languages: list[str] = []
        handler = type("Handler", (_Handler,), {"languages": self.languages})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def site() -> Iterator[Site]:
    """A tiny HTTP server on a free loopback port, in a thread."""
    site = Site()
    thread = threading.Thread(target=site.server.serve_forever, daemon=True)
    thread.start()
    yield site
    site.server.shutdown()
    site.server.server_close()
    thread.join(5)


def test_the_browser_reads_french_and_arabic_and_downloads(
    browser: webdriver.Chrome, site: Site, download_dir: Path
) -> None:
    browser.get(site.url + "/")
    wait_for_text(browser, FRENCH)
    assert site.languages[0].startswith("fr")
    assert browser.execute_script("return navigator.language") == "fr"

    arabic = wait_for(browser, "#ar")
    assert arabic.text == ARABIC
    assert browser.execute_script("return arguments[0].dir", arabic) == "rtl"
    assert arabic.value_of_css_property("direction") == "rtl"
    assert browser.execute_script("return document.dir") == ""  # the page itself is LTR

    browser.find_element(By.ID, "export").click()
    assert wait_for_download(download_dir, ".csv", timeout=10).read_bytes() == EXPORT

    browser.get(site.url + "/ar")
    wait_for_text(browser, ARABIC)
    assert browser.execute_script("return document.dir") == "rtl"


@pytest.mark.parametrize("browser", ["ar"], indirect=True)
def test_the_reader_language_is_the_tests_choice(browser: webdriver.Chrome, site: Site) -> None:
    browser.get(site.url + "/ar")
    wait_for_text(browser, ARABIC)
    assert site.languages[0].startswith("ar")
    assert browser.execute_script("return navigator.language") == "ar"


def test_selenium_manager_is_never_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The kit names the driver and the browser, so Selenium never looks for (or downloads)
    either: its manager, made to fail here, is not called."""
    require_browser()

    def refuse(self: SeleniumManager, args: list[str]) -> dict[str, str]:
        raise AssertionError(f"Selenium Manager was run: {args}")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)
    driver = chrome(download_dir=tmp_path)
    try:
        assert driver.capabilities["browserName"] == "chrome"
        assert driver.execute_script("return navigator.webdriver") is True
    finally:
        driver.quit()


def test_a_missing_download_is_reported(tmp_path: Path) -> None:
    (tmp_path / "export.csv.crdownload").write_bytes(b"")
    with pytest.raises(TimeoutError, match=r"export\.csv\.crdownload"):
        wait_for_download(tmp_path, ".csv", timeout=0.2)
