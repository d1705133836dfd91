"""Check that pyproject.toml's lower bounds are true: install at the floors, run the checks.

Why: a floor such as `grpcio>=1.85` is a promise that 1.85.0 works. Nothing tests it when
every install takes the newest releases, and it was broken (the generated code in
gateway/pb refuses to import below the grpcio and protobuf that generated it). pip has no
lowest-resolution mode, so this script does a "lowest-direct" resolution by hand:

1. It reads the direct dependencies (`[project] dependencies`, the `dev` extra and the
   extras that `dev` brings in through its reference to the project itself,
   `jisr[server,console]`: that reference is no dependency to pin, but its extras'
   requirements are) and `[build-system] requires`, each of which must have a `>=` floor.
2. It writes a pip constraints file pinning each direct dependency to its floor
   (`name==floor`; extras such as `psycopg[binary]` are dropped there, as pip requires:
   the extra's own pins follow the pinned version), and a build-constraints file pinning
   the build backend (setuptools) to its floor. Transitive dependencies resolve as usual.
3. In a fresh virtualenv made with this interpreter (run it with the lowest Python the
   project supports): `pip install -e .[dev]` (which installs `server` and `console` too)
   under those constraints, then
   `python -c 'import gateway, consent, adapters'`, `pytest -q tests/unit`, the browser
   kit's test (Selenium at its floor driving Debian's Chromium, a few seconds), and ruff
   and mypy at their floors (which also check the code against the floors' APIs). The
   other integration tests are left out for time.

Run as `python3 .ci/lowest_direct.py` (what `make lowest` and .ci/run do). It prints each
step as it goes and ends with one summary line; the exit status is non-zero if a step
failed. `--keep DIR` makes the virtualenv at DIR and leaves it there, to look into a failure.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRA = "dev"  # what is installed; its `jisr[...]` names the other extras it brings in
IMPORTS = "import gateway, consent, adapters"
HINT = "raise the floor at fault in pyproject.toml, docs/dependencies.md says why each"
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
TESTS = [*PYTEST, "tests/unit"]
BROWSER = [*PYTEST, "tests/integration/test_browser_kit.py"]

# name, optional [extras], specifiers, optional ; marker (PEP 508, no URLs)
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*"
    r"(?P<specs>[^;]*?)\s*(?:;\s*(?P<marker>.+))?$"
)
_FLOOR = re.compile(r"^>=\s*(?P<version>[0-9][A-Za-z0-9.+!-]*)$")
# Not shown: pip's download lines and progress bars, and a warning per package where this
# machine's pip configuration names local indexes that lack it.
_NOISE = re.compile(
    r"^(WARNING: Location 'file:.*' is ignored: it is neither a file nor a dir"
    r"|\s*(Using cached|Downloading|Obtaining|━))"
)
_SUMMARY = re.compile(
    r"^=*\s*(?P<counts>\d+ (?:passed|failed|error).*?)(?: in [\d.]+s.*)?\s*=*\s*$"
)


@dataclass(frozen=True)
class Floor:
    """One direct dependency pinned to its lower bound."""

    name: str
    version: str
    marker: str | None

    def constraint(self) -> str:
        pin = f"{self.name}=={self.version}"
        return f"{pin} ; {self.marker}" if self.marker else pin


class StepFailedError(Exception):
    """A step failed; the message names it."""


def floor_of(requirement: str) -> Floor:
    """The floor of one requirement string; every direct dependency must have a `>=` one."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise StepFailedError(f"cannot read the requirement {requirement!r}")
    floors = [
        m.group("version")
        for spec in match.group("specs").split(",")
        if (m := _FLOOR.match(spec.strip())) is not None
    ]
    if len(floors) != 1:
        raise StepFailedError(f"{requirement!r}: needs exactly one `>=` lower bound")
    return Floor(match.group("name"), floors[0], match.group("marker"))


def read_floors(pyproject: Path) -> tuple[list[Floor], list[Floor]]:
    """(direct dependencies: base, then each extra that installing EXTRA installs;
    build-system requirements). An extra's reference to the project itself
    (`jisr[server,console]`) is left out: it is no dependency, and the extras it names are
    read in its place."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    own = project["name"]
    direct = [*project["dependencies"]]
    for extra in installed_extras(extras, own):
        direct += (r for r in extras[extra] if _own_extras(r, own) is None)
    build = data["build-system"]["requires"]
    return [floor_of(r) for r in direct], [floor_of(r) for r in build]


def installed_extras(extras: dict[str, list[str]], project: str) -> list[str]:
    """The extras that `pip install .[EXTRA]` installs: EXTRA, and those it names through
    the project itself, theirs in turn; in order, those named first (`server`, `console`,
    `dev` for `dev = ["jisr[server,console]", ...]`)."""
    found: list[str] = []

    def visit(extra: str) -> None:
        if extra in found:
            return
        if extra not in extras:
            raise StepFailedError(f"pyproject.toml has no extra {extra!r}")
        found.append(extra)
        for requirement in extras[extra]:
            for named in _own_extras(requirement, project) or []:
                visit(named)

    visit(EXTRA)
    return [*found[1:], found[0]]


def _own_extras(requirement: str, project: str) -> list[str] | None:
    """The extras a reference to `project` itself names (`jisr[server,console]`: server,
    console), or None when `requirement` names another distribution."""
    match = _REQUIREMENT.match(requirement)
    if match is None or _normal(match.group("name")) != _normal(project):
        return None
    return [e.strip() for e in (match.group("extras") or "").split(",") if e.strip()]


def _normal(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def write_constraints(path: Path, floors: list[Floor]) -> None:
    lines = ["# Written by .ci/lowest_direct.py: direct dependencies at their floors."]
    path.write_text("\n".join([*lines, *(f.constraint() for f in floors)]) + "\n")


def run(what: str, args: list[str]) -> tuple[bool, str]:
    """Run one command in the project root, its output streamed as it comes (less pip's
    noise). Returns (whether it succeeded, its output)."""
    print(f"lowest-direct: {what}", flush=True)
    lines: list[str] = []
    with subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not _NOISE.match(line):
                print(line, end="", flush=True)
            lines.append(line)
    return proc.returncode == 0, "".join(lines)


def setup(what: str, args: list[str]) -> None:
    """A step the checks need: stop at once if it fails."""
    if not run(what, args)[0]:
        raise StepFailedError(what)


def counts(output: str) -> str:
    """pytest's closing counts, if the output has them: ' (3 failed, 10 passed)'."""
    found = [m.group("counts") for line in output.splitlines() if (m := _SUMMARY.match(line))]
    return f" ({found[-1]})" if found else ""


