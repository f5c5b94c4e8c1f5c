"""How strongly a table's columns depend on each other, and an order for the model to write them in.

    order = dependency_order(rows, schema, leading=2)   # rows: lists of field strings; column indices

A model that writes a row left to right (the LSTM over field tokens) learns a dependency best when
the two columns are written close together: a column twelve fields after the one it follows from
must be carried through every state between them. `data.column_order: dependency` writes each column
right after the written column it depends on most (Prim's order of the maximum spanning tree of the
pairwise dependence, as a Chow-Liu tree: the leading columns first, then, from the column most
dependent on all others, each next column the one with the strongest tie to any column already
written). Output keeps the file's order.

Dependence is the normalised mutual information (symmetric uncertainty, 2 I(X;Y) / (H(X) + H(Y)),
0 independent .. 1 one determines the other) of the columns' values coded into at most BINS classes:
numbers, dates and datetimes (the schema's kinds, parsed as schema.py parses them) by quantiles
(missing values a class of their own), anything else by its most frequent values (the rest one
class). At most SAMPLE rows (seeded) are read.
"""

from __future__ import annotations

import numpy as np

from .schema import TYPED_KINDS, ColumnSchema, Schema, numeric_key, parse_value

BINS = 16
SAMPLE = 20_000


def dependency_order(rows: list[list[str]], schema: Schema, leading: int = 0, seed: int = 0) -> list[int]:
    """Column indices in the order to write them: the first `leading` as they are, then Prim's order.
    `schema`: the rows' column kinds (infer_schema)."""
    width = len(rows[0]) if rows else 0
    if width <= 2 + leading:
        return list(range(width))
    if len(rows) > SAMPLE:
        pick = np.random.default_rng(seed).choice(len(rows), SAMPLE, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    codes = [_classes(column, [row[c] for row in rows]) for c, column in enumerate(schema.columns)]
    strength = dependence_matrix(codes)
    order = list(range(leading))
    rest = [c for c in range(leading, width)]
    if not order:  # the column most tied to all others starts
        hub = max(rest, key=lambda c: (strength[c].sum(), -c))
        order.append(hub)
        rest.remove(hub)
    while rest:
        tie = strength[np.ix_(rest, order)].max(axis=1)
        nxt = rest[int(np.argmax(tie))]  # (argmax: the first of equals, so file order breaks ties)
        order.append(nxt)
        rest.remove(nxt)
    return order


def dependence_matrix(codes: list[np.ndarray]) -> np.ndarray:
    """(C, C) symmetric uncertainty of every pair of coded columns (0 on the diagonal)."""
    c = len(codes)
    entropy = [_entropy(np.bincount(x)) for x in codes]
    out = np.zeros((c, c))
    for i in range(c):
        for j in range(i + 1, c):
            joint = codes[i] * (codes[j].max() + 1) + codes[j]
            mutual = entropy[i] + entropy[j] - _entropy(np.bincount(joint))
            total = entropy[i] + entropy[j]
            out[i, j] = out[j, i] = 2 * mutual / total if total > 0 else 0.0
    return out


def _classes(column: ColumnSchema, values: list[str]) -> np.ndarray:
    """A column's values as class codes 0..BINS-1: quantiles of numbers or dates, else frequent values."""
    if column.kind in TYPED_KINDS:
        key = numeric_key(column)
        numbers = np.array([np.nan if (x := _parsed(column, v)) is None else key(x) for v in values], dtype=float)
        present = ~np.isnan(numbers)
        codes = np.zeros(len(values), dtype=np.int64)  # (0: missing)
        if present.any():
            edges = np.unique(np.quantile(numbers[present], np.linspace(0, 1, BINS)[1:-1]))
            codes[present] = 1 + np.searchsorted(edges, numbers[present], side="right")
        return codes
    uniq, inverse, counts = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True,
                                      return_counts=True)  # fmt: skip
    top = np.argsort(-counts, kind="stable")[: BINS - 1]
    rank = np.full(len(uniq), BINS - 1, dtype=np.int64)
    rank[top] = np.arange(len(top))
    return rank[inverse]


def _parsed(column: ColumnSchema, text: str):
    try:
        return parse_value(column, text)
    except ValueError:  # (a value the schema's kind does not fit: counted with the missing ones)
        return None


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
