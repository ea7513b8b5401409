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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from llmtrace.config import ConfigError
from llmtrace.rules import runrate, stats
from llmtrace.rules.base import (
    AuditContext,
    Finding,
    RuleParams,
    Severity,
    coverage_rows,
    merge_cells,
    worth_reporting,
)
from llmtrace.rules.caching_model import (
    PROVIDERS,
    key_facts,
    min_tokens_expr,
    normalised_model_expr,
    price_rates,
    provider_fact,
    split_cost,
)
from llmtrace.rules.lt202_history import replay_turns

_EXPLICIT = [p for p, facts in PROVIDERS.items() if facts.mode == "explicit"]

CODE = "LT301"
NAME = "growing-conversation-context"

_KEY = ["provider", "model", "service", "prompt"]
_CELL = ["kind", *_KEY, "day", "band", "bin"]
_TOKENS = ("input", "read", "write", "write_1h")
_POLICIES = ("budget", "summary")
_SUMS = [
    "calls",
    *_TOKENS,
    *(f"{p}_{t}" for p in _POLICIES for t in _TOKENS),
    "trimmed_budget",
    "trimmed_summary",
    "summary_calls",
    "summary_call_input",
    "summary_call_read",
    "summary_call_output",
    "output",
    "conversations",
    "flagged",
    "slope_sum",
    "r2_sum",
    "turns_sum",
    "output_per_turn_sum",
    "hist_input",
    "hist_output",
]
_MAXES = ["input_max", "last_call"]
_MINS = ["first_call"]
# the numeric columns the heavy steps work on (``_k``: hashed prompt key, ``_c``: conversation)
_NARROW = [
    "_k",
    "_c",
    "start_time",
    "day",
    "band",
    "input",
    "read",
    "write",
    "write_1h",
    "output",
    "p0",
]
_CELL_KEY = ["_k", "day", "band"]
# what LT202's replay needs besides _NARROW
_REPLAY = ["prefix_hashes", "minimum", "explicit", "long_ok"]
# cells of conversations re-costed as if their history were cached with one of LT202's
# breakpoint layouts: trimming is priced on top of the cheapest (``_cheaper_baseline``)
ON_TOP = "conv_cached"
ON_TOP_KINDS = {"short": ON_TOP, "long": f"{ON_TOP}_1h", "mixed": f"{ON_TOP}_1h_5m"}
_CACHED_KINDS = list(ON_TOP_KINDS.values())
# what the evidence calls each layout (as LT202's)
_LAYOUT_TEXT = {
    ON_TOP: "a breakpoint on the last message (5m)",
    ON_TOP_KINDS["long"]: "a breakpoint on the last message (1h)",
    ON_TOP_KINDS["mixed"]: "a 1h breakpoint on the previous turn and a 5m one on the last message",
}


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT301's parameters (defaults in rules/LT301.yaml, overridable in llmtrace.toml)."""

    min_monthly_savings_usd: float = 5.0
    min_turns: int = 4
    min_growth_tokens_per_turn: float = 200.0
    min_r2: float = 0.6
    budget_tokens: int = 8000
    summarize_after_turns: int = 10
    summary_tokens: int = 500
    large_input_tokens: int = 16000
    small_output_tokens: int = 50
    min_calls: int = 50
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0

    def __post_init__(self) -> None:
        if self.summarize_after_turns < 1 or self.budget_tokens < 1 or self.min_turns < 2:
            raise ConfigError(
                f"{CODE}: summarize_after_turns and budget_tokens must be >= 1, min_turns >= 2"
            )


