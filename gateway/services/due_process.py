"""The due-process sweep: makes each proposed action contestable, and carries it out or
drops it when its time comes (gateway/pipeline/due_process.py has the rules).

1. A new action gets an audit record in the programme operator's name (method
   `jisr.v1.DueProcess/ProposeAction`, the household as subject): the household sees it in
   its access report like any use of its data and contests it through the citizen portal
   with the ordinary contest flow (docs/contests.md); the operator's DPO answers. An action
   without its record is never carried out: the household could not have contested it.
2. A waiting action moves on its contest's state (the case last opened on its record) and
   the clock: contested, kept, or carried out with the final `eligibility.changed`.

Every replica may sweep: each move is conditional on the state read (the store's
`settle`), so one replica carries an action out, once; and a sweep claims an action
before writing its audit record, so that one record is written per action (a second only
if a sweep held its claim past CLAIM_TIMEOUT_S; the one noted is the one contests count).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable

from gateway.audit.recorder import AuditRecorder
from gateway.base.times import now_us
from gateway.contests import cases
from gateway.contests.store import ContestStore
from gateway.events import actions
from gateway.events.migrations import CLAIM
from gateway.events.model import NewEvent
from gateway.events.store import EventStore
from gateway.pipeline import due_process
from gateway.pipeline.due_process import Contest, ProposedAction
from gateway.pipeline.programmes import Catalogue

log = logging.getLogger("jisr.due_process")

METHOD = "jisr.v1.DueProcess/ProposeAction"
# Pages of waiting actions read per round at most: the rest wait for the next round, which
# goes on from where this one stopped (so open contests never starve newer actions).
MAX_PAGES = 40
PURPOSE = "DUE_PROCESS"
SUB = "jisr:due-process"
# Actions handled per round and step.
BATCH = 500
# Seconds after which a sweep's claim on writing an action's record is taken over (the
# sweep died, or its audit trail hung): far above an audit append's own timeout.
CLAIM_TIMEOUT_S = 120.0


class DueProcessSweep:
    """One round at a time (`run_once`); `DueProcessPoller` runs rounds on a thread."""

    def __init__(
        self,
        events: EventStore,
        contests: ContestStore,
        recorder: AuditRecorder,
        catalogue: Catalogue,
        *,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self.events = events
        self.contests = contests
        self.recorder = recorder
        self.catalogue = catalogue
        self.clock = clock
        self._after: tuple[int, str] | None = None  # where the next page of waiting starts

    def run_once(self) -> int:
        """Record new actions, then move waiting ones; how many changed."""
        return self._record() + self._settle()

    def _record(self) -> int:
        """Write the audit record of each new action, one sweep per action: it claims the
        action first, so that replicas do not each write one (a claim older than
        CLAIM_TIMEOUT_S, its sweep gone, may be taken over)."""
        done = 0
        now = self.clock()
        for action in self.events.unrecorded(BATCH, now - round(CLAIM_TIMEOUT_S * 1e6)):
            claim = f"{CLAIM}{secrets.token_hex(8)}"
            if not self.events.claim_record(action.action_id, action.record_id, claim, now):
                continue
            record_id = self._write_record(action)
            # The notice runs from when the household can see the action in its report.
            notice = action.notice_until_us - action.proposed_us
            until = max(action.notice_until_us, self.clock() + notice)
            done += self.events.record_action(
                action.action_id, record_id, claim=claim, notice_until_us=until
            )
        return done

    def _write_record(self, action: ProposedAction) -> str:
        programme = self.catalogue.programmes.get(action.programme)
        operator = programme.operator if programme is not None else "JISR"
        return self.recorder.record(
            requester=operator,
            sub=SUB,
            method=METHOD,
            purpose=PURPOSE,
            basis=f"proposed action {action.action_id}",
            subjects=(self.recorder.subject("household_id", action.household_id),),
            fields=("eligible",),
            decision="permit",
            reason="",
            rh=_hash(action.action_id),
            sh="",
            jti=action.action_id,
            part=0,
            started=time.time(),
        )

    def _settle(self) -> int:
        moved = 0
        for _ in range(MAX_PAGES):
            page = self.events.actions(due_process.WAITING, BATCH, self._after)
            self._after = (page[-1].proposed_us, page[-1].action_id) if len(page) == BATCH else None
            moved += self._settle_page(
                [a for a in page if a.record_id and not a.record_id.startswith(CLAIM)]
            )
            if self._after is None:
                break
        return moved

    def _settle_page(self, waiting: list[ProposedAction]) -> int:
        if not waiting:
            return 0
        found = self.contests.latest_for_records([a.record_id for a in waiting])
        now = self.clock()
        moved = 0
        for action in waiting:
            case = found.get(action.record_id)
            contest = (
                Contest(case.case_id, case.state == cases.CLOSED, case.outcome) if case else None
            )
            new = due_process.settle(action, contest, now)
            if new is not None:
                moved += self.events.settle(
                    new, action.state, _event_of(new, now), actions.SWEPT, now
                )
        return moved


def _event_of(action: ProposedAction, now: int) -> Callable[[int], NewEvent] | None:
    """The event a move sends: the final change, a withdrawal, or none (contested)."""
    if action.state == due_process.CONFIRMED:
        return lambda seq: actions.carried_out(action, seq, now)
    if action.state == due_process.KEPT:
        return lambda seq: actions.withdrawn(
            action, due_process.CONTEST_UPHELD, "", seq, now, actions.SWEPT
        )
    return None


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class DueProcessPoller:
    """Runs the sweep every `interval` seconds on a thread of its own until closed; a round
    that fails (a store or the audit trail out of reach) is logged by the exception's type
    only and retried on the next."""

    def __init__(self, sweep: DueProcessSweep, interval: float) -> None:
        self.sweep = sweep
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jisr-due-process", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep.run_once()
            except Exception as exc:  # the next round tries again
                log.warning("due-process round failed", extra={"error": type(exc).__name__})

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
