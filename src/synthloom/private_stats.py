"""The field tokenizer's statistics under differential privacy: what a private table model's
vocabularies are built from, with their epsilon and delta counted.

    stats = PrivateStats.for_schema(schema, epsilon=1.0, delta=1e-6, rng=rng)
    tok = FieldTokenizer.train(schema, rows, config.tokenizer, dp=stats)
    stats.report()      # -> privacy.json["encoding"]

Under privacy.enabled nothing the tokenizer keeps may come from the records without noise. Each
column's statistics are histograms that a record adds exactly 1 to (one count per histogram):

- categorical: the count of every value; a value is kept when its noisy count reaches
  max(tokenizer.rare_category_threshold, tau), where tau makes the chance that any value held by
  a single record is kept at most delta_threshold (a value only one record has must not show up
  in the vocabulary). The others share <rare>, which a private model never samples.
- integer / float: (1) how each value is written: its missing marker or its number of decimals;
  (2) the value on a fixed, data-independent grid of eighth-octave buckets of |x| (2^-20 to
  2^60) with its sign. The range is the span of the buckets that stand out of the noise, read at four
  scales (one bucket to an octave of them: thin mass, a sparse column or a long tail, shows in a block's
  sum where no bucket of it stands out), over the buckets the column's values can fall in (a whole number
  or a multiple of its decimals: between 1 and 8 the grid has 24 buckets and 7 whole numbers), widened over
  blocks beside it whose sum stands out locally; the bins are quantiles of the noisy histogram (uniform
  within a bucket), the decimals the most that occur. Training values outside the range are clipped to
  it. With public bounds (data.column_bounds) the range is theirs and (2) is a histogram over them instead
  (one cell per whole number of a short integer range, else 256 cells): no range is estimated, none spent
  on it.
  (3) integer columns without bounds whose range's ends are not exact (an end cell holding more
  than one whole number, or one but taken in beside the data; not 0/1 flags): a histogram of those
  whole numbers (up to END_INTEGERS at each end, counted one by one), and the range ends at the
  outermost ones whose noisy count stands out (where none does, at the end cell's edge, as
  before). So a column of ages 24..34 ends at 24 and 34, not at its cells' 23 and 34, and a range
  is cut only where its values are too few to tell from the noise. These
  histograms share a fixed reserve of END_SLOTS histograms' worth (min(END_SLOTS, integer columns)):
  k of them get noise sqrt(k / reserve) x sigma. Which columns and k follow from the noisy log-grid
  counts alone, so by adaptive composition they cost the reserve whatever they turn out to be.
  (4) float columns without bounds: a histogram of their end cells cut in PARTS equal parts, and the range
  ends where the parts show the values stop (a sparse end cell none of whose parts stands out ends at its
  inner edge: its few values are clipped to it rather than the range running past them); the parts that
  hold mass replace their cell in the grid, so the bins follow them. A reserve of PART_SLOTS histograms'
  worth (min(PART_SLOTS, float columns)), shared as in (3).
- date / datetime: (1) missing marker or present; (2) the year, on the fixed grid 1000-2999. Months,
  days, hours, minutes and seconds take their whole calendar range, not one read from the data.

All histograms get Gaussian noise of one standard deviation sigma. A record changes H counts by
1 (H histograms), so the noisy counts are rho-zCDP with rho = H / (2 sigma^2) (Bun & Steinke
2016), i.e. (rho + 2 sqrt(rho ln(1/delta_1)), delta_1)-DP; the thresholds add delta_threshold. sigma
is chosen so that the whole encoding is (epsilon, delta)-DP with delta_1 = delta_threshold =
delta / 2. Choosing what to keep from the noisy counts is post-processing. privacy.json adds this
epsilon and delta to DP-SGD's (basic composition).

Not covered (said in privacy.json): the column types and date formats (schema.json) and the
column names: the data's shape, like its header; data.column_types fixes the types by hand.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from .errors import TokenizerError
from .schema import ISO, MISSING_MARKERS, ColumnSchema, Schema

LOG_MIN, LOG_MAX, PER_OCTAVE = -20, 60, 8  # the numeric grid: eighths of an octave of |x| from 2^-20 to 2^60
ZERO_CELL = (LOG_MAX - LOG_MIN) * PER_OCTAVE  # the grid's cell around 0 (-2^-20 .. 2^-20): it holds 0 only
YEARS = (1000, 2999)  # the year grid of dates
MAX_DECIMALS = 12
SPURIOUS = 1e-3  # the chance that any empty cell of a histogram's grid passes as real
FAR = 1e-6  # the chance that noise alone keeps a group of cells far from the rest (its range would span octaves)
ISOLATED = 0.05  # an outermost cell alone (no real neighbour within an octave) holding less than this share: noise
EXTEND = 2.0  # a cell next to the real span joins it above this many sigma
EXTEND_BLOCK = 3.5  # the next 2-8 cells beside it join it above this many times sigma x sqrt(cells)
WEAK = 3.0  # an integer range's end cell below this many sigma has the next cell's numbers counted too
LEVELS = 4  # scales a range is read at: blocks of 1, 2, 4, 8 cells (an eighth of an octave to an octave)
BOUNDED_CELLS = 256  # cells of the histogram over public bounds (data.column_bounds)
WRITTEN_NOISE = 3.0  # how values are written (missing markers, decimals): large counts, noise 3 x sigma at 1/9 the cost
END_INTEGERS = 256  # whole numbers of a range's end cell counted one by one (the outermost ones)
PARTS = 16  # a float range's end cells are read in this many equal parts (_float_ends)
PART_SLOTS = 2  # histograms' worth for all float columns' end parts together (at most one each)
END_SLOTS = 4  # histograms' worth of budget for all integer columns' end numbers together (at most one each)


@dataclass
class NumberSummary:
    """What the number codec needs, from noisy counts only."""

    missing: list[str]
    decimals: int
    low: float  # the range (values are clipped to it)
    high: float
    quantiles: list[float]  # bin edges inside (low, high), ascending
    zero: bool = False  # the range holds 0 and the cell around 0 (0 only) has mass: 0 is a bin of its own


@dataclass
class _Range:
    """A number column's noisy histogram and the range read off it."""

    missing: list[str]
    decimals: int
    edges: np.ndarray
    noisy: np.ndarray
    lo_cell: int
    hi_cell: int
    low: float
    high: float
    integer: bool
    floats: list[float] = field(default_factory=list)
    bar: float = math.inf  # the noisy count a cell of its grid stands out by
    mass: np.ndarray | None = None  # what each cell holds, for the bins (_core); None: its noisy count
    zero: bool = False  # the cell around 0 is in the range with mass: 0 is a value of its own


