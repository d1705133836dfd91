"""Programmes, their threshold versions and the score bands, loaded from a TOML file.

The file is validated once at start; every error names the file and the offending field,
so an operator can fix a bad edit without reading code. Conditions are a closed
vocabulary (CONDITIONS): combining them into new programmes needs no code.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

# Conditions a programme may add to "score strictly below the threshold". A condition that
# reads a household's members must say so in `Programme.reads_members`: without it, the
# exchange reads households in the SCORE view, with no member (adapters/base.py).
CONDITIONS = frozenset({"no_other_amo_coverage"})

_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


class ProgrammeConfigError(ValueError):
    """The programmes file is invalid; the message names the file and field at fault."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """One version of a programme's score threshold, in force from a date."""

    version: str
    value: float
    effective_from: dt.date
    effective_until: dt.date | None
    legal_reference: str

    def in_force(self, day: dt.date) -> bool:
        """True when `day` falls in [effective_from, effective_until]."""
        if day < self.effective_from:
            return False
        return self.effective_until is None or day <= self.effective_until


@dataclass(frozen=True, slots=True)
class Programme:
    """A programme: who runs it, its extra conditions and its threshold history."""

    code: str
    name: str
    operator: str
    conditions: frozenset[str]
    ignored_coverage_schemes: frozenset[str]
    thresholds: tuple[Threshold, ...]  # sorted by effective_from
    # Due process (docs/events.md): days of notice before a change that ends the benefit is
    # carried out (0: at once, no proposed action), and whether the benefit is paid or held
    # meanwhile.
    notice_days: float = 0.0
    during_notice: str = "pay"

    def threshold_on(self, day: dt.date) -> Threshold | None:
        """The newest threshold version in force on `day`, if any."""
        for threshold in reversed(self.thresholds):
            if threshold.in_force(day):
                return threshold
        return None

    @property
    def needs_coverage(self) -> bool:
        """Whether deciding needs the members' CNSS coverage."""
        return "no_other_amo_coverage" in self.conditions

    @property
    def reads_members(self) -> bool:
        """Whether deciding reads a household's members (their coverage, today): if not,
        its households are read without them (the SCORE view)."""
        return self.needs_coverage


@dataclass(frozen=True, slots=True)
class ScoreBands:
    """Bands shown instead of scores: `bounds[i]` is the exclusive top of `codes[i]`."""

    codes: tuple[str, ...]
    bounds: tuple[float, ...]

    def band(self, score: float) -> str:
        """The code of the band holding `score`."""
        for code, bound in zip(self.codes, self.bounds, strict=False):
            if score < bound:
                return code
        return self.codes[-1]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Everything the programmes file defines."""

    programmes: Mapping[str, Programme]
    bands: ScoreBands
    source: str


DEFAULT_FILE = "programmes.toml"
MAX_NOTICE_DAYS = 365
# While a proposed action is pending: the benefit is paid as before, or held (kept for the
# household, paid once the action is withdrawn).
DURING_NOTICE = ("pay", "hold")


def load_default() -> Catalogue:
    """The programmes shipped with Jisr."""
    text = (resources.files("gateway") / "data" / DEFAULT_FILE).read_text(encoding="utf-8")
    return parse(text, f"<jisr>/{DEFAULT_FILE}")


def load(path: Path) -> Catalogue:
    """A programmes file; raises ProgrammeConfigError naming the fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProgrammeConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse(text, str(path))


