"""Compare the store with the provider's bill, per UTC day and model, and name the likely cause.

Why per day and model: that is the finest grain both providers report, and the grain at which the
usual causes show. The store side is one lazy group-by over the window; the two sides are joined
on a *model key* (lower case, no ``provider/`` prefix, no date suffix), because reports name dated
snapshots (``gpt-4o-mini-2024-07-18``) while spans often hold the requested alias.

Drift is ``(llmtrace - provider) / provider`` on dollars (on tokens when the provider reported no
cost for the row). Causes, checked in this order, each from numbers both sides hold:

1. *uninstrumented traffic*: the provider billed tokens for a day and model that llmtrace never
   saw, or more tokens (OpenAI: more requests) than llmtrace holds;
2. *calls seen twice*: llmtrace holds more tokens or calls than the provider billed (evidence:
   stored calls sharing one provider response id);
3. *unpriced model*: the tokens agree but some calls have no price (``price_status``);
4. *tier or discount not in the price data*: tokens agree, every call is priced, and the dollars
   still differ (a batch, flex or priority tier the report names, or a negotiated rate): the fix
   is a price-file entry, and ``--prices`` then closes the gap;
5. *not billed*: llmtrace has calls the report lacks (another organization's key, or a report
   that has not caught up yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from llmtrace.record import PRICE_OK

# Token counts that differ by less than this share are the same count (rounding in reports).
TOKEN_TOLERANCE = 0.001

MATCH = "match"
UNINSTRUMENTED = "uninstrumented traffic"
SEEN_TWICE = "calls seen twice"
UNPRICED = "unpriced model"
PRICE_GAP = "tier or discount not in the price data"
NOT_BILLED = "not in the provider's report"
NOT_PER_MODEL = "provider line item without a model"

# Tier names that mean "the standard price" in the reports (OpenAI says default, Anthropic standard).
_STANDARD_TIERS = ("standard", "default")


def model_key(model: pl.Expr) -> pl.Expr:
    """The name both sides are joined on: ``openai/GPT-4o-2024-08-06`` → ``gpt-4o``."""
    return (
        model.str.to_lowercase()
        .str.replace(r"^[a-z0-9_.-]+/", "")
        .str.replace(r"-(\d{4}-\d{2}-\d{2}|\d{8})$", "")
    )


def store_side(calls: pl.LazyFrame, provider: str) -> pl.DataFrame:
    """The store's calls of ``provider`` summed per day and model key."""
    schema = calls.collect_schema()
    has_tier = "service_tier" in schema.names()
    billed = pl.col("input_tokens").is_not_null() | pl.col("output_tokens").is_not_null()
    response = pl.col("response_id")
    return (
        calls.filter((pl.col("provider") == provider) & billed & pl.col("model").is_not_null())
        .with_columns(model_key(pl.col("model")).alias("model_key"))
        .group_by("day", "model_key")
        .agg(
            pl.col("model").unique().sort().str.join(", ").alias("llmtrace_models"),
            pl.len().alias("llmtrace_calls"),
            pl.col("input_tokens").fill_null(0).sum().alias("llmtrace_input_tokens"),
            pl.col("cache_read_tokens").fill_null(0).sum().alias("llmtrace_cache_read_tokens"),
            pl.col("cache_write_tokens").fill_null(0).sum().alias("llmtrace_cache_write_tokens"),
            pl.col("output_tokens").fill_null(0).sum().alias("llmtrace_output_tokens"),
            pl.col("total_cost").sum().alias("llmtrace_cost_usd"),
            (pl.col("price_status") != PRICE_OK).sum().alias("unpriced_calls"),
            pl.col("price_status")
            .filter(pl.col("price_status") != PRICE_OK)
            .unique()
            .sort()
            .str.join(", ")
            .alias("unpriced_reasons"),
            (response.drop_nulls().len() - response.drop_nulls().n_unique()).alias(
                "duplicate_response_ids"
            ),
            (
                pl.col("service_tier").drop_nulls().unique().sort().str.join(", ")
                if has_tier
                else pl.lit("")
            ).alias("llmtrace_tiers"),
        )
        .collect()
    )