def _end_numbers(r: _Range, sigma: float) -> tuple[list[int], list[int]]:
    """The whole numbers to count at an integer range's low and high end: its end cell's (END_INTEGERS of
    each cell at most, the outermost), none where that cell holds one number and stood out on its own (0 and 1 of a
    flag: exact), and the next cells' until two numbers are counted, and one cell more where the end cell's
    own noisy count is under WEAK x sigma (taken in by a block's sum or a widening, it may hold nothing: 25
    and 26 in 24.7-26.9 beside hours 0-23)."""
    low, high, edges = int(r.low), int(r.high), r.edges

    def numbers(cell: int, step: int) -> range:  # a cell's whole numbers inside the range, the outermost
        inside = range(max(low, math.ceil(edges[cell])), min(high, math.ceil(edges[cell + 1]) - 1) + 1)
        return inside[:END_INTEGERS] if step > 0 else inside[-END_INTEGERS:]  # (a cell near 2^40 holds 10^11)

    ends = []
    for cell, step in ((r.lo_cell, 1), (r.hi_cell, -1)):
        if len(numbers(cell, step)) == 1 and r.noisy[cell] > r.bar:
            ends.append([])
            continue
        weak = r.noisy[cell] <= WEAK * sigma
        taken = set(numbers(cell, step))
        while len(taken) < 2 and r.lo_cell <= cell + step <= r.hi_cell:
            cell += step
            taken |= set(numbers(cell, step))
        if weak and r.lo_cell <= cell + step <= r.hi_cell:  # one cell more: the values may stop in it
            taken |= set(numbers(cell + step, step))
        ends.append(sorted(taken))
    first, last = ends  # (END_INTEGERS of each cell: cutting the union would drop the inner cell's numbers)
    return first, last


