"""Registry change event types: the names a change file and a policy use ("person.died")
and the jisr.v1.EventType numbers on the wire, one derived from the other.

In the base so that the policy (which names the types a Subscribe grant allows), the
registry's applier and the event log agree without importing each other."""

from __future__ import annotations

from gateway.pb.jisr.v1 import events_pb2 as epb

_PREFIX = "EVENT_TYPE_"

NAMES: tuple[str, ...] = tuple(
    name.removeprefix(_PREFIX).lower().replace("_", ".", 1)
    for name in (value.name for value in epb.EventType.DESCRIPTOR.values)
    if name != "EVENT_TYPE_UNSPECIFIED"
)
"""Every type's name, in enum order: "person.died", "household.rescored"..."""

_BY_NAME: dict[str, epb.EventType.ValueType] = {
    name: epb.EventType.Value(_PREFIX + name.upper().replace(".", "_")) for name in NAMES
}
_BY_NUMBER: dict[int, str] = {int(number): name for name, number in _BY_NAME.items()}


def number(name: str) -> epb.EventType.ValueType:
    """The wire number of a type's name; KeyError if there is no such type."""
    return _BY_NAME[name]


def name(number_: int) -> str:
    """The name of a wire number; KeyError for an unknown or unspecified one."""
    return _BY_NUMBER[number_]
