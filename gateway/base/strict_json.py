"""JSON read strictly, for what is signed or trusted: a member named twice in one object is
refused (never "last wins": two readers could see two different documents), and so are
NaN and Infinity (not JSON, RFC 8259). Used by request tokens (base/jws.py), trust-store
files (security/trust.py) and DCI envelopes (dci/facade.py)."""

from __future__ import annotations

import json
from typing import Any, NoReturn


class RepeatedMemberError(ValueError):
    """An object names a member twice; the message names it (callers that read
    untrusted input say something fixed instead)."""


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's `object_pairs_hook`: the object, or RepeatedMemberError."""
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise RepeatedMemberError(f"member {name!r} appears twice in one object")
        members[name] = value
    return members


def no_constant(name: str) -> NoReturn:
    """json's `parse_constant`: NaN and Infinity refused, not read as floats."""
    raise ValueError(f"{name} is not JSON")


def loads(data: str | bytes) -> Any:
    """`json.loads`, strictly; ValueError (RepeatedMemberError for a repeated member) or
    RecursionError for what is refused."""
    return json.loads(data, object_pairs_hook=unique_members, parse_constant=no_constant)
