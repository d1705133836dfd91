"""The test kit's browser: Debian's headless Chromium driven by Selenium, nothing downloaded.

The browser and its driver are Debian's packages (`apt-get install chromium
chromium-driver`, which .ci/run does on CI): Selenium is given both paths, the driver
through a Service and the browser as `binary_location`, so it never runs Selenium Manager
(the tool that would otherwise look for, and download, a browser and a driver); and
SE_OFFLINE=true (Selenium Manager's documented offline switch) makes it fail rather than
download if some path ever did reach it.

Use the `browser` fixture: load this module as a plugin, with
`pytest_plugins = ("tests.support.browser",)` in the test module (or once in the root
conftest.py), which also registers the hook that saves a screenshot and the page's source
when a test fails. The browser speaks French unless the test asks otherwise, e.g.
`@pytest.mark.parametrize("browser", ["ar"], indirect=True)`; its downloads land in the
`download_dir` fixture's folder (`wait_for_download`). Waits are explicit (`wait_for`,
`wait_for_text`): the implicit wait is 0, so a missing element fails at once where the
test does not wait for it.

Where Chromium or its driver is missing, a test that needs them is skipped with the
command that installs them, except on CI (CI=true), where it fails.

PYTEST_DONT_REWRITE: a test module imports these helpers before `pytest_plugins` loads
the module as a plugin; it has no assert to rewrite, and pytest then need not warn so.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
WIDTH, HEIGHT = 1280, 900
PAGE_LOAD_S = 30.0
WAIT_S = 20.0

_FAILED = pytest.StashKey[bool]()


def missing() -> list[Path]:
    """Which of Debian's chromium and chromedriver are not installed."""
    return [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]


def require_browser() -> None:
    """Skip the calling test where Chromium or chromedriver is missing; fail on CI."""
    absent = missing()
    if not absent:
        return
    message = f"{' and '.join(map(str, absent))} missing: {INSTALL} (as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs the browser: {message}", pytrace=False)
    pytest.skip(message)


def chrome(
    lang: str = "fr", download_dir: Path | None = None, log: Path | None = None
) -> webdriver.Chrome:
    """A new headless Chromium whose pages see `lang` as the reader's language (the
    Accept-Language header and navigator.language). Downloads go to `download_dir`, without
    a prompt, when given; chromedriver's log goes to `log` when given. The caller quits it."""
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--disable-dev-shm-usage",  # /dev/shm is small in containers
        f"--window-size={WIDTH},{HEIGHT}",
        f"--lang={lang}",
        # No calls home: there is no network to call, and the tests need none.
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-default-browser-check",
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    prefs: dict[str, object] = {"intl.accept_languages": lang}
    if download_dir is not None:
        prefs |= {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
        }
    options.add_experimental_option("prefs", prefs)
    service = webdriver.ChromeService(
        executable_path=str(CHROMEDRIVER), log_output=str(log) if log else subprocess.DEVNULL
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(PAGE_LOAD_S)
    driver.implicitly_wait(0)
    return driver


def wait_for(driver: webdriver.Chrome, css_selector: str, timeout: float = WAIT_S) -> WebElement:
    """The first element matching `css_selector` once it is visible."""
    located = expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css_selector))
    return WebDriverWait(driver, timeout).until(
        located, f"no visible {css_selector!r} on {driver.current_url} after {timeout:g} s"
    )


def wait_for_text(driver: webdriver.Chrome, text: str, timeout: float = WAIT_S) -> None:
    """Wait until the page's visible text contains `text`."""
    shown = expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "body"), text)
    WebDriverWait(driver, timeout).until(
        shown, f"{text!r} not shown on {driver.current_url} after {timeout:g} s"
    )


def wait_for_download(directory: Path, suffix: str, timeout: float = WAIT_S) -> Path:
    """The file ending in `suffix` that a download put in `directory`, once complete
    (Chromium writes a `.crdownload` file and renames it when done)."""
    deadline = time.monotonic() + timeout
    while True:
        done = sorted(p for p in directory.glob(f"*{suffix}") if p.is_file())
        if done:
            return done[0]
        if time.monotonic() >= deadline:
            found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
            raise TimeoutError(
                f"no *{suffix} in {directory} after {timeout:g} s (it holds {found or 'nothing'})"
            )
        time.sleep(0.05)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, object]:
    """Notes on the test whether its setup or call failed, for the `browser` fixture's
    teardown (pytest's recipe for a fixture that acts on the test's outcome)."""
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


def failed(item: pytest.Item) -> bool:
    """Whether the test's setup or call failed (as far as the hook above saw)."""
    return item.stash.get(_FAILED, False)


@pytest.fixture
def download_dir(tmp_path: Path) -> Path:
    """Where the `browser` fixture's downloads land."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(
    request: pytest.FixtureRequest, tmp_path: Path, download_dir: Path
) -> Iterator[webdriver.Chrome]:
    """A headless Chromium for one test (French unless parametrized with another language).
    When the test fails, its last page is saved as a screenshot and HTML under tmp_path."""
    require_browser()
    lang = str(getattr(request, "param", "fr"))
    driver = chrome(lang, download_dir, log=tmp_path / "chromedriver.log")
    try:
        yield driver
        if failed(request.node):
            saved = tmp_path / "browser"
            saved.mkdir(exist_ok=True)
            driver.save_screenshot(str(saved / "page.png"))
            (saved / "page.html").write_text(driver.page_source, encoding="utf-8")
            print(f"browser: {driver.current_url} saved in {saved} (page.png, page.html)")
    finally:
        driver.quit()
