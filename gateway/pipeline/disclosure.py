"""Whom a call is about: the subjects its request named and the households it read.

A DPO asks "who looked at this household?" and a citizen "who looked at my data?". The
answer is only complete if every audit record names every subject the request named —
whatever the outcome, a malformed identifier included — and every household whose
records the answer was built from, whichever identifier the caller used (a member's IDCS
discloses the household). Naming is read off the request message; reading is noted by
the registries as records are fetched, into a set that the call opens around its work
(`watching`). Nothing here hashes or stores: the recorder turns these pairs into keyed
hashes (docs/audit.md, "What a report covers").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import NamedTuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.base.identifiers import is_valid_household_id, is_valid_idcs
from gateway.pb.jisr.v1.registry_pb2 import Subject

IDCS = "idcs"
HOUSEHOLD = "household_id"
_VALID = {IDCS: is_valid_idcs, HOUSEHOLD: is_valid_household_id}
_SUBJECT = Subject.DESCRIPTOR.full_name


class Named(NamedTuple):
    """One identifier a request carried: its kind, its text, and whether it is well formed."""

    kind: str
    value: str
    well_formed: bool


def named(message: Message | None) -> list[Named]:
    """Every subject identifier `message` carries at its top level (Subject fields, repeated
    or not, and `idcs` / `household_id` strings), empty ones left out."""
    if message is None:
        return []
    out: list[Named] = []
    for field, is_subject in _subject_fields(message.DESCRIPTOR):
        value = getattr(message, field.name)
        if not is_subject:
            _add(out, field.name, value)
            continue
        items = value if field.is_repeated else [value]
        for item in items:
            which = item.WhichOneof("subject")
            if which is not None:
                _add(out, which, getattr(item, which))
    return out


def subjects(items: Iterable[Subject]) -> list[Named]:
    """The identifiers of a list of Subject messages (a batch's), malformed ones included."""
    out: list[Named] = []
    for item in items:
        which = item.WhichOneof("subject")
        if which is not None:
            _add(out, which, getattr(item, which))
    return out


def _add(out: list[Named], kind: str, value: str) -> None:
    if value:
        out.append(Named(kind, value, _VALID[kind](value)))


@cache
def _subject_fields(descriptor: Descriptor) -> tuple[tuple[FieldDescriptor, bool], ...]:
    """The fields of a message type that name subjects (computed once per type)."""
    found: list[tuple[FieldDescriptor, bool]] = []
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.full_name == _SUBJECT:
            found.append((field, True))
        elif (
            field.name in _VALID
            and field.type == FieldDescriptor.TYPE_STRING
            and not field.is_repeated
        ):
            found.append((field, False))
    return tuple(found)


# -- what a call read ---------------------------------------------------------------------

_reading: ContextVar[set[tuple[str, str]] | None] = ContextVar("jisr_read", default=None)


@contextmanager
def watching(read: set[tuple[str, str]]) -> Iterator[set[tuple[str, str]]]:
    """Note into `read` the subjects whose records are fetched inside this block."""
    token = _reading.set(read)
    try:
        yield read
    finally:
        _reading.reset(token)


def note(kind: str, values: Iterable[str]) -> None:
    """Record that the current call read (or changed) these subjects' data; no-op outside
    a call (tools, the demo data generator)."""
    read = _reading.get()
    if read is not None:
        read.update((kind, value) for value in values if value)
