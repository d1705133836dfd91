"""Registry event delivery under faults, with real processes (docs/events.md, "Delivery"):
a subscriber process killed mid-stream resumes from its acknowledged cursor with nothing
lost (the digest proves it), a gateway killed mid-delivery restarts on the same state with
every acknowledged cursor and every applied event, and a subscriber that stops reading
holds back no other institution's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from adapters.demo_data import generate
from gateway.base import event_types
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.events import Events, local_digest
from tests.support import databases, processes, registry_rows
from tests.support.event_site import ASD, WAIT_S, Site, read, start, until

pytestmark = pytest.mark.integration

# Every type: DEMO's Subscribe grant for ASD_ELIGIBILITY allows them all.
EVERY_TYPE = list(event_types.NAMES)
DEATHS_AND_RESCORINGS = ["person.died", "household.rescored"]
# Bounds on loops that read until something happens: batches taken from one stream.
MAX_BATCHES = 2_000

# The subscriber a partner would run: follow the subscription in small batches; for each
# batch write its events down (flushed), then acknowledge its cursor and say so. Writing
# before acknowledging is what makes a kill between the two a duplicate, never a loss.
SUBSCRIBER = """\
import sys
import time
from pathlib import Path

from gateway.sdk.client import Credentials, JisrClient
from gateway.sdk.events import Events

target, pki_dir, institution, purpose, sid, out = sys.argv[1:7]
max_batch, pause, timeout = int(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9])
credentials = Credentials.from_pki(Path(pki_dir), institution)
with JisrClient(target, credentials, timeout=30) as client, open(out, "a") as log:
    events = Events(client, purpose)
    stream = events.subscribe(sid, follow=True, max_batch=max_batch, timeout=timeout)
    for answer in stream:
        batch = answer.message
        for n in batch.notifications:
            log.write(f"event {n.cursor} {n.event.source} {n.event.event_id}\\n")
        log.flush()
        if batch.notifications:
            events.acknowledge(sid, batch.cursor)
            log.write(f"ack {batch.cursor}\\n")
            log.flush()
        time.sleep(pause)
"""


@dataclass
class Lab:
    """A site (test_registry_events.Site) whose gateway can be killed and started again on
    the same state: the same JISR_STATE_DIR, or the same PostgreSQL schema."""

    site: Site
    folder: Path
    url: str | None
    killed: list[processes.Proc] = field(default_factory=list)

    def kill_gateway(self) -> None:
        """SIGKILL the gateway: no drain, no shutdown hook, no WAL checkpoint."""
        proc = self.site.gateways.pop(0)
        self.killed.append(proc)
        proc.popen.kill()
        assert proc.popen.wait(30) == -signal.SIGKILL
        proc.log.rename(proc.log.with_suffix(f".killed-{len(self.killed)}.log"))

    def start_gateway(self) -> None:
        site = self.site
        site.gateways[:0] = start(self.folder, site.data_dir, site.pki_dir, self.url, 1)

    def changes(self, count: int) -> list[dict[str, object]]:
        """About `count` SYNTHETIC change lines for the site's registry as it stands (the
        month after its latest date), from `jisr demo-data --changes`."""
        path = self.folder / f"demo-changes-{next(self.site.serial)}.ndjson"
        done = subprocess.run(
            processes.jisr(
                "demo-data",
                "--changes",
                str(path),
                "--count",
                str(count),
                "--data-dir",
                str(self.site.data_dir),
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines: list[dict[str, object]] = [
            json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line
        ]
        assert len(lines) > count // 2
        return lines


@contextmanager
def _lab(backend: str, pki_dir: Path, folder: Path) -> Iterator[Lab]:
    """As test_registry_events._site with one gateway, keeping what a restart needs."""
    data_dir = folder / "data"
    generate(data_dir, 1_500, 21)
    with databases.for_backend(backend) as url, ExitStack() as stack:
        gateways = start(folder, data_dir, pki_dir, url, 1)
        households = iter(registry_rows.households(data_dir, 1_000))
        site = Site(data_dir, gateways, pki_dir, stack, households)
        try:
            yield Lab(site, folder, url)
        finally:
            stack.close()
            codes = [proc.stop() for proc in site.gateways]
            assert codes == [0] * len(codes)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def lab(
    request: pytest.FixtureRequest, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    with _lab(request.param, pki_dir, tmp_path_factory.mktemp("event-faults")) as started:
        yield started


def _ids(lines: list[dict[str, object]], types: list[str]) -> set[str]:
    return {str(line["id"]) for line in lines if line["type"] in types}


def _thirds(lines: list[dict[str, object]]) -> list[list[dict[str, object]]]:
    """Three files in order: each line stays valid, the lines before it applied first."""
    step = -(-len(lines) // 3)
    return [lines[i : i + step] for i in range(0, len(lines), step)]


@dataclass(frozen=True)
class Written:
    """What the killed subscriber wrote down: (cursor, source, event id) and its acks."""

    events: list[tuple[int, str, str]]
    acks: list[int]


def _written(path: Path) -> Written:
    """The subscriber's complete lines (a kill may cut the last one short)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    events: list[tuple[int, str, str]] = []
    acks: list[int] = []
    for line in text.split("\n")[:-1]:
        match line.split(" "):
            case ["event", cursor, source, event_id]:
                events.append((int(cursor), source, event_id))
            case ["ack", cursor]:
                acks.append(int(cursor))
            case _:
                raise AssertionError(f"{path}: unexpected line {line!r}")
    return Written(events, acks)