class ContextRule:
    """The LT301 rule object (module attribute ``RULE``)."""

    code: ClassVar[str] = CODE
    name: ClassVar[str] = NAME
    columns: ClassVar[tuple[str, ...]] = (
        "provider",
        "model",
        "service",
        "prompt",
        "conversation_id",
        "start_time",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "output_tokens",
        "prefix_tokens",
        "prefix_hashes",
    )
    # A conversation's turns must stay together; single calls merge under any split, so they
    # are spread by start time (one part for all of them would defeat the split).
    partition_key: ClassVar[pl.Expr] = (
        pl.when(pl.col("conversation_id").is_not_null())
        .then(pl.col("conversation_id").hash(37))
        .otherwise(pl.col("start_time").hash(41))
    )
    partition_family: ClassVar[str] = "session"  # conversations whole: shares LT503's spill

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Cells of conversation turns and single calls, plus single-call histograms.

        The heavy steps work on narrow numeric columns: the prompt key (provider, model,
        service, prompt) and the conversation id are hashed to UInt64, and the key's strings
        are joined back onto the small result. That, and sorting conversations once instead of
        ordered windows, is several times faster on millions of calls.
        """
        params = Params.from_mapping(ctx.params)
        base = _base(calls, ctx)
        keys = base.group_by("_k").agg(pl.col(*_KEY).first())
        narrow = base.select(*_NARROW)
        # what LT202's replay needs of each call's model, looked up once per prompt key
        facts = {
            "minimum": min_tokens_expr(normalised_model_expr()),
            "explicit": pl.col("provider").is_in(_EXPLICIT),
            # 1-hour layouts only where the provider offers 1-hour writes (provider level:
            # Bedrock's few 1-hour models stay on the 5-minute baseline, a conservative choice)
            "long_ok": provider_fact("long_ttl_s").is_not_null(),
        }
        conv = (
            base.filter(pl.col("_c").is_not_null())
            .select(*_NARROW, "prefix_hashes")
            .join(key_facts(keys, "_k", facts), on="_k", how="left")
            .select(*_NARROW, *_REPLAY)
        )
        single = narrow.filter(pl.col("_c").is_null())
        turns = replay_turns(conv.rename({"input": "L"})).rename({"L": "input"})
        parts = [
            _conversation_cells(conv.select(_NARROW), params),
            *(
                _conversation_cells(_cached_history(turns, layout), params).with_columns(
                    pl.lit(kind).alias("kind")
                )
                for layout, kind in ON_TOP_KINDS.items()
            ),
            _single_cells(single, params),
            _histograms(single),
        ]
        return (
            pl.concat(parts, how="diagonal_relaxed")
            .join(keys, on="_k", how="left")
            .select(*_CELL, *_SUMS, *_MAXES, *_MINS)
        )

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Concatenate partials and re-aggregate by cell (exact when split by conversation)."""
        return merge_cells(partials, _CELL, sums=_SUMS, maxes=_MAXES, mins=_MINS)

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


# -- aggregate ---------------------------------------------------------------------------------