def parse(text: str, source: str) -> Catalogue:
    """Validate and build a Catalogue from TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProgrammeConfigError(f"{source}: {exc}") from exc
    _only(doc, {"score_band", "programme"}, source, "")
    bands = _bands(_list(doc, "score_band", source, ""), source)
    programmes: dict[str, Programme] = {}
    for i, raw in enumerate(_list(doc, "programme", source, "")):
        where = f"programme[{i}]"
        programme = _programme(_table(raw, source, where), source, where)
        if programme.code in programmes:
            raise ProgrammeConfigError(f"{source}: {where}.code: {programme.code} defined twice")
        programmes[programme.code] = programme
    if not programmes:
        raise ProgrammeConfigError(f"{source}: no [[programme]] defined")
    return Catalogue(programmes=programmes, bands=bands, source=source)


def _bands(raw: Sequence[Any], source: str) -> ScoreBands:
    codes: list[str] = []
    bounds: list[float] = []
    for i, item in enumerate(raw):
        where = f"score_band[{i}]"
        table = _table(item, source, where)
        _only(table, {"code", "below"}, source, where)
        codes.append(_code(table, "code", source, where))
        last = i == len(raw) - 1
        if last:
            if "below" in table:
                raise ProgrammeConfigError(f"{source}: {where}.below: the last band is open")
        else:
            bound = _number(table, "below", source, where)
            if bounds and bound <= bounds[-1]:
                raise ProgrammeConfigError(f"{source}: {where}.below: bands must ascend")
            bounds.append(bound)
    if len(codes) < 2:
        raise ProgrammeConfigError(f"{source}: score_band: define at least two bands")
    if len(set(codes)) != len(codes):
        raise ProgrammeConfigError(f"{source}: score_band: band codes must be unique")
    return ScoreBands(codes=tuple(codes), bounds=tuple(bounds))


def _programme(table: dict[str, Any], source: str, where: str) -> Programme:
    _only(
        table,
        {
            "code",
            "name",
            "operator",
            "conditions",
            "ignored_coverage_schemes",
            "threshold",
            "notice_days",
            "during_notice",
        },
        source,
        where,
    )
    conditions = _strings(table, "conditions", source, where, required=False)
    unknown = sorted(set(conditions) - CONDITIONS)
    if unknown:
        raise ProgrammeConfigError(
            f"{source}: {where}.conditions: unknown {unknown}; known: {sorted(CONDITIONS)}"
        )
    thresholds = [
        _threshold(_table(t, source, f"{where}.threshold[{j}]"), source, f"{where}.threshold[{j}]")
        for j, t in enumerate(_list(table, "threshold", source, where))
    ]
    if not thresholds:
        raise ProgrammeConfigError(f"{source}: {where}.threshold: at least one version")
    versions = [t.version for t in thresholds]
    if len(set(versions)) != len(versions):
        raise ProgrammeConfigError(f"{source}: {where}.threshold: versions must be unique")
    return Programme(
        code=_code(table, "code", source, where),
        name=_string(table, "name", source, where),
        operator=_code(table, "operator", source, where),
        conditions=frozenset(conditions),
        ignored_coverage_schemes=frozenset(
            _strings(table, "ignored_coverage_schemes", source, where, required=False)
        ),
        thresholds=tuple(sorted(thresholds, key=lambda t: t.effective_from)),
        notice_days=_notice_days(table, source, where),
        during_notice=_during_notice(table, source, where),
    )


def _notice_days(table: dict[str, Any], source: str, where: str) -> float:
    """Days of notice, 0 to 365 (fractions allowed: a test runs a notice of seconds)."""
    if "notice_days" not in table:
        return 0.0
    days = _number(table, "notice_days", source, where)
    if not 0 <= days <= MAX_NOTICE_DAYS:
        raise ProgrammeConfigError(
            f"{source}: {_at(where, 'notice_days')}: must be from 0 to {MAX_NOTICE_DAYS}"
        )
    return days


def _during_notice(table: dict[str, Any], source: str, where: str) -> str:
    if "during_notice" not in table:
        return "pay"
    value = table["during_notice"]
    if value not in DURING_NOTICE:
        raise ProgrammeConfigError(
            f"{source}: {_at(where, 'during_notice')}: must be one of {list(DURING_NOTICE)}"
        )
    return str(value)


def _threshold(table: dict[str, Any], source: str, where: str) -> Threshold:
    _only(
        table,
        {"version", "value", "effective_from", "effective_until", "legal_reference"},
        source,
        where,
    )
    start = _date(table, "effective_from", source, where)
    until = _date(table, "effective_until", source, where) if "effective_until" in table else None
    if until is not None and until < start:
        raise ProgrammeConfigError(f"{source}: {where}.effective_until: before effective_from")
    return Threshold(
        version=_string(table, "version", source, where),
        value=_number(table, "value", source, where),
        effective_from=start,
        effective_until=until,
        legal_reference=_string(table, "legal_reference", source, where),
    )


def _only(table: dict[str, Any], allowed: set[str], source: str, where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise ProgrammeConfigError(f"{source}: {prefix}{extra[0]}: unknown key")


def _table(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProgrammeConfigError(f"{source}: {where}: must be a table")
    return value


def _list(table: dict[str, Any], key: str, source: str, where: str) -> list[Any]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise ProgrammeConfigError(f"{source}: {_at(where, key)}: must be an array of tables")
    return value


def _string(table: dict[str, Any], key: str, source: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProgrammeConfigError(f"{source}: {_at(where, key)}: must be a non-empty string")
    return value


def _code(table: dict[str, Any], key: str, source: str, where: str) -> str:
    value = _string(table, key, source, where)
    if not _CODE.fullmatch(value):
        raise ProgrammeConfigError(
            f"{source}: {_at(where, key)}: {value!r} is not an upper-case code like 'AMOT'"
        )
    return value


def _strings(
    table: dict[str, Any], key: str, source: str, where: str, *, required: bool
) -> list[str]:
    if key not in table and not required:
        return []
    value = table.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProgrammeConfigError(f"{source}: {_at(where, key)}: must be a list of strings")
    return value


def _number(table: dict[str, Any], key: str, source: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProgrammeConfigError(f"{source}: {_at(where, key)}: must be a finite number")
    return float(value)


def _date(table: dict[str, Any], key: str, source: str, where: str) -> dt.date:
    value = table.get(key)
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise ProgrammeConfigError(
            f"{source}: {_at(where, key)}: must be a TOML date like 2024-01-01"
        )
    return value


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
