"""LT501 batch-eligible-traffic: calls nobody waits for, sent at standard rates.

OpenAI, Anthropic and Google sell the same models through a Batch API (results within 24 h) at
about half the price, and OpenAI also as a ``flex`` tier. Traffic that no user waits for pays the
interactive price for nothing. Which traffic that is, is decided per (provider, model, service,
action, prompt):

* **declared**: the service or action is listed in ``offline_services`` / ``offline_actions``
  (``[rules.LT501]`` in llmtrace.toml): the user says so;
* **by shape**, both of: *no conversation* (at most ``max_conversation_share`` of the calls belong
  to one) and *scheduled bursts* (at least ``min_burst_share`` of the calls fall in the busiest
  ``burst_hours`` hours of the UTC day; interactive traffic follows the users' day instead). Long
  durations are shown as supporting evidence; the call record has no streaming flag yet, so
  streaming cannot be checked and the evidence says so.

Saving: the key's actual cost components (input, cache reads, cache writes, output) scaled by
the batch tier's rate over the standard rate for the model at the end of the window, both from
``PriceBook.tier_rates`` / ``rates_for``: the user's price-file entries for the ``batch`` tier
first, else genai-prices' batch variants (modelled only from 2026-10-14). Where nothing prices
the batch tier for the model, the finding is *unverified* (severity info, not counted) and
names the price-file entry to add; the rule never assumes a discount. Calls already on another
tier (``service_tier`` batch, flex, priority...) are not counted.
A month is the run-rate over the key's days with data (``runrate``): a nightly job that began
five days ago saves five nights' worth times six, whatever window the audit reads.

Mergeability: plain per-key sums plus 24 per-hour call counts, all merging by addition; the
first and last call merge by min and max.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import polars as pl

from llmtrace.config import ConfigError
from llmtrace.rules import runrate
from llmtrace.rules.base import AuditContext, Finding, RuleParams, Severity, merge_cells
from llmtrace.rules.cells import Cells, cells_aggregate

CODE = "LT501"
NAME = "batch-eligible-traffic"

_CELL = ["provider", "model", "service", "action", "prompt"]
_HOURS = [f"h{h:02d}" for h in range(24)]
_COMPONENTS = ("input", "cache_read", "cache_write", "output")
_SUMS = [
    "calls",
    "conversation_calls",
    "priced_calls",
    "duration_sum_ms",
    "long_calls",
    "cost",
    *(f"{c}_cost" for c in _COMPONENTS),
    *_HOURS,
]
_PER_HOUR_SUMS = [c for c in _SUMS if c not in _HOURS]
_STANDARD_TIERS = ("standard", "default")
VERIFIED = "priced"
UNVERIFIED = "unverified"


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT501's parameters (defaults in rules/LT501.yaml, overridable in llmtrace.toml)."""

    offline_services: tuple[str, ...] = ()
    offline_actions: tuple[str, ...] = ()
    batch_providers: tuple[str, ...] = ("openai", "anthropic", "google")
    max_conversation_share: float = 0.05
    burst_hours: int = 2
    min_burst_share: float = 0.8
    long_duration_s: float = 20.0
    min_calls: int = 200
    min_monthly_savings_usd: float = 5.0
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0

    def __post_init__(self) -> None:
        if not 1 <= self.burst_hours <= 24:
            raise ConfigError(f"{CODE}: burst_hours must be between 1 and 24")


def _per_key(hourly: pl.LazyFrame) -> pl.LazyFrame:
    """Per key from the per-(key, UTC hour) cells: sums, 24 hour counts, first and last call."""
    return hourly.group_by(_CELL).agg(
        pl.col(_PER_HOUR_SUMS).sum(),
        *(
            pl.col("calls").filter(pl.col("_hour") == h).sum().cast(pl.UInt32).alias(name)
            for h, name in enumerate(_HOURS)
        ),
        pl.col("first_call").min(),
        pl.col("last_call").max(),
    )


