"""What one audit's aggregate step is given: the window, the rules, how each reads calls.

Why a module of its own: the local engine (``llmtrace.rules.local_engine``), the Ray engine
(``llmtrace.rules.ray_engine``) and the decide step (``llmtrace.rules.decide``) all take an
``AggregateJob``; keeping it (and the helpers that say which columns a rule reads) apart from
``run_audit`` lets each of them import it without importing the others, so there is no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from llmtrace.record import conform
from llmtrace.rules.base import AuditContext
from llmtrace.rules.loader import RuleEntry
from llmtrace.rules.partition import PARTITION_ROWS, SHARED_KEYS, partition_key, scan_location
from llmtrace.store import Store

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AuditWindow:
    """The current window and the baseline it was compared with (UTC, end exclusive)."""

    since: datetime
    until: datetime
    baseline_since: datetime
    baseline_until: datetime

    def to_dict(self) -> dict[str, str]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "baseline_since": self.baseline_since.isoformat(),
            "baseline_until": self.baseline_until.isoformat(),
        }


def scan_calls(
    source: Store | pl.LazyFrame | str, start: datetime, until: datetime
) -> pl.LazyFrame:
    """The calls of ``source`` from ``start`` to ``until`` (end exclusive), whatever it is: a
    store, a store's path or URL, or a frame of call records."""
    if isinstance(source, Store):
        return source.scan(start, until)
    if isinstance(source, str):  # a store's path or object-store URL
        return scan_location(source, start, until)
    lazy = conform(source)
    return lazy.filter((pl.col("start_time") >= start) & (pl.col("start_time") < until))


def rule_columns(entry: RuleEntry, ctx: AuditContext) -> list[str]:
    """The columns a rule reads (``columns_for(ctx)`` when its columns depend on parameters),
    with ``start_time``, which every window filter reads."""
    columns_for = getattr(entry.rule, "columns_for", None)
    columns = columns_for(ctx) if callable(columns_for) else entry.rule.columns
    return list(dict.fromkeys([*columns, "start_time"]))


def derived_columns(rule: Any) -> dict[str, pl.Expr]:
    """The rule's ``derived_columns``: names it may list among its columns, each computed from
    store columns by an expression where the calls are read (none when it declares none).

    Why: a rule that needs a little of a wide column (LT202 and LT301 read the first element of
    ``prefix_tokens``) reads a narrow one instead; a spill writes it as a plain column, so the
    rule's reads of every part skip decoding the wide one.
    """
    return dict(getattr(rule, "derived_columns", None) or {})


def column_exprs(names: Sequence[str], derived: Mapping[str, pl.Expr]) -> list[pl.Expr]:
    """The expressions that read ``names`` from call records: a derived column by its
    expression, any other by name."""
    return [derived[name].alias(name) if name in derived else pl.col(name) for name in names]


def merged_derived(rules: Iterable[Any]) -> dict[str, pl.Expr]:
    """The derived columns of several rules; one name must mean one expression."""
    merged: dict[str, pl.Expr] = {}
    for rule in rules:
        for name, expr in derived_columns(rule).items():
            if name in merged and not merged[name].meta.eq(expr):
                raise ValueError(f"derived column {name!r} is defined twice, differently")
            merged[name] = expr
    return merged


def describe(exc: BaseException) -> str:
    """An exception in one line (its type and first line), for a rule's error in the report."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass(frozen=True)
class AggregateJob:
    """What the aggregate step of one audit needs, whichever engine runs it.

    ``entries`` are the rules to run (in report order) and ``contexts`` their parameters and
    windows; ``rows_per_part`` is how many calls one part of a key-partitioned rule may hold.
    """

    source: Store | pl.LazyFrame | str
    window: AuditWindow
    entries: dict[str, RuleEntry]
    contexts: dict[str, AuditContext]
    rows_per_part: int = PARTITION_ROWS

    def needs_baseline(self, code: str) -> bool:
        return bool(getattr(self.entries[code].rule, "needs_baseline", False))

    def start(self, code: str) -> datetime:
        """Where the calls a rule reads begin: its baseline window, or the current one."""
        return self.window.baseline_since if self.needs_baseline(code) else self.window.since

    def columns(self, code: str) -> list[str]:
        return rule_columns(self.entries[code], self.contexts[code])

    def column_exprs(self, code: str) -> list[pl.Expr]:
        """What the rule reads of call records: its columns, derived ones computed."""
        return column_exprs(self.columns(code), derived_columns(self.entries[code].rule))

    def rare(self, code: str) -> tuple[str, ...]:
        """Columns the rule reads only in rare cases (``rare_columns``): a spill does not
        write them, and a part that needs them is read again (``partition.ColumnsNotSpilled``)."""
        return tuple(getattr(self.entries[code].rule, "rare_columns", None) or ())

    def derived(self, codes: Iterable[str]) -> dict[str, pl.Expr]:
        """The derived columns the rules ``codes`` read (one name, one expression)."""
        return merged_derived(self.entries[code].rule for code in codes)

    def key(self, code: str) -> pl.Expr | None:
        """The rule's partition key (None: any split of its calls merges exactly)."""
        return partition_key(self.entries[code].rule, self.contexts[code])

    def aggregate(self, code: str, calls: pl.LazyFrame) -> pl.LazyFrame:
        return self.entries[code].rule.aggregate(calls, self.contexts[code])

    def bounds_memory(self, code: str) -> bool:
        """The rule's aggregate keeps its own memory bounded (``bounded_memory``): the local
        engine runs it in one pass even with a partition key, which Ray's parts still use."""
        return bool(getattr(self.entries[code].rule, "bounded_memory", False))

    def family(self, code: str) -> str:
        """The shared key the rule can split by (``partition_family``), else its own code."""
        name = getattr(self.entries[code].rule, "partition_family", None)
        return name if name in SHARED_KEYS else code
