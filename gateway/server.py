"""Assemble and run the gateway: adapters, exchange, health, reflection, graceful drain.

The gateway serves on grpc.aio behind the door (gateway/services/door.py): a call runs on
the event loop and holds no thread while it waits for its request or its audit record,
and moves to a worker only where it may block. A ministry backend served from a registry
file (`start_backend`) is a plain sync server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adapters import catalog
from adapters.backend import MinistryBackendServicer
from adapters.base import Adapter, AdapterError, FetchContext
from adapters.registry_db import REGISTRY_FILE, Registry
from adapters.remote import RemoteAdapter
from adapters.remote_journal import RemoteJournal
from adapters.resilience import Bulkhead
from consent.store import ConsentStore, open_store
from gateway.audit import chain
from gateway.audit.record import Checkpoint
from gateway.audit.recorder import AuditRecorder, load_or_create_key
from gateway.audit.store import AuditStore, open_audit_store
from gateway.audit.writer import AuditWriter
from gateway.base.wire import GATEWAY_CLIENT
from gateway.config import Config
from gateway.contests.store import ContestStore, open_contest_store
from gateway.engine.call import Engine, Security
from gateway.engine.consent_gate import ConsentGate
from gateway.events.ingest import (
    HouseholdOf,
    Ingester,
    Journal,
    Journals,
    Poller,
    household_lookup,
)
from gateway.events.store import EventStore, open_event_store
from gateway.pb.jisr.v1 import backend_pb2, backend_pb2_grpc
from gateway.pipeline import programmes
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.registries import Registries
from gateway.runtime import cpus
from gateway.runtime.readiness import Checks, Probe, Verdict
from gateway.security import pki, policy, trust
from gateway.security.receipts import ReceiptSigner
from gateway.services import registry_events, registry_exchange
from gateway.services.audit_trail import SERVICE as AUDIT_SERVICE
from gateway.services.audit_trail import AuditTrailService
from gateway.services.consent_registry import SERVICE as CONSENT_SERVICE
from gateway.services.consent_registry import ConsentRegistryService
from gateway.services.contest_cases import SERVICE as CONTEST_SERVICE
from gateway.services.contest_cases import ContestCasesService, Sweeper
from gateway.services.door import Door, Limits, run_loop
from gateway.services.due_process import DueProcessPoller, DueProcessSweep
from gateway.services.quotas import Quotas
from gateway.services.rates import Rates
from gateway.services.registry_events import SERVICE as EVENTS_SERVICE
from gateway.services.registry_events import Delivery, RegistryEventsService
from gateway.services.registry_events import handler as event_handler
from gateway.services.registry_exchange import SERVICE
from gateway.services.transparency import SERVICE as TRANSPARENCY_SERVICE
from gateway.services.transparency import TransparencyService
from gateway.telemetry import setup as telemetry

# The institution id the gateway itself uses as a TLS client of ministry backends.

log = logging.getLogger("jisr.server")


class StateStoreError(OSError):
    """The consent or audit store cannot be opened or migrated (a read-only directory, a
    database that refuses): one line naming where, never a traceback."""


def _store_errors() -> tuple[type[BaseException], ...]:
    """The database drivers' errors; PostgreSQL's only if its driver is loaded (an
    embedded deployment never imports it)."""
    errors: list[type[BaseException]] = [sqlite3.Error]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors.append(psycopg.Error)
    return tuple(errors)


class Closer(Protocol):
    def close(self) -> None: ...


@dataclass
class Running:
    """A started server, the port it got, and what to close after it stops."""

    port: int
    drain: Callable[[float | None], None]  # refuse new calls, finish in-flight ones
    closers: list[Closer]
    reload: Callable[[], str] | None = None  # on SIGHUP: re-read what may change, say what
    live: Callable[[], Verdict] | None = None  # the liveness probe's verdict
    ready: Callable[[], Verdict] | None = None  # the readiness probe's verdict

    def stop(self, grace: float | None) -> None:
        """Refuse new calls, let in-flight ones finish within `grace`, then close."""
        self.drain(grace)
        for item in self.closers:
            item.close()


def _sync_drain(
    server: grpc.Server, checker: health.HealthServicer
) -> Callable[[float | None], None]:
    def drain(grace: float | None) -> None:
        checker.enter_graceful_shutdown()
        server.stop(grace).wait()

    return drain


# Every MinistryBackend method reads, so a fetch refused with UNAVAILABLE (the backend
# restarting, a connection reset) is retried by grpc itself, within the fetch's deadline:
# at most 3 attempts, 50 ms then 100 ms apart (with grpc's jitter).
BACKEND_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "jisr.v1.MinistryBackend"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
BACKEND_CHANNEL_OPTIONS = (
    ("grpc.enable_retries", 1),
    ("grpc.service_config", BACKEND_SERVICE_CONFIG),
)


def backend_channel(config: Config, target: str) -> grpc.Channel:
    """A channel to a ministry backend: mTLS with the gateway's client identity, and
    grpc's retries of the idempotent reads."""
    if config.insecure_plaintext:
        return grpc.insecure_channel(target, options=BACKEND_CHANNEL_OPTIONS)
    paths = pki.PkiPaths(config.pki_dir)
    files = pki.load_institution(config.pki_dir, GATEWAY_CLIENT)
    credentials = grpc.ssl_channel_credentials(
        paths.ca_cert.read_bytes(), files.tls_key.read_bytes(), files.tls_cert.read_bytes()
    )
    return grpc.secure_channel(target, credentials, options=BACKEND_CHANNEL_OPTIONS)


