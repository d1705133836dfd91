"""One line of a file of registry changes, parsed and checked on its own (docs/events.md,
"A file of changes"). Pure: no registry, no I/O.

A line either becomes a typed change or raises LineError naming the member at fault.
The message never quotes the value: these errors go to a terminal and to logs, and the
values are IDCS, household ids and names. Whether the change is possible (the person
exists, the household does...) is the applier's question (adapters/registry_changes.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from gateway.base.identifiers import is_valid_household_id, is_valid_idcs
from gateway.pb.jisr.v1 import records_pb2 as rec

MAX_NAME_CHARS = 100  # as adapters/record_checks.py: a name a backend may answer
MIN_SCORE = 0.0
MAX_SCORE = 20.0  # as adapters/record_checks.py: a score a backend may answer

_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TEN_DIGITS = re.compile(r"[0-9]{10}")
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")  # an AMO scheme, as record_checks.py
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MEMBER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")

SOURCES = ("RNP", "RSU", "CNSS")


def _names(enum: Any, prefix: str, *, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Line vocabulary -> enum number: the enum's names without prefix and UNSPECIFIED."""
    return {
        name.removeprefix(prefix): number
        for name, number in enum.items()
        if number != 0 and name.removeprefix(prefix) not in skip
    }


# What a line may say, and the numbers the registry stores for it.
SEXES = {"F": int(rec.SEX_FEMALE), "M": int(rec.SEX_MALE)}
RELATIONSHIPS = _names(rec.Relationship, "RELATIONSHIP_", skip=("DECLARANT",))
REGIONS = _names(rec.Region, "REGION_")
AREAS = _names(rec.Area, "AREA_")


class LineError(ValueError):
    """What is wrong with a line: the member at fault ("line" for the line as a whole) and
    a message that never contains the member's value."""

    def __init__(self, member: str, message: str) -> None:
        super().__init__(f"{member}: {message}")
        self.member = member
        self.message = message


@dataclass(frozen=True, slots=True)
class _Change:
    """The members every change has."""

    TYPE: ClassVar[str]
    SOURCE: ClassVar[str | None]  # None: any source (a correction)
    id: str
    source: str
    effective: str

    def payload(self) -> dict[str, Any]:
        """The line's own members beyond the common ones and the subject, under the names
        the journal's `after` uses: what "the same content" compares besides the columns."""
        return {}


@dataclass(frozen=True, slots=True)
class PersonDied(_Change):
    TYPE = "person.died"
    SOURCE = "RNP"
    idcs: str


@dataclass(frozen=True, slots=True)
class PersonBorn(_Change):
    TYPE = "person.born"
    SOURCE = "RNP"
    idcs: str
    given_name: str
    family_name: str
    sex: str

    def payload(self) -> dict[str, Any]:
        return {"given_name": self.given_name, "family_name": self.family_name, "sex": self.sex}


@dataclass(frozen=True, slots=True)
class MemberJoined(_Change):
    TYPE = "member.joined"
    SOURCE = "RSU"
    idcs: str
    household_id: str
    relationship: str

    def payload(self) -> dict[str, Any]:
        return {"relationship": self.relationship}


@dataclass(frozen=True, slots=True)
class MemberLeft(_Change):
    TYPE = "member.left"
    SOURCE = "RSU"
    idcs: str
    household_id: str


@dataclass(frozen=True, slots=True)
class HouseholdRescored(_Change):
    TYPE = "household.rescored"
    SOURCE = "RSU"
    household_id: str
    score: float

    def payload(self) -> dict[str, Any]:
        return {"score": self.score}


@dataclass(frozen=True, slots=True)
class HouseholdRegionChanged(_Change):
    TYPE = "household.region_changed"
    SOURCE = "RSU"
    household_id: str
    region: str
    area: str

    def payload(self) -> dict[str, Any]:
        return {"region": self.region, "area": self.area}


@dataclass(frozen=True, slots=True)
class CoverageStarted(_Change):
    TYPE = "coverage.started"
    SOURCE = "CNSS"
    idcs: str
    scheme: str

    def payload(self) -> dict[str, Any]:
        return {"scheme": self.scheme}


