"""`python -m bench.pin CPU PROGRAM ARGS...`: run PROGRAM on one CPU only (same pid).

Used by `bench.run --pin` to put every server on one core and the load generator on the
other, which shows how much of a server's cost is threads contending across cores.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or not args[0].isdigit():
        print("usage: python -m bench.pin CPU PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {int(args[0])})
    program = shutil.which(args[1]) or args[1]
    os.execv(program, args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
