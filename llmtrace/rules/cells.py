"""One-pass aggregates as cells: several rules' per-key sums from one group-by of the calls.

Why: LT401, LT501 and the coverage census each read the current window and group its calls
by a few string keys (provider, model, service, prompt...) into sums, counts, minima and
maxima. Their CPU is the group-by (hashing the string keys of every call) more than the
decode: side by side in one ``collect_all`` they cost the same as one after the other
(issue 15). A rule that describes its aggregate as ``Cells`` (a filter, its keys and
aggregations that combine by sum, min or max) can instead be computed from one group-by by
the union of every such rule's keys, with one flag per rule for its filter: the grouped
table is small (one row per distinct key combination), and each rule re-groups its rows of
it by its own keys, which gives the same cells (sums up to the order of summation).

A rule keeps its ``aggregate`` (alone, on Ray, or when the shared pass fails): it is
``cells_aggregate(calls, rule.cells(ctx))``, the same definition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

Combine = Literal["sum", "min", "max"]


def _identity(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame


@dataclass(frozen=True)
class Cells:
    """A one-pass aggregate as cells (``cells_aggregate`` computes it).

    ``where``: the calls it counts; ``keys``: the group keys by name (per-call expressions);
    ``aggs``: per name, the aggregation over a group's calls and how two groups' values of it
    combine (``sum``, ``min``, ``max``: counts and sums add up, first and last calls take the
    minimum and maximum); ``finish``: what the rule does with the grouped cells afterwards
    (e.g. LT501's per-hour rows into 24 counts per key).
    """

    where: pl.Expr
    keys: Mapping[str, pl.Expr]
    aggs: Mapping[str, tuple[pl.Expr, Combine]]
    finish: Callable[[pl.LazyFrame], pl.LazyFrame] = field(default=_identity)


def cells_aggregate(calls: pl.LazyFrame, cells: Cells) -> pl.LazyFrame:
    """The rule's aggregate on its own: its calls grouped by its keys, then ``finish``."""
    return cells.finish(_grouped(calls, cells))


def _grouped(calls: pl.LazyFrame, cells: Cells) -> pl.LazyFrame:
    return (
        calls.filter(cells.where)
        .group_by(*(expr.alias(name) for name, expr in cells.keys.items()))
        .agg(expr.alias(name) for name, (expr, _) in cells.aggs.items())
    )


def shared_cells(calls: pl.LazyFrame, rules: Mapping[str, Cells]) -> dict[str, pl.LazyFrame]:
    """Each rule's aggregate from one group-by of ``calls`` (collected once, here).

    The calls are grouped by every rule's keys (one column per distinct key expression) and
    one flag per rule (its ``where``); every rule's aggregations are computed over these
    groups (one column per distinct aggregation). Each rule's aggregate is then its flagged
    rows re-grouped by its own keys, its aggregations combined (``Cells.aggs``) and cast to
    the types its own group-by gives, then ``finish``: lazy frames over the collected table.
    """
    keys: list[pl.Expr] = []  # the shared table's key columns, _k0, _k1...
    aggs: list[pl.Expr] = []  # and its aggregations, _a0, _a1...
    for cells in rules.values():
        for expr in cells.keys.values():
            _column(keys, expr, "_k")
        for expr, _ in cells.aggs.values():
            _column(aggs, expr, "_a")
    flags = [cells.where.fill_null(False).alias(f"_w{i}") for i, cells in enumerate(rules.values())]
    table = calls.group_by(*keys, *flags).agg(aggs).collect().lazy()
    results: dict[str, pl.LazyFrame] = {}
    for i, (name, cells) in enumerate(rules.items()):
        schema = _grouped(calls, cells).collect_schema()
        combined = (
            table.filter(pl.col(f"_w{i}"))
            .group_by(
                *(pl.col(_column(keys, expr, "_k")).alias(key) for key, expr in cells.keys.items())
            )
            .agg(
                getattr(pl.col(_column(aggs, expr, "_a")), how)().alias(agg)
                for agg, (expr, how) in cells.aggs.items()
            )
            .cast(dict(schema))
        )
        results[name] = cells.finish(combined)
    return results


def _column(columns: list[pl.Expr], expr: pl.Expr, prefix: str) -> str:
    """The shared table's column for ``expr``: an equal expression's, else a new one's (two
    rules counting the same thing share its column)."""
    expr = expr.meta.undo_aliases()
    for i, known in enumerate(columns):
        if known.meta.undo_aliases().meta.eq(expr):
            return f"{prefix}{i}"
    columns.append(expr.alias(f"{prefix}{len(columns)}"))
    return f"{prefix}{len(columns) - 1}"
