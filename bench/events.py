"""Registry change events at scale (issue 15.8; docs/performance.md, "Registry events"):
`jisr registry apply` of 1,000,000 changes (bench.registry_apply.measure), then a real
`jisr serve` on a registry of its own: one subscriber catching up on 100,000 events through
the SDK, then 19 at once without and with a 20th, slow one. `python -m bench.events -h`.
Loopback only; every loop is bounded in count and in time."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from adapters.registry_changes import apply_changes
from adapters.registry_db import REGISTRY_FILE
from bench import registry_apply
from bench.common import INSTITUTION, machine_busy_seconds, process_clock
from bench.procs import BenchError, Server, say, start_server
from gateway.base import event_types
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.events import Events
from tests.support import processes
from tests.support.identities import make_pki

PURPOSE = "ASD_ELIGIBILITY"  # DEMO's Subscribe grant: every type, every field
FULL = {"lines": 1_000_000, "households": registry_apply.HOUSEHOLDS, "catchup": 100_000}
QUICK = {"lines": 50_000, "households": 10_000, "catchup": 10_000}
SUBSCRIBERS = 20  # at once: 19 fast and the slow one
APPLY_TARGET_S, CATCHUP_TARGET_S = 60.0, 10.0
CROWD_TARGET = 1.2  # the fast ones' slowest time with the slow one / without it, at most
STREAMS, MAX_BATCH = 32, 1_000  # the gateway's subscription workers, per institution too
SLOW_PAUSE_S = 1.0  # the slow subscriber's pause after each batch
STABLE_S, CAP_S = 3.0, 600.0  # the head unchanged: the journal is read; any one wait
RESULTS = Path(__file__).resolve().parent / "results"
CROWDS = ("without", "with_slow", "again")  # the mean of the runs without: the baseline


def _feed(source: Path, data_dir: Path, lines: int) -> int:
    """A copy of `source` with bench.registry_apply's first `lines` applied; its journal rows."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, registry := data_dir / REGISTRY_FILE)
    member_of = registry_apply.households_of(registry)

    def lines_of() -> Iterator[str]:
        for change in registry_apply.changes(registry, lines):
            if change["type"] == "member.left":
                change["household_id"] = member_of[change["idcs"]]
            yield json.dumps(change)

    return sum(apply_changes(registry, lines_of()).applied.values())


def _serve(stack: ExitStack, work: Path, data_dir: Path, pki_dir: Path, logs: Path) -> Server:
    """`jisr serve` on data_dir, SQLite state of its own, stream limits raised by a config."""
    config, state = work / "events-gateway.toml", json.dumps(str(work / "events-state"))
    text = (
        f"[server]\nsubscription_workers = {STREAMS}\n"
        f"max_subscriptions_per_institution = {STREAMS}\n"
    )
    config.write_text(f"{text}[data]\nstate_dir = {state}\n", encoding="utf-8")
    argv = processes.jisr("serve", "--config", str(config), "--listen", "127.0.0.1:0")
    argv += ["--data-dir", str(data_dir), "--pki-dir", str(pki_dir)]
    server = start_server("events gateway", argv, logs / "events-gateway.log", tls=True)
    stack.callback(server.stop)
    return server


def _ingested(events: Events, sid: str, at_least: int, began: float) -> tuple[int, float]:
    """Wait until the log's head holds `at_least` events and stays put STABLE_S; (head, s
    from `began` to its last move). A subscriber's one read-only look at the head: the
    gateway refuses to acknowledge beyond it, naming it (CURSOR_OUT_OF_RANGE)."""
    head, moved = -1, time.monotonic()
    while time.monotonic() - began < CAP_S:
        try:
            events.acknowledge(sid, 2**62)
            raise BenchError("the gateway acknowledged a cursor beyond its log's head")
        except JisrError as exc:
            if exc.reason != "CURSOR_OUT_OF_RANGE":
                raise
            now, seen = time.monotonic(), int(exc.metadata["head_cursor"])
        if seen != head:
            head, moved = seen, now
        elif head >= at_least and now - moved >= STABLE_S:
            return head, moved - began
        time.sleep(0.25)
    raise BenchError(f"the event log held {head:,} events after {CAP_S:g} s, not {at_least:,}")


def _read(client: JisrClient, sid: str, after: int, stop: threading.Event | None) -> dict[str, Any]:
    """Catch up from `after` through the SDK (each batch's receipt and cursor checked); with
    `stop`, slowly: SLOW_PAUSE_S after each batch, until `stop` is set."""
    began, count, batches = time.perf_counter(), 0, 0
    stream = Events(client, PURPOSE).subscribe(sid, after=after, max_batch=MAX_BATCH, timeout=CAP_S)
    for answer in stream:
        count, batches = count + len(answer.message.notifications), batches + 1
        if stop is not None and stop.wait(SLOW_PAUSE_S):
            break
    seconds = round(time.perf_counter() - began, 3)
    if stop is None and stream.closing is None:
        raise BenchError("a subscriber's stream ended without its closing receipt")
    return {"events": count, "batches": batches, "seconds": seconds}


