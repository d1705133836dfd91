"""The `jisr` command: serve, generate demo data, run a ministry backend, make calls."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from adapters.registry_db import REGISTRY_FILE, Registry, RegistryError
from gateway import config as config_mod
from gateway import programmes
from gateway.cli_support import SAMPLES, call, demo_data, samples
from gateway.registries import MissingInstitutionError
from gateway.server import run_until_signalled, start_backend, start_gateway


def _serve(args: argparse.Namespace) -> int:
    env_or_flags = dict(os.environ)
    if args.listen:
        env_or_flags["JISR_LISTEN"] = args.listen
    if args.data_dir:
        env_or_flags["JISR_DATA_DIR"] = str(args.data_dir)
    config = config_mod.load(args.config, env_or_flags)
    running = start_gateway(config)
    host = config.listen.rsplit(":", 1)[0]
    transports = ", ".join(f"{k}={v.kind}" for k, v in config.institutions.items())
    run_until_signalled(
        running,
        config.grace_s,
        f"jisr: serving jisr.v1 on {host}:{running.port} (plaintext, development only;"
        f" {transports})",
    )
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    return demo_data(args.data_dir, args.households, args.seed, force=args.force)


def _backend(args: argparse.Namespace) -> int:
    names = [n.strip().upper() for n in args.institutions.split(",") if n.strip()]
    unknown = [n for n in names if n not in config_mod.INSTITUTIONS]
    if unknown or not names:
        print(
            f"jisr backend: --institutions: unknown {unknown}; known:"
            f" {', '.join(config_mod.INSTITUTIONS)}",
            file=sys.stderr,
        )
        return 2
    running = start_backend(names, Registry(args.data_dir / REGISTRY_FILE), args.listen)
    host = args.listen.rsplit(":", 1)[0]
    run_until_signalled(
        running, 5.0, f"jisr: MinistryBackend for {','.join(names)} on {host}:{running.port}"
    )
    return 0


def _programmes_check(args: argparse.Namespace) -> int:
    catalogue = programmes.load(args.file) if args.file else programmes.load_default()
    for programme in catalogue.programmes.values():
        versions = ", ".join(
            f"{t.version} ({t.value} from {t.effective_from})" for t in programme.thresholds
        )
        print(f"{programme.code}: {programme.name}; run by {programme.operator}; {versions}")
    print(f"{catalogue.source}: {len(catalogue.programmes)} programmes, valid")
    return 0


def _call(args: argparse.Namespace) -> int:
    return call(args)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jisr", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", type=Path, help="gateway TOML (default: built-in)")
    serve.add_argument("--listen", help="host:port (overrides config and JISR_LISTEN)")
    serve.add_argument("--data-dir", type=Path, help="registry directory")
    serve.set_defaults(run=_serve)

    demo = sub.add_parser("demo-data", help="generate a synthetic registry")
    demo.add_argument("--households", type=int, default=10_000)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--data-dir", type=Path, default=Path("var"))
    demo.add_argument("--force", action="store_true", help="replace an existing registry")
    demo.set_defaults(run=_demo_data)

    backend = sub.add_parser("backend", help="run a ministry's MinistryBackend")
    backend_sub = backend.add_subparsers(dest="action", required=True)
    backend_serve = backend_sub.add_parser("serve", help="serve institutions' records")
    backend_serve.add_argument("--institutions", required=True, help="e.g. CNSS or RNP,RSU")
    backend_serve.add_argument("--data-dir", type=Path, default=Path("var"))
    backend_serve.add_argument("--listen", default="127.0.0.1:50061")
    backend_serve.set_defaults(run=_backend)

    sample = sub.add_parser("samples", help="example subjects from the synthetic registry")
    sample.add_argument("--data-dir", type=Path, default=Path("var"))
    sample.add_argument("--kind", choices=sorted(SAMPLES), help="print only this one's value")
    sample.set_defaults(run=lambda a: samples(a.data_dir, a.kind))

    progs = sub.add_parser("programmes", help="programme definitions")
    progs_sub = progs.add_subparsers(dest="action", required=True)
    check = progs_sub.add_parser("check", help="validate a programmes file")
    check.add_argument("file", type=Path, nargs="?")
    check.set_defaults(run=_programmes_check)

    call = sub.add_parser("call", help="make one call to a gateway")
    call.add_argument("--target", default="127.0.0.1:50051")
    call.add_argument("--purpose", required=True, help="purpose code, e.g. AMO_ENROLMENT")
    call.add_argument("--timeout", type=float, default=10.0, help="seconds")
    what = call.add_subparsers(dest="method", required=True)
    person = what.add_parser("person", help="GetPersonStatus")
    person.add_argument("idcs")
    household = what.add_parser("household", help="GetHouseholdStatus")
    household.add_argument("subject", help="household id (H...) or member IDCS")
    eligibility = what.add_parser("eligibility", help="VerifyEligibility")
    eligibility.add_argument("subject", help="household id (H...) or IDCS")
    eligibility.add_argument("--programme", required=True)
    eligibility.add_argument("--as-of", help="YYYY-MM-DD (default: today)")
    batch = what.add_parser("batch", help="VerifyEligibilityBatch from a file")
    batch.add_argument("file", type=Path, help="one subject per line ('-' for stdin)")
    batch.add_argument("--programme", required=True)
    batch.add_argument("--as-of", help="YYYY-MM-DD (default: today)")
    batch.add_argument("--batch-size", type=int, default=1000)
    call.set_defaults(run=_call)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (
        config_mod.ConfigError,
        programmes.ProgrammeConfigError,
        RegistryError,
        MissingInstitutionError,
    ) as exc:
        print(f"jisr: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jisr: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
