"""What may be published of a table of counts: no figure may let anyone learn about one
household or person (docs/transparency.md, "Disclosure control"). Pure.

The method is threshold suppression with secondary suppression, the statistical offices'
classic for frequency tables, chosen over differential noise for a first publication
because every published figure is then exact and can be checked against a recount:

- **Primary suppression**: a cell counting from 1 to `threshold` - 1 (or counting fewer
  distinct persons or households than that, `Counts.units`) is published as suppressed.
  Zero cells are not listed: a table lists what happened.
- **Secondary suppression for the margins other tables give away**: the tables of one
  month describe the same events in several ways (the proposed actions by programme, and
  by region; every programme's eligibility over the same households), so a sum over one
  table's cells is often published, or implied, by another (`Counts.margins`). Within
  each such group of cells, the suppressed ones must not be recoverable from the group's
  sum: either none is suppressed, or at least two are and they add up to the threshold
  or more. Where not, the smallest published cell of the group is suppressed as well,
  until every group of every margin holds (a fixpoint).
- **The total**: each table publishes its grand total, unless that would give a
  suppressed cell away (one suppressed cell, or suppressed cells adding up to less than
  the threshold) or is itself below the threshold: then it is suppressed too.
- **Durations**: a median and its count are published for a group of at least
  `threshold` values, else suppressed (one value's median is that value).

The threshold and the method are published beside the data.
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
    units = counts.units or {}
    hidden = {k for k, v in kept.items() if min(v, units.get(k, v)) < threshold}
    groupings = [_groups(kept, counts.dimensions, dims) for dims in counts.margins]
    while _suppress_one_more(kept, hidden, groupings, threshold):
        pass
    cells = tuple(Cell(k, None if k in hidden else v) for k, v in sorted(kept.items()))
    total = sum(kept.values())
    shown_total = None if _unsafe(kept, hidden, threshold) or 0 < total < threshold else total
    return Table(counts.name, counts.description, counts.dimensions, cells, shown_total)


Key = tuple[str, ...]


def _groups(kept: dict[Key, int], dimensions: tuple[str, ...], dims: Key) -> list[list[Key]]:
    """The cells grouped by the values of `dims` (a margin's groups)."""
    at = [dimensions.index(d) for d in dims]
    grouped: dict[Key, list[Key]] = {}
    for key in kept:
        grouped.setdefault(tuple(key[i] for i in at), []).append(key)
    return list(grouped.values())


def _unsafe(kept: dict[Key, int], hidden: set[Key], threshold: int) -> bool:
    """Whether a group's sum would give its suppressed cells away."""
    values = [kept[k] for k in hidden]
    return len(values) == 1 or (bool(values) and sum(values) < threshold)


def _suppress_one_more(
    kept: dict[Key, int], hidden: set[Key], groupings: list[list[list[Key]]], threshold: int
) -> bool:
    """Suppress the smallest published cell of the first unsafe group; False when every
    group is safe (or an unsafe one has nothing left to suppress)."""
    for grouping in groupings:
        for members in grouping:
            inside = hidden.intersection(members)
            if not _unsafe(kept, inside, threshold):
                continue
            shown = sorted((k for k in members if k not in hidden), key=lambda k: (kept[k], k))
            if shown:
                hidden.add(shown[0])
                return True
    return False


def protect_durations(durations: Durations, threshold: int) -> MedianTable:
    """Medians of groups of at least `threshold` values; the others suppressed."""
    check_threshold(threshold)
    groups = tuple(
        Median(key, n, round(median, 1)) if n >= threshold else Median(key, None, None)
        for key, (n, median) in sorted(durations.medians().items())
    )
    return MedianTable(durations.name, durations.description, durations.dimensions, groups)
