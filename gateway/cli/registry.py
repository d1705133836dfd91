"""`jisr registry apply FILE`: a source registry's file of changes into the embedded
registry, whole or not at all (docs/events.md, "A file of changes").

Exit status is what a registry operator's script acts on: 0 applied (lines already in the
journal skipped), 1 the file has wrong lines and nothing was applied (each printed as
FILE:LINE: MEMBER: what is wrong), 2 nothing was read (no such file or registry, a bad
argument, the registry busy). Errors are one line, never a traceback, and never quote a
value of the file: IDCS and household ids do not belong in a terminal log.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from adapters.registry_changes import (
    MAX_SHOWN,
    InvalidFileError,
    Summary,
    apply_changes,
    read_lines,
)
from adapters.registry_db import REGISTRY_FILE, RegistryError

EXIT_APPLIED = 0
EXIT_INVALID = 1
EXIT_NOT_READ = 2
# As the other commands (gateway/cli/main.py): the registry `jisr demo-data` makes.
DATA_DIR = Path("var")
STDIN_NAME = "<stdin>"

_EPILOG = """exit status:
  0  applied (lines already in the journal with the same content are skipped)
  1  wrong lines, each printed as FILE:LINE: MEMBER: what is wrong; nothing applied
  2  nothing read: no such file or registry, the registry busy, bad arguments"""


def add_parser(sub: Any) -> None:
    registry = sub.add_parser(
        "registry",
        help="apply a source registry's changes to the embedded registry",
        description="The embedded registry's changes: each applied and journaled as an event.",
    )
    actions = registry.add_subparsers(dest="action", required=True)
    apply = actions.add_parser(
        "apply",
        help="apply a file of changes (JSON lines), whole or not at all",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument("file", help="the changes, one JSON object per line ('-' for stdin)")
    apply.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        metavar="DIR",
        help="registry directory, as `jisr demo-data` made it (default: %(default)s)",
    )
    apply.set_defaults(run=run_apply)


def run_apply(args: argparse.Namespace) -> int:
    """Apply the file; progress and errors on stderr, the summary on stdout."""
    name = STDIN_NAME if args.file == "-" else args.file
    try:
        with _opened(args.file) as stream:
            summary = apply_changes(
                args.data_dir / REGISTRY_FILE, read_lines(stream), progress=_progress
            )
    except OSError as exc:
        print(f"jisr registry apply: {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NOT_READ
    except RegistryError as exc:
        print(f"jisr registry apply: {exc}", file=sys.stderr)
        return EXIT_NOT_READ
    except sqlite3.Error as exc:  # e.g. the disk full: rolled back, nothing applied
        registry = args.data_dir / REGISTRY_FILE
        print(f"jisr registry apply: {registry}: {exc}; nothing applied", file=sys.stderr)
        return EXIT_NOT_READ
    except InvalidFileError as exc:
        _report(name, exc)
        return EXIT_INVALID
    _summarise(name, summary)
    return EXIT_APPLIED


@contextmanager
def _opened(file: str) -> Iterator[IO[bytes]]:
    if file == "-":
        yield sys.stdin.buffer
        return
    with Path(file).open("rb") as stream:
        yield stream


def _progress(lines: int) -> None:
    print(f"jisr registry apply: {lines:,} lines checked", file=sys.stderr, flush=True)


def _report(name: str, exc: InvalidFileError) -> None:
    for bad in exc.shown:
        print(f"{name}:{bad.line}: {bad.member}: {bad.message}", file=sys.stderr)
    if exc.count > MAX_SHOWN:
        print(f"{name}: ... and {exc.count - MAX_SHOWN:,} more wrong lines", file=sys.stderr)
    print(
        f"jisr registry apply: {name}: {exc.count:,} wrong line(s) of {exc.lines:,};"
        " nothing applied",
        file=sys.stderr,
    )


def _summarise(name: str, summary: Summary) -> None:
    rows = sum(summary.applied.values())
    upgraded = "; registry upgraded to schema 2" if summary.upgraded else ""
    print(
        f"jisr registry apply: {name}: {summary.lines:,} lines, {rows:,} events journaled,"
        f" {summary.skipped:,} skipped (already applied), {summary.seconds:.1f} s{upgraded}"
    )
    for (source, type_), count in sorted(summary.applied.items()):
        print(f"  {source:<4} {type_:<30} {count:>10,}")
