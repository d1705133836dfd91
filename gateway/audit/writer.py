"""Group commit of one gateway process's audit chain: many callers, one writer thread.

Every exchange appends its audit record durably BEFORE replying (fail closed). Committing
each record on its own would cost an fsync (SQLite) or a round trip and a commit
(PostgreSQL) per exchange; instead callers queue drafts and block, and one background
thread takes whatever is queued (up to `max_batch`), links it onto the chain's head
(`record.link`: seq, prev_hash, hash), stores it with one `append_batch` transaction, then
wakes each caller with its linked record. Under load a commit carries many records; alone,
a caller waits for one commit, as it would without batching.

Outcomes for a caller:
- the linked record: it is durable, reply (and quote `record.record_id` in the receipt);
- ReplayError: its (requester, jti, part) is recorded already, by this or another replica
  (the other records of its batch are relinked and committed without it);
- AuditUnavailable: the store failed or did not answer within `timeout`: answer
  UNAVAILABLE and disclose nothing. After a store failure the writer re-reads the head
  before the next batch, so the chain never skips a seq nor forks.

While the store is down, appends fail at once (a circuit breaker): when a batch fails and
the head cannot be read back either, `append` raises AuditUnavailable without queueing,
and the writer thread alone probes the store (reads the head) every `probe_seconds`; the
first probe that answers closes the breaker. Store failures are logged at a bounded rate:
one ERROR line when they start, at most one summary line per `failure_log_seconds` with
the number of appends failed since, one WARNING line when the store answers again.

The writer also signs checkpoints of the head (through `sign`): after every
`checkpoint_every` records, at least every `checkpoint_seconds` while records are added,
and on `close`. Each signs the Merkle root of the records since the writer's previous
one (gateway/audit/merkle.py), against which one record's inclusion is proved: their
hashes are kept as they are committed, or read back from the store after a failure or a
restart left a gap.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from gateway.audit import merkle
from gateway.audit.record import AuditRecord, Checkpoint, link
from gateway.audit.store import AuditStore, ReplayError

log = logging.getLogger("jisr.audit")

# After a failed checkpoint, the next attempt waits at least this long (no retry storm
# against a store that is down; appends report the outage themselves).
CHECKPOINT_RETRY_S = 1.0
# The most records one checkpoint's Merkle tree spans. Checkpoints come every
# checkpoint_every records, so only a long run of failed checkpoints reaches it; the
# checkpoint then signs the chain's head without a root (its records get no inclusion
# proof, docs/audit-format.md §9) rather than hold or re-read that many hashes.
MAX_TREE = 1 << 20
# While the store is down: how often the writer thread tries to read the head again.
PROBE_INTERVAL_S = 0.5
# While the store fails: at most one log line per this many seconds (after the first).
FAILURE_LOG_S = 10.0
# Log lines quote at most this much of an error (its first line: a database error's
# DETAIL, which may quote a row, is never logged).
_ERROR_CHARS = 200


# How long a caller waits for its record to be durable before answering UNAVAILABLE.
APPEND_TIMEOUT_S = 5.0


class AuditUnavailable(Exception):  # noqa: N818 - the name says what the caller answers
    """The record could not be made durable (store failure, timeout, writer closed): the
    caller must answer UNAVAILABLE and disclose nothing."""


def describe_error(exc: BaseException) -> str:
    """An error for a log line: its type and the first line of its message, which names no
    record's content (drivers put row values in later lines, e.g. PostgreSQL's DETAIL)."""
    text = str(exc).strip().splitlines()
    first = text[0][:_ERROR_CHARS] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class FailureLog:
    """Failures of one kind (appends, checkpoints) logged at a bounded rate: a store that
    fails every call (a full disk) must not write a log line per call.

    The first failure: one ERROR line. While failures go on: at most one ERROR line per
    `every` seconds, counting the failures since the previous line. When the store works
    again: one WARNING line with the outage's length and count. Thread-safe."""

    def __init__(
        self,
        node: str,
        what: str,
        every: float = FAILURE_LOG_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node = node
        self._what = what  # e.g. "append(s)"
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # when the failures began; None: none now
        self._logged_at = 0.0
        self._unlogged = 0  # failures not counted in a line yet
        self._total = 0  # failures since they began
        self._error = "store unavailable"  # the last error, described

    def failed(self, count: int, error: BaseException | None = None) -> None:
        """`count` failures (0: only a newer error); `error` None: refused, store known down."""
        now = self._clock()
        summary, span = 0, 0.0
        with self._lock:
            if error is not None:
                self._error = describe_error(error)
            self._total += count
            if self._since is None:
                self._since = self._logged_at = now
                self._unlogged = 0
                first = True
            else:
                self._unlogged += count
                if not self._unlogged or now - self._logged_at < self._every:
                    return
                first = False
                summary, span = self._unlogged, now - self._logged_at
                self._unlogged, self._logged_at = 0, now
            error_text = self._error
        if first:
            log.error(
                "audit writer %s: audit store failed, %d %s failed: %s "
                "(further failures are summarised every %g s)",
                self._node,
                count,
                self._what,
                error_text,
                self._every,
            )
        else:
            log.error(
                "audit writer %s: audit store still failing: %d more %s failed in the "
                "last %.1f s (last error: %s)",
                self._node,
                summary,
                self._what,
                span,
                error_text,
            )

    def recovered(self) -> None:
        """The store worked again: log it once (nothing if it was not failing)."""
        if self._since is None:  # the common case, without the lock
            return
        now = self._clock()
        with self._lock:
            if self._since is None:
                return
            lasted, total = now - self._since, self._total
            self._since = None
            self._total = self._unlogged = 0
        log.warning(
            "audit writer %s: audit store works again after %.1f s; %d %s failed meanwhile",
            self._node,
            lasted,
            total,
            self._what,
        )


class _Pending:
    """One caller's draft and, once the writer is done with it, the outcome."""

    __slots__ = ("callbacks", "cancelled", "done", "draft", "error", "record")

    def __init__(self, draft: AuditRecord) -> None:
        self.draft = draft
        self.done = threading.Event()
        self.record: AuditRecord | None = None
        self.error: Exception | None = None
        self.cancelled = False  # the caller gave up before the writer took it
        self.callbacks: list[Callable[[], None]] = []

    def succeed(self, record: AuditRecord) -> None:
        self.record = record
        self._settle()

    def fail(self, error: Exception) -> None:
        self.error = error
        self._settle()

    def _settle(self) -> None:
        self.done.set()
        for callback in self.callbacks:
            callback()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the writer thread) once the outcome is known; at once if
        it is. It may be called twice in a race, so it must be idempotent: an event loop
        waiting for the record uses it to wake, without a thread blocked on `done`."""
        self.callbacks.append(callback)
        if self.done.is_set():
            callback()

    def wait(self, timeout: float) -> None:
        """Block until the outcome is known or `timeout` passes (then `outcome` says so)."""
        self.done.wait(timeout)

    def outcome(self, timeout: float = APPEND_TIMEOUT_S) -> AuditRecord:
        """The durable record, or the reason there is none: ReplayError, or
        AuditUnavailable (store failure, or not durable by now: `timeout` is only named
        in the message; the waiting was done by `wait` or by an event loop).

        A draft not yet taken by the writer is dropped; one already being committed may
        still become durable (over-recording, never under)."""
        if not self.done.is_set():
            self.cancelled = True
            if not self.done.is_set():
                raise AuditUnavailable(f"audit record not durable within {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self.record is not None
        return self.record


Pending = _Pending  # what `submit` returns: wait on it, or be called back, then `outcome`


class AuditWriter:
    """The single appender of `node`'s chain in `store` (one per gateway process).

    Node names must be unique among the processes sharing a store (e.g. host and worker
    slot): the store refuses a batch that does not follow the stored head, so two writers
    of one node fail (AuditUnavailable) rather than fork the chain.

    While the store is known to be down (`available` is False) appends fail at once; the
    writer thread probes the store every `probe_seconds` (module docstring).
    """

    def __init__(
        self,
        store: AuditStore,
        node: str,
        sign: Callable[[Checkpoint], Checkpoint],
        *,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 10.0,
        max_batch: int = 512,
        clock: Callable[[], float] = time.time,
        probe_seconds: float = PROBE_INTERVAL_S,
        failure_log_seconds: float = FAILURE_LOG_S,
        thread_started: Callable[[], object] | None = None,
    ) -> None:
        if not node:
            raise ValueError("audit writer: node must not be empty")
        if checkpoint_every < 1 or max_batch < 1 or checkpoint_seconds <= 0:
            raise ValueError(
                "audit writer: checkpoint_every and max_batch must be >= 1, checkpoint_seconds > 0"
            )
        if probe_seconds <= 0 or failure_log_seconds <= 0:
            raise ValueError("audit writer: probe_seconds and failure_log_seconds must be > 0")
        self.node = node
        self._store = store
        self._sign = sign
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._max_batch = max_batch
        self._clock = clock
        self._probe_seconds = probe_seconds
        self._failures = FailureLog(node, "append(s)", failure_log_seconds)
        self._checkpoint_failures = FailureLog(node, "checkpoint attempt(s)", failure_log_seconds)
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._put_lock = threading.Lock()  # orders the close sentinel after every draft
        self._closed = False
        # Read once here (a store that cannot answer fails the gateway's start); after a
        # store failure it is None until read again.
        self._head: tuple[int, str] | None = store.head(node)
        # The circuit breaker: False while the store is known to be down (a batch failed
        # and the head could not be read back); appends then fail at once, and the writer
        # thread reads the head again at _probe_at (time.monotonic).
        self._available = True
        self._probe_at = 0.0
        self._since_checkpoint = 0  # records committed since the last checkpoint
        self._last_checkpoint = self._clock()
        self._checkpoint_retry_at = 0.0
        self._checkpointed_seq: int | None = None  # head seq of this writer's last one
        # The next checkpoint's tree covers records _tree_first..head; _tree holds the
        # hashes committed since, from seq _tree_at (contiguous; read back if not all).
        self._tree_first = store.tree_start(node)
        self._tree: list[str] = []
        self._tree_at = 0
        self._thread_started = thread_started  # first thing on the writer's thread
        self._thread = threading.Thread(
            target=self._run, name=f"jisr-audit-writer-{node}", daemon=True
        )
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Drafts waiting for the writer thread (for metrics)."""
        return self._queue.qsize()

    @property
    def available(self) -> bool:
        """False while the store is known to be down: appends fail at once."""
        return self._available

    @property
    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last record committed, None while unknown (store failure)."""
        return self._head

    def append(self, draft: AuditRecord, timeout: float = APPEND_TIMEOUT_S) -> AuditRecord:
        """Commit `draft` (node, seq, prev_hash and hash are the writer's to set) and
        return it linked; blocks until durable. Raises ReplayError or AuditUnavailable.

        On a timeout the draft is dropped if the writer has not taken it yet; if it was
        already being committed it may still become durable (the trail then holds a
        record of an exchange answered UNAVAILABLE: over-recording, never under).

        While the store is known to be down this fails at once, without queueing."""
        pending = self.submit(draft)
        pending.wait(timeout)
        return pending.outcome(timeout)

    def submit(self, draft: AuditRecord) -> Pending:
        """Queue `draft` and return at once; its `outcome()` is the record once durable.
        AuditUnavailable now if the writer is closed or the store known to be down."""
        pending = _Pending(draft if draft.node == self.node else replace(draft, node=self.node))
        with self._put_lock:
            if self._closed:
                raise AuditUnavailable("audit writer is closed")
            refused = not self._available
            if not refused:
                self._queue.put(pending)
        if refused:
            self._failures.failed(1)
            raise AuditUnavailable("audit store unavailable (failing fast until it answers)")
        return pending

    def close(self) -> None:
        """Commit what is queued, write a final checkpoint, stop the thread. The store
        stays open (it is the caller's). Appends after close raise AuditUnavailable."""
        with self._put_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        self._thread.join()

    # The writer thread.

    def _run(self) -> None:
        if self._thread_started is not None:
            try:
                self._thread_started()
            except Exception:  # a tuning hook: the writer runs without it, never dies of it
                log.exception("audit writer %s: its start hook failed", self.node)
        stopping = False
        while not stopping:
            try:
                batch, stopping = self._take()
                if not self._available and (stopping or time.monotonic() >= self._probe_at):
                    self._probe()
                if batch:
                    self._commit(batch)
                self._checkpoint(final=stopping)
            except Exception:  # never let the thread die: callers would hang to timeout
                log.exception("audit writer %s: unexpected error", self.node)

    def _take(self) -> tuple[list[_Pending], bool]:
        """Block for the first draft (or the next checkpoint's due time, or the next probe
        while the store is down), then take what else is queued, up to max_batch and the
        next periodic checkpoint."""
        timeout = None
        if not self._available:
            timeout = max(0.0, self._probe_at - time.monotonic())
        elif self._since_checkpoint:
            due = max(self._last_checkpoint + self._seconds, self._checkpoint_retry_at)
            timeout = max(0.0, due - self._clock())
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        batch = [] if first.cancelled else [first]
        room = self._every - self._since_checkpoint
        limit = min(self._max_batch, room) if room > 0 else self._max_batch
        while len(batch) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            if not item.cancelled:
                batch.append(item)
        return batch, False

    def _commit(self, batch: list[_Pending]) -> None:
        if not self._available or self._head is None:  # queued before the breaker opened
            self._failures.failed(len(batch))
            for p in batch:
                p.fail(AuditUnavailable("audit store unavailable (chain head unknown)"))
            return
        while batch:
            seq, prev = self._head
            linked: list[AuditRecord] = []
            for p in batch:
                record = link(seq, prev, p.draft)
                linked.append(record)
                seq, prev = record.seq, record.hash
            try:
                self._store.append_batch(linked)
            except ReplayError as exc:
                if not 0 <= exc.index < len(batch):
                    self._fail_all(batch, exc)
                    return
                offender = batch.pop(exc.index)
                offender.fail(ReplayError(exc.requester, exc.jti, exc.part))
                continue  # relink the others onto the same head
            except Exception as exc:
                self._fail_all(batch, exc)
                return
            self._head = (seq, prev)
            self._hold(linked)
            self._since_checkpoint += len(linked)
            self._failures.recovered()
            for p, record in zip(batch, linked, strict=True):
                p.succeed(record)
            return

    def _hold(self, linked: list[AuditRecord]) -> None:
        """Keep the committed hashes for the next tree (starting afresh after a gap)."""
        if (
            not self._tree
            or linked[0].seq != self._tree_at + len(self._tree)
            or len(self._tree) >= MAX_TREE
        ):
            self._tree = []
            self._tree_at = linked[0].seq
        self._tree.extend(r.hash for r in linked)

    def _leaves(self, seq: int, head_hash: str) -> list[str] | None:
        """The hashes of records _tree_first..seq, from memory or read back from the
        store; None if the store no longer holds them all (pruned)."""
        first = self._tree_first
        if not 0 < seq - first + 1 <= MAX_TREE:
            return None
        held = self._tree[first - self._tree_at :] if self._tree_at <= first else []
        if held and len(held) == seq - first + 1 and held[-1] == head_hash:
            return held
        stored = itertools.islice(self._store.records(self.node, first - 1), seq - first + 1)
        leaves = [r.hash for r in stored if r.seq <= seq]
        if len(leaves) != seq - first + 1 or leaves[-1] != head_hash:
            return None
        return leaves

    def _fail_all(self, batch: list[_Pending], exc: Exception) -> None:
        """The store failed the batch: learn the head again before anything else is
        linked, and open the breaker if that fails too; then tell the callers (after the
        re-read, so that a caller retrying at once finds the writer's state settled)."""
        self._failures.failed(len(batch), exc)
        self._head = None
        if not self._reread_head():
            self._available = False
            self._probe_at = time.monotonic() + self._probe_seconds
        for p in batch:
            p.fail(AuditUnavailable(f"audit store failed: {type(exc).__name__}"))

    def _probe(self) -> None:
        """The breaker is open: one read of the head; if the store answers, close it."""
        if self._reread_head():
            self._available = True
            self._failures.recovered()
        else:
            self._probe_at = time.monotonic() + self._probe_seconds

    def _reread_head(self) -> bool:
        """Learn the stored head again (what was committed is the truth, even a batch
        whose acknowledgement was lost); False if the store still fails (the error goes
        to the failure log, which counts it under the outage's first line)."""
        try:
            self._head = self._store.head(self.node)
        except Exception as exc:
            self._failures.failed(0, exc)
            self._head = None
            return False
        return True

    def _checkpoint(self, *, final: bool) -> None:
        """Sign and store a checkpoint of the head when one is due."""
        now = self._clock()
        if not self._available or self._head is None or self._head[0] == 0:
            return  # while the store is down the probe, not the checkpoint, retries
        seq, head_hash = self._head
        if final:
            due = self._checkpointed_seq != seq
        else:
            due = (
                self._since_checkpoint > 0
                and now >= self._checkpoint_retry_at
                and (
                    self._since_checkpoint >= self._every
                    or now - self._last_checkpoint >= self._seconds
                )
            )
        if not due:
            return
        cp = Checkpoint(node=self.node, seq=seq, hash=head_hash, at_us=int(now * 1_000_000))
        try:
            leaves = self._leaves(seq, head_hash)
            if leaves is not None:
                cp = replace(cp, root=merkle.root(leaves), root_first=self._tree_first)
            self._store.append_checkpoint(self._sign(cp))
        except Exception as exc:
            self._checkpoint_failures.failed(1, exc)
            self._checkpoint_retry_at = now + CHECKPOINT_RETRY_S
            return
        self._checkpoint_failures.recovered()
        self._tree_first = seq + 1
        self._tree = []
        self._since_checkpoint = 0
        self._last_checkpoint = now
        self._checkpointed_seq = seq