class BatchRule:
    """The LT501 rule object (module attribute ``RULE``)."""

    code: ClassVar[str] = CODE
    name: ClassVar[str] = NAME
    columns: ClassVar[tuple[str, ...]] = (
        *_CELL,
        "conversation_id",
        "start_time",
        "duration_ms",
        "is_error",
        "total_cost",
        "input_cost",
        "cache_read_cost",
        "cache_write_cost",
        "output_cost",
        "reasoning_cost",
        "service_tier",
    )

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Per key: calls, conversation calls, durations, cost components, calls per UTC hour."""
        return cells_aggregate(calls, self.cells(ctx))

    def cells(self, ctx: AuditContext) -> Cells:
        """The aggregate as cells (``llmtrace.rules.cells``): per key and UTC hour, then the
        24 hour counts per key from that small table (one more group key is far cheaper than
        24 comparisons over every call); the engine computes the cells in one group-by with
        the other one-pass rules'."""
        params = Params.from_mapping(ctx.params)
        start = pl.col("start_time")
        # the output cost of priced calls as a column, not a filtered sum: plain sums and
        # counts are the cheapest aggregations (1.1 -> 0.9 CPU-s at 5.0M calls)
        output = pl.when(pl.col("total_cost").is_not_null()).then(
            pl.col("output_cost").fill_null(0.0) + pl.col("reasoning_cost").fill_null(0.0)
        )
        return Cells(
            where=(start >= ctx.since)
            & (start < ctx.until)
            & pl.col("model").is_not_null()
            & ~pl.col("is_error").fill_null(False)
            # calls already on batch, flex or priority are not "at standard rates"
            & pl.col("service_tier").fill_null("standard").is_in(_STANDARD_TIERS),
            keys={**{name: pl.col(name) for name in _CELL}, "_hour": start.dt.hour()},
            aggs={
                "calls": (pl.len(), "sum"),
                "conversation_calls": (pl.col("conversation_id").count(), "sum"),
                "priced_calls": (pl.col("total_cost").count(), "sum"),
                "duration_sum_ms": (pl.col("duration_ms").sum(), "sum"),  # nulls count 0
                "long_calls": (
                    (pl.col("duration_ms") >= params.long_duration_s * 1000.0).sum(),
                    "sum",
                ),
                "cost": (pl.col("total_cost").sum(), "sum"),
                "input_cost": (pl.col("input_cost").sum(), "sum"),
                "cache_read_cost": (pl.col("cache_read_cost").sum(), "sum"),
                "cache_write_cost": (pl.col("cache_write_cost").sum(), "sum"),
                "output_cost": (output.sum(), "sum"),
                "first_call": (start.min(), "min"),
                "last_call": (start.max(), "max"),
            },
            finish=_per_key,
        )

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        return merge_cells(partials, _CELL, sums=_SUMS, mins=["first_call"], maxes=["last_call"])

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        params = Params.from_mapping(ctx.params)
        table = evaluate(aggregates, ctx, params)
        if table.height == 0:
            return []
        chosen = table.filter(
            pl.col("eligible") & (pl.col("potential_monthly_usd") >= params.min_monthly_savings_usd)
        ).sort("potential_monthly_usd", descending=True)
        return [_finding(row, ctx, params) for row in chosen.iter_rows(named=True)]


RULE = BatchRule()


# -- batch rates from the price data -------------------------------------------------------------


