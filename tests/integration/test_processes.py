"""`jisr serve --processes N` (docs/deployment.md): N workers on one port, each with its
own audit chain on the shared stores; a killed worker is restarted and nothing it
acknowledged lacks its audit record; SIGTERM stops them all. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx2 as httpx
import pytest

from gateway.audit.store import open_audit_store
from gateway.sdk.client import Credentials, JisrClient, JisrError
from tests.support import databases, processes, registry_rows

pytestmark = pytest.mark.integration
PURPOSE = "AMO_ENROLMENT"
WAIT_S = 60.0


@dataclass
class Pool:
    proc: processes.Proc
    probes: str
    state: Path
    database_url: str | None
    households: list[str]
    creds: Credentials

    def call(self, index: int) -> str:
        """One call on a new connection (the kernel picks a worker per connection); the
        audit record its receipt names."""
        with JisrClient(self.proc.target, self.creds, timeout=30) as client:
            answer = client.household_status(PURPOSE, self.households[index % 20])
        return str(answer.receipt["audit"])

    def workers(self) -> list[int]:
        return processes.child_pids(self.proc.pid, "gateway.cli")

    def recorded(self, audit: str) -> bool:
        node, seq = audit.rsplit(":", 1)
        store = open_audit_store(self.database_url, self.state, read_only=True)
        try:
            return any(r.seq == int(seq) for r in store.records(node, int(seq) - 1))
        finally:
            store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def pool(
    request: pytest.FixtureRequest, registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> Iterator[Pool]:
    probes = f"127.0.0.1:{processes.free_port()}"
    env = {
        "JISR_PROCESSES": "2",
        "JISR_HEALTH_LISTEN": probes,
    }
    with databases.gateway_on(request.param, registry_dir, pki_dir, tmp_path, env=env) as (
        proc,
        url,
    ):
        households = [h.household_id for h in registry_rows.households(registry_dir, 20)]
        yield Pool(
            proc, probes, tmp_path / "state", url, households,
            Credentials.from_pki(pki_dir, "DEMO"),
        )  # fmt: skip


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        time.sleep(0.2)


def test_every_worker_answers_on_the_one_port_with_its_own_audit_chain(pool: Pool) -> None:
    assert len(pool.workers()) == 2
    nodes = {pool.call(i).rsplit(":", 1)[0] for i in range(40)}
    # 40 connections all on one worker would be a 1 in 2^39 chance under SO_REUSEPORT.
    assert len(nodes) == 2
    assert "2 processes" in pool.proc.output()


def test_a_killed_worker_is_restarted_and_every_answered_call_is_recorded(pool: Pool) -> None:
    answered = [pool.call(i) for i in range(6)]
    victim = pool.workers()[0]
    os.kill(victim, signal.SIGKILL)
    _until(lambda: len(pool.workers()) == 2 and victim not in pool.workers(), "a new worker")
    _until(lambda: httpx.get(f"http://{pool.probes}/readyz", timeout=5).status_code == 200,
           "ready again")  # fmt: skip
    answered += [pool.call(i) for i in range(6, 12)]
    assert all(pool.recorded(audit) for audit in answered)
    assert "exited (killed by SIGKILL)" in pool.proc.output()


def test_a_killed_workers_call_in_flight_fails_and_what_it_answered_is_recorded(
    pool: Pool,
) -> None:
    """A batch stream held open on a worker, its first batch answered: the worker is
    killed. The stream fails (never hangs), the answered batch has its audit record, and
    the supervisor starts a worker in its place."""
    killed = threading.Event()

    def batches() -> Iterator[list[str]]:
        yield pool.households[:5]
        killed.wait(WAIT_S)  # the stream stays open, its next batch not yet sent
        yield pool.households[5:10]

    with JisrClient(pool.proc.target, pool.creds, timeout=WAIT_S) as client:
        answers = iter(client.verify_batch_stream("RECERTIFICATION", "ASD", batches()))
        audit = str(next(answers).receipt["audit"])
        victim = int(audit.rsplit(":", 1)[0].rsplit("-", 2)[1])  # node: host-pid-started
        assert victim in pool.workers()
        os.kill(victim, signal.SIGKILL)
        killed.set()
        with pytest.raises(JisrError) as failed:
            list(answers)
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert pool.recorded(audit)
    _until(lambda: len(pool.workers()) == 2 and victim not in pool.workers(), "a new worker")


def test_sigterm_stops_every_worker_and_exits_cleanly(pool: Pool) -> None:
    workers = pool.workers()
    assert pool.proc.stop(signal.SIGTERM) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_the_probes_answer_without_a_client_certificate(pool: Pool) -> None:
    ready = httpx.get(f"http://{pool.probes}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"worker-0": "ok", "worker-1": "ok"}}
    assert httpx.get(f"http://{pool.probes}/livez", timeout=10).status_code == 200


def test_what_every_worker_would_refuse_is_one_line_before_any_starts(
    registry_dir: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        processes.jisr(
            "serve", "--listen", "127.0.0.1:0", "--processes", "2",
            "--data-dir", str(registry_dir), "--pki-dir", str(tmp_path / "no-pki"),
        ),
        capture_output=True, text=True, timeout=120, check=False,
        env=processes.environment({"JISR_STATE_DIR": str(tmp_path / "state")}),
    )  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "no gateway signing key" in lines[0]
    assert "serving" not in done.stdout


def test_a_worker_that_cannot_start_stops_the_start_with_its_reason(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:  # worker 0's /metrics port (metrics_listen + 0)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        metrics = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            processes.jisr(
                "serve", "--listen", "127.0.0.1:0", "--processes", "2",
                "--data-dir", str(registry_dir), "--pki-dir", str(pki_dir),
                "--metrics-listen", metrics,
            ),
            capture_output=True, text=True, timeout=120, check=False,
            env=processes.environment({"JISR_STATE_DIR": str(tmp_path / "state")}),
        )  # fmt: skip
    assert done.returncode == 1
    assert "exited while starting" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_port_is_refused_naming_it(
    registry_dir: Path, pki_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            processes.jisr(
                "serve", "--listen", f"127.0.0.1:{port}", "--processes", "2",
                "--data-dir", str(registry_dir), "--pki-dir", str(pki_dir),
            ),
            capture_output=True, text=True, timeout=120, check=False,
            env=processes.environment({"JISR_STATE_DIR": str(tmp_path / "state")}),
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_a_refused_call_is_still_an_answer_not_a_lost_connection(pool: Pool) -> None:
    with (
        JisrClient(pool.proc.target, pool.creds, timeout=30) as client,
        pytest.raises(JisrError) as refused,
    ):
        client.household_status("NOT_A_PURPOSE", pool.households[0])
    assert refused.value.reason  # a documented reason from whichever worker answered


def test_workers_stop_when_their_supervisor_is_killed(pool: Pool) -> None:
    workers = pool.workers()
    pool.proc.stop(signal.SIGKILL)
    _until(
        lambda: all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in workers),
        "the workers gone with their supervisor",
    )


def test_a_wedged_worker_is_killed_and_replaced(pool: Pool) -> None:
    victim = pool.workers()[0]
    os.kill(victim, signal.SIGSTOP)
    try:
        _until(lambda: victim not in pool.workers() and len(pool.workers()) == 2,
               "the wedged worker replaced")  # fmt: skip
    finally:
        with suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
    assert "stopped answering /livez" in pool.proc.output()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _yielding_threads(pid: int) -> int:
    """How many threads of `pid` run under SCHED_BATCH (cpus.yield_on_wake)."""
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):  # a thread that ended meanwhile
            count += os.sched_getscheduler(int(task.name)) == os.SCHED_BATCH
    return count


def _allowed_cpus(pid: int) -> set[str]:
    """The CPUs each thread of `pid` may run on, as /proc lists them."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):  # a thread that ended meanwhile
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    lists.add(line.split(":", 1)[1].strip())
    return lists