def provider_side(usage: pl.DataFrame, cost: pl.DataFrame) -> pl.DataFrame:
    """The provider's usage and cost per day and model key (tiers kept as a list)."""
    per_usage = (
        usage.with_columns(model_key(pl.col("model")).alias("model_key"))
        .group_by("day", "model_key")
        .agg(
            pl.col("model").drop_nulls().unique().sort().str.join(", ").alias("provider_models"),
            pl.col("requests").sum().alias("provider_requests"),
            pl.col("requests").is_null().any().alias("_no_requests"),
            pl.col("input_tokens").sum().alias("provider_input_tokens"),
            pl.col("cache_read_tokens").sum().alias("provider_cache_read_tokens"),
            pl.col("cache_write_tokens").sum().alias("provider_cache_write_tokens"),
            pl.col("output_tokens").sum().alias("provider_output_tokens"),
            pl.col("service_tier")
            .filter(~pl.col("service_tier").fill_null("standard").is_in(_STANDARD_TIERS))
            .unique()
            .sort()
            .str.join(",")
            .alias("provider_tiers"),
        )
        .with_columns(
            pl.when(pl.col("_no_requests"))
            .then(None)
            .otherwise("provider_requests")
            .alias("provider_requests")
        )
        .drop("_no_requests")
    )
    per_cost = (
        cost.with_columns(model_key(pl.col("model")).alias("model_key"))
        .group_by("day", "model_key")
        .agg(
            pl.col("cost_usd").sum().alias("provider_cost_usd"),
            pl.col("service_tier")
            .filter(~pl.col("service_tier").fill_null("standard").is_in(_STANDARD_TIERS))
            .unique()
            .sort()
            .str.join(",")
            .alias("cost_tiers"),
        )
    )
    return per_usage.join(per_cost, on=["day", "model_key"], how="full", coalesce=True)


def _share(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """(a - b) / b, null where b is 0 or null (infinite drift shows as its cause instead)."""
    return pl.when(b.is_not_null() & (b != 0)).then((a - b) / b).otherwise(None)


def compare(store: pl.DataFrame, billed: pl.DataFrame, max_drift: float) -> pl.DataFrame:
    """One row per day and model: both sides, drifts, the likely cause and whether it is over
    ``max_drift`` (a share: 0.02 for 2 %)."""
    joined = store.join(billed, on=["day", "model_key"], how="full", coalesce=True)
    l_tokens = pl.col("llmtrace_input_tokens").fill_null(0) + pl.col(
        "llmtrace_output_tokens"
    ).fill_null(0)
    p_tokens = pl.col("provider_input_tokens").fill_null(0) + pl.col(
        "provider_output_tokens"
    ).fill_null(0)
    joined = joined.with_columns(
        pl.col("llmtrace_calls").fill_null(0),
        pl.col("unpriced_calls").fill_null(0),
        pl.col("duplicate_response_ids").fill_null(0),
        l_tokens.alias("llmtrace_tokens"),
        p_tokens.alias("provider_tokens"),
        pl.col("llmtrace_cost_usd").fill_null(0.0),
    ).with_columns(
        _share(pl.col("llmtrace_tokens"), pl.col("provider_tokens")).alias("token_drift"),
        _share(pl.col("llmtrace_cost_usd"), pl.col("provider_cost_usd")).alias("cost_drift"),
    )
    l_calls, p_req = pl.col("llmtrace_calls"), pl.col("provider_requests")
    token_gap = pl.col("llmtrace_tokens") - pl.col("provider_tokens")
    tokens_differ = pl.col("token_drift").abs() > TOKEN_TOLERANCE
    more_calls = p_req.is_not_null() & (l_calls > p_req)
    fewer_calls = p_req.is_not_null() & (l_calls < p_req)
    tiers = (
        pl.concat_str(
            [pl.col("provider_tiers").fill_null(""), pl.col("cost_tiers").fill_null("")],
            separator=",",
        )
        .str.split(",")
        .list.eval(pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != ""))
        .list.unique()
        .list.sort()
        .list.join(", ")
    )
    cost_differs = (pl.col("cost_drift").abs() > TOKEN_TOLERANCE) | pl.col(
        "provider_cost_usd"
    ).is_null()
    cause = (
        pl.when(pl.col("model_key").is_null())
        .then(pl.lit(NOT_PER_MODEL))
        .when((l_calls == 0) & (pl.col("provider_tokens") > 0))
        .then(pl.lit(UNINSTRUMENTED))
        .when(
            (l_calls > 0) & (pl.col("provider_tokens") == 0) & pl.col("provider_cost_usd").is_null()
        )
        .then(pl.lit(NOT_BILLED))
        .when((tokens_differ & (token_gap < 0)) | fewer_calls)
        .then(pl.lit(UNINSTRUMENTED))
        .when((tokens_differ & (token_gap > 0)) | more_calls)
        .then(pl.lit(SEEN_TWICE))
        .when(pl.col("unpriced_calls") > 0)
        .then(pl.lit(UNPRICED))
        .when(cost_differs & (pl.col("provider_cost_usd").fill_null(0) != 0))
        .then(pl.lit(PRICE_GAP))
        .otherwise(pl.lit(MATCH))
    )
    drift = pl.coalesce(pl.col("cost_drift"), pl.col("token_drift"))
    infinite = (pl.col("provider_cost_usd").fill_null(0) == 0) & (
        pl.col("llmtrace_cost_usd") > 0
    ) | ((l_calls == 0) & (pl.col("provider_tokens") > 0))
    over = (drift.abs() > max_drift).fill_null(False) | infinite
    return (
        joined.with_columns(
            cause.alias("cause"),
            drift.alias("drift"),
            tiers.alias("tiers"),
            (pl.col("llmtrace_cost_usd") - pl.col("provider_cost_usd").fill_null(0)).alias(
                "cost_gap_usd"
            ),
            token_gap.alias("token_gap"),
        )
        .with_columns(
            (over & (pl.col("cause") != MATCH)).alias("over_threshold"),
            _detail().alias("detail"),
        )
        .sort("day", "model_key", nulls_last=True)
    )