def _phase(server: Server, pairs: list[tuple[str, bool]], after: int, creds: Credentials) -> Any:
    """Subscribers (sid, slow) at once, each on a channel of its own, started together: the
    fast ones' times, the slow one's reading, the CPU of the gateway, this process, the rest."""
    stop, gate = threading.Event(), threading.Barrier(len(pairs) + 1)

    def one(client: JisrClient, sid: str, slow: bool) -> dict[str, Any]:
        try:
            Events(client, PURPOSE).get(sid)  # the channel and TLS up before the start
        finally:
            gate.wait(CAP_S)  # every party arrives, failed or not: none waits in vain
        return _read(client, sid, after, stop if slow else None)

    with ExitStack() as stack, ThreadPoolExecutor(len(pairs)) as pool:
        stack.callback(stop.set)  # on a failure too, before the pool waits for the slow one
        clients = [stack.enter_context(JisrClient(server.target, creds)) for _ in pairs]
        jobs = [(pool.submit(one, c, *p), p[1]) for c, p in zip(clients, pairs, strict=True)]
        gate.wait(CAP_S)
        before = process_clock(server.pid), machine_busy_seconds(), time.process_time()
        fast = [job.result(CAP_S) for job, slow in jobs if not slow]
        end = process_clock(server.pid), machine_busy_seconds(), time.process_time()
        wall = max(r["seconds"] for r in fast)
        stop.set()
        slow_one = next((job.result(CAP_S) for job, slow in jobs if slow), None)
    if before[0] is None or end[0] is None:
        raise BenchError(f"the events gateway stopped; see {server.log}")
    server_s, own_s = (end[0] - before[0]).cpu_s, end[2] - before[2]
    times, events = [r["seconds"] for r in fast], sum(r["events"] for r in fast)
    found = {"seconds": times, "max_s": max(times), "slow": slow_one}
    found["events_each"] = sorted({r["events"] for r in fast})
    found["gateway_cpu_us_per_event"] = round(server_s / events * 1e6, 1)
    cpu = {"gateway": server_s, "client": own_s, "other": end[1] - before[1] - server_s - own_s}
    return found | {f"{k}_cores": round(max(0.0, v) / wall, 2) for k, v in cpu.items()}


def _subscribers(server: Server, sids: list[str], after: int, creds: Credentials) -> Any:
    """sids[0] alone; the others at once, then with sids[0] slow among them, then again."""
    alone = _phase(server, [(sids[0], False)], after, creds)
    alone |= {"seconds": alone["max_s"], "events": alone["events_each"][0]}
    alone |= {"events_per_s": round(alone["events"] / alone["seconds"])}
    alone |= {"target_s": CATCHUP_TARGET_S, "target_met": alone["seconds"] <= CATCHUP_TARGET_S}
    say(f"    one subscriber: {alone['events']:,} events in {alone['seconds']:.2f} s")
    fast = [(sid, False) for sid in sids[1:]]
    crowd: dict[str, Any] = {"subscribers": len(sids), "fast": len(fast)}
    for key, pairs in zip(CROWDS, (fast, [(sids[0], True), *fast], fast), strict=True):
        crowd[key] = _phase(server, pairs, after, creds)
        say(f"    {len(fast)} fast at once, {key}: slowest {crowd[key]['max_s']:.2f} s")
    crowd["baseline_max_s"] = (crowd["without"]["max_s"] + crowd["again"]["max_s"]) / 2
    ratio = crowd["with_slow"]["max_s"] / crowd["baseline_max_s"]
    crowd |= {"slow_pause_s": SLOW_PAUSE_S, "ratio": round(ratio, 3)}
    crowd |= {"target_ratio": CROWD_TARGET, "target_met": ratio <= CROWD_TARGET}
    return alone, crowd