@dataclass
class PrivateStats:
    """Gaussian noise of std `sigma` on every histogram of the encoding; see the module docstring."""

    epsilon: float
    delta: float
    sigma: float
    histograms: float  # sum of 1 / m^2 over the histograms (noise std m x sigma): rho = histograms / (2 sigma^2)
    thresholded: int  # histograms whose domain is the data's own values (categories): thresholds needed
    rng: np.random.Generator
    end_slots: int = 0  # histograms' worth reserved for the whole numbers at integer ranges' ends (survey)
    part_slots: int = 0  # histograms' worth reserved for the parts of float ranges' end cells (survey)
    spent: list[dict[str, Any]] = field(default_factory=list)
    public_bounds: dict[str, list[float]] = field(default_factory=dict)  # data.column_bounds used as ranges
    _ranges: dict[str, _Range] = field(default_factory=dict)  # survey()'s, until number_summary takes them

    @classmethod
    def for_schema(
        cls, schema: Schema, epsilon: float, delta: float, rng: np.random.Generator, bounded: frozenset = frozenset()
    ) -> "PrivateStats":
        """`bounded`: the columns with public bounds (data.column_bounds), whose range is not estimated."""
        weight, thresholded = 0.0, 0  # sum over histograms of 1 / m^2 (noise std m x sigma)
        for column in schema.columns:
            if column.kind == "categorical":
                weight, thresholded = weight + 1, thresholded + 1
            elif column.kind in ("integer", "float", "date", "datetime"):
                weight += 1 + 1 / WRITTEN_NOISE**2  # the values, and how they are written
            if column.kind == "datetime" and column.format == ISO:  # its time zone suffixes: values of the data
                weight, thresholded = weight + 1, thresholded + 1
        integers = sum(c.kind == "integer" and c.name not in bounded for c in schema.columns)
        floats = sum(c.kind == "float" and c.name not in bounded for c in schema.columns)
        end_slots, part_slots = min(integers, END_SLOTS), min(floats, PART_SLOTS)
        weight = max(weight + end_slots + part_slots, 1.0)
        rho = _rho_for(epsilon, delta / 2)
        sigma = math.sqrt(weight / (2 * rho))
        return cls(epsilon, delta, sigma, weight, thresholded, rng, end_slots, part_slots)

    # -- mechanisms
    def noisy(self, counts: np.ndarray, what: str, scale: float = 1.0) -> np.ndarray:
        """counts + Gaussian noise of std scale x sigma (each such histogram costs 1 / scale^2 of one)."""
        self.spent.append({"histogram": what, "cells": int(counts.size), "noise_std": scale * self.sigma})
        return counts + self.rng.normal(0.0, scale * self.sigma, size=counts.shape)

    def tau(self) -> float:
        """The noisy count a value seen in one record reaches with probability at most
        delta_threshold / (the histograms thresholded), so that the chance any such value is kept
        across them all is at most delta_threshold = delta / 2."""
        per = (self.delta / 2) / max(self.thresholded, 1)
        return 1.0 + self.sigma * NormalDist().inv_cdf(1.0 - per)

    def stands_out(self, cells: int, scale: float = 1.0) -> float:
        """A noisy count that an empty cell of a `cells`-cell grid exceeds with probability at
        most SPURIOUS / cells: what is taken as real when reading a range off a grid."""
        return scale * self.sigma * NormalDist().inv_cdf(1.0 - SPURIOUS / max(cells, 1))

    def frequent_values(self, counts: Counter, min_count: int, what: str) -> list[str]:
        """The values whose noisy count reaches max(min_count, tau)."""
        keys = list(counts)
        noisy = self.noisy(np.array([counts[k] for k in keys], dtype=float), what)
        floor = max(float(min_count), self.tau())
        return sorted(k for k, n in zip(keys, noisy) if n >= floor)

    def survey(self, schema: Schema, columns: list, bounds: dict) -> None:
        """Read every number column's range without public bounds (`bounds`) off its noisy log-grid
        histogram, then read the ends of integer ranges from their end numbers (`_integer_ends`: the columns
        whose ends are not exact, `_end_numbers`, share the reserved `end_slots`, so a table of many 0/1 flags
        spends nothing on them) and those of float ranges from their end cells' parts (`_float_ends`, sharing
        `part_slots`). Which columns, and their noise, follow from noisy counts alone (adaptive composition:
        the total is each reserve whatever they are)."""
        for column, values in zip(schema.columns, columns):
            if column.kind in ("integer", "float") and column.name not in bounds:
                self._ranges[column.name] = self._grid_range(column, list(values))
        ends = {name: _end_numbers(r, self.sigma) for name, r in self._ranges.items() if r.integer}
        wide = [name for name, (first, last) in ends.items() if first or last]
        cells = {name: _end_cells(r) for name, r in self._ranges.items() if not r.integer}
        cut = [name for name, c in cells.items() if c]
        if wide and self.end_slots:
            scale = math.sqrt(len(wide) / self.end_slots)  # (k histograms at noise scale x sigma cost end_slots)
            for name in wide:
                self._integer_ends(name, self._ranges[name], *ends[name], scale)
        if cut and self.part_slots:
            scale = math.sqrt(len(cut) / self.part_slots)
            for name in cut:
                self._float_ends(name, self._ranges[name], cells[name], scale)

    def number_summary(
        self, column: ColumnSchema, values: list[str], max_bins: int, bounds: tuple[float, float] | None = None
    ) -> NumberSummary:
        """How a number column is written, its range (from survey(), or `bounds`, public: data.column_bounds)
        and its quantile bins (from the noisy histogram)."""
        if bounds is not None:  # public bounds: the range is given, the noisy histogram places the bins
            missing, decimals, floats = self._written(column, values)
            low, high = bounds
            self.public_bounds[column.name] = [low, high]
            edges = _bounded_edges(low, high, column.kind == "integer")
            cells = np.histogram(np.clip(np.asarray(floats, dtype=float), low, high), bins=edges)[0].astype(float)
            noisy = np.maximum(self.noisy(cells, f"{column.name}: values within its bounds"), 0.0)
            r = _Range(missing, decimals, edges, noisy, 0, len(edges) - 2, low, high, column.kind == "integer")
        else:
            r = self._ranges.pop(column.name, None) or self._grid_range(column, values)
        span = r.edges[r.lo_cell : r.hi_cell + 2].astype(float)  # where each cell's mass lies (uniform within it)
        span[0], span[-1] = max(span[0], r.low), min(span[-1], r.high)
        if r.mass is not None:  # the log grid's: cells standing out, and thin mass spread over its block
            mass = r.mass[r.lo_cell : r.hi_cell + 1]
        else:  # over public bounds: the cells above EXTEND x sigma
            mass = r.noisy[r.lo_cell : r.hi_cell + 1] * (r.noisy[r.lo_cell : r.hi_cell + 1] > EXTEND * self.sigma)
        if not mass.any():  # nothing stands out of the noise inside the bounds: bins of equal width
            mass = np.ones_like(mass)
        cdf = np.concatenate([[0.0], np.cumsum(mass)])
        targets = np.linspace(0, cdf[-1], max_bins + 1)[1:-1]
        quantiles = [min(max(q, r.low), r.high) for q in np.interp(targets, cdf, span).tolist()]
        zero = r.zero and r.low <= 0.0 <= r.high
        return NumberSummary(r.missing or [], r.decimals, r.low, r.high, quantiles, zero)

    def _written(self, column: ColumnSchema, values: list[str]) -> tuple[list[str], int, list[float]]:
        """(missing markers, decimals) from the noisy histogram of how values are written; the numbers."""
        written = Counter()
        floats = []
        for v in values:
            key = v if v.strip() in MISSING_MARKERS else None
            if key is None:
                from .fields import decimals_needed

                x = float(v)
                floats.append(x)
                written[f"d{min(decimals_needed(v), MAX_DECIMALS)}"] += 1
            else:
                written[f"m{v}"] += 1
        domain = [f"m{m}" for m in MISSING_MARKERS] + [f"d{d}" for d in range(MAX_DECIMALS + 1)]
        noisy = self.noisy(
            np.array([written[k] for k in domain], dtype=float), f"{column.name}: how values are written", WRITTEN_NOISE
        )
        bar = self.stands_out(len(domain), WRITTEN_NOISE)
        missing = [k[1:] for k, n in zip(domain, noisy) if k.startswith("m") and n > bar]
        decimals = max([int(k[1:]) for k, n in zip(domain, noisy) if k.startswith("d") and n > bar] or [0])
        return missing, decimals, floats

    def _grid_range(self, column: ColumnSchema, values: list[str]) -> "_Range":
        """How the column is written, and its range: the span of the log-grid cells that stand out."""
        missing, decimals, floats = self._written(column, values)
        edges = _grid_edges()  # (cells + 1,) ascending values
        cells = np.histogram(np.clip(np.asarray(floats, dtype=float), edges[0], edges[-1]), bins=edges)[0]
        noisy = self.noisy(cells.astype(float), f"{column.name}: values on the log grid")  # (sums test it: unclipped)
        occupiable = _occupiable(edges, 1.0 if column.kind == "integer" else 10.0**-decimals)
        bar = self.stands_out(int(occupiable.sum()))
        real, mass = _core(noisy, self.sigma, occupiable=occupiable, zero=ZERO_CELL)
        if not len(real):
            raise TokenizerError(
                f"column {column.name!r}: too few values for a differentially private range at this epsilon "
                "(privacy.encoding_epsilon); raise it, give the column public bounds (data.column_bounds), "
                "or drop it"
            )
        lo_cell, hi_cell = int(real[0]), int(real[-1])
        low, high = float(edges[lo_cell]), float(edges[hi_cell + 1])
        zero = ZERO_CELL
        if lo_cell == zero:
            low = 0.0
        if hi_cell == zero:
            high = 0.0
        integer = column.kind == "integer"
        if integer:  # the whole numbers the real cells hold: a cell [a, b) holds ceil(a) .. ceil(b) - 1
            low = math.ceil(low)
            high = max(low, 0 if hi_cell == zero else math.ceil(high) - 1)
        zero_mass = bool(lo_cell <= zero <= hi_cell and mass[zero] > 0)
        return _Range(
            missing, decimals, edges, noisy, lo_cell, hi_cell, low, high, integer, floats, bar, mass, zero_mass
        )

    def _integer_ends(self, name: str, r: "_Range", first: list[int], last: list[int], scale: float) -> None:
        """Move an integer range's ends in to the outermost whole numbers of its end cells whose noisy count
        stands out (one histogram: each record's value is one of them or none); an end none of whose numbers
        stands out stays (moving it in past a sparse end cell would cut real tails: ages past 67 of 17..90)."""
        domain = sorted(set(first) | set(last))
        at = {v: i for i, v in enumerate(domain)}
        counts = np.zeros(len(domain))
        for x in r.floats:
            i = at.get(min(max(round(x), r.low), r.high))  # (values outside the range count at its end, as trained)
            if i is not None:
                counts[i] += 1
        noisy = self.noisy(counts, f"{name}: the whole numbers at its range's ends", scale)
        bar = self.stands_out(len(domain), scale)
        real = {v for v, n in zip(domain, noisy) if n > bar}
        low = next((v for v in first if v in real), r.low)  # (an end none of whose numbers stands out stays)
        high = next((v for v in reversed(last) if v in real), r.high)
        if low <= high:
            r.low, r.high = low, high

    def _float_ends(self, name: str, r: "_Range", cells: list[int], scale: float) -> None:
        """Read a float range's ends inside its end cells: each cut in PARTS equal parts, counted (one histogram),
        and the ends put where the parts' noisy counts show the mass reaches (`_core` over an end's parts). An
        end cell that does not stand out on its own is read together with the next cell inward (taken in beside
        the data, it may hold nothing: the values may stop in the next). An end none of whose parts shows mass
        keeps its outer edge if its cell stood out (dense but thin: no part tells where its values stop) and
        ends at its inner edge if it did not (a sparse tail: its few values are clipped to it rather than the
        range running past them). The grid then holds the parts that showed mass instead of their cells, so the
        bins follow them (a column of narrow relative spread, air pressure 985-1042, lies in two cells of
        939-1117)."""

        def end_cells(cell: int, inward: int) -> list[int]:
            out = [cell]
            nxt = cell + inward
            if r.noisy[cell] <= r.bar and r.lo_cell <= nxt <= r.hi_cell and nxt != ZERO_CELL:
                out.append(nxt)
            return sorted(out)

        lows = end_cells(r.lo_cell, +1) if r.lo_cell in cells else []
        highs = end_cells(r.hi_cell, -1) if r.hi_cell in cells else []
        groups = [sorted(set(lows) | set(highs))] if set(lows) & set(highs) else [g for g in (lows, highs) if g]
        values = np.clip(np.asarray(r.floats, dtype=float), r.low, r.high)  # (as trained: clipped to the range)
        parts = {c: np.linspace(r.edges[c], r.edges[c + 1], PARTS + 1) for g in groups for c in g}
        order = sorted(parts)
        counts = np.concatenate([np.histogram(values, bins=parts[c])[0] for c in order]).astype(float)
        noisy = self.noisy(counts, f"{name}: the parts of its range's end cells", scale)
        at = {c: i * PARTS for i, c in enumerate(order)}
        found = []  # (cells, their parts' edges, span, mass) per group
        for g in groups:
            x = np.concatenate([noisy[at[c] : at[c] + PARTS] for c in g])
            edges = np.concatenate([parts[c][:-1] for c in g] + [parts[g[-1]][-1:]])
            span, mass = _core(x, scale * self.sigma)
            found.append((g, edges, span, mass))
        low, high = r.low, r.high
        for g, edges, span, _ in found:
            if r.lo_cell in g:
                if len(span):
                    low = max(low, float(edges[span[0]]))
                elif r.noisy[r.lo_cell] <= r.bar and r.lo_cell < r.hi_cell and not self._beyond(r, r.lo_cell, -1):
                    low = float(r.edges[r.lo_cell + 1])
            if r.hi_cell in g:
                if len(span):
                    high = min(high, float(edges[span[-1] + 1]))
                elif r.noisy[r.hi_cell] <= r.bar and r.lo_cell < r.hi_cell and not self._beyond(r, r.hi_cell, +1):
                    high = float(r.edges[r.hi_cell])
        if low >= high:
            return
        # the grid with the cells whose parts showed mass replaced by those parts (mass as found)
        split = {c: (k, g) for k, (g, _, span, _) in enumerate(found) if len(span) for c in g}
        edges, counts, mass = [], [], []
        for c in range(r.lo_cell, r.hi_cell + 1):
            if c in split:
                k, g = split[c]
                i = g.index(c) * PARTS
                edges.extend(parts[c][:-1].tolist())
                counts.extend(noisy[at[c] : at[c] + PARTS].tolist())
                mass.extend(found[k][3][i : i + PARTS].tolist())
            else:
                edges.append(float(r.edges[c]))
                counts.append(float(r.noisy[c]))
                mass.append(float(r.mass[c]))
        edges.append(float(r.edges[r.hi_cell + 1]))
        r.edges = np.asarray(edges)
        inside = (r.edges[1:] > low) & (r.edges[:-1] < high)
        r.noisy, r.mass = np.asarray(counts), np.where(inside, mass, 0.0)
        r.lo_cell, r.hi_cell = int(np.flatnonzero(inside)[0]), int(np.flatnonzero(inside)[-1])
        r.low, r.high = low, high

    def _beyond(self, r: "_Range", cell: int, outward: int, cells: int = 4) -> bool:
        """Whether the values go on past an end cell: the next `cells` cells' noisy sum tops EXTEND x sigma x
        sqrt(cells) (a tail the range cut: the end cell's outer edge is then inside the data)."""
        lo, hi = (cell + 1, cell + 1 + cells) if outward > 0 else (max(cell - cells, 0), cell)
        nxt = r.noisy[lo:hi]
        return len(nxt) > 0 and float(nxt.sum()) > EXTEND * self.sigma * math.sqrt(len(nxt))

    def date_summary(
        self, column: ColumnSchema, values: list[str], years: list[int | None]
    ) -> tuple[list[str], int, int]:
        """(missing markers, first year, last year) of a date column; years[i] is None for a missing value."""
        written = Counter(v if y is None else "\x00present" for v, y in zip(values, years))
        domain = list(MISSING_MARKERS) + ["\x00present"]
        noisy = self.noisy(
            np.array([written[k] for k in domain], dtype=float), f"{column.name}: missing or present", WRITTEN_NOISE
        )
        bar = self.stands_out(len(domain), WRITTEN_NOISE)
        missing = [k for k, n in zip(domain[:-1], noisy) if n > bar]
        grid = np.arange(YEARS[0], YEARS[1] + 1)
        counts = np.bincount(
            np.clip([y for y in years if y is not None], YEARS[0], YEARS[1]) - YEARS[0], minlength=len(grid)
        ).astype(float)
        noisy = self.noisy(counts, f"{column.name}: years")
        real, _ = _core(noisy, self.sigma, neighbourhood=10)
        if not len(real):
            raise TokenizerError(
                f"column {column.name!r}: too few values for a differentially private range of years at this "
                "epsilon (privacy.encoding_epsilon); raise it, or drop the column"
            )
        return missing, int(grid[real[0]]), int(grid[real[-1]])

    def report(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "mechanism": "Gaussian noise on histograms, rho-zCDP converted to (epsilon, delta); value thresholds",
            "sigma": self.sigma,
            "histograms": self.histograms,
            "category_threshold": self.tau() if self.thresholded else None,
            "spent": self.spent,
            "public_bounds": self.public_bounds,
        }


