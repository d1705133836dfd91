"""The reconciliation digest of registry events: count and SHA-256 of event ids in cursor
order, per source and in all. The gateway computes it over a subscription's events in a
range (GetDigest); a subscriber computes the same over what it received
(gateway/sdk/events.py), so equal digests prove nothing was missed. In the base because
both sides must compute it the same way."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Digest:
    """Count and SHA-256 of event ids, each followed by a newline, in cursor order."""

    count: int = 0
    _hash: Any = field(default_factory=hashlib.sha256)

    def add(self, event_id: str) -> None:
        self.count += 1
        self._hash.update(event_id.encode() + b"\n")

    @property
    def sha256(self) -> str:
        return str(self._hash.hexdigest())


def digests(events: Iterable[tuple[str, str]]) -> tuple[Digest, dict[str, Digest]]:
    """The digest of (source, event_id) pairs in cursor order: all together and per source."""
    total = Digest()
    per_source: dict[str, Digest] = {}
    for source, event_id in events:
        total.add(event_id)
        per_source.setdefault(source, Digest()).add(event_id)
    return total, per_source