def build_adapters(config: Config, registry: Registry | None) -> list[Adapter]:
    """One adapter per configured institution, on its configured transport."""
    adapters: list[Adapter] = []
    for name, transport in config.institutions.items():
        if transport.kind == "remote":
            channel = backend_channel(config, transport.target)
            kinds = frozenset(backend_pb2.RecordKind.ValueType(k) for k in catalog.READERS[name])
            adapters.append(
                RemoteAdapter(
                    name, kinds, channel, transport.timeout_s,
                    bulkhead=Bulkhead(transport.max_in_flight or max(1, config.workers - 1)),
                )
            )  # fmt: skip
        else:
            if registry is None:
                raise ValueError("an embedded institution needs the registry file")
            adapters.append(catalog.embedded(name, registry))
    return adapters


def build_journals(
    config: Config, registry: Registry | None
) -> list[tuple[Journal, frozenset[str]]]:
    """The change journals the gateway reads (registry events): the embedded registry's for
    its embedded institutions' sources, each remote institution's from its backend."""
    embedded = frozenset(n for n, t in config.institutions.items() if t.kind == "embedded")
    journals: list[tuple[Journal, frozenset[str]]] = []
    if registry is not None and embedded:
        journals.append((registry, embedded))
    for name, transport in config.institutions.items():
        if transport.kind == "remote":
            channel = backend_channel(config, transport.target)
            journals.append((RemoteJournal(name, channel), frozenset({name})))
    return journals


def household_of(registry: Registry | None, registries: Registries) -> HouseholdOf:
    """Where a person's events find the person's household: the embedded registry's
    membership table, else the RSU's backend (an outage: no household, logged there)."""
    if registry is not None:
        return household_lookup(registry.connection)

    def remote(idcs: str) -> str:
        try:
            found = registries.memberships([idcs], FetchContext(purpose="REGISTRY_EVENTS"))
        except AdapterError:
            return ""
        link = found.get(idcs)
        return link.household_id if link is not None else ""

    return remote


def _grpc_server(workers: int) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jisr"),
        options=[("grpc.so_reuseport", 0)],
    )


def _writer_yields() -> None:
    """On the audit writer's thread, in a process bound to one CPU (cpus.yield_on_wake)."""
    if not cpus.yield_on_wake():
        log.info("the audit writer could not yield on wake: it keeps the default policy")


class ListenError(OSError):
    """The listen address is taken or not this machine's: one line naming it and what to
    do, never grpc's traceback."""


def _listen(
    server: grpc.Server | aio.Server, address: str, config: Config, *, shared: bool = False
) -> int:
    if not shared:  # a shared port was reserved, and checked, by the supervisor
        _bindable(address)
    try:
        if config.insecure_plaintext:
            port: int = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(config.pki_dir))
    except RuntimeError:  # grpc: "Failed to bind to address …"
        port = 0
    if port == 0:
        raise _cannot_listen(address, "grpc could not bind it")
    return port


