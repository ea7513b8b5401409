"""LT502 duplicate-requests: the same request sent again by another user or session, soon after.

A request is identified by ``(provider, model, input_fingerprint, reasoning_effort)`` (the hash of
the whole input plus the one generation parameter the call record keeps). A call is a *repeat*
when an identical request was sent within ``window_minutes`` before it **from another session**
(conversation, else trace): a response cache keyed on the request, with that lifetime, would have
answered it without a model call. Repeats inside one session (a stuck agent loop, a retry storm)
are LT503's; keeping LT502 to cross-session repeats means the two rules never count a call twice.

Saving = the repeats' cost (a cache hit costs next to nothing), as a run-rate over the days
from the key's first repeated request to the end of the audit's data (``runrate``). Evidence:
the repeated fingerprints (never content), how many sessions and users sent each, their cost,
and the run-rate's basis.

Mergeability: a request's calls must be together to find repeats, so parts of the calls are split
by the input fingerprint (``partition_key``, for the Ray engine); per-fingerprint partial sums
are then exact and merge by addition. Locally the rule needs no parts: ``aggregate`` first finds
the fingerprints sent twice and keeps only their calls (``bounded_memory``). Only fingerprints
that repeat leave ``aggregate``, so the partial table stays small however many unique requests
there are.
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
    Severity,
    merge_cells,
    worth_reporting,
)
from llmtrace.rules.partition import PARTITION_ROWS, aggregate_spilled, part_count, spill_dir

CODE = "LT502"
NAME = "duplicate-requests"

_KEY = ["provider", "model", "service", "prompt"]
_CELL = [*_KEY, "input_fingerprint", "params"]
_SUMS = ["calls", "repeats", "repeat_cost", "repeat_unpriced", "sessions", "users"]
_TOP = 5


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT502's parameters (defaults in rules/LT502.yaml, overridable in llmtrace.toml)."""

    window_minutes: float = 60.0
    min_repeats: int = 20
    min_monthly_savings_usd: float = 5.0
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0