def _end_cells(r: _Range) -> list[int]:
    """The end cells of a float range to read its ends in (`_float_ends`): the lowest and highest, less the
    cell around 0, whose end (0) is exact."""
    return sorted({c for c in (r.lo_cell, r.hi_cell) if c != ZERO_CELL})


def _occupiable(edges: np.ndarray, step: float) -> np.ndarray:
    """The cells [a, b) of a grid that hold a multiple of `step` (the values a column of whole numbers, or of
    d decimals, can take): the others are known empty, whatever the data, so runs of cells skip them (between
    1 and 8 the log grid has 24 cells and 7 whole numbers)."""
    first = np.ceil(edges[:-1] / step - 1e-9) * step
    return first < edges[1:] - 1e-9 * np.maximum(1.0, np.abs(edges[1:]))


def _core(
    noisy: np.ndarray,
    sigma: float,
    neighbourhood: int = PER_OCTAVE,
    occupiable: np.ndarray | None = None,
    zero: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The span of cells taken as real ([first, last] cell indices; empty if none) and the mass each cell of the
    grid holds (0 outside the span).

    Runs over the occupiable cells only (`_occupiable`; all by default), at LEVELS scales: a block of w
    consecutive cells (w = 1, 2, 4, 8, aligned outward from the cell `zero`, which no block straddles: most
    columns have no negative values) stands out when the noisy sum of its cells not yet taken
    exceeds what empty cells reach with probability SPURIOUS / blocks (noise std sqrt(cells) sigma), so mass
    spread thinly over an octave (a sparse column, a long tail) is found where no single cell of it stands
    out. An outermost group of real cells far from the others (none within `neighbourhood`) is dropped
    unless it holds ISOLATED of the real mass, has a cell standing out on its own, and tops what noise
    reaches with probability FAR (a noise spike would stretch the range to it: on card at epsilon 1, wage
    came out -3.4e17..939 in one of 40 noise seeds); the cell `zero`, one cell named in advance, needs no
    such bar (calm winds of 0 apart from 10-360 degrees). Then, at each end, the next w cells (8, 4, 2, 1: the
    largest first) join the span while their sum tops EXTEND_BLOCK (one cell: EXTEND) x sigma x sqrt(w)
    (beside real data, mass is likely: a tail), and every block taken at an end is narrowed to the cells the
    mass reaches (`_narrow`).
    The mass: a cell's noisy count where it tops EXTEND x sigma, else its share of the block it was taken in
    (spread evenly), else 0."""
    index = np.flatnonzero(occupiable) if occupiable is not None else np.arange(len(noisy))
    x = noisy[index]
    m = len(x)
    taken = np.zeros(m, dtype=bool)
    own = np.zeros(m, dtype=bool)  # cells standing out on their own (scale 1)
    share = np.zeros(m)  # a taken cell's share of its block's noisy sum
    split = int(np.searchsorted(index, zero)) if zero is not None and np.any(index == zero) else None
    for lv in range(LEVELS):
        w = 2**lv
        if w > m:
            break
        starts = _block_starts(m, w, split)
        fresh = ~taken  # a block is tested on its cells not yet taken (a dense cell does not carry its neighbours)
        sums = np.add.reduceat(np.where(fresh, x, 0.0), starts)
        sizes = np.add.reduceat(fresh.astype(np.int64), starts)
        bar = sigma * np.sqrt(np.maximum(sizes, 1)) * NormalDist().inv_cdf(1.0 - SPURIOUS / len(starts))
        for b in np.flatnonzero((sums > bar) & (sizes > 0)):
            block = np.arange(starts[b], starts[b + 1] if b + 1 < len(starts) else m)
            block = block[fresh[block]]
            taken[block], share[block] = True, sums[b] / sizes[b]
            own[block] = lv == 0
    real = np.flatnonzero(taken)
    mass = np.zeros(len(noisy))
    if not len(real):
        return real, mass
    groups = np.split(real, np.flatnonzero(np.diff(real) > neighbourhood) + 1)
    far = NormalDist().inv_cdf(1.0 - FAR / m)  # (the bar an isolated group must top, in sigma x sqrt(its cells))
    while len(groups) > 1:
        total = sum(x[g].sum() for g in groups)
        for end in (0, -1):
            g = groups[end]
            bar = 0.0 if split in g else far * sigma * math.sqrt(len(g))  # (0 is one cell, named in advance)
            if x[g].sum() < max(ISOLATED * total, bar) or not own[g].any():
                groups.pop(end)
                break
        else:
            break
    lo, hi = int(groups[0][0]), int(groups[-1][-1])
    lo = _narrow(x, _block_at(taken, lo, +1), sigma)
    hi = _narrow(x, _block_at(taken, hi, -1), sigma)
    for outward in (-1, +1):
        while True:
            end = lo if outward < 0 else hi
            for w in (8, 4, 2, 1):
                block = [end + outward * (i + 1) for i in range(w)]
                z = EXTEND if w == 1 else EXTEND_BLOCK
                if block[-1] < 0 or block[-1] >= m or x[block].sum() <= z * sigma * math.sqrt(w):
                    continue
                block = block[: block.index(_narrow(x, block[::-1], sigma)) + 1]
                share[block] = x[block].sum() / len(block)
                taken[block] = True
                if outward < 0:
                    lo = block[-1]
                else:
                    hi = block[-1]
                break
            else:
                break
    inside = np.zeros(len(noisy))
    inside[index] = np.where(x > EXTEND * sigma, np.maximum(x, 0.0), np.where(taken, np.maximum(share, 0.0), 0.0))
    mass[index[lo] : index[hi] + 1] = inside[index[lo] : index[hi] + 1]
    return np.asarray([index[lo], index[hi]], dtype=np.int64), mass


def _block_starts(m: int, w: int, split: int | None) -> np.ndarray:
    """Where the blocks of w cells start over m cells: aligned from 0, or with cell `split` a block of its own
    and the blocks aligned outward from it on either side."""
    if split is None:
        return np.arange(0, m, w)
    below = {max(s, 0) for s in range(split - w, -w, -w)}
    return np.asarray(sorted(below | {split} | set(range(split + 1, m, w))), dtype=np.int64)


def _block_at(taken: np.ndarray, end: int, inward: int) -> list[int]:
    """The run of taken cells from a span's end cell inward (at most an octave), outermost first."""
    block = [end]
    while len(block) < 2 ** (LEVELS - 1) and 0 <= block[-1] + inward < len(taken) and taken[block[-1] + inward]:
        block.append(block[-1] + inward)
    return block


def _narrow(x: np.ndarray, cells: list[int], sigma: float) -> int:
    """The outermost of `cells` (outermost first; a block known to hold mass) that the mass reaches, as far as
    the noise tells: halve them, keeping the outer half while its sum tops EXTEND x sigma x sqrt(its cells),
    else the inner half."""
    cells = list(cells)
    while len(cells) > 1:
        half = len(cells) // 2
        outer, inner = cells[:half], cells[half:]
        cells = outer if x[outer].sum() > EXTEND * sigma * math.sqrt(half) else inner
    return cells[0]


def _bounded_edges(low: float, high: float, integer: bool) -> np.ndarray:
    """Cells over public bounds: one per whole number for an integer range of at most BOUNDED_CELLS
    of them, else BOUNDED_CELLS of equal width."""
    if integer and high - low + 1 <= BOUNDED_CELLS:
        return np.arange(low, high + 2, dtype=float) - 0.5
    if high <= low:
        return np.array([low, low + 1.0])
    return np.linspace(low, high, BOUNDED_CELLS + 1)


def _grid_edges() -> np.ndarray:
    """Edges of the numeric grid: -2^60 .. -2^-20, a cell around 0, 2^-20 .. 2^60, eighth octaves."""
    pos = 2.0 ** (np.arange(LOG_MIN * PER_OCTAVE, LOG_MAX * PER_OCTAVE + 1) / PER_OCTAVE)
    return np.concatenate([-pos[::-1], pos])


def _rho_for(epsilon: float, delta: float) -> float:
    """The rho for which rho-zCDP gives (epsilon, delta)-DP: epsilon = rho + 2 sqrt(rho ln(1/delta))."""
    log = math.log(1.0 / delta)
    root = -math.sqrt(log) + math.sqrt(log + epsilon)  # sqrt(rho): the positive root of x^2 + 2 sqrt(log) x - eps
    return root * root