def measure(work: Path, pki_dir: Path, logs: Path, sizes: dict[str, int]) -> dict[str, Any]:
    """The apply of `lines` changes (a registry of `households`), then a gateway's
    subscribers catching up on `catchup` events: one alone, then `subscribers` at once."""
    lines, households, catchup = sizes["lines"], sizes["households"], sizes["catchup"]
    apply = registry_apply.measure(work / "events-registry", lines, households)
    apply |= {"target_s": APPLY_TARGET_S, "target_met": apply["seconds"] <= APPLY_TARGET_S}
    say(f"    apply of {lines:,} changes ({households:,} households): {apply['seconds']} s")
    data_dir = work / "events-data"
    rows = _feed(work / "events-registry" / REGISTRY_FILE, data_dir, catchup)
    creds = Credentials.from_pki(pki_dir, INSTITUTION)
    with ExitStack() as stack:
        began = time.monotonic()
        server = _serve(stack, work, data_dir, pki_dir, logs)
        events = Events(stack.enter_context(JisrClient(server.target, creds, timeout=30)), PURPOSE)
        count = max(2, sizes.get("subscribers", SUBSCRIBERS))
        made = [events.create(event_types.NAMES, from_oldest=True) for _ in range(count)]
        sids = [answer.message.subscription.subscription_id for answer in made]
        head, ingest_s = _ingested(events, sids[0], rows, began)
        log = {"journal_rows": rows, "head": head, "ingest_s": round(ingest_s, 1)}
        say(f"    gateway log: {head:,} events from {rows:,} journal rows in {ingest_s:.1f} s")
        alone, crowd = _subscribers(server, sids, head - catchup, creds)
    read = {alone["events"], *(n for key in CROWDS for n in crowd[key]["events_each"])}
    if read != {catchup}:
        raise BenchError(f"subscribers read {sorted(read)} events, not {catchup:,} each")
    return {"apply": apply, "log": log, "catchup": alone, "crowd": crowd}


def table(r: dict[str, Any]) -> str:
    """The registry events rows of `make bench`'s report."""
    a, log, c, crowd = r["apply"], r["log"], r["catchup"], r["crowd"]
    met, fast = {True: "met", False: "NOT met"}, f"{crowd['fast']} at once"
    lines = [
        f"registry events (bench.events): gateway on SQLite, {STREAMS} subscription workers;"
        f" DEMO subscribers, max_batch {MAX_BATCH:,}, every batch's receipt verified",
        f"  jisr registry apply, {a['lines']:,} lines ({a['journal_rows']:,} journal rows):"
        f" {a['seconds']:.1f} s, {a['lines_per_second']:,} lines/s"
        f" (target <= {APPLY_TARGET_S:g} s: {met[a['target_met']]})",
        f"  the gateway reads {log['journal_rows']:,} journal rows into its log:"
        f" {log['ingest_s']:.1f} s from its start ({log['head']:,} events with derived ones)",
        f"  {'catching up on ' + format(c['events'], ',') + ' events':<38} {'slowest s':>9}"
        f" {'fastest s':>9} {'gw µs/event':>11} {'gw cores':>8} {'client':>6} {'other':>5}",
    ]
    rows = {"one subscriber alone": {**c, "seconds": [c["seconds"]]}, fast: crowd["without"]}
    rows |= {f"{fast} + 1 slow ({SLOW_PAUSE_S:g} s/batch)": crowd["with_slow"]}
    rows[f"{fast}, again"] = crowd["again"]
    lines += [
        f"    {label:<36} {row['max_s']:>9.2f} {min(row['seconds']):>9.2f}"
        f" {row['gateway_cpu_us_per_event']:>11.1f} {row['gateway_cores']:>8.2f}"
        f" {row['client_cores']:>6.2f} {row['other_cores']:>5.2f}"
        for label, row in rows.items()
    ]
    slow = crowd["with_slow"]["slow"]
    lines += [
        f"  one subscriber <= {CATCHUP_TARGET_S:g} s: {met[c['target_met']]}; slowest fast with"
        f" / without (mean of 2) the slow one {crowd['ratio']:.2f} (<= {CROWD_TARGET:g}:"
        f" {met[crowd['target_met']]}); the slow one read {slow['batches']} batches meanwhile",
        "  gw: the gateway's CPU; client: this process's (a thread each); other: the rest's",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK}")
    for name, default in {**FULL, "subscribers": SUBSCRIBERS}.items():
        parser.add_argument(f"--{name}", type=int, help=f"{default:,}")
    parser.add_argument("--output", type=Path, default=RESULTS / "events.json", help="JSON")
    args = parser.parse_args()
    sizes = {**(QUICK if args.quick else FULL)}
    sizes |= {k: v for k in (*FULL, "subscribers") if (v := getattr(args, k)) is not None}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwinds as Ctrl-C does
    (logs := RESULTS / "logs").mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="jisr-events-") as tmp:
            result = measure(Path(tmp), make_pki(Path(tmp) / "pki"), logs, sizes)
    except BenchError as exc:
        say(f"bench.events: {exc}")
        return 1
    except KeyboardInterrupt:
        say("bench.events: interrupted; the gateway stopped")
        return 130
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