def _base(calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
    """Current-window calls: clean token columns, system-prefix size ``p0`` and hashed keys."""
    start = pl.col("start_time")
    inp = pl.col("input_tokens")
    read = pl.col("cache_read_tokens").fill_null(0).clip(0, inp)
    write = pl.min_horizontal(pl.col("cache_write_tokens").fill_null(0), inp - read).clip(0)
    return (
        calls.select(*ContextRule.columns)
        .filter(
            (start >= ctx.since) & (start < ctx.until) & (inp > 0) & pl.col("model").is_not_null()
        )
        .with_columns(
            inp.alias("input"),
            read.alias("read"),
            write.alias("write"),
            pl.col("output_tokens").fill_null(0).alias("output"),
            pl.col("prefix_tokens").list.first().fill_null(0).clip(0, inp).alias("p0"),
            start.dt.date().alias("day"),
            inp.cast(pl.Float64).log(2).floor().cast(pl.Int32).alias("band"),
            pl.struct(*_KEY).hash(31).alias("_k"),
            pl.col("conversation_id").hash(37).alias("_c"),
        )
        .with_columns(
            pl.min_horizontal(pl.col("cache_write_1h_tokens").fill_null(0), "write")
            .clip(0)
            .alias("write_1h"),
            pl.when(pl.col("conversation_id").is_not_null()).then(pl.col("_c")).alias("_c"),
        )
    )


def _cached_history(turns: pl.LazyFrame, layout: str) -> pl.LazyFrame:
    """Replayed turns (``lt202_history.replay_turns``) of conversations that cache nothing,
    re-split as LT202's breakpoint ``layout`` would bill them; conversations that already cache,
    providers whose caching is not modelled, and 1-hour layouts where 1-hour writes are not
    offered keep their real split. ``evaluate`` prices trimming on top of the cheapest of these
    and the billed cells, so a trimming saving never includes what caching alone would save
    (LT202's)."""
    uncached = ((pl.col("read") + pl.col("write")) == 0).all().over("_c")
    replace = uncached & pl.col("minimum").is_not_null()
    if layout != "short":
        replace = replace & pl.col("long_ok")
    return turns.with_columns(
        *(
            pl.when(replace).then(pl.col(f"cf_{name}_{layout}")).otherwise(pl.col(name)).alias(name)
            for name in ("read", "write", "write_1h")
        )
    ).select(_NARROW)


def _conversation_turns(conv: pl.LazyFrame, params: Params) -> pl.LazyFrame:
    """Turns sorted by conversation and time, numbered, with their conversation's fit.

    One sort of the narrow columns, then positional expressions: cheaper than windows ordered
    by time. Per conversation, the least-squares line of input tokens on the turn number comes
    from the sums n, Σx, Σy, Σxy, Σx², Σy² (slope = tokens added per turn, r² = steadiness).
    """
    conv = conv.sort("_c", "start_time")
    first = (pl.col("_c") != pl.col("_c").shift(1)).fill_null(True)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    conv = conv.with_columns((row - pl.when(first).then(row).forward_fill()).alias("turn"))
    x = pl.col("turn").cast(pl.Float64)
    y = pl.col("input").cast(pl.Float64)
    conv = conv.with_columns(
        pl.len().over("_c").cast(pl.Float64).alias("_n"),
        x.sum().over("_c").alias("_sx"),
        y.sum().over("_c").alias("_sy"),
        (x * y).sum().over("_c").alias("_sxy"),
        (x * x).sum().over("_c").alias("_sxx"),
        (y * y).sum().over("_c").alias("_syy"),
        pl.col("output").cast(pl.Float64).sum().over("_c").alias("_sout"),
        ((pl.col("read") + pl.col("write")) > 0).any().over("_c").alias("cached"),
    )
    n, sx, sy = pl.col("_n"), pl.col("_sx"), pl.col("_sy")
    cov = n * pl.col("_sxy") - sx * sy
    var_x = n * pl.col("_sxx") - sx * sx
    var_y = n * pl.col("_syy") - sy * sy
    slope = pl.when(var_x > 0).then(cov / var_x).otherwise(0.0)
    r2 = pl.when((var_x > 0) & (var_y > 0)).then(cov * cov / (var_x * var_y)).otherwise(0.0)
    return (
        conv.with_columns(slope.alias("slope"), r2.alias("r2"))
        .with_columns(
            (
                (n >= params.min_turns)
                & (pl.col("slope") >= params.min_growth_tokens_per_turn)
                & (pl.col("r2") >= params.min_r2)
            ).alias("qualifies"),
            (pl.col("_sout") / n).alias("output_per_turn"),
            n.alias("turns"),
        )
        .drop("_n", "_sx", "_sy", "_sxy", "_sxx", "_syy", "_sout")
    )


def _conversation_cells(conv: pl.LazyFrame, params: Params) -> pl.LazyFrame:
    """Turns re-costed under both policies, summed per cell; qualifying conversations only."""
    conv = _summary_policy(
        _budget_policy(_conversation_turns(conv, params), params, conversation=True), params
    )
    q = pl.col("qualifies").cast(pl.Int64)
    last = (pl.col("turn") == pl.col("turns") - 1).cast(pl.Int64)
    flagged_last = (last * q).cast(pl.Float64)
    # per-turn values first, plain sums in the aggregation: Polars' fast path for group sums
    values = {
        "calls": q,
        **{c: pl.col(c) * q for c in _TOKENS},
        **{f"{p}_{t}": pl.col(f"{p}_{t}") * q for p in _POLICIES for t in _TOKENS},
        "trimmed_budget": (pl.col("input") - pl.col("budget_input")) * q,
        "trimmed_summary": (pl.col("input") - pl.col("summary_input")) * q,
        "summary_calls": pl.col("summary_call") * q,
        "summary_call_input": pl.col("summary_call_input") * q,
        "summary_call_read": pl.col("summary_call_read") * q,
        "summary_call_output": pl.col("summary_call") * q * params.summary_tokens,
        "output": pl.col("output") * q,
        "conversations": last,
        "flagged": last * q,
        "slope_sum": pl.col("slope") * flagged_last,
        "r2_sum": pl.col("r2") * flagged_last,
        "turns_sum": pl.col("turns") * flagged_last,
        "output_per_turn_sum": pl.col("output_per_turn") * flagged_last,
        "input_max": pl.col("input") * q,
    }
    flagged_time = pl.when(pl.col("qualifies")).then(pl.col("start_time"))
    return (
        conv.select(
            *_CELL_KEY,
            *(expr.alias(name) for name, expr in values.items()),
            flagged_time.alias("_t"),
        )
        .group_by(*_CELL_KEY)
        .agg(
            *(pl.col(name).sum() for name in values if name != "input_max"),
            pl.col("input_max").max(),
            pl.col("_t").min().alias("first_call"),
            pl.col("_t").max().alias("last_call"),
        )
        .with_columns(pl.lit("conv").alias("kind"), pl.lit(None, dtype=pl.Int32).alias("bin"))
    )


def _budget_policy(lf: pl.LazyFrame, params: Params, *, conversation: bool) -> pl.LazyFrame:
    """Tokens of each call trimmed to ``budget_tokens`` (never below the system prefix).

    In a conversation the trimmed window slides each turn, so a conversation that uses caching
    keeps only its system-prefix reads and writes the rest again. A single call is trimmed at
    its tail: uncached tokens go first, then writes, then reads.
    """
    inp, read, write = pl.col("input"), pl.col("read"), pl.col("write")
    keep = pl.max_horizontal(
        pl.min_horizontal(inp, params.budget_tokens), pl.min_horizontal(inp, "p0")
    )
    lf = lf.with_columns(keep.alias("budget_input"))
    keep, trimmed = pl.col("budget_input"), inp - pl.col("budget_input")
    if conversation:
        new_read = pl.when(trimmed > 0).then(pl.min_horizontal(read, "p0", keep)).otherwise(read)
        lf = lf.with_columns(new_read.alias("budget_read"))
        rewrite = (trimmed > 0) & pl.col("cached")
        new_write = pl.when(rewrite).then(keep - pl.col("budget_read")).otherwise(write)
    else:
        uncached = inp - read - write
        cut_write = (trimmed - uncached).clip(0, write)
        cut_read = (trimmed - uncached - cut_write).clip(0, read)
        lf = lf.with_columns((read - cut_read).alias("budget_read"))
        new_write = write - cut_write
    new_write = pl.min_horizontal(new_write, keep - pl.col("budget_read")).clip(0)
    return lf.with_columns(new_write.alias("budget_write")).with_columns(
        _one_hour_share("budget_write").alias("budget_write_1h")
    )


def _one_hour_share(new_write: str) -> pl.Expr:
    """New writes keep the call's share of 1-hour writes (an app uses one TTL per breakpoint)."""
    share = pl.when(pl.col("write") > 0).then(pl.col("write_1h") / pl.col("write")).otherwise(0.0)
    return (pl.col(new_write) * share).round(0).cast(pl.Int64)


def _summary_policy(lf: pl.LazyFrame, params: Params) -> pl.LazyFrame:
    """Tokens of each turn if the history were summarised every K turns.

    At turn t >= K the history up to the last compaction turn c = K*floor(t/K) (the input of
    turn c-1) is replaced by ``summary_tokens``. The compaction turn itself re-reads only the
    system prefix (the rest of its prompt is new and is written if the conversation caches);
    later turns read the compacted prefix, so what they lose are cache reads first. Each
    compaction costs one summarisation call over the previous turn's (compacted) history plus its
    answer, with ``summary_tokens`` of output (reading that history from the cache when the
    conversation caches).
    """
    k, s = params.summarize_after_turns, params.summary_tokens
    turn, inp, read, write = pl.col("turn"), pl.col("input"), pl.col("read"), pl.col("write")
    # rows are sorted by conversation and time (``_conversation_turns``): for turns >= K the
    # latest "turn K*j - 1" row before a row, and the row before a compaction turn, are always
    # in the same conversation, so plain shifts are exact there (other turns do not use them)
    anchor = pl.when(turn % k == k - 1).then(inp).shift(1).forward_fill()
    floor = pl.min_horizontal(inp, pl.col("p0") + s)
    trimmed = (
        pl.when(turn >= k)
        .then(pl.min_horizontal(anchor - pl.col("p0") - s, inp - floor))
        .otherwise(0)
        .fill_null(0)
        .clip(lower_bound=0)
    )
    lf = lf.with_columns(trimmed.alias("_trim")).with_columns(
        (inp - pl.col("_trim")).alias("summary_input"),
        ((turn >= k) & (turn % k == 0) & (pl.col("_trim") > 0)).alias("_compact"),
    )
    keep, trim, compact = pl.col("summary_input"), pl.col("_trim"), pl.col("_compact")
    from_reads = pl.min_horizontal(trim, (read - pl.col("p0")).clip(lower_bound=0))
    new_read = (
        pl.when(compact)
        .then(pl.min_horizontal(read, "p0", keep))
        .otherwise(pl.min_horizontal(read - from_reads, keep))
    )
    lf = lf.with_columns(new_read.alias("summary_read"))
    new_write = (
        pl.when(compact & pl.col("cached"))
        .then(keep - pl.col("summary_read"))
        .when(compact)
        .then(write)
        .otherwise(write - pl.min_horizontal(trim - from_reads, write))
    )
    new_write = pl.min_horizontal(new_write, keep - pl.col("summary_read")).clip(0)
    previous_prompt = pl.col("summary_input").shift(1)
    summary_call_input = pl.when(compact).then(previous_prompt + pl.col("output").shift(1))
    # a caching conversation's summary call reads the previous turn's (cached) prompt
    summary_call_read = pl.when(compact & pl.col("cached")).then(previous_prompt)
    return (
        lf.with_columns(new_write.alias("summary_write"))
        .with_columns(
            _one_hour_share("summary_write").alias("summary_write_1h"),
            compact.cast(pl.Int64).alias("summary_call"),
        )
        .with_columns(
            summary_call_input.fill_null(0).alias("summary_call_input"),
            summary_call_read.fill_null(0).alias("summary_call_read"),
        )
    )


def _single_cells(single: pl.LazyFrame, params: Params) -> pl.LazyFrame:
    """Single calls as they are and trimmed to the budget, summed per cell."""
    single = _budget_policy(single, params, conversation=False)
    zero = pl.lit(0, dtype=pl.Int64)
    return (
        single.group_by(*_CELL_KEY)
        .agg(
            pl.len().cast(pl.Int64).alias("calls"),
            *(pl.col(c).sum() for c in _TOKENS),
            *(pl.col(f"budget_{t}").sum() for t in _TOKENS),
            *(pl.col(c).sum().alias(f"summary_{c}") for c in _TOKENS),  # no summary policy
            (pl.col("input") - pl.col("budget_input")).sum().alias("trimmed_budget"),
            zero.alias("trimmed_summary"),
            zero.alias("summary_calls"),
            zero.alias("summary_call_input"),
            zero.alias("summary_call_read"),
            zero.alias("summary_call_output"),
            pl.col("output").sum(),
            pl.col("input").max().alias("input_max"),
            pl.col("start_time").min().alias("first_call"),
            pl.col("start_time").max().alias("last_call"),
        )
        .with_columns(pl.lit("single").alias("kind"), pl.lit(None, dtype=pl.Int32).alias("bin"))
    )


def _histograms(single: pl.LazyFrame) -> pl.LazyFrame:
    """Log-spaced input and output histograms of single calls per prompt (merge by addition)."""
    common = {"day": pl.lit(None, dtype=pl.Date), "band": pl.lit(None, dtype=pl.Int32)}
    frames = [
        single.group_by("_k", stats.reasoning_bin(pl.col(column)).alias("bin"))
        .agg(pl.len().cast(pl.Int64).alias(f"hist_{column}"))
        .with_columns(pl.lit(f"hist_{column}").alias("kind"), **common)
        for column in ("input", "output")
    ]
    return pl.concat(frames, how="diagonal_relaxed")


# -- decide ------------------------------------------------------------------------------------


def evaluate(aggregates: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """One row per (kind, prompt key) with evidence, policy costs and whether it may be flagged.

    Public so tests can see why a prompt was *not* flagged (flat, cached, small).
    """
    params = Params.from_mapping(ctx.params)
    if aggregates.height == 0:
        return pl.DataFrame()
    cells = aggregates.filter(pl.col("kind").is_in(["conv", *_CACHED_KINDS, "single"]))
    keys = cells.group_by("kind", *_KEY).agg(
        *(pl.col(c).sum() for c in _SUMS if not c.startswith("hist_")),
        pl.col("input_max", "last_call").max(),
        pl.col("first_call").min(),
    )
    quantiles = _quantiles(aggregates)
    keys = keys.join(quantiles, on=_KEY, how="left", nulls_equal=True)
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
    table = _cheaper_baseline(keys.join(costs, on=["kind", *_KEY], how="left", nulls_equal=True))
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
        .select(*_KEY, pl.col("cost_actual").alias("_billed"))
        .unique(subset=_KEY, keep="first")
    )
    # "cached" wins only when clearly cheaper: where no turn was re-split both rows cost the
    # same up to float rounding, and a tie must not flip between runs
    cheaper = pl.col("cost_actual") < pl.col("_billed") * (1 - 1e-9)
    conv = (
        table.filter(is_conv)
        .join(billed, on=_KEY, how="left", nulls_equal=True)
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
        .sort([*_KEY, "_cached_cost", "_order"], nulls_last=True)
        .unique(subset=_KEY, keep="first", maintain_order=True)
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
    schema = {**{k: pl.String for k in _KEY}, "p50_input": pl.Float64, "p90_output": pl.Float64}

    def quantile(kind: str, column: str, q: float, name: str) -> pl.DataFrame:
        hist = aggregates.filter(pl.col("kind") == kind).select(*_KEY, "bin", column)
        if hist.height == 0:
            return pl.DataFrame(schema={**{k: pl.String for k in _KEY}, name: pl.Float64})
        hist = hist.group_by(*_KEY, "bin").agg(pl.col(column).sum()).sort(*_KEY, "bin")
        running = pl.col(column).cum_sum().over(*_KEY)
        total = pl.col(column).sum().over(*_KEY)
        return (
            hist.filter(running >= q * total)
            .group_by(*_KEY)
            .agg(pl.col("bin").min())
            .select(*_KEY, stats.bin_midpoint(pl.col("bin")).cast(pl.Float64).alias(name))
        )

    p50 = quantile("hist_input", "hist_input", 0.5, "p50_input")
    p90 = quantile("hist_output", "hist_output", 0.9, "p90_output")
    joined = p50.join(p90, on=_KEY, how="full", coalesce=True, nulls_equal=True)
    return joined.select(schema.keys()).cast(schema)  # type: ignore[arg-type]


def _price(cells: pl.DataFrame, eligible: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """Cost of the eligible keys' calls as they are, under each policy, and of summary calls."""
    names = ("actual", "budget", "summary", "summary_calls")
    schema = {"kind": pl.String, **{k: pl.String for k in _KEY}}
    schema |= {f"cost_{n}": pl.Float64 for n in names}
    if eligible.height == 0:
        return pl.DataFrame(schema=schema)
    chosen = (
        cells.filter(pl.col("calls") > 0)
        .join(eligible.select("kind", *_KEY), on=["kind", *_KEY], how="semi", nulls_equal=True)
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
        priced.group_by("kind", *_KEY)
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
