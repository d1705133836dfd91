"""The institutions Jisr knows, and what records each holds."""

from __future__ import annotations

from collections.abc import Mapping

from adapters import anss, cnss, rnp, rsu
from adapters.base import DECISION, SCORE, Reader, View
from adapters.embedded import EmbeddedAdapter
from adapters.registry_db import Registry

READERS: Mapping[str, Mapping[int, Reader]] = {
    rnp.INSTITUTION: rnp.READERS,
    rsu.INSTITUTION: rsu.READERS,
    cnss.INSTITUTION: cnss.READERS,
    anss.INSTITUTION: anss.READERS,
}
# The kinds an institution reads narrower than whole, by view (adapters/base.py).
NARROW_READERS: Mapping[str, Mapping[View, Mapping[int, Reader]]] = {
    rnp.INSTITUTION: {DECISION: rnp.DECISION_READERS},
    rsu.INSTITUTION: {DECISION: rsu.DECISION_READERS, SCORE: rsu.SCORE_READERS},
    cnss.INSTITUTION: {DECISION: cnss.DECISION_READERS},
}


def embedded(institution: str, registry: Registry) -> EmbeddedAdapter:
    """The embedded adapter of a known institution."""
    return EmbeddedAdapter(
        institution, READERS[institution], registry, NARROW_READERS.get(institution)
    )