@pytest.fixture(scope="module")
def pinned(
    registry_dir: Path, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[processes.Proc, list[int]]]:
    """Two pinned workers on SQLite, shared by the tests that only look at them."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("pinning needs 2 CPUs")
    env = {"JISR_PROCESSES": "2", "JISR_PIN_PROCESSES": "1"}
    state = tmp_path_factory.mktemp("pinned")
    with databases.gateway_on("sqlite", registry_dir, pki_dir, state, env=env) as (proc, _):
        yield proc, processes.child_pids(proc.pid, "gateway.cli")


def test_pinned_workers_each_run_every_thread_on_a_cpu_of_their_own(
    pinned: tuple[processes.Proc, list[int]], registry_dir: Path, pki_dir: Path
) -> None:
    proc, workers = pinned
    assert len(workers) == 2
    per_worker = [_allowed_cpus(pid) for pid in workers]
    assert all(len(cpus) == 1 for cpus in per_worker), per_worker
    assert per_worker[0] != per_worker[1]
    households = [h.household_id for h in registry_rows.households(registry_dir, 2)]
    with JisrClient(proc.target, Credentials.from_pki(pki_dir, "DEMO"), timeout=30) as c:
        assert c.household_status(PURPOSE, households[0]).receipt["decision"] == "permit"


def test_in_a_pinned_worker_the_audit_writer_alone_waits_its_turn_on_the_cpu(
    pinned: tuple[processes.Proc, list[int]],
) -> None:
    _, workers = pinned
    assert [_yielding_threads(pid) for pid in workers] == [1, 1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs CPUs to spare")
def test_unpinned_workers_run_every_thread_under_the_default_policy(pool: Pool) -> None:
    assert [_yielding_threads(pid) for pid in pool.workers()] == [0, 0]