class DuplicateRequestsRule:
    """The LT502 rule object (module attribute ``RULE``)."""

    code: ClassVar[str] = CODE
    name: ClassVar[str] = NAME
    columns: ClassVar[tuple[str, ...]] = (
        *_KEY,
        "input_fingerprint",
        "reasoning_effort",
        "conversation_id",
        "trace_id",
        "user_id",
        "start_time",
        "is_error",
        "total_cost",
    )
    partition_key: ClassVar[pl.Expr] = pl.col("input_fingerprint").hash(53)
    # ...which only the Ray engine uses: ``aggregate`` narrows to the repeated requests first
    # and bounds its own memory, so the local engine runs it in its one pass (no spill)
    bounded_memory: ClassVar[bool] = True

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Per repeated request: calls, cross-session repeats and their cost.

        Two scans instead of a sort of every call: the first reads only the input fingerprints
        and finds those sent at least twice (one sort of a UInt64 per call: 8 bytes of memory
        per call, ~0.4 GB at 50M); the second keeps only their calls (2% of the demo's 5M),
        which are sorted and grouped. A fingerprint seen once cannot repeat, so the cells are
        those of the whole window. When the calls of repeated fingerprints are too many to
        sort at once (more than a part of the partition engine), they are spilled by
        fingerprint and aggregated part by part instead: memory stays bounded either way.
        """
        base = calls.filter(_eligible(ctx))
        seen = base.select(_fingerprint_hash().alias("_f")).collect().to_series().sort()
        again = (seen == seen.shift(1)).fill_null(False)
        repeated = seen.filter(again).unique()
        rows = int((again | (seen == seen.shift(-1)).fill_null(False)).sum())
        narrowed = base.filter(_fingerprint_hash().is_in(repeated.implode()))
        del seen, again
        if rows <= PARTITION_ROWS:
            return _repeats(narrowed, ctx)
        parts = part_count(rows)
        with spill_dir() as directory:
            partials = aggregate_spilled(
                narrowed, lambda part: _repeats(part, ctx), self.partition_key, parts, directory
            )
        return pl.concat(partials).lazy()

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Sums per request (exact: partitions split by fingerprint)."""
        return merge_cells(partials, _CELL, sums=_SUMS, mins=["first_call"], maxes=["last_call"])

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """A finding per prompt whose repeats cost enough; the top repeated requests as evidence."""
        params = Params.from_mapping(ctx.params)
        table = evaluate(aggregates, ctx, params)
        flagged = worth_reporting(table, params.min_monthly_savings_usd)
        return [_finding(row, ctx, params) for row in flagged.iter_rows(named=True)]


RULE = DuplicateRequestsRule()


def _eligible(ctx: AuditContext) -> pl.Expr:
    """Calls of the current window that name a model and an input, and did not fail."""
    start = pl.col("start_time")
    return (
        (start >= ctx.since)
        & (start < ctx.until)
        & pl.col("input_fingerprint").is_not_null()
        & pl.col("model").is_not_null()
        & ~pl.col("is_error").fill_null(False)
    )


def _fingerprint_hash() -> pl.Expr:
    """UInt64 of the input fingerprint: equal requests have equal values (a collision only lets
    a request seen once through to the exact grouping, which drops it)."""
    return pl.col("input_fingerprint").hash(61)


def _repeats(calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
    """Per request of ``calls`` (eligible calls, each request's calls all there): calls,
    cross-session repeats and their cost, for the requests with at least one repeat."""
    params = Params.from_mapping(ctx.params)
    start = pl.col("start_time")
    base = calls.with_columns(
        pl.col("reasoning_effort").fill_null("").alias("params"),
        pl.coalesce("conversation_id", "trace_id").alias("session"),
    )
    base = base.with_columns(pl.coalesce("user_id", "session").alias("requester"))
    base = base.with_columns(pl.struct(*_CELL).hash(59).alias("_k")).sort("_k", "start_time")
    same = pl.col("_k") == pl.col("_k").shift(1)
    gap_s = (start - start.shift(1)).dt.total_microseconds() / 1e6
    repeat = (
        same
        & (gap_s <= params.window_minutes * 60.0)
        & (pl.col("session") != pl.col("session").shift(1))
    ).fill_null(False)
    flagged = base.with_columns(repeat.alias("_repeat"))
    return (
        flagged.group_by("_k")
        .agg(
            *(pl.col(c).first() for c in _CELL),
            pl.len().alias("calls"),
            pl.col("_repeat").sum().alias("repeats"),
            pl.col("total_cost").filter(pl.col("_repeat")).sum().alias("repeat_cost"),
            (pl.col("_repeat") & pl.col("total_cost").is_null()).sum().alias("repeat_unpriced"),
            pl.col("session").n_unique().alias("sessions"),
            pl.col("requester").n_unique().alias("users"),
            start.min().alias("first_call"),
            start.max().alias("last_call"),
        )
        .filter(pl.col("repeats") > 0)
        .drop("_k")
    )


def evaluate(aggregates: pl.DataFrame, ctx: AuditContext, params: Params) -> pl.DataFrame:
    """One row per prompt key: repeats, their cost and monthly saving, the top requests."""
    if aggregates.height == 0:
        return pl.DataFrame()
    top = pl.struct(
        pl.col("input_fingerprint").alias("fingerprint"),
        "params",
        "calls",
        "repeats",
        "sessions",
        "users",
        pl.col("repeat_cost").round(6).alias("repeat_cost_usd"),
    )
    per_key = (
        aggregates.sort("repeat_cost", "repeats", descending=True)
        .group_by(_KEY)
        .agg(
            pl.col("calls").sum(),
            pl.col("repeats").sum(),
            pl.col("repeat_cost").sum(),
            pl.col("repeat_unpriced").sum(),
            pl.len().alias("requests_repeated"),
            top.head(_TOP).alias("top"),
            pl.col("first_call").min(),
            pl.col("last_call").max(),
        )
        .with_columns(runrate.basis_days("first_call", "last_call", ctx).alias("basis_days"))
    )
    return per_key.with_columns(
        runrate.monthly("repeat_cost", "basis_days").alias("monthly_savings_usd"),
        (pl.col("repeats") >= params.min_repeats).alias("eligible"),
    )


def _severity(monthly: float, params: Params) -> Severity:
    if monthly >= params.high_savings_usd:
        return "high"
    if monthly >= params.medium_savings_usd:
        return "medium"
    return "low"


def _finding(row: dict[str, Any], ctx: AuditContext, params: Params) -> Finding:
    monthly = float(row["monthly_savings_usd"])
    share = row["repeats"] / row["calls"] if row["calls"] else 0.0
    top = row["top"][0]
    message = (
        f"{row['repeats']:,} of {row['calls']:,} calls to repeated requests repeat an identical "
        f"request sent from another session within {params.window_minutes:g} minutes "
        f"({row['requests_repeated']:,} distinct requests; the top one was sent "
        f"{top['calls']:,} times by {top['users']:,} users). A response cache would have "
        f"answered them: ${monthly:,.2f}/month."
    )
    evidence = {
        "window_minutes": params.window_minutes,
        "calls_of_repeated_requests": int(row["calls"]),
        "repeats": int(row["repeats"]),
        "repeat_share": round(share, 4),
        "repeat_cost_usd_in_window": round(float(row["repeat_cost"]), 6),
        "unpriced_repeats": int(row["repeat_unpriced"]),
        "requests_repeated": int(row["requests_repeated"]),
        "top_repeated_requests": row["top"],
        "run_rate_basis": runrate.basis_evidence(
            row["first_call"], row["last_call"], row["basis_days"], row["calls"]
        ),
    }
    return Finding(
        rule=CODE,
        name=NAME,
        severity=_severity(monthly, params),
        prompt=row["prompt"],
        model=row["model"],
        service=row["service"],
        window_start=ctx.since,
        window_end=ctx.until,
        monthly_savings_usd=monthly,
        message=message,
        fix=(
            "Cache responses keyed on (model, full input, parameters) with a lifetime of about "
            f"{params.window_minutes:g} minutes, in front of the model call (a proxy cache such "
            "as Helicone's or LiteLLM's, or your own key-value store); skip it for sampled "
            "answers that must differ."
        ),
        evidence=evidence,
        key={k: row[k] for k in _KEY},
    )
