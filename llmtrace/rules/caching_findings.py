"""What the caching rules (LT201, LT202, LT203) share when they decide and report.

Why one module: the three rules judge the same keys (provider, model, service, prompt) from
cells priced the same way, so their severities, coverage reasons, cell pricing and finding shape
must not drift apart. The provider facts and the rate probes stay in ``caching_model``; the
replay of conversation turns in ``history_replay``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import polars as pl

from llmtrace.rules.base import AuditContext, Finding, Severity, coverage_rows
from llmtrace.rules.caching_model import price_rates

COVERAGE_KEY = ["prompt", "model", "service"]


class SavingThresholds(Protocol):
    """The two parameters every caching rule sets its severity by."""

    medium_savings_usd: float
    high_savings_usd: float


def severity_for(monthly: float, params: SavingThresholds) -> Severity:
    """Severity of a monthly saving: high / medium at the rule's thresholds, else low."""
    if monthly >= params.high_savings_usd:
        return "high"
    if monthly >= params.medium_savings_usd:
        return "medium"
    return "low"


def rounded(value: float | None, digits: int = 4) -> float | None:
    """Evidence numbers rounded for reading (None stays None: unknown, never 0)."""
    return None if value is None else round(value, digits)


def sum_cells(rows: pl.LazyFrame, sums: Mapping[str, pl.Expr], *extra: pl.Expr) -> pl.LazyFrame:
    """Per (key ``_k``, day, input band) cell: each of ``sums`` (name -> per-row Int64 value)
    summed, the first and last call, and any ``extra`` aggregations. Why cells and not keys:
    the day picks dated prices and the band the price tier when the cells are priced."""
    return (
        rows.with_columns(expr.cast(pl.Int64).alias(name) for name, expr in sums.items())
        .group_by("_k", "day", "band")
        .agg(
            *(pl.col(name).sum() for name in sums),
            *extra,
            pl.col("start_time").min().alias("first_call"),
            pl.col("start_time").max().alias("last_call"),
        )
    )


def with_size(cells: pl.DataFrame) -> pl.DataFrame:
    """Cells with ``size``: their mean input per call, which picks the price tier."""
    return cells.with_columns(
        (pl.col("input") / pl.col("calls").clip(lower_bound=1))
        .round(0)
        .cast(pl.Int64)
        .alias("size")
    )


def priced_cells(
    cells: pl.DataFrame, price: Callable[[pl.DataFrame | pl.LazyFrame], pl.DataFrame]
) -> pl.DataFrame:
    """Cells (with ``input`` and ``calls`` sums) and the ``rate_*`` columns of their provider,
    model, day and typical size (``caching_model.price_rates``)."""
    return price_rates(with_size(cells), price)


def sum_if_all_priced(columns: Sequence[str], names: Mapping[str, str] | None = None) -> list[Any]:
    """Aggregations summing each column only when no cell of the group is unpriced.

    Why: a group with an unpriced cell has no cost; a partial sum would invent a saving.
    ``names`` renames outputs (column -> alias).
    """
    names = names or {}
    return [
        pl.when(pl.col(c).null_count() == 0).then(pl.col(c).sum()).alias(names.get(c, c))
        for c in columns
    ]


def judged_coverage(
    census: pl.DataFrame, judged: pl.DataFrame | None, applies: pl.Expr
) -> pl.DataFrame:
    """Coverage rows of a caching rule: keys where ``applies``; judged when in ``judged``
    (``COVERAGE_KEY`` rows), else "no fingerprints" (the calls carry none) or "too few calls"."""
    if judged is None or judged.height == 0:
        judged = pl.DataFrame(schema={k: pl.String for k in COVERAGE_KEY})
    marked = census.join(
        judged.select(COVERAGE_KEY).unique().with_columns(pl.lit(True).alias("_judged")),
        on=COVERAGE_KEY,
        how="left",
        nulls_equal=True,
    )
    reason = (
        pl.when(pl.col("fingerprinted") == 0)
        .then(pl.lit("no fingerprints"))
        .when(pl.col("_judged").is_null())
        .then(pl.lit("too few calls"))
    )
    return coverage_rows(marked, applies, reason)


def key_finding(
    rule: tuple[str, str],
    row: Mapping[str, Any],
    ctx: AuditContext,
    *,
    severity: Severity,
    message: str,
    fix: str,
    evidence: dict[str, Any],
    extra_key: Mapping[str, Any] | None = None,
) -> Finding:
    """A finding for one (provider, model, service, prompt) row: ``rule`` is (code, name), the
    saving is the row's ``monthly_savings_usd``, ``extra_key`` adds to the finding's key."""
    code, name = rule
    return Finding(
        rule=code,
        name=name,
        severity=severity,
        prompt=row["prompt"],
        model=row["model"],
        service=row["service"],
        window_start=ctx.since,
        window_end=ctx.until,
        monthly_savings_usd=row["monthly_savings_usd"],
        message=message,
        fix=fix,
        evidence=evidence,
        key={
            "provider": row["provider"],
            "model": row["model"],
            "prompt": row["prompt"],
            "service": row["service"],
            **(extra_key or {}),
        },
    )