def _cannot_listen(address: str, why: str) -> ListenError:
    return ListenError(
        f"cannot listen on {address}: {why} (is another `jisr serve` or `make run` running? "
        "stop it, or choose another address with --listen HOST:PORT or JISR_LISTEN)"
    )


def _bindable(address: str) -> None:
    """Try the address as grpc will (SO_REUSEADDR), before grpc does: grpc's own failure
    is a C-level log line and a bare RuntimeError."""
    host, _, port = address.rpartition(":")
    if port in ("", "0"):
        return
    try:
        found = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        raise _cannot_listen(address, "not an address of this machine") from None
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                raise _cannot_listen(address, exc.strerror or "it cannot be bound") from None


def _health_and_reflection(server: grpc.Server, services: list[str]) -> health.HealthServicer:
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in ["", *services]:
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return checker


def server_credentials(pki_dir: Path) -> grpc.ServerCredentials:
    """TLS with a required client certificate from the gateway's CA."""
    paths = pki.PkiPaths(pki_dir)
    return grpc.ssl_server_credentials(
        [(paths.server_key.read_bytes(), paths.server_cert.read_bytes())],
        root_certificates=paths.ca_cert.read_bytes(),
        require_client_auth=True,
    )


def build_security(config: Config) -> Security:
    """Trust store, policy and receipt key, each validated once."""
    key, kid = pki.load_gateway_signing_key(config.pki_dir)
    gateway_id = pki.gateway_id(config.pki_dir)
    return Security(
        trust=trust.load_dir(pki.PkiPaths(config.pki_dir).trust_dir),
        policy=policy.load(config.policy) if config.policy else policy.load_default(),
        receipts=ReceiptSigner(key, kid, gateway_id),
        audience=gateway_id,
        insecure_plaintext=config.insecure_plaintext,
    )


def node_id() -> str:
    """This process's audit chain: one per gateway process, never shared."""
    return f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"


def checkpoint_signer(pki_dir: Path) -> Callable[[Checkpoint], Checkpoint]:
    """Checkpoints are signed with the gateway's receipt key."""
    key, kid = pki.load_gateway_signing_key(pki_dir)
    return lambda checkpoint: chain.sign_checkpoint(checkpoint, key, kid)


def limits(config: Config) -> Limits:
    """What one partner may hold (gateway/services/door.py), from the configuration."""
    return Limits(
        workers=config.workers,
        stream_workers=config.stream_workers,
        request_timeout_s=config.request_timeout_s,
        stream_idle_s=config.stream_idle_s,
        calls_per_institution=config.calls_per_institution,
        streams_per_institution=config.streams_per_institution,
        subscription_workers=config.subscription_workers,
        subscriptions_per_institution=config.subscriptions_per_institution,
        max_message_bytes=config.max_message_bytes,
        max_stream_s=config.max_stream_seconds,
        max_stream_batches=config.max_stream_batches,
        max_concurrent_rpcs=config.max_concurrent_rpcs,
    )


@dataclass
class Served:
    """The grpc.aio server once started: its port, how to drain it, and how to tell its
    event loop still turns (the liveness probe)."""

    port: int
    drain: Callable[[float | None], None]
    responsive: Callable[[float], bool]
    draining: threading.Event