@dataclass(frozen=True, slots=True)
class CoverageEnded(_Change):
    TYPE = "coverage.ended"
    SOURCE = "CNSS"
    idcs: str


@dataclass(frozen=True, slots=True)
class Correction(_Change):
    TYPE = "correction"
    SOURCE = None
    corrects: str


Change: TypeAlias = (
    PersonDied
    | PersonBorn
    | MemberJoined
    | MemberLeft
    | HouseholdRescored
    | HouseholdRegionChanged
    | CoverageStarted
    | CoverageEnded
    | Correction
)
# The registry's own event, journaled beside each membership change; never a line.
COMPOSITION_CHANGED = "household.composition_changed"

# --- member checks: each returns the clean value or raises LineError ----------------------

Check = Callable[[str, Any], Any]


def _string(member: str, value: Any) -> str:
    if not isinstance(value, str):
        raise LineError(member, "not a string")
    return value


def _event_id(member: str, value: Any) -> str:
    if not _ID.fullmatch(_string(member, value)):
        raise LineError(member, "not 1 to 64 characters of A-Z a-z 0-9 . _ : -")
    return str(value)


def _source(member: str, value: Any) -> str:
    if _string(member, value) not in SOURCES:
        raise LineError(member, f"not one of {', '.join(SOURCES)}")
    return str(value)


def _date(member: str, value: Any) -> str:
    text = _string(member, value)
    if not _DATE.fullmatch(text):
        raise LineError(member, "not a date written YYYY-MM-DD")
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise LineError(member, "not a calendar date") from None
    return text


def _idcs(member: str, value: Any) -> str:
    text = _string(member, value)
    if not _TEN_DIGITS.fullmatch(text):
        raise LineError(member, "not 10 digits")
    if not is_valid_idcs(text):
        raise LineError(member, "check digit does not match (not a valid IDCS)")
    return text


def _household_id(member: str, value: Any) -> str:
    if not is_valid_household_id(_string(member, value)):
        raise LineError(member, "not 'H' and 9 digits")
    return str(value)


def _name(member: str, value: Any) -> str:
    text = _string(member, value)
    if not text.strip():
        raise LineError(member, "empty")
    if len(text) > MAX_NAME_CHARS:
        raise LineError(member, f"longer than {MAX_NAME_CHARS} characters")
    if _CONTROL.search(text):
        raise LineError(member, "contains a control character")
    return text


def _one_of(allowed: dict[str, int], what: str) -> Check:
    def check(member: str, value: Any) -> str:
        if _string(member, value) not in allowed:
            raise LineError(member, f"not a known {what} (one of {', '.join(allowed)})")
        return str(value)

    return check


def _score(member: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | _NonFinite):
        raise LineError(member, "not a number")
    if isinstance(value, _NonFinite) or not math.isfinite(value):
        raise LineError(member, "not a finite number")
    if not MIN_SCORE <= value <= MAX_SCORE:
        raise LineError(member, f"outside {MIN_SCORE:g} to {MAX_SCORE:g}")
    return float(value)


def _scheme(member: str, value: Any) -> str:
    if not _CODE.fullmatch(_string(member, value)):
        raise LineError(member, "not an upper-case code like AMO_SALARIES")
    return str(value)


