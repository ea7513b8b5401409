"""LT301 growing-conversation-context: history replayed in full, or inputs far too big.

Two checks share one aggregate (rules/LT301.yaml documents the rule for users):

* **Growing conversations** (``kind = "conv"``). Per conversation, calls are numbered by time
  (turn 0, 1, ...) and input tokens are regressed on the turn number by least squares from the
  sums n, Σx, Σy, Σxy, Σx², Σy² (slope = tokens added per turn, r² = how steady). A
  conversation qualifies when it has ``min_turns`` turns, grows by at least
  ``min_growth_tokens_per_turn`` and fits a line (r² >= ``min_r2``). Its calls are then
  re-costed under two policies, both stated as parameters:

  - *budget*: keep the system prefix and the newest history within ``budget_tokens``. The kept
    history slides every turn, so for conversations that use caching only the system prefix
    stays readable and the rest is written again (trimming inside a cached prefix breaks it);
  - *summarize*: every ``summarize_after_turns`` turns the history is replaced by a
    ``summary_tokens`` summary (one extra summarisation call, priced too); later turns read the
    compacted prefix, so trimmed tokens that were cache reads save only the read price.

* **Oversized single calls** (``kind = "single"``, calls without a conversation). Per prompt,
  mergeable log-spaced histograms of input and output tokens give approximate p50 input and
  p90 output; a prompt qualifies when p50 input >= ``large_input_tokens`` while p90 output <=
  ``small_output_tokens`` (big context, tiny answer: classification, routing, extraction). Its
  calls are re-costed trimmed to ``budget_tokens`` from the end of the prompt (uncached tail
  first), never inside the system prefix.

All savings price counterfactual token splits with the run's pricer (``ctx.price``, via
``caching_model.price_rates``), so cache reads, writes, tiers and dated prices are as billed.

On top of caching (never counting LT202's saving twice): conversations that cache nothing are
also re-costed under each of LT202's breakpoint layouts (``history_replay``), and trimming is
priced against the cheapest of the billed and the cached versions; the evidence names it.

Mergeability: conversation statistics and turn numbers need a conversation's calls together,
so partials are exact when partitions are split by ``conversation_id`` (single calls and their
histograms merge by addition under any split). ``merge`` concatenates and re-aggregates.

This module holds the rule, its decision (pricing the cells' policies) and its findings; the
aggregate step, from calls to cells, is ``lt301_cells``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl

from llmtrace.rules import runrate, stats
from llmtrace.rules.base import (
    AuditContext,
    Finding,
    Severity,
    coverage_rows,
    merge_cells,
    worth_reporting,
)
from llmtrace.rules.caching_model import (
    price_rates,
    split_cost,
)
from llmtrace.rules.lt301_cells import (
    CELL,
    CODE,
    COLUMNS,
    DERIVED,
    KEY,
    MAXES,
    MINS,
    NAME,
    ON_TOP,
    ON_TOP_KINDS,
    SUMS,
    Params,
    aggregate_cells,
    single_calls_cells,
)

# what the evidence calls each layout (as LT202's)
_LAYOUT_TEXT = {
    ON_TOP: "a breakpoint on the last message (5m)",
    ON_TOP_KINDS["long"]: "a breakpoint on the last message (1h)",
    ON_TOP_KINDS["mixed"]: "a 1h breakpoint on the previous turn and a 5m one on the last message",
}

_CACHED_KINDS = list(ON_TOP_KINDS.values())


class ContextRule:
    """The LT301 rule object (module attribute ``RULE``)."""

    code: ClassVar[str] = CODE
    name: ClassVar[str] = NAME
    columns: ClassVar[tuple[str, ...]] = COLUMNS
    derived_columns: ClassVar[dict[str, pl.Expr]] = DERIVED
    # A conversation's turns must stay together; single calls merge under any split, so they
    # are spread by start time (one part for all of them would defeat the split).
    partition_key: ClassVar[pl.Expr] = (
        pl.when(pl.col("conversation_id").is_not_null())
        .then(pl.col("conversation_id").hash(37))
        .otherwise(pl.col("start_time").hash(41))
    )
    partition_family: ClassVar[str] = "conversation"  # the same key: shares LT202's spill
    # only conversation calls need their part; single calls are summed per cell in one pass
    # (``aggregate_unparted``) when the family spills alone (``partition.Unparted``)
    part_rows: ClassVar[pl.Expr] = pl.col("conversation_id").is_not_null()

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Cells of conversation turns and single calls, plus single-call histograms
        (``lt301_cells.aggregate_cells``)."""
        return aggregate_cells(calls, ctx)

    def aggregate_unparted(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """``aggregate`` of calls outside conversations, in one pass
        (``lt301_cells.single_calls_cells``)."""
        return single_calls_cells(calls, ctx)

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Concatenate partials and re-aggregate by cell (exact when split by conversation)."""
        return merge_cells(partials, CELL, sums=SUMS, maxes=MAXES, mins=MINS)

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """Findings for prompts whose trimming or summarising saves enough per month."""
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
        """Keys with input: judged when they have conversations (whose growth is measured) or
        at least ``min_calls`` single calls (whose sizes are); else "too few calls"."""
        params = Params.from_mapping(ctx.params)
        key = ["prompt", "model", "service"]
        empty = pl.DataFrame(schema={k: pl.String for k in key})
        judged = (
            aggregates.filter(
                ((pl.col("kind") == "conv") & (pl.col("conversations") > 0))
                | ((pl.col("kind") == "single") & (pl.col("calls") > 0))
            )
            .group_by("kind", *key)
            .agg(pl.col("calls").sum(), pl.col("conversations").sum())
            .filter((pl.col("kind") == "conv") | (pl.col("calls") >= params.min_calls))
            .select(key)
            .unique()
            if aggregates.height
            else empty
        )
        marked = census.join(
            judged.with_columns(pl.lit(True).alias("_judged")),
            on=key,
            how="left",
            nulls_equal=True,
        )
        reason = pl.when(pl.col("_judged").is_null()).then(pl.lit("too few calls"))
        return coverage_rows(marked, pl.col("with_input") > 0, reason)


RULE = ContextRule()


# -- decide ------------------------------------------------------------------------------------


def evaluate(aggregates: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """One row per (kind, prompt key) with evidence, policy costs and whether it may be flagged.

    Public so tests can see why a prompt was *not* flagged (flat, cached, small).
    """
    params = Params.from_mapping(ctx.params)
    if aggregates.height == 0:
        return pl.DataFrame()
    cells = aggregates.filter(pl.col("kind").is_in(["conv", *_CACHED_KINDS, "single"]))
    keys = cells.group_by("kind", *KEY).agg(
        *(pl.col(c).sum() for c in SUMS if not c.startswith("hist_")),
        pl.col("input_max", "last_call").max(),
        pl.col("first_call").min(),
    )
    quantiles = _quantiles(aggregates)
    keys = keys.join(quantiles, on=KEY, how="left", nulls_equal=True)
    conv_ok = pl.col("kind").is_in(["conv", *_CACHED_KINDS]) & (pl.col("flagged") > 0)
    single_ok = (
        (pl.col("kind") == "single")
        & (pl.col("calls") >= params.min_calls)
        & (pl.col("p50_input") >= params.large_input_tokens)
        & (pl.col("p90_output") <= params.small_output_tokens)
        & (pl.col("trimmed_budget") > 0)
    )
    keys = keys.with_columns((conv_ok | single_ok).alias("eligible"))
    costs = _price(cells, keys.filter(pl.col("eligible")), ctx)
    table = _cheaper_baseline(keys.join(costs, on=["kind", *KEY], how="left", nulls_equal=True))
    saving_budget = pl.col("cost_actual") - pl.col("cost_budget")
    saving_summary = pl.when(pl.col("kind") == "conv").then(
        pl.col("cost_actual") - pl.col("cost_summary") - pl.col("cost_summary_calls")
    )
    return (
        table.with_columns(runrate.basis_days("first_call", "last_call", ctx).alias("basis_days"))
        .with_columns(saving_budget.alias("saving_budget"), saving_summary.alias("saving_summary"))
        .with_columns(
            pl.when(pl.col("saving_summary").fill_null(float("-inf")) > pl.col("saving_budget"))
            .then(pl.lit("summary"))
            .otherwise(pl.lit("budget"))
            .alias("best"),
            pl.max_horizontal("saving_budget", "saving_summary").alias("saving"),
        )
        .with_columns(
            runrate.monthly("saving", "basis_days").alias("monthly_savings_usd"),
            (pl.col("eligible") & pl.col("cost_actual").is_not_null()).alias("eligible"),
        )
    )


def _cheaper_baseline(table: pl.DataFrame) -> pl.DataFrame:
    """Per conversation key, the cheapest of "as billed" and "history cached" under each of
    LT202's layouts (``ON_TOP_KINDS``) as the baseline the trimming policies are priced against;
    ``on_top_of_caching`` says whether caching won, ``cached_layout`` which layout."""
    is_conv = pl.col("kind").is_in(["conv", *_CACHED_KINDS])
    billed = (
        table.filter(pl.col("kind") == "conv")
        .select(*KEY, pl.col("cost_actual").alias("_billed"))
        .unique(subset=KEY, keep="first")
    )
    # "cached" wins only when clearly cheaper: where no turn was re-split both rows cost the
    # same up to float rounding, and a tie must not flip between runs
    cheaper = pl.col("cost_actual") < pl.col("_billed") * (1 - 1e-9)
    conv = (
        table.filter(is_conv)
        .join(billed, on=KEY, how="left", nulls_equal=True)
        .with_columns(
            ((pl.col("kind") != "conv") & cheaper.fill_null(False)).alias("_on_top"),
            pl.col("kind")
            .replace_strict({k: i for i, k in enumerate(_CACHED_KINDS)}, default=len(_CACHED_KINDS))
            .alias("_order"),  # ties: the simplest layout
        )
        .filter((pl.col("kind") == "conv") | pl.col("_on_top"))
        # a cheaper cached row first, the cheapest of them, else the billed row
        # rounded: equal layouts must tie (and the simplest win), not differ in float noise
        .with_columns(
            pl.when(pl.col("_on_top")).then(pl.col("cost_actual").round(6)).alias("_cached_cost")
        )
        .sort([*KEY, "_cached_cost", "_order"], nulls_last=True)
        .unique(subset=KEY, keep="first", maintain_order=True)
        .with_columns(
            pl.when(pl.col("_on_top")).then(pl.col("kind")).alias("cached_layout"),
            pl.lit("conv").alias("kind"),
            pl.col("_on_top").alias("on_top_of_caching"),
        )
        .drop("_billed", "_on_top", "_order", "_cached_cost")
    )
    single = table.filter(~is_conv).with_columns(
        pl.lit(None, dtype=pl.String).alias("cached_layout"),
        pl.lit(False).alias("on_top_of_caching"),
    )
    return pl.concat([conv, single], how="vertical_relaxed")


def _quantiles(aggregates: pl.DataFrame) -> pl.DataFrame:
    """Approximate p50 input and p90 output per prompt key from the merged histograms."""
    schema = {**{k: pl.String for k in KEY}, "p50_input": pl.Float64, "p90_output": pl.Float64}

    def quantile(kind: str, column: str, q: float, name: str) -> pl.DataFrame:
        hist = aggregates.filter(pl.col("kind") == kind).select(*KEY, "bin", column)
        if hist.height == 0:
            return pl.DataFrame(schema={**{k: pl.String for k in KEY}, name: pl.Float64})
        hist = hist.group_by(*KEY, "bin").agg(pl.col(column).sum()).sort(*KEY, "bin")
        running = pl.col(column).cum_sum().over(*KEY)
        total = pl.col(column).sum().over(*KEY)
        return (
            hist.filter(running >= q * total)
            .group_by(*KEY)
            .agg(pl.col("bin").min())
            .select(*KEY, stats.bin_midpoint(pl.col("bin")).cast(pl.Float64).alias(name))
        )

    p50 = quantile("hist_input", "hist_input", 0.5, "p50_input")
    p90 = quantile("hist_output", "hist_output", 0.9, "p90_output")
    joined = p50.join(p90, on=KEY, how="full", coalesce=True, nulls_equal=True)
    return joined.select(schema.keys()).cast(schema)  # type: ignore[arg-type]


def _price(cells: pl.DataFrame, eligible: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """Cost of the eligible keys' calls as they are, under each policy, and of summary calls."""
    names = ("actual", "budget", "summary", "summary_calls")
    schema = {"kind": pl.String, **{k: pl.String for k in KEY}}
    schema |= {f"cost_{n}": pl.Float64 for n in names}
    if eligible.height == 0:
        return pl.DataFrame(schema=schema)
    chosen = (
        cells.filter(pl.col("calls") > 0)
        .join(eligible.select("kind", *KEY), on=["kind", *KEY], how="semi", nulls_equal=True)
        .with_row_index("_cell")
    )
    priced = price_rates(
        chosen.with_columns(_average("input", "calls").alias("size")), ctx.price
    ).with_columns(
        split_cost().alias("_actual"),
        split_cost(
            input="budget_input",
            read="budget_read",
            write="budget_write",
            write_1h="budget_write_1h",
        ).alias("_budget"),
        split_cost(
            input="summary_input",
            read="summary_read",
            write="summary_write",
            write_1h="summary_write_1h",
        ).alias("_summary"),
    )
    # summary calls are priced at their own input size; they write nothing to the cache
    zero = pl.lit(0, dtype=pl.Int64)
    summary_calls = price_rates(
        chosen.select(
            "_cell",
            "provider",
            "model",
            "day",
            "summary_calls",
            "summary_call_input",
            "summary_call_read",
            "summary_call_output",
            _average("summary_call_input", "summary_calls").alias("size"),
            zero.alias("_zero"),
        ),
        ctx.price,
    ).select(
        "_cell",
        split_cost(
            calls="summary_calls",
            input="summary_call_input",
            read="summary_call_read",
            write="_zero",
            write_1h="_zero",
            output="summary_call_output",
        ).alias("_summary_calls"),
    )
    priced = priced.join(summary_calls, on="_cell", how="left")

    def total(column: str) -> pl.Expr:
        # any unpriced cell leaves the key without a cost: a partial sum would invent savings
        return pl.when(pl.col(column).null_count() == 0).then(pl.col(column).sum())

    return (
        priced.group_by("kind", *KEY)
        .agg(*(total(f"_{n}").alias(f"cost_{n}") for n in names))
        .select(schema.keys())
        .cast(schema)  # type: ignore[arg-type]
    )


def _average(total: str, count: str) -> pl.Expr:
    """Typical per-call size of a cell (the tier its calls are priced in); 0 for no calls."""
    return (
        (pl.col(total).cast(pl.Float64) / pl.col(count).cast(pl.Float64).clip(lower_bound=1.0))
        .round(0)
        .cast(pl.Int64)
    )


def _severity(monthly: float, params: Params) -> Severity:
    if monthly >= params.high_savings_usd:
        return "high"
    if monthly >= params.medium_savings_usd:
        return "medium"
    return "low"


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _evidence(row: dict[str, Any], ctx: AuditContext, params: Params) -> dict[str, Any]:
    """The numbers behind a finding."""
    factor = runrate.monthly_value(1.0, row["basis_days"])
    evidence: dict[str, Any] = {
        "check": "growing_conversation" if row["kind"] == "conv" else "oversized_input",
        "provider": row["provider"],
        "calls": row["calls"],
        "input_tokens": row["input"],
        "cached_share_of_input": _rounded(row["read"] / row["input"], 4) if row["input"] else None,
        "max_input_tokens": row["input_max"],
        "budget_tokens": params.budget_tokens,
        "tokens_trimmed_budget": row["trimmed_budget"],
        "window_input_cost_usd": _rounded(row["cost_actual"], 6),
        "window_input_cost_budget_usd": _rounded(row["cost_budget"], 6),
        "monthly_savings_budget_usd": _rounded(row["saving_budget"] * factor)
        if row["saving_budget"] is not None
        else None,
        "recommended": "summarize" if row["best"] == "summary" else "budget",
        "baseline": f"history cached with {_LAYOUT_TEXT[row['cached_layout']]} (LT202's saving "
        "not included)"
        if row.get("on_top_of_caching")
        else "as billed",
        "run_rate_basis": runrate.basis_evidence(
            row["first_call"], row["last_call"], row["basis_days"], row["calls"]
        ),
    }
    if row["kind"] == "conv":
        flagged = row["flagged"]
        slope = row["slope_sum"] / flagged
        out = row["output_per_turn_sum"] / flagged
        evidence |= {
            "conversations": row["conversations"],
            "growing_conversations": flagged,
            "mean_turns": _rounded(row["turns_sum"] / flagged, 1),
            "growth_tokens_per_turn": _rounded(slope, 1),
            "fit_r2": _rounded(row["r2_sum"] / flagged, 3),
            "output_tokens_per_turn": _rounded(out, 1),
            "growth_to_output_ratio": _rounded(slope / out, 2) if out else None,
            "summarize_after_turns": params.summarize_after_turns,
            "summary_tokens": params.summary_tokens,
            "tokens_trimmed_summary": row["trimmed_summary"],
            "summary_calls": row["summary_calls"],
            "window_input_cost_summary_usd": _rounded(row["cost_summary"], 6),
            "window_summary_calls_cost_usd": _rounded(row["cost_summary_calls"], 6),
            "monthly_savings_summary_usd": _rounded(row["saving_summary"] * factor)
            if row["saving_summary"] is not None
            else None,
        }
    else:
        evidence |= {
            "p50_input_tokens": row["p50_input"],
            "p90_output_tokens": row["p90_output"],
            "large_input_tokens": params.large_input_tokens,
            "small_output_tokens": params.small_output_tokens,
        }
    return evidence


def _message(row: dict[str, Any], evidence: dict[str, Any], params: Params) -> str:
    monthly = row["monthly_savings_usd"]
    cached = evidence["cached_share_of_input"] or 0.0
    if row["kind"] == "conv":
        policy = (
            f"summarising the history every {params.summarize_after_turns} turns"
            if row["best"] == "summary"
            else f"trimming the history to {params.budget_tokens:,} tokens"
        )
        return (
            f"{evidence['growing_conversations']:,} of {evidence['conversations']:,} "
            f"conversations replay their whole history: input grows by "
            f"~{evidence['growth_tokens_per_turn']:,.0f} tokens per turn "
            f"(r²={evidence['fit_r2']:.2f}, {evidence['output_tokens_per_turn']:,.0f} output "
            f"tokens per turn) up to {row['input_max']:,} tokens; {cached:.0%} of the input is "
            f"already cache reads. {policy[0].upper()}{policy[1:]} saves ${monthly:,.2f}/month"
            + (
                " on top of caching the history (LT202), which is not counted here."
                if row.get("on_top_of_caching")
                else "."
            )
        )
    return (
        f"Typical input is ~{row['p50_input']:,.0f} tokens (p50) for ~{row['p90_output']:,.0f} "
        f"output tokens (p90) over {row['calls']:,} calls; trimming the input to "
        f"{params.budget_tokens:,} tokens saves ${monthly:,.2f}/month."
    )


def _fix(row: dict[str, Any], params: Params) -> str:
    if row["kind"] == "conv":
        return (
            f"Stop resending the whole conversation. Every {params.summarize_after_turns} turns "
            f"replace the older turns by a short summary (~{params.summary_tokens} tokens) and "
            f"keep only the recent turns, e.g. `messages = [system, summary_msg, "
            f"*messages[-4:]]`; or cap the history at {params.budget_tokens:,} tokens. Compact at "
            f"a cache breakpoint, never inside the cached prefix: keep the system prompt first "
            f"and unchanged, and after compacting mark the summary with "
            f'`"cache_control": {{"type": "ephemeral"}}` (Anthropic) so later turns read it; '
            f"trimming old turns one by one changes the prefix each turn and turns cheap cache "
            f"reads into full-price writes."
        )
    return (
        f"Send less context to this prompt: retrieve fewer or shorter chunks, drop unused "
        f"fields and tool definitions, or cap the input at {params.budget_tokens:,} tokens "
        f"(trim from the end of the variable context, not the system prompt). A long fixed "
        f"system prompt is better cached (LT201) than trimmed."
    )


def _finding(row: dict[str, Any], ctx: AuditContext, params: Params) -> Finding:
    evidence = _evidence(row, ctx, params)
    monthly = row["monthly_savings_usd"]
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
        message=_message(row, evidence, params),
        fix=_fix(row, params),
        evidence=evidence,
        key={
            "check": evidence["check"],
            "provider": row["provider"],
            "model": row["model"],
            "prompt": row["prompt"],
            "service": row["service"],
        },
    )
