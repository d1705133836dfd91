"""Every command in the README and the docs runs as written.

Each document's `sh` blocks run in order, as one bash session (variables carry from block
to block), from a fresh checkout-like directory: `.venv` and the sources as in the
repository, and `var/` as `make run` leaves it (demo data, a development PKI with DEMO),
with `jisr serve` on `make run`'s address, 127.0.0.1:50051. A `python` block is a file the
reader saves and runs (below), or a fragment that says why it is not run.

What a reader may rely on, and this test holds:
- a command exits 0, unless a trailing comment names the reason it fails with (a stable
  reason of docs/errors.md, e.g. `# INVALID_ARGUMENT INVALID_IDCS`): then it must fail,
  and its output must name that reason;
- a block that cannot run here says why, in an HTML comment on the line before it:
  `<!-- not run: REASON -->` (e.g. it needs a collector, or takes an hour);
- a block the document tells the reader to save (`<!-- file: NAME -->` on the line before
  it) is saved as NAME before the document's commands run, and is not run by itself.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.base.errors import Reason
from tests.support import processes

ROOT = Path(__file__).parents[2]
DOCUMENTS = sorted(["README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))])
MAKE_RUN_ADDRESS = ("127.0.0.1", 50051)
DCI_ADDRESS = "127.0.0.1:8090"  # `make run`'s DCI facade (docs/dci.md)
HEALTH_ADDRESS = "127.0.0.1:8071"  # `make run`'s gateway probes (docs/deployment.md)
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (.+\S) -->$")
SAVED_AS = re.compile(r"^<!-- file: ([\w.-]+) -->$")
# A trailing comment naming a stable reason: the command is documented to fail with it.
REASONS = {reason.value for reason in Reason}
FAILED = re.compile(r"^__FAILED__ (\d+) (\d+)$", re.MULTILINE)
HOUSEHOLDS = 2_000  # `make run` makes 10,000; the docs' commands need no more than this


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    not_run: str | None
    saved_as: str | None


def blocks(document: str) -> list[Block]:
    """The fenced code blocks of a document, with their `not run` reasons."""
    found: list[Block] = []
    lines = (ROOT / document).read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        before = lines[index - 1] if index else ""
        not_run, saved_as = NOT_RUN.match(before), SAVED_AS.match(before)
        found.append(
            Block(
                document,
                index + 1,
                opening.group(1),
                "\n".join(lines[index + 1 : end]) + "\n",
                not_run.group(1) if not_run else None,
                saved_as.group(1) if saved_as else None,
            )
        )
        index = end + 1
    return found


def runnable(document: str) -> list[Block]:
    return [b for b in blocks(document) if b.language == "sh" and not b.not_run]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory like a fresh clone after `make run`: sources and `.venv` linked, `var/`
    made the way the Makefile makes it, and the gateway serving on 127.0.0.1:50051."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(MAKE_RUN_ADDRESS)
        except OSError:
            if os.environ.get("CI"):
                pytest.fail("127.0.0.1:50051 is taken: the documented commands need it")
            pytest.skip("127.0.0.1:50051 is taken (is `make run` running?); runs in CI")
    home = tmp_path_factory.mktemp("checkout")
    for entry in ROOT.iterdir():
        if entry.name not in ("var", ".git") and not entry.name.startswith(".coverage"):
            (home / entry.name).symlink_to(entry)
    jisr = str(ROOT / ".venv" / "bin" / "jisr")
    for args in (
        ["demo-data", "--households", str(HOUSEHOLDS), "--seed", "1", "--data-dir", "var"],
        ["pki", "--dir", "var/pki", "init"],
        ["pki", "--dir", "var/pki", "issue", "DEMO"],
    ):
        subprocess.run([jisr, *args], cwd=home, check=True, capture_output=True, timeout=300)
    secret = subprocess.run(
        [jisr, "dci", "client", "add", "demo", "--institution", "DEMO", "--data-dir", "var"],
        cwd=home, check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    (home / "var" / "dci-demo.secret").write_text(secret, encoding="utf-8")
    state = {"JISR_STATE_DIR": str(home / "var")}
    gateway = processes.start(  # as `make run`: one process per CPU, probes on 8071
        ["serve", "--data-dir", str(home / "var"), "--pki-dir", str(home / "var" / "pki"),
         "--health-listen", HEALTH_ADDRESS],
        home / "gateway.log",
        {"JISR_LISTEN": "127.0.0.1:50051", "JISR_PROCESSES": "auto", **state},
    )  # fmt: skip
    dci = processes.start(
        ["dci", "serve", "--listen", DCI_ADDRESS, "--data-dir", str(home / "var"),
         "--pki-dir", str(home / "var" / "pki")],
        home / "dci.log",
        state,
    )  # fmt: skip
    yield home
    dci.stop()
    gateway.stop()
    shutil.rmtree(home / "var", ignore_errors=True)


def _bash(blocks_: list[Block]) -> str:
    """The document's sh blocks as one script: each failing command reports its line."""
    lines = ["set -uo pipefail", "trap 'echo \"__FAILED__ $LINENO $?\" >&2' ERR"]
    for block in blocks_:
        lines.extend(block.text.splitlines())
    return "\n".join(lines) + "\n"