def batch_ratios(pairs: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """Batch rate / standard rate per component for each (provider, model) in ``pairs``.

    From ``PriceBook.tier_rates(..., "batch")`` against ``rates_for`` (standard): the user's
    price-file entries for the batch tier first, else genai-prices' batch variants, with the
    user's plain multipliers on both sides (so a negotiated discount cancels out). Null ratios
    where nothing prices the batch tier for the model at ``at``: never an assumed discount. One
    lookup per distinct model: a handful, not one per call.
    """
    from llmtrace.pricing import PriceBook

    book = PriceBook.load()
    rows = []
    for provider, model in pairs.select("provider", "model").unique().iter_rows():
        row: dict[str, Any] = {"provider": provider, "model": model, "batch_price": None}
        standard = book.rates_for(provider, model, at)
        batch = book.tier_rates(provider, model, at, "batch")
        for component in _COMPONENTS:
            std = standard.component(component).base if standard is not None else None
            bat = batch.component(component).base if batch is not None else None
            row[f"r_{component}"] = bat / std if batch is not None and std else None
        if batch is not None:
            row["batch_price"] = batch.period + (
                f" ({', '.join(batch.overrides)})" if batch.overrides else ""
            )
        rows.append(row)
    schema = {
        "provider": pl.String,
        "model": pl.String,
        "batch_price": pl.String,
        **{f"r_{c}": pl.Float64 for c in _COMPONENTS},
    }
    return pl.DataFrame(rows, schema=schema)


# -- decide --------------------------------------------------------------------------------------


def evaluate(aggregates: pl.DataFrame, ctx: AuditContext, params: Params) -> pl.DataFrame:
    """Shape signals, eligibility, and the batch saving (or why it cannot be priced)."""
    if aggregates.height == 0:
        return pl.DataFrame()
    counts = pl.concat_list(_HOURS).list.sort(descending=True)
    busiest = counts.list.head(params.burst_hours).list.sum()
    table = aggregates.filter(pl.col("provider").is_in(list(params.batch_providers))).with_columns(
        (pl.col("conversation_calls") / pl.col("calls")).alias("conversation_share"),
        (busiest / pl.col("calls")).alias("burst_share"),
        pl.concat_list(_HOURS).list.arg_max().alias("peak_hour"),
        (pl.col("duration_sum_ms") / pl.col("calls") / 1000.0).alias("mean_duration_s"),
        (pl.col("long_calls") / pl.col("calls")).alias("long_share"),
        (
            pl.col("service").is_in(list(params.offline_services))
            | pl.col("action").is_in(list(params.offline_actions))
        ).alias("declared"),
    )
    if table.height == 0:
        return pl.DataFrame()
    shaped = (pl.col("conversation_share") <= params.max_conversation_share) & (
        pl.col("burst_share") >= params.min_burst_share
    )
    table = table.with_columns(
        shaped.alias("shape"),
        ((pl.col("declared") | shaped) & (pl.col("calls") >= params.min_calls)).alias("eligible"),
    )
    end = ctx.until - timedelta(microseconds=1)
    table = table.join(batch_ratios(table, end), on=["provider", "model"], how="left")
    batch_cost = pl.sum_horizontal(
        pl.col(f"{c}_cost").fill_null(0.0) * pl.col(f"r_{c}") for c in _COMPONENTS
    )
    priced = pl.all_horizontal(pl.col(f"r_{c}").is_not_null() for c in _COMPONENTS)
    saving = pl.col("cost") - batch_cost
    table = table.with_columns(
        runrate.basis_days("first_call", "last_call", ctx).alias("basis_days")
    )
    monthly_saving = runrate.monthly(saving, "basis_days")
    return table.with_columns(
        pl.when(priced).then(pl.lit(VERIFIED)).otherwise(pl.lit(UNVERIFIED)).alias("pricing"),
        pl.when(priced).then(saving).alias("saving_in_window"),
        pl.when(priced).then(monthly_saving).otherwise(0.0).alias("monthly_savings_usd"),
        # what an unverified finding could be worth: for ranking and the floor only, never
        # reported as a saving
        pl.when(priced)
        .then(monthly_saving)
        .otherwise(runrate.monthly("cost", "basis_days"))
        .alias("potential_monthly_usd"),
    )


def _round(value: float | None, digits: int) -> float | None:
    """Evidence numbers rounded: sums of floats differ in the last bits with summation order
    (parts, partitions), and the report must not."""
    return None if value is None else round(float(value), digits)


def _severity(row: dict[str, Any], params: Params) -> Severity:
    if row["pricing"] != VERIFIED:
        return "info"
    monthly = row["monthly_savings_usd"]
    if monthly >= params.high_savings_usd:
        return "high"
    if monthly >= params.medium_savings_usd:
        return "medium"
    return "low"


def _why(row: dict[str, Any], params: Params) -> str:
    if row["declared"]:
        return "declared offline in the configuration"
    return (
        f"{row['burst_share']:.0%} of the calls fall in the {params.burst_hours} busiest UTC "
        f"hours (peak {row['peak_hour']:02d}:00), {row['conversation_share']:.0%} belong to a "
        "conversation"
    )


def _finding(row: dict[str, Any], ctx: AuditContext, params: Params) -> Finding:
    # rounded first: the last bits of a parallel sum must not flip the cent the message shows
    monthly = round(float(row["monthly_savings_usd"]), 6)
    head = (
        f"{row['calls']:,} calls that nobody waits for ({_why(row, params)}; mean duration "
        f"{row['mean_duration_s']:.1f} s) are sent at standard rates to {row['provider']}"
    )
    entry = (
        f'[[price]] provider = "{row["provider"]}"  model = "{row["model"]}"  '
        'service_tier = "batch"  input_mtok = ...  output_mtok = ...'
    )
    if row["pricing"] == VERIFIED:
        message = (
            f"{head}, which sells {row['model']} through its Batch API at the price data's batch "
            f"rates: ${monthly:,.2f}/month saved."
        )
    else:
        message = (
            f"{head}; the price data has no batch rate for {row['model']}, so the saving is "
            f"unverified (add the batch price to your price file: {entry})."
        )
    fix = (
        f"Send these calls through {row['provider']}'s Batch API (results within 24 h)"
        + (" or the flex service tier" if row["provider"] == "openai" else "")
        + "; keep the interactive path for calls a user waits on."
    )
    evidence = {
        "why_not_interactive": _why(row, params),
        "declared_offline": bool(row["declared"]),
        "conversation_share": _round(row["conversation_share"], 4),
        "burst_share": _round(row["burst_share"], 4),
        "burst_hours": params.burst_hours,
        "peak_hour_utc": row["peak_hour"],
        "mean_duration_s": _round(row["mean_duration_s"], 2),
        "long_call_share": _round(row["long_share"], 4),
        "streaming": "unknown (the call record has no streaming flag)",
        "calls": int(row["calls"]),
        "cost_in_window_usd": _round(row["cost"], 6),
        "batch_rate_ratio": {c: _round(row[f"r_{c}"], 4) for c in _COMPONENTS},
        "batch_price": row["batch_price"],
        "pricing": row["pricing"],
        "saving_in_window_usd": _round(row["saving_in_window"], 6),
        "run_rate_basis": runrate.basis_evidence(
            row["first_call"], row["last_call"], row["basis_days"], row["calls"]
        ),
    }
    if row["pricing"] != VERIFIED:
        evidence["price_file_entry"] = entry
    return Finding(
        rule=CODE,
        name=NAME,
        severity=_severity(row, params),
        prompt=row["prompt"],
        model=row["model"],
        service=row["service"],
        window_start=ctx.since,
        window_end=ctx.until,
        monthly_savings_usd=monthly,
        message=message,
        fix=fix,
        evidence=evidence,
        key={c: row[c] for c in _CELL},
    )
