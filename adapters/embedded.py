"""Embedded transport: an institution's records read straight from the SQLite registry."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from adapters.base import (
    ANSWERED_IN,
    FULL,
    AdapterError,
    FetchContext,
    Reader,
    RecordMessage,
    View,
)
from adapters.registry_db import Registry, RegistryError
from gateway.pb.jisr.v1.backend_pb2 import RecordKind


class EmbeddedAdapter:
    """Reads the kinds an institution holds from the local registry file; a kind with a
    reader in `narrow_readers[view]` reads only that view's fields (adapters/base.py)."""

    def __init__(
        self,
        institution: str,
        readers: Mapping[int, Reader],
        registry: Registry,
        narrow_readers: Mapping[View, Mapping[int, Reader]] | None = None,
    ):
        self._institution = institution
        self._readers = dict(readers)
        # Each view's reader of each kind: the narrowest that answers it, else the whole.
        narrow = narrow_readers or {}
        self._by_view = {
            view: {
                kind: next(
                    (narrow[v][kind] for v in ANSWERED_IN[view] if kind in narrow.get(v, {})),
                    reader,
                )
                for kind, reader in self._readers.items()
            }
            for view in ANSWERED_IN
        }
        self._kinds = frozenset(RecordKind.ValueType(k) for k in readers)
        self._registry = registry

    @property
    def institution(self) -> str:
        return self._institution

    @property
    def kinds(self) -> frozenset[RecordKind.ValueType]:
        return self._kinds

    def fetch(
        self,
        kind: RecordKind.ValueType,
        keys: Sequence[str],
        ctx: FetchContext,
        view: View = FULL,
    ) -> Mapping[str, RecordMessage]:
        reader = self._by_view.get(view, self._readers).get(kind)
        if reader is None:
            raise AdapterError(self._institution, f"holds no {RecordKind.Name(kind)} records")
        if not keys:
            return {}
        try:
            return reader(self._registry.connection(), keys)
        except (sqlite3.Error, RegistryError) as exc:
            raise AdapterError(self._institution, f"registry read failed: {exc}") from exc

    def close(self) -> None:
        """The registry is shared between adapters; its owner closes it."""
