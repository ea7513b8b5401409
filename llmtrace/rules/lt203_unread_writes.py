"""LT203 cache-writes-never-read: the cache-write premium paid for entries nobody reads.

A cache write costs more than plain input (Anthropic: 1.25x for 5 minutes, 2x for 1 hour;
GPT-5.6+: 1.25x). It pays only when later calls read the entry while it lives. This rule reads
what the calls really did (``cache_write_tokens``, ``cache_write_1h_tokens``,
``cache_read_tokens``) along each cache lineage, i.e. the calls that share a system prefix on
one model (``prefix_hashes[0]``; the prompt when there are no fingerprints), ordered by time:

* a write is **read** when the next call of its lineage comes within the write's lifetime (5
  minutes or 1 hour) and reads from the cache; otherwise its premium is **wasted**: dropping the
  breakpoint would have billed those tokens as plain input;
* **1-hour writes where 5 minutes would do**: when the next call nearly always comes within 5
  minutes, the 1-hour premium (2x instead of 1.25x) buys nothing; the saving is the premium
  difference minus the reads that came 5-60 minutes later and would become writes;
* **5-minute writes where 1 hour would do**: entries rewritten 5-60 minutes after the previous
  call would have been read with the 1-hour lifetime; the saving is those rewrites at the read
  price minus the dearer writes.

Each key (provider, model, service, prompt) gets the best of the three actions; rates (input,
read, both write premiums) come from the price data via ``price_rates``, and the monthly figure
is the run-rate over the key's days with data (``runrate``). Mergeability: lineages must stay
whole, so partitions are split by the lineage key (``partition_key``); cells re-aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from llmtrace.rules import runrate
from llmtrace.rules.base import (
    AuditContext,
    Finding,
    RuleParams,
    coverage_rows,
    merge_cells,
    worth_reporting,
)
from llmtrace.rules.caching_findings import (
    key_finding,
    priced_cells,
    rounded,
    severity_for,
    sum_if_all_priced,
)
from llmtrace.rules.history_replay import (
    FIRST_PREFIX_HASH,
    LONG_TTL_S,
    SHORT_TTL_S,
    clean_cache_tokens,
    with_derived,
)

CODE = "LT203"
NAME = "cache-writes-never-read"

_KEY = ["provider", "model", "service", "prompt"]
_CELL = [*_KEY, "day", "band"]
_SUMS = [
    "calls",
    "input",
    "writing_calls",
    "write_5m",
    "write_1h",
    "wasted_5m",
    "wasted_1h",
    "write_1h_next_within_5m",
    "reads_after_mid_gap",
    "rewrites_after_mid_gap",
    "read",
]
_CELL_KEY = ["_k", "day", "band"]  # a cell while the calls are summed (``_k``: the key's hash)
_MAXES = ["last_call"]
_MINS = ["first_call"]


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT203's parameters (defaults in rules/LT203.yaml, overridable in llmtrace.toml)."""

    min_monthly_savings_usd: float = 5.0
    min_writing_calls: int = 10
    min_wasted_share: float = 0.5
    min_share_within_5m: float = 0.95
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0


def _lineage() -> pl.Expr:
    """Calls that can read each other's entries: one model, one system prefix (else prompt)."""
    first = pl.col("prefix_hashes").list.first()
    return pl.struct("provider", "model", pl.coalesce(first, pl.col("prompt").hash(3))).hash(53)


def _lineage_id() -> pl.Expr:
    """The lineage as a UInt64 inside ``aggregate``: the seeded hashes of its parts combined
    with xor, cheaper than hashing a struct of them (the same groups; ``_lineage`` stays the
    partition key the engine shares with LT201)."""
    first = pl.col("_h0")  # ``prefix_hashes[0]``, computed by the engine (``derived_columns``)
    system = pl.coalesce(first, pl.col("prompt").hash(3))
    return pl.col("provider").hash(71) ^ pl.col("model").hash(72) ^ system.hash(73)


def _key_id() -> pl.Expr:
    """The key (provider, model, service, prompt) as a UInt64, like ``_lineage_id``."""
    return (
        pl.col("provider").hash(71)
        ^ pl.col("model").hash(72)
        ^ pl.col("service").hash(74)
        ^ pl.col("prompt").hash(75)
    )