_COMMON: tuple[tuple[str, Check], ...] = (
    ("id", _event_id),
    ("source", _source),
    ("effective", _date),
)
# Per type: its class and its own members, checked in this order after the common ones.
_TYPES: dict[str, tuple[type[Change], tuple[tuple[str, Check], ...]]] = {
    "person.died": (PersonDied, (("idcs", _idcs),)),
    "person.born": (
        PersonBorn,
        (
            ("idcs", _idcs),
            ("given_name", _name),
            ("family_name", _name),
            ("sex", _one_of(SEXES, "sex")),
        ),
    ),
    "member.joined": (
        MemberJoined,
        (
            ("idcs", _idcs),
            ("household_id", _household_id),
            ("relationship", _one_of(RELATIONSHIPS, "relationship of a joining member")),
        ),
    ),
    "member.left": (MemberLeft, (("idcs", _idcs), ("household_id", _household_id))),
    "household.rescored": (
        HouseholdRescored,
        (("household_id", _household_id), ("score", _score)),
    ),
    "household.region_changed": (
        HouseholdRegionChanged,
        (
            ("household_id", _household_id),
            ("region", _one_of(REGIONS, "region")),
            ("area", _one_of(AREAS, "area")),
        ),
    ),
    "coverage.started": (CoverageStarted, (("idcs", _idcs), ("scheme", _scheme))),
    "coverage.ended": (CoverageEnded, (("idcs", _idcs),)),
    "correction": (Correction, (("corrects", _event_id),)),
}
TYPES = tuple(_TYPES)
# The one source that records each type (None: any source, for its own events).
SOURCE_OF: dict[str, str | None] = {
    **{type_: cls.SOURCE for type_, (cls, _) in _TYPES.items()},
    COMPOSITION_CHANGED: "RSU",
}
_ALLOWED = {
    type_: frozenset({"type", *(m for m, _ in _COMMON), *(m for m, _ in members)})
    for type_, (_, members) in _TYPES.items()
}


# --- JSON -----------------------------------------------------------------------------


class _NonFinite:
    """What NaN and Infinity parse to: JSON has no such numbers, and a score of NaN
    compares false with every threshold."""


_NON_FINITE = _NonFinite()


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a member given twice (json would keep the last silently)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise LineError(_shown(key), "given twice")
            seen.add(key)
    return found


def _shown(member: str) -> str:
    """A member's name as an error may show it: a name a line could mean, else a neutral
    word (an unexpected key might itself be personal data, e.g. an IDCS)."""
    return member if _MEMBER_NAME.fullmatch(member) else "line"


def _load(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except LineError:
        raise
    except json.JSONDecodeError as exc:
        # Its message is the parser's, without the text; only the position is kept.
        raise LineError("line", f"not valid JSON (column {exc.colno})") from None
    except RecursionError:
        raise LineError("line", "nested too deeply") from None
    except ValueError:  # e.g. an integer of more digits than Python converts
        raise LineError("line", "not valid JSON") from None


def _non_finite(_: str) -> _NonFinite:
    return _NON_FINITE


# Built once: json.loads with hooks would build a decoder per line.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_non_finite)


# --- a line ---------------------------------------------------------------------------


def parse_line(text: str) -> Change:
    """The change one line describes, every member present, of its type and valid; or
    LineError for the first fault (the type is checked first: it says which members
    belong). Checks nothing against a registry."""
    obj = _load(text)
    if not isinstance(obj, dict):
        raise LineError("line", "not a JSON object")
    if "type" not in obj:
        raise LineError("type", "missing")
    type_ = obj["type"]
    if type_ == COMPOSITION_CHANGED:
        raise LineError("type", "recorded by the registry itself, never a line of a file")
    if not isinstance(type_, str) or type_ not in _TYPES:
        raise LineError("type", f"not a change type (one of {', '.join(_TYPES)})")
    cls, members = _TYPES[type_]
    unknown = sorted(set(obj) - _ALLOWED[type_])
    if unknown:
        raise LineError(_shown(unknown[0]), f"not a member of a {type_} change")
    values: dict[str, Any] = {}
    for member, check in (*_COMMON, *members):
        if member not in obj:
            raise LineError(member, "missing")
        values[member] = check(member, obj[member])
    if cls.SOURCE is not None and values["source"] != cls.SOURCE:
        raise LineError("source", f"a {type_} change comes from {cls.SOURCE}")
    return cls(**values)


def subject(change: Change) -> tuple[str | None, str | None]:
    """(idcs, household_id) a change names, None where it names none (a correction names
    the corrected event's, which only the journal knows)."""
    return getattr(change, "idcs", None), getattr(change, "household_id", None)