def _wait_for_acks(path: Path, popen: subprocess.Popen[bytes], count: int) -> Written:
    deadline = time.monotonic() + 2 * WAIT_S
    while time.monotonic() < deadline:
        written = _written(path)
        if len(written.acks) >= count:
            return written
        if popen.poll() is not None:
            errors = path.with_suffix(".err").read_text(errors="replace")
            raise AssertionError(f"the subscriber ended ({popen.returncode}):\n{errors}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} batches acknowledged in {2 * WAIT_S:.0f} s")


def _unique(events: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """Duplicates removed (at least once delivery), in cursor order; an event id is at one
    cursor only."""
    by_id: dict[str, tuple[int, str, str]] = {}
    for event in events:
        assert by_id.setdefault(event[2], event) == event, f"{event[2]} at two cursors"
    return sorted(by_id.values())


def _catch_up(events: Events, sid: str, max_batch: int) -> list[epb.NotificationBatch]:
    """One Subscribe naming no cursor, to the log's head, then acknowledged (a stream
    with nothing after the acknowledged cursor has no batch at all)."""
    stream = events.subscribe(sid, max_batch=max_batch)
    batches = [answer.message for answer in stream]
    if stream.cursor is not None:
        events.acknowledge(sid, stream.cursor)
    return batches


def _drain(stream: Iterator[object]) -> None:
    for _ in range(MAX_BATCHES):
        next(stream)


def _notified(batches: list[epb.NotificationBatch]) -> list[tuple[int, str, str]]:
    return [(n.cursor, n.event.source, n.event.event_id) for b in batches for n in b.notifications]


def test_a_subscriber_killed_mid_stream_resumes_with_nothing_lost(lab: Lab, tmp_path: Path) -> None:
    site = lab.site
    events = Events(site.client("DEMO"), ASD)
    created = events.create(EVERY_TYPE).message.subscription
    sid, start = created.subscription_id, created.start_cursor
    lines = lab.changes(600)
    files = _thirds(lines)
    site.apply(*files[0])
    script = tmp_path / "subscriber.py"
    script.write_text(SUBSCRIBER, encoding="utf-8")
    out = tmp_path / "received.txt"
    args = [site.gateways[0].target, str(site.pki_dir), "DEMO", ASD, sid, str(out)]
    with out.with_suffix(".err").open("wb") as err:
        subscriber = subprocess.Popen(
            [sys.executable, str(script), *args, "10", "0.2", str(4 * WAIT_S)],
            stdout=err,
            stderr=subprocess.STDOUT,
            env=processes.environment(),
        )
    try:
        for more in files[1:]:
            site.apply(*more)
        _wait_for_acks(out, subscriber, 3)
        subscriber.kill()
        assert subscriber.wait(30) == -signal.SIGKILL
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait(30)
    before = _written(out)
    acknowledged = events.get(sid).message.subscription.acknowledged
    # An Acknowledge in flight at the kill may have landed; its events were written first.
    assert before.acks[-1] <= acknowledged <= max(c for c, _, _ in before.events)

    applied = {str(line["id"]) for line in lines}
    resumed: list[epb.NotificationBatch] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        resumed += _catch_up(events, sid, 50)
        if applied <= {e[2] for e in before.events + _notified(resumed)}:
            break
        time.sleep(0.1)
    assert resumed, "nothing left to resume: the subscriber was killed after the last event"
    assert resumed[0].after == acknowledged
    assert all(cursor > acknowledged for cursor, _, _ in _notified(resumed))
    union = _unique(before.events + _notified(resumed))
    assert applied <= {event_id for _, _, event_id in union}
    through = resumed[-1].cursor
    assert all(start < cursor <= through for cursor, _, _ in union)

    theirs = events.digest(sid, start, through).message
    mine, per_source = local_digest(
        epb.ChangeEvent(source=source, event_id=event_id) for _, source, event_id in union
    )
    assert (theirs.count, theirs.sha256) == (mine.count, mine.sha256)
    assert theirs.count == len(union)
    assert {(s.source, s.count, s.sha256) for s in theirs.sources} == {
        (source, d.count, d.sha256) for source, d in per_source.items()
    }


def test_a_gateway_killed_mid_delivery_loses_nothing_acknowledged(lab: Lab) -> None:
    site = lab.site
    events = Events(site.client("DEMO"), ASD)
    created = events.create(DEATHS_AND_RESCORINGS).message.subscription
    sid, start = created.subscription_id, created.start_cursor
    first = lab.changes(300)
    site.apply(*first)
    acked: list[tuple[int, str, str]] = []
    cursor = start
    stream = iter(events.subscribe(sid, follow=True, max_batch=5, timeout=4 * WAIT_S))
    for _ in range(MAX_BATCHES):
        batch = next(stream).message
        if batch.notifications:
            acked += _notified([batch])
            cursor = events.acknowledge(sid, batch.cursor).message.acknowledged
            assert cursor == batch.cursor
        if len(acked) >= 15:
            break
    # More changes, applied just before the kill: the gateway may be reading them.
    second = lab.changes(300)
    site.apply(*second)
    lab.kill_gateway()
    with pytest.raises(JisrError) as ended:
        _drain(stream)  # batches the gateway sent before it died, then its end
    assert ended.value.code == grpc.StatusCode.UNAVAILABLE

    lab.start_gateway()
    events = Events(site.client("DEMO"), ASD)
    kept = events.get(sid).message.subscription
    assert (kept.start_cursor, kept.acknowledged) == (start, cursor)
    assert [event_types.name(t) for t in kept.types] == DEATHS_AND_RESCORINGS

    expected = _ids(first + second, DEATHS_AND_RESCORINGS)
    remaining = expected - {event_id for _, _, event_id in acked}

    def resumed_all() -> list[epb.Notification]:
        got = read(events, sid)
        return got if remaining <= {n.event.event_id for n in got} else []

    until(resumed_all)
    resumed = events.subscribe(sid, max_batch=50)
    batches = [answer.message for answer in resumed]
    assert batches[0].after == cursor
    after = _notified(batches)
    assert [c for c, _, _ in after] == sorted({c for c, _, _ in after})
    assert all(c > cursor for c, _, _ in after)
    assert {event_id for _, _, event_id in after} == remaining
    assert resumed.cursor is not None
    theirs = events.digest(sid, start, resumed.cursor).message
    mine, _ = local_digest(
        epb.ChangeEvent(source=source, event_id=event_id) for _, source, event_id in acked + after
    )
    assert theirs.count == len(expected)
    assert (theirs.count, theirs.sha256) == (mine.count, mine.sha256)


def test_a_slow_subscriber_does_not_hold_back_another(lab: Lab) -> None:
    site = lab.site
    anss = Events(site.client("ANSS"), ASD)
    fast = anss.create(DEATHS_AND_RESCORINGS).message.subscription.subscription_id
    credentials = Credentials.from_pki(site.pki_dir, "DEMO")
    with JisrClient(site.gateways[0].target, credentials, timeout=30) as slow_client:
        demo = Events(slow_client, ASD)
        slow = demo.create(EVERY_TYPE).message.subscription.subscription_id
        backlog = lab.changes(600)
        site.apply(*backlog)
        # One batch per event, each with its receipt: far more than the transport buffers.
        held = iter(demo.subscribe(slow, follow=True, max_batch=1, timeout=4 * WAIT_S))
        first = next(held).message
        assert len(first.notifications) == 1
        # From here on nobody reads `held`: the gateway can send it only what the transport
        # buffers, then its stream waits on its subscriber (docs/events.md, "Backpressure").

        caught_up = _ids(backlog, DEATHS_AND_RESCORINGS)
        seen: set[str] = set()

        def fast_reads(wanted: set[str]) -> list[epb.Notification]:
            got = [n for b in _catch_up(anss, fast, 500) for n in b.notifications]
            seen.update(n.event.event_id for n in got)
            return got if wanted <= seen else []

        assert until(lambda: fast_reads(caught_up)), "ANSS did not catch up"
        household, line = site.rescoring()
        site.apply(line)
        fresh = until(lambda: fast_reads({str(line["id"])}))
        assert str(line["id"]) in seen, f"the fresh event did not reach ANSS in {WAIT_S:.0f} s"
        assert household in {n.event.household_id for n in fresh}

        # The slow stream was held, not dropped: it goes on where it stopped.
        following = next(held).message
        assert following.after == first.cursor