def _serve_aio(
    config: Config,
    door: Door,
    handlers: list[grpc.GenericRpcHandler],
    services: list[str],
    *,
    reuse_port: bool = False,
) -> Served:
    """The gateway's grpc.aio server on an event loop of its own thread: handlers behind
    the door; health and reflection answered on the loop, needing no worker."""
    loop, thread = run_loop()
    draining = threading.Event()

    async def build() -> tuple[aio.Server, int, health.aio.HealthServicer]:
        server = aio.server(
            options=door.limits.server_options(reuse_port=reuse_port),
            maximum_concurrent_rpcs=door.limits.max_concurrent_rpcs,
        )
        server.add_generic_rpc_handlers(tuple(door.wrap(h) for h in handlers))
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        for name in ["", *services]:
            await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            [*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        port = _listen(server, config.listen, config, shared=reuse_port)
        await server.start()
        return server, port, checker

    try:
        server, port, checker = asyncio.run_coroutine_threadsafe(build(), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        raise

    async def stop(grace: float | None) -> None:
        await checker.enter_graceful_shutdown()
        door.stopping(grace)
        await server.stop(grace)

    def drain(grace: float | None) -> None:
        draining.set()
        asyncio.run_coroutine_threadsafe(stop(grace), loop).result()
        door.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    def responsive(timeout: float) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout)
        except (TimeoutError, RuntimeError):
            return False
        return True

    return Served(port, drain, responsive, draining)


def probe_checks(core: Core, config: Config, served: Served) -> tuple[Checks, Checks]:
    """The liveness and readiness checks of one gateway process (docs/deployment.md,
    "Probes"): live while its event loop turns; ready while it serves, its audit chain
    can be written (every exchange is refused without it) and its required backends
    answer. An optional backend's outage, or another store's, is reported, and fails only
    the calls needing it."""

    def loop_turns() -> str | None:
        return None if served.responsive(1.5) else "the event loop did not turn within 1.5 s"

    def serving() -> str | None:
        return "draining" if served.draining.is_set() else None

    def audit() -> str | None:
        if not core.writer.available:
            return "audit store down (appends refused until it answers)"
        core.audit_store.head(core.writer.node)
        return None

    ready = {"serving": Probe(serving), "audit": Probe(audit)}
    # The other stores fail only the calls that use them (consent-based grants, due
    # process and Subscribe, contests), as an optional backend does: reported, and the
    # gateway stays in rotation for the rest. One indexed read each.
    reads: dict[str, Callable[[], object]] = {
        "store:consents": lambda: core.store.latest(""),
        "store:events": core.event_store.bounds,
        "store:contests": lambda: core.contest_store.case(""),
    }
    for name, read in reads.items():
        ready[name] = Probe(functools.partial(_answered, read), required=False)
    for adapter in core.registries.adapters:
        if isinstance(adapter, RemoteAdapter):
            transport = config.institutions[adapter.institution]
            ready[f"backend:{adapter.institution}"] = Probe(
                functools.partial(adapter.reachable, 1.0), required=transport.required
            )
    return Checks({"event_loop": Probe(loop_turns)}), Checks(ready)


def _answered(read: Callable[[], object]) -> None:
    """A store's probe: the read returned (an error is reported by its type)."""
    read()


@dataclass
class Core:
    """What every surface that runs calls through the engine opens: the gRPC gateway and
    the DCI facade alike (each process its own audit chain)."""

    catalogue: programmes.Catalogue
    registry: Registry | None
    security: Security
    registries: Registries
    store: ConsentStore
    audit_store: AuditStore
    contest_store: ContestStore
    event_store: EventStore
    writer: AuditWriter
    recorder: AuditRecorder


def open_core(config: Config) -> Core:
    """Validate the configuration and open the stores, the registries and the audit."""
    catalogue = (
        programmes.load(config.programmes) if config.programmes else programmes.load_default()
    )
    needs_registry = any(t.kind == "embedded" for t in config.institutions.values())
    registry = Registry(config.data_dir / REGISTRY_FILE) if needs_registry else None
    security = build_security(config)
    registries = Registries(build_adapters(config, registry))
    state_dir = config.state_dir or config.data_dir
    where = "the database of JISR_DATABASE_URL" if config.database_url else str(state_dir)
    try:
        store = open_store(config.database_url, state_dir)
        audit_store = open_audit_store(config.database_url, state_dir)
        contest_store = open_contest_store(config.database_url, state_dir)
        event_store = open_event_store(config.database_url, state_dir)
        writer = AuditWriter(
            audit_store,
            node_id(),
            checkpoint_signer(config.pki_dir),
            checkpoint_every=config.audit_checkpoint_every,
            checkpoint_seconds=config.audit_checkpoint_seconds,
            # Bound to one CPU (pinned), the writer shares it with the event loop.
            thread_started=_writer_yields if len(cpus.allowed()) == 1 else None,
        )
    except _store_errors() as exc:
        raise StateStoreError(
            f"{where}: cannot open the consent, audit, contest and event stores ({exc});"
            " the gateway needs to write there"
        ) from exc
    security.consent = ConsentGate(store, registries)
    # A consent check may write (a use cap) under the store lock: never on the event loop.
    security.consent_blocks = True
    recorder = AuditRecorder(writer, load_or_create_key(config.pki_dir))
    security.audit = recorder
    telemetry.observe_queue(lambda: writer.queue_depth)
    return Core(
        catalogue, registry, security, registries, store, audit_store, contest_store,
        event_store, writer, recorder,
    )  # fmt: skip


def preflight(config: Config) -> None:
    """What every worker would check first, checked once by the supervisor before it
    starts them (so a bad key or an unwritable store is one line, not one per worker):
    programmes, registry, PKI, policy and trust store, and the four stores opened (their
    migrations run) and closed again. No thread or gRPC object is left behind."""
    if config.programmes:
        programmes.load(config.programmes)
    if any(t.kind == "embedded" for t in config.institutions.values()):
        Registry(config.data_dir / REGISTRY_FILE).close()
    build_security(config)
    state_dir = config.state_dir or config.data_dir
    where = "the database of JISR_DATABASE_URL" if config.database_url else str(state_dir)
    opened: list[Closer] = []
    try:
        for open_one in (open_store, open_audit_store, open_contest_store, open_event_store):
            opened.append(open_one(config.database_url, state_dir))
    except _store_errors() as exc:
        raise StateStoreError(
            f"{where}: cannot open the consent, audit, contest and event stores ({exc});"
            " the gateway needs to write there"
        ) from exc
    finally:
        for store in opened:
            store.close()


def start_gateway(config: Config, *, reuse_port: bool = False) -> Running:
    """Validate everything, then serve RegistryExchange on config.listen (shared with the
    other workers of `jisr serve --processes N` when `reuse_port`)."""
    core = open_core(config)
    catalogue, registry, security, registries = (
        core.catalogue, core.registry, core.security, core.registries
    )  # fmt: skip
    store, audit_store, contest_store, event_store, writer = (
        core.store, core.audit_store, core.contest_store, core.event_store, core.writer
    )  # fmt: skip
    engine = Engine(security)
    consents = ConsentRegistryService(store, registries, security.policy, security.trust)
    trail = AuditTrailService(
        audit_store,
        core.recorder,
        security.policy,
        pki.gateway_jwks(config.pki_dir),
        registries,
    )
    contests = ContestCasesService(
        contest_store,
        core.recorder,
        audit_store,
        security.policy,
        registries,
        answer_days=config.contest_answer_days,
    )
    sweeper = Sweeper(contests, config.contest_sweep_seconds)
    events = RegistryEventsService(
        event_store,
        security.policy,
        delivery=Delivery(
            poll_s=config.events_poll_seconds, max_stream_s=config.events_max_stream_seconds
        ),
    )
    journals = build_journals(config, registry)
    poller = (
        Poller(
            Ingester(
                Journals(journals), event_store, catalogue, household_of(registry, registries)
            ),
            config.events_poll_seconds,
            config.events_retention_days * 86_400,
        )
        if journals
        else None
    )
    due = DueProcessPoller(
        DueProcessSweep(event_store, contest_store, core.recorder, catalogue),
        config.due_process_sweep_seconds,
    )
    quotas = Quotas(security.policy.rates, audit_store.count_calls_since)
    door = Door(
        limits(config),
        engine.refused_at_door,
        Rates(security.policy.rates),
        quotas,
        overloaded=engine.overloaded,
    )
    served = _serve_aio(
        config,
        door,
        [
            registry_exchange.handler(engine, Exchange(registries, catalogue, event_store.holding)),
            consents.handler(engine),
            trail.handler(engine),
            contests.handler(engine),
            event_handler(engine, events),
            TransparencyService(
                config.publications or config.data_dir / "publications",
                lambda: pki.gateway_jwks(config.pki_dir),
            ).handler(engine),
        ],
        [
            SERVICE,
            CONSENT_SERVICE,
            AUDIT_SERVICE,
            CONTEST_SERVICE,
            EVENTS_SERVICE,
            TRANSPARENCY_SERVICE,
        ],
        reuse_port=reuse_port,
    )
    live, ready = probe_checks(core, config, served)
    # Closed in order after the drain: the writer flushes and checkpoints before its store.
    closers: list[Closer] = [
        quotas,
        live,
        ready,
        due,
        registries,
        store,
        sweeper,
        contest_store,
        writer,
        audit_store,
    ]
    if poller is not None:
        closers.insert(0, poller)
    closers.append(event_store)
    if registry is not None:
        closers.append(registry)
    return Running(
        served.port,
        served.drain,
        closers,
        lambda: _reload(security),
        live=live.verdict,
        ready=ready.verdict,
    )


def start_dci(
    config: Config, clients_file: Path, *, conformance_client: str | None, token_seconds: int
) -> tuple[Any, list[Closer]]:
    """The DCI facade's work (gateway/dci/facade.py) over its own engine and audit chain,
    and what to close after it; the caller serves it over HTTP."""
    from gateway.dci import clients  # noqa: PLC0415 (the dci extra, only for this command)
    from gateway.dci.access import Issuer  # noqa: PLC0415
    from gateway.dci.callbacks import post_json  # noqa: PLC0415
    from gateway.dci.facade import Facade  # noqa: PLC0415
    from gateway.dci.notifier import NOTIFY_TIMEOUT_S, Notifier  # noqa: PLC0415
    from gateway.dci.standing import Standings  # noqa: PLC0415

    core = open_core(config)
    exchange = Exchange(core.registries, core.catalogue, core.event_store.holding)
    key, kid = pki.load_gateway_signing_key(config.pki_dir)
    events = RegistryEventsService(
        core.event_store,
        core.security.policy,
        delivery=Delivery(
            poll_s=config.events_poll_seconds, max_stream_s=config.events_max_stream_seconds
        ),
    )
    state_dir = config.state_dir or config.data_dir
    facade = Facade(
        engine=Engine(core.security),
        lookups=registry_exchange.lookups(exchange),
        issuer=Issuer(key, kid, pki.gateway_id(config.pki_dir), token_seconds),
        clients=clients.load(clients_file),
        keys=core.security.trust,
        gateway_jwks=pki.gateway_jwks(config.pki_dir),
        conformance_client=conformance_client,
        events=registry_events.methods(events),
        standings=Standings(state_dir / "dci-subscriptions.json"),
    )
    notifier = Notifier(
        facade.engine,
        facade.events,
        core.event_store,
        facade.standings,
        facade.issuer,
        post=lambda uri, body: post_json(uri, body, NOTIFY_TIMEOUT_S),
        poll_s=max(config.events_poll_seconds, 0.2),
    )
    notifier.start()
    closers: list[Closer] = [
        notifier, facade.deliveries, core.registries, core.store, core.contest_store, core.writer,
        core.audit_store, core.event_store,
    ]  # fmt: skip
    if core.registry is not None:
        closers.append(core.registry)
    return facade, closers


def _reload(security: Security) -> str:
    """SIGHUP: the trust store, read again now (it also follows its directory by itself)."""
    return f"trust store reloaded: {security.trust.reload()} institutions"


def start_backend(
    institutions: list[str], registry: Registry, listen: str, config: Config
) -> Running:
    """Serve MinistryBackend for `institutions` from a registry file (mTLS unless plaintext)."""
    adapters = [catalog.embedded(name, registry) for name in institutions]
    server = _grpc_server(8)
    backend_pb2_grpc.add_MinistryBackendServicer_to_server(
        MinistryBackendServicer(
            adapters,
            None if config.insecure_plaintext else frozenset({GATEWAY_CLIENT}),
            journal=registry,
        ),
        server,
    )
    name = backend_pb2.DESCRIPTOR.services_by_name["MinistryBackend"].full_name
    checker = _health_and_reflection(server, [name])
    port = _listen(server, listen, config)
    server.start()
    return Running(port, _sync_drain(server, checker), [registry])


def run_until_signalled(running: Running, grace: float, banner: str) -> None:
    """Print where we serve, then block until SIGTERM or SIGINT and drain; SIGHUP reloads
    what the server can reload (the trust store)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    reload = threading.Event()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        reload.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if running.reload is not None:
        signal.signal(signal.SIGHUP, on_hangup)
    print(banner, flush=True)
    # A signal the kernel hands to another thread only flags the main thread, which sees
    # it when it next runs Python: an untimed wait could sleep through it.
    while not stop.wait(0.5):
        if reload.is_set() and running.reload is not None:
            reload.clear()
            print(f"jisr: {running.reload()}", flush=True)
    print(f"jisr: draining in-flight calls (up to {grace:g} s)", flush=True)
    running.stop(grace)
    print("jisr: stopped", flush=True)