def installed(python: Path, floors: list[Floor]) -> list[str]:
    """`name version` of each direct dependency as installed, to show what was tested."""
    code = (
        "import sys\nfrom importlib.metadata import version\n"
        "for n in sys.argv[1:]: print(n, version(n))"
    )
    names = sorted({f.name for f in floors})
    out = subprocess.run(
        [str(python), "-c", code, *names], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return out.splitlines()


def check(venv: Path) -> tuple[list[str], list[str]]:
    """Install in venv, then every check, whether or not an earlier one failed.
    Returns (checks passed, checks failed), each named for the summary."""
    direct, build = read_floors(ROOT / "pyproject.toml")
    print(f"lowest-direct: {len(direct)} direct dependencies at their floors:", flush=True)
    print("  " + ", ".join(f.constraint() for f in direct), flush=True)
    print("  build: " + ", ".join(f.constraint() for f in build), flush=True)
    constraints = venv.parent / f"{venv.name}-constraints.txt"
    build_constraints = venv.parent / f"{venv.name}-build-constraints.txt"
    write_constraints(constraints, direct)
    write_constraints(build_constraints, build)
    bin_ = venv / "bin"
    python = str(bin_ / "python")
    try:
        setup(f"fresh virtualenv at {venv} (Python {sys.version.split()[0]})", [
            sys.executable, "-m", "venv", "--clear", str(venv),
        ])  # fmt: skip
        pip = [python, "-m", "pip", "--disable-pip-version-check"]
        # pip is the installer, not a dependency: the newest (it has --build-constraint).
        setup("newest pip", [*pip, "install", "-q", "--upgrade", "pip"])
        setup(f"pip install -e .[{EXTRA}] under the floors", [
            *pip, "install", "-c", str(constraints),
            "--build-constraint", str(build_constraints), "-e", f".[{EXTRA}]",
        ])  # fmt: skip
    finally:
        constraints.unlink(missing_ok=True)
        build_constraints.unlink(missing_ok=True)
    for line in installed(bin_ / "python", direct):
        print(f"  {line}", flush=True)
    checks = [
        ("imports", [python, "-c", IMPORTS]),
        ("tests/unit", [python, *TESTS]),
        ("browser kit", [python, *BROWSER]),
        # The linters at their floors also check the code against the floors' APIs and
        # types (mypy found bench's use of a pyjwt type newer than pyjwt's old floor).
        ("ruff check", [str(bin_ / "ruff"), "check", "--no-cache", "."]),
        ("ruff format", [str(bin_ / "ruff"), "format", "--no-cache", "--check", "."]),
        ("mypy", [str(bin_ / "mypy"), "--cache-dir", str(venv / "mypy-cache")]),
    ]
    passed: list[str] = []
    failed: list[str] = []
    for name, args in checks:
        shown = " ".join(a.removeprefix(f"{bin_}/") for a in args)
        ok, output = run(f"{name}: {shown}", args)
        (passed if ok else failed).append(name + counts(output))
    return passed, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="make the venv here and keep it")
    args = parser.parse_args(argv)
    start = time.monotonic()
    tmp = None if args.keep else Path(tempfile.mkdtemp(prefix="jisr-lowest-"))
    venv: Path = args.keep.resolve() if args.keep else Path(str(tmp)) / "venv"
    try:
        passed, failed = check(venv)
    except StepFailedError as exc:
        took = f"{time.monotonic() - start:.0f} s"
        print(f"lowest-direct: FAILED: {exc} ({took}); {HINT}", flush=True)
        return 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    took = f"{time.monotonic() - start:.0f} s"
    if failed:
        print(
            f"lowest-direct: FAILED at pyproject.toml's floors: {', '.join(failed)}; "
            f"passed: {', '.join(passed) or 'none'} ({took}); {HINT}",
            flush=True,
        )
        return 1
    print(f"lowest-direct: ok at pyproject.toml's floors: {', '.join(passed)} ({took})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
