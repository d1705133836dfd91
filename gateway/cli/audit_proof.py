"""`jisr audit check-proof`: check, offline, that access-report entries are records the
gateway committed to (docs/audit-format.md §9), and whether the observatory witnessed
the checkpoints that seal them.

Reads the file `jisr audit report --proofs FILE` (or the citizen portal) writes: a JSON
object `{"proofs": [...]}`, or one proof alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.audit import inclusion, witness

EXIT_HOLD = 0
EXIT_FAIL = 1
EXIT_NOT_CHECKED = 2
_STATUS = """exit status:
  0  every proof holds (and, with --witness-log, every checkpoint was witnessed)
  1  a proof does not hold, or a checkpoint was not witnessed
  2  nothing checked: an unreadable file or keys"""


class RefusedError(Exception):
    """Nothing was checked; the message names the file or flag at fault."""


def add_parser(actions: Any) -> None:
    check = actions.add_parser(
        "check-proof",
        help="check an access report's proofs of inclusion offline",
        description="Check that each record of a proofs file hashes as it says, that its"
        " Merkle path leads to the root a checkpoint signs, and that the gateway's key"
        " signed that checkpoint; with --witness-log, that the witness countersigned it.",
        epilog=_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("proofs", type=Path, help="the proofs file (`jisr audit report --proofs`)")
    check.add_argument(
        "--jwks", type=Path, required=True, help="the gateway's published keys (`jisr keys export`)"
    )
    check.add_argument("--witness-log", type=Path, help="the witness's log (`jisr audit witness`)")
    check.add_argument(
        "--witness-jwks",
        type=Path,
        help="the witness institution's public keys (with --witness-log)",
    )


def run(args: argparse.Namespace) -> int:
    """Check every proof, one line each, then a summary line."""
    try:
        proofs = _proofs(args.proofs)
        jwks = _json(args.jwks, "--jwks")
        if (args.witness_log is None) != (args.witness_jwks is None):
            raise RefusedError("--witness-log and --witness-jwks go together")
        log = witness.read_log(args.witness_log) if args.witness_log is not None else []
        keys = _json(args.witness_jwks, "--witness-jwks") if args.witness_jwks else None
        index = inclusion.by_checkpoint(log)
        verdicts = [
            inclusion.check(p, jwks, inclusion.witnessed_for(p, index), keys) for p in proofs
        ]
    except (RefusedError, ValueError) as exc:
        print(f"jisr audit check-proof: {exc}", file=sys.stderr)
        return EXIT_NOT_CHECKED
    failed = 0
    for proof, verdict in zip(proofs, verdicts, strict=True):
        unwitnessed = keys is not None and verdict.ok and not verdict.witnesses
        failed += not verdict.ok or unwitnessed
        print(_line(proof, verdict, unwitnessed))
    print(
        f"jisr audit check-proof: {args.proofs}: {len(proofs) - failed} of {len(proofs)}"
        f" proof(s) hold{'' if keys is None else ' and are witnessed'}"
    )
    return EXIT_FAIL if failed else EXIT_HOLD


def _line(proof: inclusion.Proof, verdict: inclusion.Verdict, unwitnessed: bool) -> str:
    record = proof.record.record_id
    if not verdict.ok:
        return f"{record}: DOES NOT HOLD: {'; '.join(verdict.problems)}"
    cp = inclusion.checkpoint_of(proof.checkpoint)
    sealed = f"{record}: included in checkpoint {cp.node}:{cp.seq}" if cp else record
    if verdict.witnesses:
        return f"{sealed}, countersigned by {', '.join(verdict.witnesses)}"
    return f"{sealed}, NOT WITNESSED" if unwitnessed else sealed


def _proofs(path: Path) -> list[inclusion.Proof]:
    data = _json(path, "PROOFS")
    items = data.get("proofs") if isinstance(data, dict) and "proofs" in data else [data]
    if not isinstance(items, list):
        raise RefusedError(f"{path}: 'proofs' is not a list")
    found: list[inclusion.Proof] = []
    for number, item in enumerate(items, 1):
        try:
            found.append(inclusion.from_json(item))
        except ValueError as exc:
            raise RefusedError(f"{path}: proof {number}: {exc}") from None
    return found


def _json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RefusedError(f"{flag}: {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefusedError(f"{flag}: {path}: not readable as JSON ({exc})") from None
    except RecursionError:
        raise RefusedError(f"{flag}: {path}: nested too deeply to be read") from None
