"""What may be published of a table of counts: no figure may let anyone learn about one
household or person (docs/transparency.md, "Disclosure control"). Pure.

The method is threshold suppression with a protected total, the statistical offices'
classic for frequency tables, chosen over differential noise for a first publication
because every published figure is then exact and can be checked against a recount:

- **Primary suppression**: a cell counting from 1 to `threshold` - 1 is published as
  suppressed (no value). Zero cells are not listed: a table lists what happened.
- **The total**: each table publishes its grand total, unless that would give a
  suppressed cell away. With one suppressed cell, total minus the published cells is its
  value; with several whose sum is below the threshold, that sum bounds each of them too
  closely. In either case, or when the total itself is below the threshold, the total is
  suppressed as well.
- **Durations**: a median and its count are published for a group of at least
  `threshold` values, else suppressed (one value's median is that value).

A table publishes only its cells and its total, no other margin, so nothing else can be
subtracted. The threshold and the method are published beside the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.transparency.indicators import Counts, Durations

DEFAULT_THRESHOLD = 10
MIN_THRESHOLD = 3


@dataclass(frozen=True, slots=True)
class Cell:
    """One published cell: its dimension values, and its count, None if suppressed."""

    key: tuple[str, ...]
    value: int | None


@dataclass(frozen=True, slots=True)
class Table:
    """A table as published."""

    name: str
    description: str
    dimensions: tuple[str, ...]
    cells: tuple[Cell, ...]
    total: int | None

    @property
    def suppressed(self) -> int:
        return sum(1 for c in self.cells if c.value is None)


@dataclass(frozen=True, slots=True)
class Median:
    """One published median: its group, how many values, and the median in days (both
    None if suppressed)."""

    key: tuple[str, ...]
    count: int | None
    median_days: float | None


@dataclass(frozen=True, slots=True)
class MedianTable:
    name: str
    description: str
    dimensions: tuple[str, ...]
    groups: tuple[Median, ...]


def check_threshold(threshold: int) -> int:
    """ValueError below MIN_THRESHOLD: a threshold of 1 or 2 protects nobody."""
    if threshold < MIN_THRESHOLD:
        raise ValueError(f"the threshold must be at least {MIN_THRESHOLD}, not {threshold}")
    return threshold


def protect(counts: Counts, threshold: int) -> Table:
    """The table as it may be published (see the module docstring)."""
    check_threshold(threshold)
    kept = {k: v for k, v in counts.rows.items() if v > 0}
    cells = tuple(
        Cell(key, None if value < threshold else value) for key, value in sorted(kept.items())
    )
    total = sum(kept.values())
    hidden = [kept[c.key] for c in cells if c.value is None]
    gives_away = len(hidden) == 1 or (hidden and sum(hidden) < threshold)
    shown_total = None if gives_away or 0 < total < threshold else total
    return Table(counts.name, counts.description, counts.dimensions, cells, shown_total)


def protect_durations(durations: Durations, threshold: int) -> MedianTable:
    """Medians of groups of at least `threshold` values; the others suppressed."""
    check_threshold(threshold)
    groups = tuple(
        Median(key, n, round(median, 1)) if n >= threshold else Median(key, None, None)
        for key, (n, median) in sorted(durations.medians().items())
    )
    return MedianTable(durations.name, durations.description, durations.dimensions, groups)
