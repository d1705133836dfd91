"""`jisr serve` (the gateway, in one process or one per CPU) and `jisr health` (its probes,
for an exec probe or an operator): docs/deployment.md."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway import config as config_mod
    from gateway.runtime.probes import ProbeServer
    from gateway.runtime.readiness import Verdict

WORKER_ENV = "JISR_WORKER"  # the worker's slot, set by the supervisor


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", type=Path, help="gateway TOML (default: built-in)")
    serve.add_argument("--listen", help="host:port (overrides config and JISR_LISTEN)")
    serve.add_argument("--data-dir", type=Path, help="registry directory")
    serve.add_argument("--pki-dir", type=Path, help="PKI directory (jisr pki init)")
    serve.add_argument(
        "--processes",
        help="gateway processes sharing the port: a number, or auto for the CPUs available"
        " (overrides config and JISR_PROCESSES; default: auto)",
    )
    serve.add_argument(
        "--pin-processes",
        action="store_true",
        help="bind each process to a CPU of its own (overrides config; JISR_PIN_PROCESSES=1)",
    )
    serve.add_argument(
        "--health-listen", help="host:port of the plaintext /livez and /readyz probes"
    )
    serve.add_argument(
        "--trace-console", action="store_true", help="print spans (else OTEL_* decides)"
    )
    serve.add_argument("--metrics-listen", help="host:port for Prometheus /metrics")
    serve.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="UNSAFE, development only: no TLS; the caller's institution is its token's iss",
    )
    serve.set_defaults(run=_serve)
    health = sub.add_parser(
        "health", help="ask a gateway's probes (exit 0: ok, 1: failing or no answer)"
    )
    health.add_argument(
        "--address", help="the probes' host:port (default: JISR_HEALTH_LISTEN or the config's)"
    )
    health.add_argument("--config", type=Path, help="gateway TOML, for its health_listen")
    health.add_argument("--live", action="store_true", help="ask liveness (default: readiness)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (%(default)s)")
    health.set_defaults(run=_health)


def _config(args: argparse.Namespace) -> config_mod.Config:
    from gateway import config as config_mod

    env = dict(os.environ)
    flags = {
        "JISR_LISTEN": args.listen,
        "JISR_DATA_DIR": args.data_dir and str(args.data_dir),
        "JISR_PKI_DIR": args.pki_dir and str(args.pki_dir),
        "JISR_INSECURE_PLAINTEXT": "1" if args.insecure_plaintext else None,
        "JISR_METRICS_LISTEN": args.metrics_listen,
        "JISR_PROCESSES": args.processes,
        "JISR_PIN_PROCESSES": "1" if args.pin_processes else None,
        "JISR_HEALTH_LISTEN": args.health_listen,
    }
    env.update({k: v for k, v in flags.items() if v})
    if args.processes:  # named as the user gave it, not as the variable it becomes
        config_mod.processes_value(args.processes, "--processes")
    return config_mod.load(config_mod.config_path(args.config, env), env)


def _serve(args: argparse.Namespace) -> int:
    from gateway.runtime import cpus
    from gateway.runtime.supervisor import is_worker, worker_started
    from gateway.telemetry import setup as telemetry

    # Before anything else: SIGHUP ignored, the CPU bound, the lifeline watched.
    unbound = worker_started() if is_worker() else None
    config = _config(args)
    telemetry.setup_logging()
    count = config.processes or cpus.available()
    if count == 1 and config.pin_processes and not is_worker():
        cpu = cpus.cpu_for(0)  # before any thread starts
        unbound = None if cpus.pin(cpu) else cpu
    if unbound is not None:
        logging.getLogger("jisr.serve").warning(
            "could not bind to CPU %d: running unbound", unbound
        )
    if count > 1 and not is_worker():
        from gateway.server import preflight

        preflight(config)  # one line for what every worker would refuse, before any starts
        return _supervise(args, config, count)
    return _serve_one(args, config)


def _serve_one(args: argparse.Namespace, config: config_mod.Config) -> int:
    """One gateway process: alone, or a supervisor's worker (it shares the port)."""
    from gateway.runtime.supervisor import announce_ready, is_worker
    from gateway.server import run_until_signalled, start_gateway
    from gateway.telemetry import setup as telemetry

    worker = os.environ.get(WORKER_ENV, "?") if is_worker() else None
    traces = telemetry.setup_tracing("jisr-gateway", console=args.trace_console)
    telemetry.setup_metrics(config.metrics_listen, "jisr-gateway")
    running = start_gateway(config, reuse_port=worker is not None)
    probes = None
    if config.health_listen and running.live and running.ready:
        try:
            probes = _probe_server(config.health_listen, running.live, running.ready)
        except OSError:
            running.stop(0)  # closes the stores and writes the last checkpoint
            raise
        running.closers.insert(0, probes)
    host = config.listen.rsplit(":", 1)[0]
    transports = ", ".join(f"{k}={v.kind}" for k, v in config.institutions.items())
    if worker is not None:
        banner = f"jisr: worker {worker} (pid {os.getpid()}) serving jisr.v1"
        announce_ready(f"127.0.0.1:{probes.port}" if probes else "")
    else:
        banner = (
            f"jisr: serving jisr.v1 on {host}:{running.port}"
            f" ({transport(config)}; {transports}){_probes_said(config, probes)}"
        )
    run_until_signalled(running, config.grace_s, banner)
    if traces is not None:
        traces.shutdown()  # export the last spans
    return 0


