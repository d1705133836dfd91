"""The DCI subscriptions the facade delivers itself (`notify`), kept in a file of the
state directory so that a restarted facade goes on delivering.

A DCI subscriber does not hold a stream open, as a gRPC one does: it says once, in a
signed `subscribe` envelope, what it wants and where, and the registry pushes. The
subscription itself is the gateway's own (RegistryEvents, its cursor acknowledged only
once a notification was delivered); this file adds, per subscription, who asked through
which client and where its notifications go (docs/dci.md, "Subscriptions").
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Standing:
    """One subscription the facade delivers: the gateway's subscription and its owner."""

    subscription_id: str
    institution: str
    client_id: str
    purpose: str
    notify_uri: str


class Standings:
    """The file's subscriptions, read at start, written on each change."""

    def __init__(self, path: Path | None) -> None:
        """`path` None: kept in memory only (tests of the facade alone)."""
        self._path = path
        self._lock = threading.Lock()
        self._known: dict[str, Standing] = {}
        if path is not None and path.exists():
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))["subscriptions"]
                self._known = {r["subscription_id"]: Standing(**r) for r in rows}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}: not a DCI subscriptions file ({exc})") from None

    def all(self) -> list[Standing]:
        with self._lock:
            return list(self._known.values())

    def get(self, subscription_id: str) -> Standing | None:
        with self._lock:
            return self._known.get(subscription_id)

    def add(self, standing: Standing) -> None:
        with self._lock:
            self._known[standing.subscription_id] = standing
            self._write()

    def remove(self, subscription_id: str) -> None:
        with self._lock:
            if self._known.pop(subscription_id, None) is not None:
                self._write()

    def _write(self) -> None:
        if self._path is None:
            return
        rows = [asdict(s) for s in self._known.values()]
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"subscriptions": rows}, out, indent=1)
        temporary.replace(self._path)
