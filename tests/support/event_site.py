"""A registry of its own with gateways on it, for registry-event and due-process tests
with real processes: change lines applied with the real `jisr registry apply`, gateways
started with a short notice period so that due process runs in seconds."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adapters.demo_data import generate
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pb.jisr.v1 import records_pb2
from gateway.pipeline.programmes import DEFAULT_FILE
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.events import Events
from tests.support import databases, processes, registry_rows

ASD = "ASD_ELIGIBILITY"
AMO = "AMO_ENROLMENT"
WAIT_S = 30.0  # how long an applied change may take to reach the log, on a busy machine
# Seconds of notice per programme in these tests (the shipped file gives 30 days).
NOTICE_S = {"AMOT": 1.0, "ASD": 1.0}
SHIPPED = Path(__file__).resolve().parents[2] / "gateway" / "data" / DEFAULT_FILE


def programmes_file(folder: Path, notice_s: dict[str, float]) -> Path:
    """The shipped programmes.toml with each named programme's notice in seconds."""
    out: list[str] = []
    code = ""
    for text in SHIPPED.read_text(encoding="utf-8").splitlines():
        if text.startswith("code = "):
            code = text.split('"')[1]
        if text.startswith("notice_days = ") and code in notice_s:
            text = f"notice_days = {notice_s[code] / 86_400!r}"  # noqa: PLW2901
        out.append(text)
    path = folder / "programmes.toml"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


@dataclass
class Site:
    """A registry of its own, one or two gateways on it, and clients by institution."""

    data_dir: Path
    gateways: list[processes.Proc]
    pki_dir: Path
    stack: ExitStack
    households: Iterator[registry_rows.Household]
    serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    database_url: str | None = None  # the gateways' JISR_DATABASE_URL, for other processes

    def client(self, institution: str, replica: int = 0) -> JisrClient:
        creds = Credentials.from_pki(self.pki_dir, institution)
        return self.stack.enter_context(
            JisrClient(self.gateways[replica].target, creds, timeout=30)
        )

    def apply(self, *changes: dict[str, object]) -> None:
        """Apply change lines with the real CLI, as a source registry would."""
        path = self.data_dir / f"changes-{next(self.serial)}.ndjson"
        path.write_text("".join(json.dumps(c) + "\n" for c in changes), encoding="utf-8")
        done = subprocess.run(
            processes.jisr("registry", "apply", str(path), "--data-dir", str(self.data_dir)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def death(self) -> tuple[str, str, dict[str, object]]:
        """(household id, person, change line) for the death of a living member."""
        household, person = next(
            (h, m) for h in self.households for m in h.members if self.alive(m)
        )
        line: dict[str, object] = {
            "id": f"RNP-T-{next(self.serial)}",
            "source": "RNP",
            "type": "person.died",
            "effective": "2026-11-03",
            "idcs": person,
        }
        return household.household_id, person, line

    def alive(self, idcs: str) -> bool:
        with closing(registry_rows.connect(self.data_dir)) as conn:
            row = conn.execute("SELECT vital_status FROM person WHERE idcs = ?", (idcs,)).fetchone()
        return bool(row) and row[0] == records_pb2.VITAL_STATUS_ALIVE

    def rescoring(self, score: float = 9.9) -> tuple[str, dict[str, object]]:
        household = next(self.households)
        line: dict[str, object] = {
            "id": f"RSU-T-{next(self.serial)}",
            "source": "RSU",
            "type": "household.rescored",
            "effective": "2026-11-04",
            "household_id": household.household_id,
            "score": score,
        }
        return household.household_id, line


def start(  # noqa: PLR0917
    folder: Path,
    data_dir: Path,
    pki_dir: Path,
    url: str | None,
    n: int,
    notice_s: dict[str, float] | None = None,
    more_env: dict[str, str] | None = None,
) -> list[processes.Proc]:
    """`n` gateways on the registry in `data_dir` (state on PostgreSQL when `url`)."""
    programmes = programmes_file(folder, notice_s or NOTICE_S)
    env = {
        "JISR_EVENTS_POLL_SECONDS": "0.1",
        "JISR_DUE_PROCESS_SWEEP_SECONDS": "0.1",
        "JISR_PROGRAMMES": str(programmes),
    }
    env.update(more_env or {})
    if url:
        env["JISR_DATABASE_URL"] = url
    procs = []
    for i in range(n):
        state = folder / f"state-{i}"
        args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        procs.append(
            processes.start(
                [*args, "--pki-dir", str(pki_dir)],
                folder / f"gateway-{i}.log",
                env={**env, "JISR_STATE_DIR": str(state)},
            )
        )
    return procs


@contextmanager
def started_site(
    backend: str,
    replicas: int,
    pki_dir: Path,
    folder: Path,
    notice_s: dict[str, float] | None = None,
) -> Iterator[Site]:
    """A registry of its own and `replicas` gateways on it, state on `backend`."""
    data_dir = folder / "data"
    generate(data_dir, 1_500, 21)
    database = databases.postgres_schema() if backend == "postgresql" else nullcontext()
    with database as url, ExitStack() as stack:
        gateways = start(folder, data_dir, pki_dir, url, replicas, notice_s)
        site = Site(
            data_dir,
            gateways,
            pki_dir,
            stack,
            iter(registry_rows.households(data_dir, 1_000)),
            database_url=url,
        )
        try:
            yield site
        finally:
            stack.close()
            for proc in gateways:
                assert proc.stop() == 0


def until(found: Callable[[], list[epb.Notification]]) -> list[epb.Notification]:
    """Read until something arrives (the gateway reads journals every 0.1 s)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = found()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def read(events: Events, sid: str, after: int | None = None) -> list[epb.Notification]:
    stream = events.subscribe(sid, after=after)
    return [n for answer in stream for n in answer.message.notifications]


def at_least(events: Events, sid: str, count: int) -> list[epb.Notification]:
    return until(lambda: got if len(got := read(events, sid)) >= count else [])


def error(run: Callable[[], object]) -> JisrError:
    with pytest.raises(JisrError) as caught:
        run()
    return caught.value