def _supervise(args: argparse.Namespace, config: config_mod.Config, count: int) -> int:
    """`count` workers on one port, and the probes that speak for them all."""
    from gateway import config as config_mod
    from gateway.runtime.readiness import Checks, Probe, Verdict
    from gateway.runtime.supervisor import (
        WORKER_PROBE_TIMEOUT_S,
        Stopped,
        Supervisor,
        SupervisorError,
        Workers,
        reserve_port,
    )

    if config.metrics_listen:
        port = int(config.metrics_listen.rpartition(":")[2])
        if port and port + count - 1 > 65_535:
            raise config_mod.ConfigError(
                f"metrics_listen: {count} processes serve /metrics on ports {port} to"
                f" {port + count - 1}, beyond 65535; choose a lower port"
            )
    try:
        holders, listen = reserve_port(config.listen)
    except OSError as exc:
        raise OSError(
            f"cannot listen on {config.listen}: {exc.strerror or exc} (is another `jisr serve`"
            " running? choose another address with --listen HOST:PORT or JISR_LISTEN)"
        ) from None
    argv = [sys.executable, "-m", "gateway.cli", "serve", *_passed_on(args)]
    supervisor = Supervisor(
        Workers(argv, lambda i: _worker_env(config, listen, i), count, config.grace_s)
    )
    ready = Checks(
        {name: Probe(check, required=False) for name, check in supervisor.worker_checks().items()},
        budget_s=WORKER_PROBE_TIMEOUT_S + 0.5,
    )

    def ready_verdict() -> Verdict:
        """Ready while any worker is (a wedged one is killed and restarted by the
        supervisor's liveness watch); the others' reasons are in the answer."""
        verdict = ready.verdict()
        return Verdict(any(a == "ok" for a in verdict.checks.values()), verdict.checks)

    probes = None
    try:
        if config.health_listen:
            probes = _probe_server(config.health_listen, supervisor.live, ready_verdict)
        supervisor.start()
        transports = ", ".join(f"{k}={v.kind}" for k, v in config.institutions.items())
        print(
            f"jisr: serving jisr.v1 on {listen} ({count} processes; {transport(config)};"
            f" {transports}){_probes_said(config, probes)}",
            flush=True,
        )
        supervisor.run()
    except Stopped:
        pass  # a signal while starting: a stop like any other
    except SupervisorError as exc:
        print(f"jisr serve: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print(
            f"jisr: stopping {count} processes (each drains up to {config.grace_s:g} s)",
            flush=True,
        )
        supervisor.stop()
        if probes is not None:
            probes.close()
        for holder in holders:
            holder.close()
    print("jisr: stopped", flush=True)
    return 0


def _passed_on(args: argparse.Namespace) -> list[str]:
    """The flags a worker is given as they were (the rest go through its environment)."""
    out: list[str] = []
    for flag, value in (
        ("--config", args.config),
        ("--data-dir", args.data_dir),
        ("--pki-dir", args.pki_dir),
    ):
        if value is not None:
            out += [flag, str(value)]
    if args.insecure_plaintext:
        out.append("--insecure-plaintext")
    if args.trace_console:
        out.append("--trace-console")
    return out


def _worker_env(config: config_mod.Config, listen: str, index: int) -> Mapping[str, str]:
    """Worker `index`'s environment: the shared port, one process, its own probes on
    loopback (the supervisor asks them), its own metrics port (port + index), and its
    CPU when the processes are pinned."""
    env = {
        "JISR_LISTEN": listen,
        "JISR_PROCESSES": "1",
        "JISR_HEALTH_LISTEN": "127.0.0.1:0",
        WORKER_ENV: str(index),
    }
    if config.metrics_listen:
        host, _, port = config.metrics_listen.rpartition(":")
        env["JISR_METRICS_LISTEN"] = f"{host}:{int(port) + index if int(port) else 0}"
    if config.pin_processes:
        from gateway.runtime import cpus

        env[cpus.WORKER_CPU_ENV] = str(cpus.cpu_for(index))
    return env


def _probe_server(
    listen: str, live: Callable[[], Verdict], ready: Callable[[], Verdict]
) -> ProbeServer:
    from gateway.runtime.probes import ProbeServer

    try:
        return ProbeServer(listen, live, ready)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise OSError(f"cannot listen for the probes on {listen}: {why}") from None


def _probes_said(config: config_mod.Config, probes: ProbeServer | None) -> str:
    if probes is None:
        return ""
    host = (config.health_listen or "").rpartition(":")[0]
    return f"; probes on http://{host}:{probes.port}/livez and /readyz"


def transport(config: config_mod.Config) -> str:
    if config.insecure_plaintext:
        return "INSECURE PLAINTEXT, development only"
    return f"mTLS, PKI {config.pki_dir}"


def _health(args: argparse.Namespace) -> int:
    address = args.address
    if address is None:
        from gateway import config as config_mod

        env = dict(os.environ)
        address = config_mod.load(config_mod.config_path(args.config, env), env).health_listen
    if not address:
        print(
            "jisr health: no probe address: give --address HOST:PORT, or set JISR_HEALTH_LISTEN"
            " (the gateway serves its probes only when health_listen is set)",
            file=sys.stderr,
        )
        return 2
    path = "/livez" if args.live else "/readyz"
    url = f"http://{address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as reply:
            body, status = reply.read(), reply.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (OSError, ValueError) as exc:
        print(f"jisr health: {url}: no answer ({getattr(exc, 'reason', exc)})", file=sys.stderr)
        return 1
    print(f"jisr health: {url}: {status} {_summary(body)}")
    return 0 if status == 200 else 1


def _summary(body: bytes) -> str:
    try:
        doc = json.loads(body)
        checks = doc.get("checks", {})
        failing = [f"{k}: {v}" for k, v in sorted(checks.items()) if v != "ok"]
        return f"{doc.get('status')}" + (f" ({'; '.join(failing)})" if failing else "")
    except (ValueError, AttributeError):
        return "(not a probe's answer)"