def _fmt_int(expr: pl.Expr) -> pl.Expr:
    """Whole numbers as text (thousands separators are added by the renderers)."""
    return expr.cast(pl.Int64).cast(pl.String)


def _detail() -> pl.Expr:
    """One sentence per row: the numbers behind its cause."""
    cause = pl.col("cause")
    tokens_gap = _fmt_int(pl.col("token_gap").abs())
    calls_gap = _fmt_int((pl.col("llmtrace_calls") - pl.col("provider_requests")).abs())
    requests_part = (
        pl.when(pl.col("provider_requests").is_not_null())
        .then(pl.lit(" in ") + calls_gap + pl.lit(" requests"))
        .otherwise(pl.lit(""))
    )
    twins = (
        pl.when(pl.col("duplicate_response_ids") > 0)
        .then(
            pl.lit("; ")
            + _fmt_int(pl.col("duplicate_response_ids"))
            + pl.lit(" stored calls repeat another's response id")
        )
        .otherwise(pl.lit(""))
    )
    tier_hint = (
        pl.when(pl.col("tiers") != "")
        .then(pl.lit("the provider billed tier(s) ") + pl.col("tiers") + pl.lit("; "))
        .otherwise(pl.lit(""))
    )
    ratio = (pl.col("provider_cost_usd") / pl.col("llmtrace_cost_usd")).round(3).cast(pl.String)
    return (
        pl.when(cause == UNINSTRUMENTED)
        .then(
            pl.lit("the provider billed ")
            + tokens_gap
            + pl.lit(" tokens")
            + requests_part
            + pl.lit(" that llmtrace never saw: instrument the service that sends them")
        )
        .when(cause == SEEN_TWICE)
        .then(
            pl.lit("llmtrace counts ")
            + tokens_gap
            + pl.lit(" tokens")
            + requests_part
            + pl.lit(" more than the provider billed")
            + twins
        )
        .when(cause == UNPRICED)
        .then(
            _fmt_int(pl.col("unpriced_calls"))
            + pl.lit(" calls have no price (")
            + pl.col("unpriced_reasons").fill_null("")
            + pl.lit("): add its price, or its service tier's, to a price file")
        )
        .when(cause == PRICE_GAP)
        .then(
            tier_hint
            + pl.lit("tokens agree, the provider billed ")
            + ratio
            + pl.lit("x llmtrace's list price: add the rate to a price file and use --prices")
        )
        .when(cause == NOT_BILLED)
        .then(pl.lit("llmtrace holds calls the provider's report does not list yet"))
        .when(cause == NOT_PER_MODEL)
        .then(pl.lit("tools, storage or other charges not tied to a model (not LLM calls)"))
        .otherwise(pl.lit(""))
    )


@dataclass
class Reconciliation:
    """The comparison of one provider over one window."""

    provider: str
    since: datetime
    until: datetime
    max_drift: float
    rows: pl.DataFrame
    base_url: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def over(self) -> pl.DataFrame:
        return self.rows.filter(pl.col("over_threshold"))

    @property
    def ok(self) -> bool:
        return self.over.height == 0

    def totals(self) -> dict[str, Any]:
        rows = self.rows
        llm = float(rows["llmtrace_cost_usd"].fill_null(0).sum())
        billed = float(rows["provider_cost_usd"].fill_null(0).sum())
        return {
            "llmtrace_cost_usd": llm,
            "provider_cost_usd": billed,
            "drift": (llm - billed) / billed if billed else None,
            "llmtrace_tokens": int(rows["llmtrace_tokens"].sum()),
            "provider_tokens": int(rows["provider_tokens"].sum()),
            "llmtrace_calls": int(rows["llmtrace_calls"].sum()),
        }

    def to_dict(self) -> dict[str, Any]:
        columns = [
            "day",
            "model_key",
            "llmtrace_models",
            "provider_models",
            "llmtrace_calls",
            "provider_requests",
            "llmtrace_tokens",
            "provider_tokens",
            "llmtrace_input_tokens",
            "provider_input_tokens",
            "llmtrace_cache_read_tokens",
            "provider_cache_read_tokens",
            "llmtrace_cache_write_tokens",
            "provider_cache_write_tokens",
            "llmtrace_output_tokens",
            "provider_output_tokens",
            "llmtrace_cost_usd",
            "provider_cost_usd",
            "drift",
            "token_drift",
            "tiers",
            "cause",
            "detail",
            "over_threshold",
        ]
        rows = self.rows.select(columns).with_columns(pl.col("day").cast(pl.String))
        return {
            "provider": self.provider,
            "window": {"since": self.since.isoformat(), "until": self.until.isoformat()},
            "max_drift": self.max_drift,
            "ok": self.ok,
            "totals": self.totals(),
            "rows": rows.rename({"model_key": "model"}).to_dicts(),
            "notes": self.notes,
        }
