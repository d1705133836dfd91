"""What the facade remembers of the searches it was asked, for `txn/status`.

Only statuses, never the records: a status answer discloses nothing about a person, so it
needs no audit record and no consent, and the records themselves are given once, in the
search's own answer or callback (docs/dci.md, "Transaction status"). Kept in this process's
memory, bounded (the oldest forgotten first): a facade restarted, or another replica,
answers such a transaction as unknown.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_TRANSACTIONS = 10_000


@dataclass
class Transaction:
    """One search message of one institution: its items' statuses by reference id."""

    transaction_id: str
    correlation_id: str
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)


class Transactions:
    """The latest MAX_TRANSACTIONS transactions, by institution and transaction id."""

    def __init__(self, limit: int = MAX_TRANSACTIONS) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._known: OrderedDict[tuple[str, str], Transaction] = OrderedDict()

    def received(
        self, institution: str, transaction_id: str, correlation_id: str, references: Iterable[str]
    ) -> None:
        """A search was accepted: each item pending until answered."""
        txn = Transaction(
            transaction_id, correlation_id, {r: {"status": "pdng"} for r in references}
        )
        with self._lock:
            self._known[(institution, transaction_id)] = txn
            self._known.move_to_end((institution, transaction_id))
            while len(self._known) > self._limit:
                self._known.popitem(last=False)

    def answered(
        self, institution: str, transaction_id: str, answers: Iterable[dict[str, Any]]
    ) -> None:
        """Each answered item's status (and reason code), without its data."""
        with self._lock:
            txn = self._known.get((institution, transaction_id))
            if txn is None:
                return
            for answer in answers:
                kept: dict[str, Any] = {
                    k: answer[k] for k in ("status", "status_reason_code") if k in answer
                }
                txn.statuses[str(answer.get("reference_id", ""))] = kept

    def find(self, institution: str, attribute: str, value: Any) -> list[Transaction]:
        """The institution's transactions an attribute names: its transaction id, its
        correlation id, or reference ids of its items."""
        with self._lock:
            mine = [t for (who, _), t in self._known.items() if who == institution]
        if attribute == "transaction_id":
            return [t for t in mine if t.transaction_id == value]
        if attribute == "correlation_id":
            return [t for t in mine if t.correlation_id == value]
        if attribute == "reference_id_list" and isinstance(value, list):
            wanted = {str(v) for v in value}
            return [t for t in mine if wanted & set(t.statuses)]
        return []
