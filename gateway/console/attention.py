"""The attention list: patterns in the trail that a DPO or the regulator should look at,
each with links to the records behind it. None of them is a breach in itself; each is
where a breach, a misconfiguration or a misuse would show first.

- refusal_burst: an institution refused many times within minutes. A person at a counter
  gets the odd refusal (a missing consent, a mistyped id); a burst is a system looping
  on a purpose it was never granted, a broken deployment, or someone probing the policy.
- unusual_purpose: an institution's permitted access under a purpose it almost never uses.
  Law 09-08 binds each access to a declared purpose; a purpose that is a sliver of an
  institution's otherwise steady traffic is where a purpose is borrowed to reach data its
  usual ones would not give. Only asked once the institution has enough history for
  "usual" to mean something, and never of the trail's own reads (a DPO's occasional
  look at the trail is rare by nature and is the watchers' work).
- frequent_subject: one person or household looked up one by one far more often than a
  case needs: curiosity about a neighbour, a public figure or a relative. Batch calls
  are left to bulk_access (a programme re-checking its beneficiaries is not curiosity).
  Subjects are shown by a short prefix of their keyed hash only.
- bulk_access: one call naming a long list of people, or one officer or system making
  records at a rate no case work needs: the shape of an extraction.

Pure: records in, findings out (no I/O), so that the rules are tested on records built
in memory and the page only reads the trail and renders.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.base.wire import AUDIT_TRAIL
from gateway.console.records import at_us, moment
from gateway.pb.jisr.v1 import audit_pb2 as apb

KINDS = ("refusal_burst", "unusual_purpose", "frequent_subject", "bulk_access")
# How a finding is worded (the catalogues' attention.msg.*): bulk access has two wordings.
MESSAGES = ("refusal_burst", "unusual_purpose", "frequent_subject", "bulk_batch", "bulk_hourly")
MAX_LINKS = 50  # record links per finding, newest first
PREFIX = 8  # hex digits of a subject hash shown: enough to tell two apart on a page
MINUTE_US = 60_000_000

BURST_REFUSALS = 20
"""Refusals of one institution within BURST_WINDOW_MIN minutes that make a burst: an
officer who mistypes or lacks a consent is refused a few times, not twenty in minutes."""
BURST_WINDOW_MIN = 10
"""The sliding window of a burst: short enough that a day's scattered refusals never add
up to one, long enough to catch a loop that retries every few seconds or minutes."""
PURPOSE_SHARE = 0.02
"""A purpose under 2 % of an institution's permitted records is outside its usual ones."""
PURPOSE_MAX_RECORDS = 5
"""...and only while it is a handful of records: more is a practice the DPO knows about
(and should document), not a stray access."""
PURPOSE_MIN_HISTORY = 200
"""Permitted records an institution needs in the period before a purpose can be unusual
for it: under that, 2 % is less than a record apart and every purpose would be rare."""
SUBJECT_RECORDS = 20
"""Individual lookups of one person or household in the period beyond which it is looked
up unusually often: a case (enrolment, eligibility, a few institutions) is a handful."""
BATCH_SUBJECTS = 100
"""Subjects in one record that make it bulk: a hundred people in one call is a list, not
a case (the gateway accepts up to 1000 per batch, gateway.base.wire.MAX_BATCH)."""
HOURLY_RECORDS = 500
"""Records of one officer or system within an hour that make bulk access: eight a minute
for an hour is beyond any desk work, and a system doing it is a bulk transfer."""


@dataclass(frozen=True)
class Thresholds:
    """The rules' thresholds (the module constants above say why each default)."""

    burst_refusals: int = BURST_REFUSALS
    burst_window_min: int = BURST_WINDOW_MIN
    purpose_share: float = PURPOSE_SHARE
    purpose_max_records: int = PURPOSE_MAX_RECORDS
    purpose_min_history: int = PURPOSE_MIN_HISTORY
    subject_records: int = SUBJECT_RECORDS
    batch_subjects: int = BATCH_SUBJECTS
    hourly_records: int = HOURLY_RECORDS


@dataclass(frozen=True)
class Finding:
    """One pattern: `kind` (one of KINDS), `message` (its catalogue message,
    "attention.msg.<message>", filled with `detail`), `who` (the institution, the officer
    or system as "<sub> (<institution>)", or the institutions that looked a subject up),
    the newest MAX_LINKS of its records' ids, and its first and last record's time."""

    kind: str
    message: str
    who: str
    detail: tuple[tuple[str, str | int], ...]
    record_ids: tuple[str, ...]
    first: dt.datetime
    last: dt.datetime

    def values(self) -> dict[str, str | int]:
        return dict(self.detail)


Severity = tuple[float, ...]  # ascending: most severe first


def findings(records: Iterable[apb.AccessRecord], thresholds: Thresholds) -> list[Finding]:
    """Every finding in `records`: by kind (KINDS' order), then most severe first, ties by
    who, time and records (the same records in any order give the same list)."""
    rows = sorted(records, key=_order)
    found = [
        *_refusal_bursts(rows, thresholds),
        *_unusual_purposes(rows, thresholds),
        *_frequent_subjects(rows, thresholds),
        *_bulk_access(rows, thresholds),
    ]
    found.sort(
        key=lambda s: (
            KINDS.index(s[1].kind),
            s[0],
            s[1].who,
            s[1].first,
            s[1].record_ids,
            s[1].detail,
        )
    )
    return [f for _, f in found]


def _order(r: apb.AccessRecord) -> tuple[int, str, int]:
    return at_us(r), r.node, r.seq


