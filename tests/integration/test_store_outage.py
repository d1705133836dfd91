"""A PostgreSQL outage and its end, as the audit writer and the consent store live them.

The shared test server is never stopped (other suites use it at the same time): each test
puts a TCP proxy in this process between the store and the server (a fake network
boundary, tests/support/fault_proxy.py) and cuts it, which the client sees exactly as a
server going down: open connections end, new ones are closed at once. PostgreSQL tests
run as tests/support/databases.py says (always with CI=true).

The figures (fail-fast latency, recovery delay) are printed: run with `-s` to see them.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from consent.model import SubjectKind
from consent.store_postgres import PostgresConsentStore
from gateway.audit import chain
from gateway.audit.record import AuditRecord
from gateway.audit.store_postgres import PostgresAuditStore
from gateway.audit.writer import AuditUnavailable, AuditWriter
from tests.integration.test_audit_store import assert_contiguous, draft, fake_sign, wait_for
from tests.support import databases
from tests.support.fault_proxy import FaultProxy

# Generous bounds, for a slow shared machine; the design figures are ~0.1 s and ~1 s.
FAIL_FAST_S = 2.0
RECOVERY_S = 3.0
POLL_S = 10.0
# Long enough that a pool reconnecting with exponential backoff (after 1, 2, 4, 8 s: the
# pool's default) would next try only ~6 s after the database's return.
LONG_OUTAGE_S = 8.5


@dataclass
class Outage:
    url: str  # the schema, directly
    proxied: str  # the same schema, through the proxy
    proxy: FaultProxy


@pytest.fixture
def outage() -> Iterator[Outage]:
    with databases.postgres_schema() as url:
        host, port = databases.target_of(url)
        if host.startswith("/"):
            pytest.skip("the test server is reached through a Unix socket: no TCP to cut")
        with FaultProxy(host, port) as proxy:
            yield Outage(url, databases.through(url, "127.0.0.1", proxy.port), proxy)


@pytest.fixture
def audit(outage: Outage) -> Iterator[tuple[PostgresAuditStore, AuditWriter]]:
    store = PostgresAuditStore(outage.proxied)
    writer = AuditWriter(store, "gw-a", fake_sign)
    try:
        yield store, writer
    finally:
        writer.close()
        store.close()


@pytest.fixture
def consents(outage: Outage) -> Iterator[PostgresConsentStore]:
    store = PostgresConsentStore(outage.proxied)
    try:
        yield store
    finally:
        store.close()


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    """How long `call` took, and what it raised."""
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def until_it_works(call: Callable[[], object], within: float = POLL_S) -> float:
    """Call every 20 ms until it returns; the seconds that took (fails after `within`)."""
    started = time.monotonic()
    while True:
        _, error = timed(call)
        if error is None:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"still failing {within:g} s later: {error!r}")
        time.sleep(0.02)


def keep_calling(call: Callable[[], object], seconds: float) -> None:
    """Traffic during an outage: call every 0.1 s for `seconds`, whatever it answers."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        timed(call)
        time.sleep(0.1)


def lookup(store: PostgresConsentStore) -> Callable[[], object]:
    return lambda: store.for_subjects([(SubjectKind.PERSON, "AB123456")], "CNSS")


def test_during_a_postgres_outage_appends_fail_fast_with_audit_unavailable(
    outage: Outage, audit: tuple[PostgresAuditStore, AuditWriter]
) -> None:
    _, writer = audit
    for i in range(3):
        writer.append(draft(i))
    outage.proxy.cut()
    took = []
    for i in range(30):
        elapsed, error = timed(functools.partial(writer.append, draft(100 + i)))
        assert isinstance(error, AuditUnavailable), error
        took.append(elapsed)
        time.sleep(0.02)
    print(f"\naudit appends during the outage: first {took[0]:.3f} s, slowest {max(took):.3f} s")
    assert max(took) < FAIL_FAST_S, took


