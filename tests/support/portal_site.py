"""The reference citizen portal as its tests meet it: `jisr portal serve --dev-login` in
its own process beside a real gateway, and a citizen signing in through a real browser."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.support import browser, processes


@dataclass
class Portal:
    gateway: processes.Proc
    portal: processes.Proc
    pki_dir: Path
    registry_dir: Path

    @property
    def url(self) -> str:
        return f"http://{self.portal.target}"


@contextmanager
def running(registry_dir: Path, pki_dir: Path, folder: Path) -> Iterator[Portal]:
    """A gateway (state in `folder`) and the portal as ANR, both on free loopback ports."""
    (folder / "state").mkdir()
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir)]
    # Checkpoints every second: an access is proved once sealed (the report's proofs).
    env = {"JISR_STATE_DIR": str(folder / "state"), "JISR_AUDIT_CHECKPOINT_SECONDS": "1"}
    gateway = processes.start([*args, "--pki-dir", str(pki_dir)], folder / "gateway.log", env)
    try:
        site = start(gateway.target, pki_dir, folder / "portal.log")
        try:
            yield Portal(gateway, site, pki_dir, registry_dir)
        finally:
            site.stop()
    finally:
        gateway.stop()


def start(gateway: str, pki_dir: Path, log: Path) -> processes.Proc:
    """`jisr portal serve --dev-login` as ANR on a free loopback port, against `gateway`."""
    serve = ["portal", "serve", "--listen", "127.0.0.1:0", "--gateway", gateway]
    return processes.start([*serve, "--pki-dir", str(pki_dir), "--dev-login"], log)


def sign_in(driver: webdriver.Chrome, portal: Portal, idcs: str) -> None:
    """The development sign-in as `idcs` (whatever the outcome)."""
    driver.get(portal.url + "/login")
    browser.wait_for(driver, "#idcs").send_keys(idcs)
    driver.find_element(By.ID, "login").click()