def _finding(
    kind: str,
    message: str,
    who: str,
    detail: dict[str, str | int],
    behind: list[apb.AccessRecord],
) -> Finding:
    newest = sorted(behind, key=_order, reverse=True)
    ids = tuple(f"{r.node}:{r.seq}" for r in newest[:MAX_LINKS])
    return Finding(
        kind, message, who, tuple(detail.items()), ids, moment(newest[-1]), moment(newest[0])
    )


def _episodes(
    rows: list[apb.AccessRecord], window_us: int, minimum: int
) -> list[tuple[list[apb.AccessRecord], int]]:
    """Runs of `rows` (oldest first) lying in some window of `window_us` that holds
    `minimum` of them or more, each with the most in any one window (its peak)."""
    times = [at_us(r) for r in rows]
    peaks = [0] * len(rows)  # rows in the window ending at each row
    marked = [False] * len(rows)
    left = done = 0
    for right, t in enumerate(times):
        while t - times[left] >= window_us:
            left += 1
        peaks[right] = right - left + 1
        if peaks[right] >= minimum:
            for i in range(max(left, done), right + 1):
                marked[i] = True
            done = right + 1
    runs: list[tuple[list[apb.AccessRecord], int]] = []
    run: list[int] = []
    for i in [*range(len(rows)), -1]:
        if run and (i < 0 or not marked[i] or times[i] - times[run[-1]] >= window_us):
            runs.append(([rows[j] for j in run], max(peaks[j] for j in run)))
            run = []
        if i >= 0 and marked[i]:
            run.append(i)
    return runs


def _who(r: apb.AccessRecord) -> str:
    return f"{r.requester_sub} ({r.requester})" if r.requester_sub else r.requester


def _short(subject_hash: str) -> str:
    """A subject hash's label (`malformed:`) if any and first PREFIX hex digits."""
    label, colon, digest = subject_hash.rpartition(":")
    return f"{label}{colon}{digest[:PREFIX]}…"


def _refusal_bursts(rows: list[apb.AccessRecord], th: Thresholds) -> list[tuple[Severity, Finding]]:
    denied: dict[str, list[apb.AccessRecord]] = defaultdict(list)
    for r in rows:
        if r.decision == "deny":
            denied[r.requester].append(r)
    out: list[tuple[Severity, Finding]] = []
    for requester, refused in denied.items():
        window = th.burst_window_min * MINUTE_US
        for burst, peak in _episodes(refused, window, th.burst_refusals):
            reasons = Counter(r.reason or "—" for r in burst)
            reason = min(reasons, key=lambda k: (-reasons[k], k))
            detail: dict[str, str | int] = {
                "count": len(burst),
                "peak": peak,
                "window": th.burst_window_min,
                "reason": reason,
            }
            finding = _finding("refusal_burst", "refusal_burst", requester, detail, burst)
            out.append(((-peak, -len(burst)), finding))
    return out


def _unusual_purposes(
    rows: list[apb.AccessRecord], th: Thresholds
) -> list[tuple[Severity, Finding]]:
    permitted: dict[str, dict[str, list[apb.AccessRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.decision == "permit" and not r.method.startswith(f"/{AUDIT_TRAIL}/"):
            permitted[r.requester][r.purpose].append(r)
    out: list[tuple[Severity, Finding]] = []
    for requester, by_purpose in permitted.items():
        total = sum(len(v) for v in by_purpose.values())
        if total < th.purpose_min_history:
            continue
        for purpose, used in by_purpose.items():
            if len(used) <= th.purpose_max_records and len(used) < th.purpose_share * total:
                detail: dict[str, str | int] = {
                    "purpose": purpose or "—",
                    "count": len(used),
                    "total": total,
                    "share": f"{th.purpose_share * 100:g}",
                }
                finding = _finding("unusual_purpose", "unusual_purpose", requester, detail, used)
                out.append(((len(used) / total,), finding))
    return out


def _frequent_subjects(
    rows: list[apb.AccessRecord], th: Thresholds
) -> list[tuple[Severity, Finding]]:
    looked: dict[str, list[apb.AccessRecord]] = defaultdict(list)
    for r in rows:
        named = set(r.subject_hashes) - {""}
        if len(named) < th.batch_subjects:
            for subject in named:
                looked[subject].append(r)
    out: list[tuple[Severity, Finding]] = []
    for subject, seen in looked.items():
        if len(seen) <= th.subject_records:
            continue
        by = Counter(r.requester for r in seen)
        who = ", ".join(sorted(by, key=lambda k: (-by[k], k)))
        detail: dict[str, str | int] = {
            "subject": _short(subject),
            "count": len(seen),
            "institutions": len(by),
        }
        finding = _finding("frequent_subject", "frequent_subject", who, detail, seen)
        out.append(((-len(seen),), finding))
    return out


def _bulk_access(rows: list[apb.AccessRecord], th: Thresholds) -> list[tuple[Severity, Finding]]:
    batches: dict[str, list[apb.AccessRecord]] = defaultdict(list)
    made: dict[str, list[apb.AccessRecord]] = defaultdict(list)
    for r in rows:
        made[_who(r)].append(r)
        if len(set(r.subject_hashes) - {""}) >= th.batch_subjects:
            batches[_who(r)].append(r)
    out: list[tuple[Severity, Finding]] = []
    for who, calls in batches.items():
        most = max(len(set(r.subject_hashes) - {""}) for r in calls)
        detail: dict[str, str | int] = {
            "calls": len(calls),
            "subjects": most,
            "threshold": th.batch_subjects,
        }
        finding = _finding("bulk_access", "bulk_batch", who, detail, calls)
        out.append(((0, -most, -len(calls)), finding))
    for who, mine in made.items():
        for run, peak in _episodes(mine, 60 * MINUTE_US, th.hourly_records):
            detail = {"count": len(run), "peak": peak}
            finding = _finding("bulk_access", "bulk_hourly", who, detail, run)
            out.append(((1, -peak, -len(run)), finding))
    return out