def test_appends_succeed_again_within_seconds_of_postgres_returning(
    outage: Outage, audit: tuple[PostgresAuditStore, AuditWriter]
) -> None:
    _, writer = audit
    writer.append(draft(0))
    outage.proxy.cut()
    keep_calling(lambda: writer.append(draft(1)), LONG_OUTAGE_S)
    outage.proxy.restore()
    delay = until_it_works(lambda: writer.append(draft(2)))
    print(f"\naudit appends work again {delay:.3f} s after PostgreSQL returned")
    assert delay < RECOVERY_S


def test_the_chain_neither_forks_nor_skips_a_seq_across_a_postgres_outage(
    outage: Outage, audit: tuple[PostgresAuditStore, AuditWriter]
) -> None:
    store, writer = audit
    lock = threading.Lock()
    stored: list[AuditRecord] = []  # what callers were told is durable
    refused: list[AuditRecord] = []  # what they were told is not (it may be: a lost ack)
    stop = threading.Event()

    def caller(t: int) -> None:
        for k in range(1_000_000):
            if stop.is_set():
                return
            d = draft(t * 1_000_000 + k, jti=f"t{t}-{k}")
            try:
                record = writer.append(d)
            except AuditUnavailable:
                with lock:
                    refused.append(d)
                time.sleep(0.005)
            else:
                with lock:
                    stored.append(record)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    try:
        time.sleep(0.3)
        outage.proxy.cut()  # mid-traffic: a batch may be committed with its ack lost
        time.sleep(1.0)
        outage.proxy.restore()
        with lock:
            before = len(stored)
        wait_for(lambda: len(stored) > before, "an append after the return", timeout=POLL_S)
        time.sleep(0.3)
    finally:
        stop.set()
        for th in threads:
            th.join()
    trail = list(store.records("gw-a"))
    assert_contiguous(trail)
    report = chain.verify(trail, [], {"keys": []})
    assert report.ok, report.findings
    assert refused, "the outage failed no append"
    by_seq = {r.seq: r for r in trail}
    for record in stored:  # every acknowledged record is stored, as acknowledged
        assert by_seq[record.seq] == record
    acknowledged = {r.rh for r in stored}
    assert len(acknowledged) == len(stored)
    assert {r.rh for r in trail} <= acknowledged | {d.rh for d in refused}


def test_during_a_postgres_outage_consent_lookups_fail_fast(
    outage: Outage, consents: PostgresConsentStore
) -> None:
    lookup(consents)()
    outage.proxy.cut()
    took = []
    for _ in range(30):
        elapsed, error = timed(lookup(consents))
        assert error is not None  # the consent gate answers CONSENT_STORE_UNAVAILABLE
        took.append(elapsed)
        time.sleep(0.02)
    print(f"\nconsent lookups during the outage: first {took[0]:.3f} s, slowest {max(took):.3f} s")
    assert max(took) < FAIL_FAST_S, took


def test_consent_lookups_work_again_within_seconds_of_postgres_returning(
    outage: Outage, consents: PostgresConsentStore
) -> None:
    lookup(consents)()
    outage.proxy.cut()
    keep_calling(lookup(consents), LONG_OUTAGE_S)
    outage.proxy.restore()
    delay = until_it_works(lookup(consents))
    print(f"\nconsent lookups work again {delay:.3f} s after PostgreSQL returned")
    assert delay < RECOVERY_S


def test_during_a_postgres_outage_a_store_tries_few_connections(
    outage: Outage, consents: PostgresConsentStore
) -> None:
    lookup(consents)()
    outage.proxy.cut()
    accepted = outage.proxy.accepted
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < 1.0:
        timed(lookup(consents))
        calls += 1
    attempts = outage.proxy.accepted - accepted
    print(f"\n{calls} consent lookups in 1 s of outage tried {attempts} connection(s)")
    # one probe per 0.25 s, and the pool's own reconnection of its connections (a few)
    assert attempts <= 12, (attempts, calls)
