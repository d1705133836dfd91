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

The writer also signs checkpoints of the head (through `sign`): after every
`checkpoint_every` records, at least every `checkpoint_seconds` while records are added,
and on `close`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from gateway.audit.record import AuditRecord, Checkpoint, link
from gateway.audit.store import AuditStore, ReplayError

log = logging.getLogger("jisr.audit")

# After a failed checkpoint, the next attempt waits at least this long (no retry storm
# against a store that is down; appends report the outage themselves).
CHECKPOINT_RETRY_S = 1.0


class AuditUnavailable(Exception):  # noqa: N818 - the name says what the caller answers
    """The record could not be made durable (store failure, timeout, writer closed): the
    caller must answer UNAVAILABLE and disclose nothing."""


class _Pending:
    """One caller's draft and, once the writer is done with it, the outcome."""

    __slots__ = ("cancelled", "done", "draft", "error", "record")

    def __init__(self, draft: AuditRecord) -> None:
        self.draft = draft
        self.done = threading.Event()
        self.record: AuditRecord | None = None
        self.error: Exception | None = None
        self.cancelled = False  # the caller gave up before the writer took it

    def succeed(self, record: AuditRecord) -> None:
        self.record = record
        self.done.set()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.done.set()


class AuditWriter:
    """The single appender of `node`'s chain in `store` (one per gateway process).

    Node names must be unique among the processes sharing a store (e.g. host and worker
    slot): the store refuses a batch that does not follow the stored head, so two writers
    of one node fail (AuditUnavailable) rather than fork the chain.
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
    ) -> None:
        if not node:
            raise ValueError("audit writer: node must not be empty")
        if checkpoint_every < 1 or max_batch < 1 or checkpoint_seconds <= 0:
            raise ValueError(
                "audit writer: checkpoint_every and max_batch must be >= 1, checkpoint_seconds > 0"
            )
        self.node = node
        self._store = store
        self._sign = sign
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._max_batch = max_batch
        self._clock = clock
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._put_lock = threading.Lock()  # orders the close sentinel after every draft
        self._closed = False
        # Read once here (a store that cannot answer fails the gateway's start); after a
        # store failure it is None until read again.
        self._head: tuple[int, str] | None = store.head(node)
        self._since_checkpoint = 0  # records committed since the last checkpoint
        self._last_checkpoint = self._clock()
        self._checkpoint_retry_at = 0.0
        self._checkpointed_seq: int | None = None  # head seq of this writer's last one
        self._thread = threading.Thread(
            target=self._run, name=f"jisr-audit-writer-{node}", daemon=True
        )
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Drafts waiting for the writer thread (for metrics)."""
        return self._queue.qsize()

    @property
    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last record committed, None while unknown (store failure)."""
        return self._head

    def append(self, draft: AuditRecord, timeout: float = 5.0) -> AuditRecord:
        """Commit `draft` (node, seq, prev_hash and hash are the writer's to set) and
        return it linked; blocks until durable. Raises ReplayError or AuditUnavailable.

        On a timeout the draft is dropped if the writer has not taken it yet; if it was
        already being committed it may still become durable (the trail then holds a
        record of an exchange answered UNAVAILABLE: over-recording, never under)."""
        pending = _Pending(draft if draft.node == self.node else replace(draft, node=self.node))
        with self._put_lock:
            if self._closed:
                raise AuditUnavailable("audit writer is closed")
            self._queue.put(pending)
        if not pending.done.wait(timeout):
            pending.cancelled = True
            if not pending.done.is_set():
                raise AuditUnavailable(f"audit record not durable within {timeout:g} s")
        if pending.error is not None:
            raise pending.error
        assert pending.record is not None
        return pending.record

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
        stopping = False
        while not stopping:
            try:
                batch, stopping = self._take()
                if batch:
                    self._commit(batch)
                self._checkpoint(final=stopping)
            except Exception:  # never let the thread die: callers would hang to timeout
                log.exception("audit writer %s: unexpected error", self.node)

    def _take(self) -> tuple[list[_Pending], bool]:
        """Block for the first draft (or the next checkpoint's due time), then take what
        else is queued, up to max_batch and the next periodic checkpoint."""
        timeout = None
        if self._since_checkpoint:
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
        if self._head is None and not self._reread_head():
            for p in batch:
                p.fail(AuditUnavailable("audit store unavailable (chain head unknown)"))
            return
        assert self._head is not None
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
            self._since_checkpoint += len(linked)
            for p, record in zip(batch, linked, strict=True):
                p.succeed(record)
            return

    def _fail_all(self, batch: list[_Pending], exc: Exception) -> None:
        log.error(
            "audit writer %s: %d record(s) not stored: %s: %s",
            self.node,
            len(batch),
            type(exc).__name__,
            exc,
        )
        for p in batch:
            p.fail(AuditUnavailable(f"audit store failed: {type(exc).__name__}"))
        self._head = None
        self._reread_head()

    def _reread_head(self) -> bool:
        """Learn the stored head again (what was committed is the truth, even a batch
        whose acknowledgement was lost); False if the store still fails."""
        try:
            self._head = self._store.head(self.node)
        except Exception as exc:
            log.error("audit writer %s: cannot read the chain head: %s", self.node, exc)
            self._head = None
            return False
        return True

    def _checkpoint(self, *, final: bool) -> None:
        """Sign and store a checkpoint of the head when one is due."""
        now = self._clock()
        if self._head is None and (final or self._since_checkpoint) and not self._reread_head():
            self._checkpoint_retry_at = now + CHECKPOINT_RETRY_S
            return
        if self._head is None or self._head[0] == 0:
            return
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
            self._store.append_checkpoint(self._sign(cp))
        except Exception as exc:
            log.error("audit writer %s: checkpoint at seq %d failed: %s", self.node, seq, exc)
            self._checkpoint_retry_at = now + CHECKPOINT_RETRY_S
            return
        self._since_checkpoint = 0
        self._last_checkpoint = now
        self._checkpointed_seq = seq