def _documented_failures(script: str) -> dict[int, set[str]]:
    """Line (1-based) → the reasons its trailing comment says the command fails with."""
    expected: dict[int, set[str]] = {}
    for number, line in enumerate(script.splitlines(), start=1):
        _, hash_, comment = line.partition(" # ")
        named = set(re.findall(r"[A-Z][A-Z_]+", comment)) & REASONS if hash_ else set()
        if named:
            expected[number] = named
    return expected


OUTPUTS: dict[str, str] = {}


def _run_sh(home: Path, document: str) -> str:
    """Run the document's commands once (its saved files first); their output."""
    if document in OUTPUTS:
        return OUTPUTS[document]
    for block in blocks(document):
        if block.saved_as:
            (home / block.saved_as).write_text(block.text, encoding="utf-8")
    script = _bash(runnable(document))
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    failed = {int(line): int(code) for line, code in FAILED.findall(result.stderr)}
    expected = _documented_failures(script)
    lines = script.splitlines()
    unexpected = {n: lines[n - 1] for n in failed if n not in expected}
    assert not unexpected, f"{document}: failed:\n{unexpected}\n{result.stderr[-3000:]}"
    missing = {n: lines[n - 1] for n in expected if n not in failed}
    assert not missing, f"{document}: documented to fail, but did not:\n{missing}"
    output = result.stdout + result.stderr
    for number, reasons in expected.items():
        assert reasons & set(re.findall(r"[A-Z][A-Z_]+", output)), (document, lines[number - 1])
    assert result.returncode == 0, f"{document}:\n{result.stderr[-3000:]}"
    OUTPUTS[document] = result.stdout
    return result.stdout


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if runnable(d)])
def test_every_shell_command_of_the_document_runs_as_written(checkout: Path, document: str) -> None:
    _run_sh(checkout, document)


def test_the_sdk_example_of_the_integration_guide_prints_reason_names_and_what_is_withheld(
    checkout: Path,
) -> None:
    lines = _run_sh(checkout, "docs/integration.md").splitlines()
    decision = next(line for line in lines if line.startswith(("True [", "False [")))
    assert decision.startswith("True ['REASON_CODE_SCORE_BELOW_THRESHOLD', ")
    assert lines[lines.index(decision) + 1] == "('score_band',)"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_command_block_is_marked_sh_so_that_it_runs(document: str) -> None:
    unmarked = [
        b.line
        for b in blocks(document)
        if b.language == "" and b.not_run is None and _looks_like_commands(b.text)
    ]
    assert not unmarked, f"{document}: command blocks not marked sh: lines {unmarked}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_python_example_is_saved_and_run_or_says_why_not(document: str) -> None:
    loose = [
        b.line
        for b in blocks(document)
        if b.language == "python" and b.not_run is None and b.saved_as is None
    ]
    assert not loose, f"{document}: python blocks neither saved (file:) nor not run: {loose}"


def _looks_like_commands(text: str) -> bool:
    starts = ("jisr ", ".venv/bin/", "make ", "$ ")
    return any(line.lstrip().startswith(starts) for line in text.splitlines())