class UnreadWritesRule:
    """The LT203 rule object (module attribute ``RULE``)."""

    code: ClassVar[str] = CODE
    name: ClassVar[str] = NAME
    columns: ClassVar[tuple[str, ...]] = (
        "provider",
        "model",
        "service",
        "prompt",
        "start_time",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "_h0",
    )
    # the first element of ``prefix_hashes``, all the lineage id reads of it
    derived_columns: ClassVar[dict[str, pl.Expr]] = FIRST_PREFIX_HASH
    partition_key: ClassVar[pl.Expr] = _lineage()
    partition_family: ClassVar[str] = "lineage"  # partition.SHARED_KEYS, the same key
    # names only hashed and named: a lone lineage spill writes them as categoricals
    # (``base.Rule``), and the plain sums turn them back into strings
    categorical_columns: ClassVar[tuple[str, ...]] = tuple(_KEY)

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Per cell: written tokens, and those no later call of the lineage read in time.

        Two branches over the same calls: plain sums (and the key's names) per cell from every
        call, no order needed; the neighbour sums (a write read by the next call, a gap before
        a read or rewrite) only from the lineages that read or write the cache at all, as a
        lineage that does neither adds nothing to them. Only those calls are put in time order
        (half the 10M demo window's; the three lineage parts took about a quarter less CPU,
        issue 15). ``test_aggregate_matches_a_call_by_call_replay_of_each_lineage`` pins it.
        """
        start = pl.col("start_time")
        base = (
            with_derived(calls, FIRST_PREFIX_HASH)
            .select(*self.columns)
            .filter(
                (start >= ctx.since)
                & (start < ctx.until)
                & (pl.col("input_tokens") > 0)
                & pl.col("model").is_not_null()
            )
            .with_columns(
                *clean_cache_tokens(input_as="input"),
                _lineage_id().alias("_g"),
                _key_id().alias("_k"),
                start.dt.date().alias("day"),
                pl.col("input_tokens").cast(pl.Float64).log(2).floor().cast(pl.Int32).alias("band"),
            )
            .rename({"write_1h": "w1h"})
        )
        w5 = pl.col("write") - pl.col("w1h")
        plain = base.group_by(_CELL_KEY).agg(
            pl.len().cast(pl.Int64).alias("calls"),
            pl.col("input").sum(),
            pl.col("read").sum(),
            (pl.col("write") > 0).sum().cast(pl.Int64).alias("writing_calls"),
            w5.sum().alias("write_5m"),
            pl.col("w1h").sum().alias("write_1h"),
            start.min().alias("first_call"),
            start.max().alias("last_call"),
            # a key's strings are the same on each of its calls (``_k`` hashes them)
            pl.col(*_KEY).first().cast(pl.String),  # a categorical spill's too
        )
        cached = base.filter((pl.col("read") + pl.col("write")) > 0).select("_g").unique()
        # the neighbours in the lineage: calls in time order, shifted within each lineage (one
        # sort by time, nearly sorted already, instead of one by lineage and time: 0.49 against
        # 0.19 CPU-s on 1.9M calls)
        us = start.dt.epoch("us")  # whole microseconds: gaps exact, as ``diff`` gives them
        ordered = (
            base.select("_g", "_k", "start_time", "day", "band", "read", "write", "w1h")
            .join(cached, on="_g", how="semi")
            .sort("start_time", maintain_order=True)
            .with_columns(
                ((us - us.shift(1)).over("_g") / 1e6).alias("gap_prev"),
                ((us.shift(-1) - us).over("_g") / 1e6).alias("gap_next"),
                (pl.col("read").shift(-1) > 0).over("_g").alias("next_reads"),
                ((pl.col("read") + pl.col("write")).shift(1) > 0).over("_g").alias("prev_cached"),
            )
        )
        next_reads = pl.col("next_reads").fill_null(False)
        read_5m = next_reads & (pl.col("gap_next") <= SHORT_TTL_S).fill_null(False)
        read_1h = next_reads & (pl.col("gap_next") <= LONG_TTL_S).fill_null(False)
        mid = ((pl.col("gap_prev") > SHORT_TTL_S) & (pl.col("gap_prev") <= LONG_TTL_S)).fill_null(
            False
        )
        values = {
            "wasted_5m": pl.when(read_5m).then(0).otherwise(w5),
            "wasted_1h": pl.when(read_1h).then(0).otherwise(pl.col("w1h")),
            "write_1h_next_within_5m": pl.when((pl.col("gap_next") <= SHORT_TTL_S).fill_null(False))
            .then(pl.col("w1h"))
            .otherwise(0),
            "reads_after_mid_gap": pl.when(mid).then(pl.col("read")).otherwise(0),
            "rewrites_after_mid_gap": pl.when(mid & pl.col("prev_cached").fill_null(False))
            .then(w5)
            .otherwise(0),
        }
        neighbours = (
            ordered.with_columns(expr.cast(pl.Int64).alias(name) for name, expr in values.items())
            .group_by(_CELL_KEY)
            .agg(pl.col(*values).sum())
        )
        return (
            plain.join(neighbours, on=_CELL_KEY, how="left")
            .with_columns(pl.col(*values).fill_null(0))
            .select(*_CELL, *_SUMS, *_MAXES, *_MINS)
        )

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Concatenate partials and re-aggregate by cell (exact when split by lineage)."""
        return merge_cells(partials, _CELL, sums=_SUMS, maxes=_MAXES, mins=_MINS)

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """Findings for keys whose cache writes waste enough premium per month."""
        params = Params.from_mapping(ctx.params)
        flagged = worth_reporting(evaluate(aggregates, ctx), params.min_monthly_savings_usd)
        return [_finding(row, ctx, params) for row in flagged.iter_rows(named=True)]

    def coverage(
        self,
        aggregates: pl.DataFrame,
        ctx: AuditContext,
        census: pl.DataFrame,
        findings: list[Finding],
    ) -> pl.DataFrame:
        """Keys that write to the cache: judged with ``min_writing_calls`` calls, else "too few
        calls"; keys that write nothing are not this rule's business."""
        params = Params.from_mapping(ctx.params)
        key = ["prompt", "model", "service"]
        if aggregates.height == 0:
            return coverage_rows(census, pl.lit(False), pl.lit(None))
        writers = aggregates.group_by(key).agg(pl.col("writing_calls", "calls").sum())
        marked = census.drop("calls").join(writers, on=key, how="inner", nulls_equal=True)
        reason = pl.when(pl.col("calls") < params.min_writing_calls).then(pl.lit("too few calls"))
        return coverage_rows(marked, pl.col("writing_calls") > 0, reason)


RULE = UnreadWritesRule()


# -- decide ------------------------------------------------------------------------------------

_ACTIONS = ("drop", "to_5m", "to_1h")


def evaluate(aggregates: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """One row per key with the premium wasted, each action's saving and whether it is flagged."""
    params = Params.from_mapping(ctx.params)
    if aggregates.height == 0:
        return pl.DataFrame()
    cells = priced_cells(aggregates.filter(pl.col("writing_calls") > 0), ctx.price)
    if cells.height == 0:
        return pl.DataFrame()
    premium_5m = pl.col("rate_write") - pl.col("rate_input")
    premium_1h = pl.col("rate_write_1h") - pl.col("rate_input")
    step_down = pl.col("rate_write_1h") - pl.col("rate_write")
    reread = pl.col("rate_write") - pl.col("rate_read")
    cells = cells.with_columns(
        (pl.col("wasted_5m") * premium_5m + pl.col("wasted_1h") * premium_1h).alias("usd_drop"),
        (pl.col("write_1h") * step_down - pl.col("reads_after_mid_gap") * reread).alias(
            "usd_to_5m"
        ),
        (pl.col("rewrites_after_mid_gap") * reread - pl.col("write_5m") * step_down).alias(
            "usd_to_1h"
        ),
        (pl.col("write_5m") * premium_5m + pl.col("write_1h") * premium_1h).alias("usd_premium"),
    )
    usd = [f"usd_{a}" for a in (*_ACTIONS, "premium")]
    keys = cells.group_by(_KEY).agg(
        *(pl.col(c).sum() for c in _SUMS),
        *sum_if_all_priced(usd),
        pl.col("first_call").min(),
        pl.col("last_call").max(),
        pl.col("rate_input", "rate_write", "rate_write_1h", "rate_read").mean(),
    )
    written = pl.col("write_5m") + pl.col("write_1h")
    wasted = pl.col("wasted_5m") + pl.col("wasted_1h")
    keys = keys.with_columns(
        (wasted / written).fill_nan(0.0).alias("wasted_share"),
        (pl.col("write_1h_next_within_5m") / pl.col("write_1h")).fill_nan(0.0).alias("within_5m"),
    )
    options = {
        "drop": pl.when(pl.col("wasted_share") >= params.min_wasted_share).then("usd_drop"),
        "to_5m": pl.when(
            (pl.col("write_1h") > 0) & (pl.col("within_5m") >= params.min_share_within_5m)
        ).then("usd_to_5m"),
        "to_1h": pl.when(pl.col("write_5m") > 0).then("usd_to_1h"),
    }
    keys = keys.with_columns(expr.alias(f"save_{name}") for name, expr in options.items())
    best = pl.lit(None, dtype=pl.String)
    best_value = pl.max_horizontal(*(f"save_{a}" for a in _ACTIONS))
    for action in reversed(_ACTIONS):  # ties: drop first (the simplest change)
        best = pl.when(pl.col(f"save_{action}") == best_value).then(pl.lit(action)).otherwise(best)
    return (
        keys.with_columns(
            best.alias("action"),
            best_value.alias("saving"),
            runrate.basis_days("first_call", "last_call", ctx).alias("basis_days"),
        )
        .with_columns(runrate.monthly("saving", "basis_days").alias("monthly_savings_usd"))
        .with_columns(
            (
                (pl.col("writing_calls") >= params.min_writing_calls)
                & pl.col("saving").is_not_null()
                & (pl.col("saving") > 0)
            ).alias("eligible")
        )
    )


def _evidence(row: dict[str, Any]) -> dict[str, Any]:
    days = row["basis_days"]

    def monthly(value: float | None) -> float | None:
        return None if value is None else round(runrate.monthly_value(value, days), 2)

    rate_input = row["rate_input"] or None
    return {
        "provider": row["provider"],
        "calls": row["calls"],
        "writing_calls": row["writing_calls"],
        "written_tokens_5m": row["write_5m"],
        "written_tokens_1h": row["write_1h"],
        "unread_tokens_5m": row["wasted_5m"],
        "unread_tokens_1h": row["wasted_1h"],
        "unread_share": rounded(row["wasted_share"]),
        "share_of_1h_writes_next_call_within_5m": rounded(row["within_5m"])
        if row["write_1h"]
        else None,
        "write_multiplier": rounded(row["rate_write"] / rate_input) if rate_input else None,
        "write_1h_multiplier": rounded(row["rate_write_1h"] / rate_input) if rate_input else None,
        "monthly_premium_paid_usd": monthly(row["usd_premium"]),
        "monthly_premium_wasted_usd": monthly(row["usd_drop"]),
        "monthly_savings_switch_to_5m_usd": monthly(row["save_to_5m"]),
        "monthly_savings_switch_to_1h_usd": monthly(row["save_to_1h"]),
        "action": row["action"],
        "run_rate_basis": runrate.basis_evidence(
            row["first_call"], row["last_call"], days, row["calls"]
        ),
    }


_FIXES = {
    "drop": (
        "Remove the cache breakpoint (`cache_control`) from this prompt, or move it to a prefix "
        "that later calls really share: its entries expire before any call reads them, so every "
        "write pays the premium for nothing. If calls are 5-60 minutes apart, the 1-hour "
        'lifetime (`"ttl": "1h"`) may keep them alive; beyond an hour nothing will.'
    ),
    "to_5m": (
        'Use the 5-minute lifetime (`"cache_control": {"type": "ephemeral"}`, no `"ttl": "1h"`):'
        " the next call nearly always comes within 5 minutes, and every read restarts the "
        "lifetime, so the 1-hour write premium (2x input instead of 1.25x) buys nothing."
    ),
    "to_1h": (
        'Use the 1-hour lifetime (`"cache_control": {"type": "ephemeral", "ttl": "1h"}`): '
        "calls come 5-60 minutes apart, so 5-minute entries expire and are written again where "
        "a 1-hour entry would be read."
    ),
}


def _finding(row: dict[str, Any], ctx: AuditContext, params: Params) -> Finding:
    evidence = _evidence(row)
    monthly = row["monthly_savings_usd"]
    written = row["write_5m"] + row["write_1h"]
    what = {
        "drop": f"{row['wasted_share']:.0%} of them are never read by a later call within their "
        f"lifetime; dropping those writes saves the premium, ${monthly:,.2f}/month",
        "to_5m": f"{row['within_5m']:.0%} of the 1-hour writes are followed by the next call "
        f"within 5 minutes; the 5-minute lifetime saves ${monthly:,.2f}/month",
        "to_1h": "entries expire and are written again 5-60 minutes later; the 1-hour lifetime "
        f"saves ${monthly:,.2f}/month",
    }[row["action"]]
    message = (
        f"{row['writing_calls']:,} calls paid the cache-write premium for {written:,} tokens "
        f"({row['write_1h']:,} with the 1-hour lifetime); {what}."
    )
    return key_finding(
        (CODE, NAME),
        row,
        ctx,
        severity=severity_for(monthly, params),
        message=message,
        fix=_FIXES[row["action"]],
        evidence=evidence,
        extra_key={"change": row["action"]},  # not "action": that is a call-record column
    )
