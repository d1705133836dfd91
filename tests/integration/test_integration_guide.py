"""docs/integration.md runs as written against the state `make run` leaves: the registry
of `jisr demo-data --households 10000 --seed 1` in var/, a PKI in var/pki with DEMO.

The guide's shell blocks are run in order by bash, from a directory laid out like the
repository (`.venv`, `var/`), the SDK example saved where the guide says. Two edits only,
so that parallel runs never collide: the gateway listens on a free port, and the guide's
`127.0.0.1:50051` (the SDK's target, `jisr call`'s default) is pointed at it. The guide's
first block (issuing CNSS) runs before the gateway starts, so no test waits for the gateway
to notice a new institution."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import processes

GUIDE = Path(__file__).parents[2] / "docs" / "integration.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
SDK_FILE = re.compile(r"Save this as `([\w.]+)`")


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(GUIDE.read_text()) if kind == lang]


def run_shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def make_run_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout after `make run` has built its state (the Makefile's own commands)."""
    root = tmp_path_factory.mktemp("checkout")
    (root / ".venv").symlink_to(Path(sys.prefix))
    built = run_shell(
        ".venv/bin/jisr demo-data --households 10000 --seed 1 --data-dir var\n"
        ".venv/bin/jisr pki --dir var/pki init\n"
        ".venv/bin/jisr pki --dir var/pki issue DEMO\n",
        root,
    )
    assert built.returncode == 0, built.stderr
    return root


@pytest.fixture(scope="module")
def guide_run(
    make_run_state: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.CompletedProcess[str]]:
    root = make_run_state
    setup, *rest = blocks("sh")
    issued = run_shell(setup, root)
    assert issued.returncode == 0, issued.stderr
    log = tmp_path_factory.mktemp("logs") / "guide-gateway.log"
    var = root / "var"
    proc = processes.start(
        ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(var), "--pki-dir", str(var / "pki")],
        log,
    )
    try:
        target = proc.target
        (sdk,) = blocks("python")
        sdk_file = SDK_FILE.search(GUIDE.read_text())
        assert sdk_file is not None, "the guide names the file the SDK example is saved as"
        (root / sdk_file.group(1)).write_text(sdk.replace("127.0.0.1:50051", target))
        script = "\n".join(rest).replace("jisr call ", f"jisr call --target {target} ")
        yield run_shell(script, root)
    finally:
        proc.stop()


def test_every_command_of_the_integration_guide_runs_as_written(
    guide_run: subprocess.CompletedProcess[str],
) -> None:
    assert guide_run.returncode == 0, guide_run.stderr


def test_the_guide_sdk_example_prints_reason_names_and_what_cnss_is_withheld(
    guide_run: subprocess.CompletedProcess[str],
) -> None:
    decision, withheld = guide_run.stdout.splitlines()[:2]
    assert decision.startswith("True ['REASON_CODE_SCORE_BELOW_THRESHOLD', ")
    assert withheld == "('score_band',)"
