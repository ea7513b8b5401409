"""LT201 cacheable-prefix-not-cached: a long shared prompt prefix is resent without caching.

How it works (rules/LT201.yaml documents the rule for users):

1. **Prefix groups.** Every call carries ``prefix_hashes``: the hash of each message-boundary
   prefix (first: system instructions + tools, then each message appended). A call joins the
   deepest of its first ``max_prefix_depth`` prefixes (default 64: in practice any depth) that
   is shared by at least ``min_calls`` calls and by at least ``deep_prefix_share`` of the calls
   sharing its system prefix (so a common few-shot block counts, one conversation's own history
   does not: that is LT202's). Found depth by depth along each system prefix's "spine" of
   widely shared prefixes, in O(N x (D_s + 1)) time for N calls and a spine D_s messages deep
   (``_assign_groups``). Groups are keyed by (provider, model, depth, prefix hash).
2. **Cache replay.** Within a group, calls are ordered by time and the gap to the previous call
   is compared with the cache lifetime: within it the call would read the prefix, else it
   writes it. Both Anthropic lifetimes (5 minutes and 1 hour) refresh on every hit, and so does
   OpenAI's in-memory cache (5-10 min idle; the lower bound is used), so "the entry is alive"
   is exactly "the previous call of the group came within the TTL". OpenAI caches in 128-token
   steps, so the cacheable prefix is rounded down. Facts per provider/model: ``caching_model``.
3. **Counterfactual pricing.** Per cell (group, prompt, service, day, input-size band) the
   aggregate sums the tokens as they are and as they would be under each replayed lifetime
   (reads, writes, 1-hour writes). ``decide`` prices both with the run's own pricer
   (``ctx.price``), so the write premium (1.25x, 2x or none), the read discount (0.5x ... 0.1x),
   tiers and dated prices all come from the price data, never from fixed multipliers.

Mergeability: the replay needs each prefix's full call sequence, and the group a call joins
depends on counts over all calls with the same system prefix. Partials are therefore exact only
when partitions are split by prefix key, i.e. by ``(provider, model, prefix_hashes[0])``; ``merge``
concatenates partials and re-aggregates by cell. Partitions split by time instead (one per day)
give one spurious write per prefix and partition boundary and count group sizes per partition:
a small, conservative error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from llmtrace.config import ConfigError
from llmtrace.rules import runrate
from llmtrace.rules.base import AuditContext, Finding, RuleParams, merge_cells, worth_reporting
from llmtrace.rules.caching_findings import (
    judged_coverage,
    key_finding,
    rounded,
    severity_for,
    sum_if_all_priced,
    with_size,
)
from llmtrace.rules.caching_model import (
    PROVIDERS,
    price_rates,
    provider_fact,
    regimes_frame,
    split_cost,
)
from llmtrace.rules.history_replay import FIRST_PREFIX_HASH, FIRST_PREFIX_TOKENS, with_derived
from llmtrace.rules.lt201_replay import (
    GAP_COLUMNS,
    GAP_LABELS,
    SCENARIOS,
    per_call_sums,
    per_call_values,
    replay,
)
from llmtrace.rules.partition import ColumnsNotSpilled, present_columns

CODE = "LT201"
NAME = "cacheable-prefix-not-cached"

_GROUP = ["provider", "model", "depth", "prefix_hash"]
_CELL = [*_GROUP, "service", "prompt", "day", "band"]
_SUMS = [
    "calls",
    "input",
    "read",
    "write",
    "write_1h",
    "prefix",
    "read_in_prefix",
    *(f"{name}_{s}" for s in SCENARIOS for name in ("hits", "read", "write", "write_1h")),
    *GAP_COLUMNS,
]
_MAXES = ["prefix_tokens_max", "last_call"]
_NAMES = ["provider", "model", "service", "prompt"]
_TOKEN_COLUMNS = [
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
]
_MINS = ["first_call"]
_BUCKETS = 63  # hash bits per system prefix of _spine's first count
# Prefix depths read from narrow columns the engine derives where it reads the calls
# (``derived_columns``): ``_h0`` .. ``_h2`` (``prefix_hashes[d]``) and ``_p0``, ``_p1``
# (``prefix_tokens[d]``). A spine of depth < NARROW_DEPTH needs no more: its search stops at
# the first depth without winners (at most NARROW_DEPTH, whose hash is ``_h2``), and a call's
# depth, where its prefix length is read, is at most the spine's. A spine that reaches
# NARROW_DEPTH falls back to the lists (read lazily: only then are they decoded). Why: the
# lists are decoded whole for every call of a part (~0.19 of LT201's ~1.4 CPU-s a part of
# the 10M window's grid) and copied by every filter up to the spine.
NARROW_DEPTH = 2
_NARROW_HASHES = [f"_h{d}" for d in range(NARROW_DEPTH + 1)]
_NARROW_TOKENS = [f"_p{d}" for d in range(NARROW_DEPTH)]
DERIVED: dict[str, pl.Expr] = {
    **FIRST_PREFIX_HASH,
    **{
        f"_h{d}": pl.col("prefix_hashes").list.get(d, null_on_oob=True)
        for d in range(1, NARROW_DEPTH + 1)
    },
    **FIRST_PREFIX_TOKENS,
    **{
        f"_p{d}": pl.col("prefix_tokens").list.get(d, null_on_oob=True)
        for d in range(1, NARROW_DEPTH)
    },
}


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT201's parameters (defaults in rules/LT201.yaml, overridable in llmtrace.toml)."""

    min_monthly_savings_usd: float = 5.0
    max_cached_share: float = 0.5
    min_calls: int = 20
    max_prefix_depth: int = 64
    deep_prefix_share: float = 0.5
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0

    def __post_init__(self) -> None:
        if self.max_prefix_depth < 1 or self.min_calls < 2:
            raise ConfigError(f"{CODE}: max_prefix_depth must be >= 1 and min_calls >= 2")


class CachingRule:
    """The LT201 rule object (module attribute ``RULE``)."""

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
        "prefix_hashes",
        "prefix_tokens",
        *_NARROW_HASHES,
        *_NARROW_TOKENS,
    )
    # the first prefix depths as plain columns (``NARROW_DEPTH``); the lists stay among the
    # columns for a deeper spine, and a lazy read decodes them only then
    derived_columns: ClassVar[dict[str, pl.Expr]] = DERIVED
    # ...so a spill need not write the lists for LT201 (``partition.ColumnsNotSpilled``)
    rare_columns: ClassVar[tuple[str, ...]] = ("prefix_hashes", "prefix_tokens")
    # Groups never span system prefixes (a group's key is its system prefix's hash with the
    # model), so parts split by the system-prefix hash keep every group whole: exact partials.
    partition_key: ClassVar[pl.Expr] = pl.col("prefix_hashes").list.first()
    # ...and so do LT203's lineages (model, system prefix): one spill serves both
    partition_family: ClassVar[str] = "lineage"
    # names only tested (provider), hashed and named: a lone lineage spill writes them as
    # categoricals (``base.Rule``), and the names table turns them back into strings
    categorical_columns: ClassVar[tuple[str, ...]] = tuple(_NAMES)

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Per cell: token sums as they are and as each replayed cache lifetime would make them.

        The heavy steps see only numbers: provider/model and service/prompt are hashed to
        UInt64 keys (``_m``, ``_s``) and their strings are joined back onto the small result,
        which keeps memory and time down on millions of calls.
        """
        params = Params.from_mapping(ctx.params)
        eligible = _eligible_calls(with_derived(calls, DERIVED), ctx)
        names_plan = (
            eligible.select(*_NAMES, *_name_keys())
            .group_by("_m", "_s")
            .agg(pl.col(*_NAMES).first().cast(pl.String))  # a categorical spill's too
        )
        # one read of the calls for both (a part's file, or the scan): the numbers go on to the
        # replay, the strings only into the small names table
        # the calls of widely used system prefixes only, filtered in the same collect: a
        # filtered copy of the collected calls (prefix lists included) doubled LT201's peak
        numeric, names = pl.collect_all(
            [_on_shared_prefixes(_numeric(eligible, params, narrow=True), params), names_plan]
        )
        grouped = _assign_narrow(numeric, params)
        if grouped is None:  # a spine reaches NARROW_DEPTH: the prefix lists after all
            if not set(CachingRule.rare_columns) <= set(calls.collect_schema().names()):
                raise ColumnsNotSpilled(f"{CODE}: a prefix spine reaches depth {NARROW_DEPTH}")
            del numeric
            numeric = _on_shared_prefixes(_numeric(eligible, params), params).collect()
            grouped = _assign_groups(numeric, params)
        # per-call values are computed once, then summed per cell
        sums = per_call_sums()
        cells = (
            per_call_values(replay(grouped))
            .group_by("_g", "_m", "_s", "day", "band")
            .agg(
                pl.col("depth").first(),
                pl.col("prefix_hash").first(),
                pl.col(list(sums)).sum(),
                pl.col("prefix_raw").max().alias("prefix_tokens_max"),
                pl.col("start_time").min().alias("first_call"),
                pl.col("start_time").max().alias("last_call"),
            )
        )
        return cells.join(names.lazy(), on=["_m", "_s"], how="left").select(
            *_CELL, *_SUMS, *_MAXES, *_MINS
        )

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Concatenate partials and re-aggregate by cell (exact when split by prefix key)."""
        return merge_cells(partials, _CELL, sums=_SUMS, maxes=_MAXES, mins=_MINS)

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """Findings for prefix groups whose simulated caching saves enough per month."""
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
        """Keys on a provider whose caching is modelled: judged when their calls belong to a
        prefix shared by ``min_calls`` calls; else "no fingerprints" or "too few calls"."""
        seen = aggregates if aggregates.height else None
        applies = pl.col("provider").is_in(list(PROVIDERS)) & (pl.col("with_input") > 0)
        return judged_coverage(census, seen, applies)


RULE = CachingRule()


# -- aggregate ---------------------------------------------------------------------------------


def _eligible_calls(calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
    """Calls of the current window on a provider whose caching is modelled."""
    start = pl.col("start_time")
    # lazy: unused columns are not read; a spilled part lacks the rare columns
    return calls.select(present_columns(calls, CachingRule.columns)).filter(
        (start >= ctx.since)
        & (start < ctx.until)
        & pl.col("provider").is_in(list(PROVIDERS))
        & pl.col("model").is_not_null()
        & (pl.col("input_tokens") > 0)
    )


def _name_keys() -> list[pl.Expr]:
    """UInt64 keys of (provider, model) and (service, prompt): xors of the columns' seeded
    hashes, cheaper than hashing a struct of the strings (internal ids; the strings are joined
    back onto the cells)."""
    return [
        (pl.col("provider").hash(17) ^ pl.col("model").hash(18)).alias("_m"),
        (pl.col("service").hash(29) ^ pl.col("prompt").hash(30)).alias("_s"),
    ]


def _numeric(calls: pl.LazyFrame, params: Params, *, narrow: bool = False) -> pl.LazyFrame:
    """The numbers the replay needs: keys, times, tokens, provider facts, the prefix lists
    (``narrow``: their first depths' columns instead, ``NARROW_DEPTH``)."""
    if narrow:
        prefixes = [pl.col(_NARROW_HASHES), pl.col(_NARROW_TOKENS)]
    else:
        prefixes = [
            # the lists as stored (no copy): only depths below ``max_prefix_depth`` are ever
            # read (``_spine`` stops there), and a prefix length is narrowed once it is picked
            pl.col("prefix_hashes").alias("_hs"),
            pl.col("prefix_tokens").alias("_ps"),
            pl.col("_h0"),
        ]
    return calls.select(
        *_name_keys(),
        "start_time",
        # Int32 per call (token counts of one call fit) halves the memory of the widest
        # steps; every sum widens to Int64 first (Polars wraps Int32 sums silently)
        *(pl.col(c).cast(pl.Int32, strict=False) for c in _TOKEN_COLUMNS),
        provider_fact("short_ttl_s").cast(pl.Float32).alias("ttl_s"),
        provider_fact("step_tokens").cast(pl.Int32).alias("step"),
        *prefixes,
    )


def _on_shared_prefixes(calls: pl.LazyFrame, params: Params) -> pl.LazyFrame:
    """The calls whose system prefix (``_k0``: its hash with the model's) is used by at least
    ``min_calls`` calls, with that count (``_n0``): the only calls a prefix group can hold."""
    return (
        calls.with_columns((pl.col("_h0") ^ pl.col("_m")).alias("_k0"))
        .filter(pl.col("_h0").is_not_null())
        .with_columns(pl.len().over("_k0").alias("_n0"))
        .filter(pl.col("_n0") >= params.min_calls)
    )


def _hash_at(depth: int, *, narrow: bool) -> pl.Expr:
    """Each call's prefix hash at ``depth``: from the list, or its narrow column."""
    if narrow:
        return pl.col(f"_h{depth}")
    return pl.col("_hs").list.get(depth, null_on_oob=True)


def _spine(calls: pl.DataFrame, params: Params, *, narrow: bool = False) -> pl.DataFrame | None:
    """Per system prefix (``_k0``): the chain of deeper prefixes shared widely enough.

    A prefix at depth d is shared widely when at least ``max(min_calls, deep_prefix_share x
    calls of its system prefix)`` calls have it. Prefixes nest, so a widely shared prefix at depth
    d+1 extends the one at depth d, and with ``deep_prefix_share >= 0.5`` at most one prefix per
    depth can qualify: the qualifying prefixes form one chain (the spine), found depth by depth
    among the calls still on it (the most common hash at the next depth, kept if it qualifies).
    The search stops at the first depth where no system prefix extends its spine.
    ``narrow``: from the columns ``_h1`` .. ``_h2``; None if the search goes deeper.
    """
    floor = pl.max_horizontal(
        pl.lit(float(params.min_calls)), pl.col("_n0").cast(pl.Float64) * params.deep_prefix_share
    )
    on = calls.select("_k0", "_n0", *(_NARROW_HASHES[1:] if narrow else ["_hs"]))
    rows: list[pl.DataFrame] = []
    for depth in range(1, params.max_prefix_depth):
        if narrow and depth > NARROW_DEPTH:
            return None
        head = _hash_at(depth, narrow=narrow)
        level = (
            on.lazy()
            .select("_k0", "_n0", head.alias("_h"))
            .filter(pl.col("_h").is_not_null())
            .with_columns((pl.col("_k0") ^ (pl.col("_h") & _BUCKETS)).alias("_b"))
        )
        # most (system prefix, hash) pairs are one conversation's own history: counted in a
        # few buckets per system prefix first, only the calls of buckets holding `floor` calls
        # (where any prefix shared widely enough must be) are counted exactly
        wide = (
            level.group_by("_b")  # min: two system prefixes sharing a bucket (xor) keep both
            .agg(pl.len().alias("_n"), pl.col("_n0").min())
            .filter(pl.col("_n").cast(pl.Float64) >= floor)
        )
        counts = (
            level.join(wide.select("_b"), on="_b", how="semi")
            .group_by("_k0", "_h")
            .agg(pl.len().alias("_n"), pl.col("_n0").first())
            .collect()
        )
        winners = (
            counts.filter(pl.col("_n").cast(pl.Float64) >= floor)
            .sort(["_k0", "_n", "_h"], descending=[False, True, False])
            .unique(subset="_k0", keep="first", maintain_order=True)
            .select("_k0", "_h")
        )
        if winners.height == 0:
            break
        rows.append(winners.with_columns(pl.lit(depth, dtype=pl.Int32).alias("depth")))
        winner = pl.col("_k0").replace_strict(
            winners["_k0"], winners["_h"], default=None, return_dtype=pl.UInt64
        )
        on = on.filter((head == winner).fill_null(False))  # a lookup: no join of the lists
    schema = {"_k0": pl.UInt64, "_h": pl.UInt64, "depth": pl.Int32}
    return pl.concat(rows) if rows else pl.DataFrame(schema=schema)


def _assign_groups(calls: pl.DataFrame, params: Params) -> pl.LazyFrame:
    """Give each call the deepest prefix shared widely enough (see the module docstring).

    Time and memory: one pass over the calls with a system prefix used by ``min_calls`` calls,
    then per depth d one group-by over the calls still on their system prefix's spine at d, so
    O(N x (D_s + 1)) for N calls and a spine D_s messages deep (D_s <= ``max_prefix_depth``;
    usually 0-2: few-shot blocks), plus a sort per depth of the distinct (system prefix, hash)
    pairs found there. Each call's depth is then the length of the common start of its prefix
    list and its spine: D_s vectorised comparisons. Memory is the calls' prefix lists (at most
    ``max_prefix_depth`` hashes each) for one partition. Missing a deeper prefix (only possible
    with ``deep_prefix_share`` < 0.5, where two branches may qualify at one depth and the more
    common one is kept) only makes the rule report a shallower prefix, never a wrong finding.
    """
    if "_n0" not in calls.columns:  # not yet narrowed by ``_on_shared_prefixes``
        calls = _on_shared_prefixes(calls.lazy(), params).collect()
    spine = _spine(calls, params)
    assert spine is not None
    return _grouped(calls, spine, narrow=False)


def _assign_narrow(calls: pl.DataFrame, params: Params) -> pl.LazyFrame | None:
    """``_assign_groups`` from the narrow columns (``NARROW_DEPTH``), or None when a spine
    reaches that depth (the lists are needed)."""
    spine = _spine(calls, params, narrow=True)
    return None if spine is None else _grouped(calls, spine, narrow=True)


def _grouped(calls: pl.DataFrame, spine: pl.DataFrame, *, narrow: bool) -> pl.LazyFrame:
    """Each call's depth on its spine, the prefix hash and length there, and its group."""
    depths = sorted(set(spine["depth"].to_list())) if spine.height else []
    depth = pl.lit(0, dtype=pl.Int32)
    if depths:
        running = pl.lit(True)
        for d in depths:
            # the spine's prefix at depth d of each call's system prefix: a lookup, not a join
            # (a join would copy every call's prefix lists)
            at = spine.filter(pl.col("depth") == d)
            on_spine = pl.col("_k0").replace_strict(
                at["_k0"], at["_h"], default=None, return_dtype=pl.UInt64
            )
            running = running & (_hash_at(d, narrow=narrow) == on_spine).fill_null(False)
            depth = depth + running.cast(pl.Int32)
    kept = ["_m", "_s", "start_time", "ttl_s", "step", *_TOKEN_COLUMNS]
    if narrow:  # depth < NARROW_DEPTH: a choice among the columns
        at = pl.col("depth")
        prefix_hash = pl.when(at == 0).then(pl.col("_h0"))
        prefix_raw = pl.when(at == 0).then(pl.col("_p0"))
        for d in range(1, NARROW_DEPTH):
            prefix_hash = prefix_hash.when(at == d).then(pl.col(f"_h{d}"))
            prefix_raw = prefix_raw.when(at == d).then(pl.col(f"_p{d}"))
    else:
        prefix_hash = pl.col("_hs").list.get(pl.col("depth"))
        prefix_raw = pl.col("_ps").list.get(pl.col("depth"), null_on_oob=True)
    return (
        calls.lazy()
        .with_columns(depth.alias("depth"))
        .with_columns(
            prefix_hash.alias("prefix_hash"),
            prefix_raw.cast(pl.Int32, strict=False)  # a length beyond Int32: unknown, as 0
            .fill_null(0)
            .alias("prefix_raw"),
        )
        .with_columns((pl.col("prefix_hash") ^ pl.col("_m")).alias("_g"))
        .select(*kept, "depth", "prefix_hash", "prefix_raw", "_g")
    )


# -- decide ------------------------------------------------------------------------------------


def evaluate(aggregates: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """One row per prefix group with its evidence, savings and whether it may be flagged.

    Public so tests and ``--explain``-style tooling can see why a group was *not* flagged
    (too rare to pay, already cached, below the minimum length).
    """
    params = Params.from_mapping(ctx.params)
    if aggregates.height == 0:
        return pl.DataFrame()
    groups = _groups(aggregates)
    groups = groups.join(regimes_frame(groups), on=["provider", "model"], how="left")
    groups = groups.with_columns(
        (pl.col("prefix") / pl.col("calls")).round(0).cast(pl.Int64).alias("prefix_tokens"),
        (pl.col("read_in_prefix") / pl.col("prefix")).fill_nan(0.0).alias("cached_share"),
        pl.col("long_ttl_s").is_not_null().alias("long_offered"),
    ).with_columns(
        (
            pl.col("cache_mode").is_not_null()
            & (pl.col("calls") >= params.min_calls)
            & (pl.col("prefix_tokens") >= pl.col("min_cacheable_tokens"))
            & (pl.col("cached_share") < params.max_cached_share)
        ).alias("eligible")
    )
    groups = groups.with_row_index("gid")
    costs = _price_groups(aggregates, groups.filter(pl.col("eligible")), ctx)
    table = groups.join(costs, on="gid", how="left").with_columns(
        (pl.col("cost_actual") - pl.col("cost_short")).alias("saving_short"),
        pl.when(pl.col("long_offered"))
        .then(pl.col("cost_actual") - pl.col("cost_long"))
        .alias("saving_long"),
    )
    best_long = pl.col("saving_long").fill_null(float("-inf")) > pl.col("saving_short")
    return (
        table.with_columns(
            pl.when(best_long).then(pl.lit("1h")).otherwise(pl.lit("short")).alias("best"),
            pl.max_horizontal("saving_short", "saving_long").alias("saving"),
        )
        .with_columns(runrate.basis_days("first_call", "last_call", ctx).alias("basis_days"))
        .with_columns(
            runrate.monthly("saving", "basis_days").alias("monthly_savings_usd"),
            (pl.col("cost_actual").is_not_null() & pl.col("cost_short").is_not_null()).alias(
                "priced"
            ),
        )
        .with_columns((pl.col("eligible") & pl.col("priced")).alias("eligible"))
    )


def _groups(aggregates: pl.DataFrame) -> pl.DataFrame:
    """Cells summed per prefix group, with the group's dominant prompt and service."""
    groups = aggregates.group_by(*_GROUP).agg(
        *(pl.col(c).sum() for c in _SUMS),
        *(pl.col(c).max() for c in _MAXES),
        *(pl.col(c).min() for c in _MINS),
    )
    top = (
        aggregates.group_by([*_GROUP, "prompt", "service"])
        .agg(pl.col("calls").sum().alias("_n"))
        .sort(["_n", "prompt", "service"], descending=[True, False, False], nulls_last=True)
        .group_by(*_GROUP, maintain_order=True)
        .agg(
            pl.col("prompt").first(),
            pl.col("service").first(),
            pl.col("prompt").n_unique().alias("prompts"),
        )
    )
    return groups.join(top, on=_GROUP, how="left", nulls_equal=True)


def _price_groups(
    aggregates: pl.DataFrame, candidates: pl.DataFrame, ctx: AuditContext
) -> pl.DataFrame:
    """Cost of each candidate group as it is and under each lifetime, plus its rate multipliers.

    Rates come from ``price_rates`` (the run's pricer on probe records) per cell's provider,
    model, day and typical input size, so tiers and dated prices apply as to the real calls.
    The multipliers reported with the break-even rate are the rates at the prefix's own size on
    the group's last day.
    """
    scenarios = {
        "actual": ("read", "write", "write_1h"),
        "short": ("read_short", "write_short", "write_1h_short"),
        "long": ("read_long", "write_long", "write_1h_long"),
    }
    schema = {"gid": pl.UInt32, **{f"cost_{s}": pl.Float64 for s in scenarios}}
    schema |= {name: pl.Float64 for name in ("rate_input", "rate_read", "rate_write")}
    schema |= {"rate_write_1h": pl.Float64}
    if candidates.height == 0:
        return pl.DataFrame(schema=schema)
    cells = aggregates.join(
        candidates.select(*_GROUP, "gid"), on=_GROUP, how="inner", nulls_equal=True
    )
    cells = price_rates(with_size(cells), ctx.price)
    costs = (
        cells.with_columns(
            split_cost(read=r, write=w, write_1h=w1).alias(f"_{name}")
            for name, (r, w, w1) in scenarios.items()
        )
        .group_by("gid")
        .agg(
            *sum_if_all_priced(
                [f"_{n}" for n in scenarios], {f"_{n}": f"cost_{n}" for n in scenarios}
            )
        )
    )
    probes = price_rates(
        candidates.select(
            "gid",
            "provider",
            "model",
            pl.col("last_call").dt.date().alias("day"),
            pl.col("prefix_tokens").alias("size"),
        ),
        ctx.price,
    ).select("gid", "rate_input", "rate_read", "rate_write", "rate_write_1h")
    return costs.join(probes, on="gid", how="left").select(schema.keys()).cast(schema)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def break_even_hit_rate(write: float | None, read: float | None) -> float | None:
    """Share of calls that must hit for caching to pay: (w-1)/(w-r), 0 without write premium.

    ``write`` and ``read`` are the write and read prices relative to uncached input
    (shared/research/rules-domain.md §1.5).
    """
    if write is None or read is None or write <= read:
        return None
    return max(0.0, (write - 1.0) / (write - read))


def _median_gap_label(row: dict[str, Any]) -> str | None:
    counts = [row[c] or 0 for c in GAP_COLUMNS]
    total = sum(counts)
    if total == 0:
        return None
    running = 0
    for label, count in zip(GAP_LABELS, counts, strict=True):
        running += count
        if running * 2 >= total:
            return label
    return GAP_LABELS[-1]


def _evidence(row: dict[str, Any], ctx: AuditContext) -> dict[str, Any]:
    """The numbers behind a finding, rounded for reading."""
    uncached = row["rate_input"]
    write = _ratio(row["rate_write"], uncached)
    write_1h = _ratio(row["rate_write_1h"], uncached)
    read = _ratio(row["rate_read"], uncached)
    calls = row["calls"]
    gaps = sum(row[c] or 0 for c in GAP_COLUMNS)
    within = sum(row[c] or 0 for c in GAP_COLUMNS[:3])  # <= 5 min
    within_hour = sum(row[c] or 0 for c in GAP_COLUMNS[:6])
    days = row["basis_days"]
    hours = max(days * 24.0, 1e-9)
    return {
        "provider": row["provider"],
        "prefix_hash": f"{row['prefix_hash']:016x}",
        "prefix_depth": row["depth"],
        "prefix_tokens": row["prefix_tokens"],
        "min_cacheable_tokens": row["min_cacheable_tokens"],
        "calls": calls,
        "calls_per_hour": round(calls / hours, 2),
        "prompts": row["prompts"],
        "actual_cached_share": rounded(row["cached_share"]),
        "cache_mode": row["cache_mode"],
        "ttl_s": {"short": row["short_ttl_s"], "long": row["long_ttl_s"]},
        "simulated_hit_rate": rounded(row["hits_short"] / calls),
        "simulated_hit_rate_1h": rounded(row["hits_long"] / calls) if row["long_offered"] else None,
        "write_multiplier": rounded(write),
        "write_1h_multiplier": rounded(write_1h) if row["long_offered"] else None,
        "read_multiplier": rounded(read),
        "break_even_hit_rate": rounded(break_even_hit_rate(write, read)),
        "break_even_hit_rate_1h": rounded(break_even_hit_rate(write_1h, read))
        if row["long_offered"]
        else None,
        "inter_arrival": {
            "median": _median_gap_label(row),
            "share_within_short_ttl": rounded(within / gaps) if gaps else None,
            "share_within_1h": rounded(within_hour / gaps) if gaps else None,
            "histogram": {label: row[c] for label, c in zip(GAP_LABELS, GAP_COLUMNS, strict=True)},
        },
        "window_input_cost_usd": rounded(row["cost_actual"], 6),
        "window_input_cost_cached_usd": rounded(row["cost_short"], 6),
        "window_input_cost_cached_1h_usd": rounded(row["cost_long"], 6)
        if row["long_offered"]
        else None,
        "monthly_savings_5m_usd": rounded(runrate.monthly_value(row["saving_short"], days), 2),
        "monthly_savings_1h_usd": rounded(runrate.monthly_value(row["saving_long"], days), 2)
        if row["saving_long"] is not None
        else None,
        "recommended_ttl": "1h" if row["best"] == "1h" else f"{int(row['short_ttl_s'] // 60)}m",
        "run_rate_basis": runrate.basis_evidence(row["first_call"], row["last_call"], days, calls),
    }


def _where(depth: int) -> str:
    if depth == 0:
        return "system instructions and tools"
    return f"system instructions, tools and the first {depth} message{'s' if depth > 1 else ''}"


def _fix(row: dict[str, Any]) -> str:
    """Concrete instructions for the provider's caching API."""
    where = _where(row["depth"])
    stable = (
        "Keep that prefix byte-identical between calls (no timestamps, ids or unsorted JSON "
        "in it) and put everything that varies after it."
    )
    if row["cache_mode"] == "automatic":
        return (
            f"The provider caches automatically from {row['min_cacheable_tokens']:,} tokens, but "
            f"these calls report no cached tokens. Pass "
            f'`prompt_cache_key="{row["prompt"] or "your-prompt"}"` so requests that share the '
            f"prefix ({where}) are routed to the same cache, and keep each key under ~15 "
            f"requests per minute. {stable}"
        )
    anchor = (
        "the last system block"
        if row["depth"] == 0
        else f"the last content block of message {row['depth']}"
    )
    ttl = ', "ttl": "1h"' if row["best"] == "1h" else ""
    longer = (
        " The 1-hour lifetime is recommended: calls are too far apart for 5 minutes but close "
        "enough for an hour."
        if row["best"] == "1h"
        else ""
    )
    return (
        f'Add a cache breakpoint after the shared prefix ({where}): `"cache_control": '
        f'{{"type": "ephemeral"{ttl}}}` on {anchor} (Anthropic API; `cachePoint` on Bedrock '
        f"Converse).{longer} {stable}"
    )


def _finding(row: dict[str, Any], ctx: AuditContext, params: Params) -> Finding:
    evidence = _evidence(row, ctx)
    monthly = row["monthly_savings_usd"]
    hit = (
        evidence["simulated_hit_rate_1h"] if row["best"] == "1h" else evidence["simulated_hit_rate"]
    )
    break_even = (
        evidence["break_even_hit_rate_1h"]
        if row["best"] == "1h"
        else evidence["break_even_hit_rate"]
    )
    ttl = evidence["recommended_ttl"]
    message = (
        f"A {row['prefix_tokens']:,}-token prefix ({_where(row['depth'])}) was sent "
        f"{row['calls']:,} times with {row['cached_share']:.0%} of it read from cache; with a "
        f"{ttl} cache {hit:.0%} of the calls would read it (break-even "
        f"{(break_even or 0.0):.1%}), saving ${monthly:,.2f}/month."
    )
    return key_finding(
        (CODE, NAME),
        row,
        ctx,
        severity=severity_for(monthly, params),
        message=message,
        fix=_fix(row),
        evidence=evidence,
        extra_key={"prefix_hash": evidence["prefix_hash"], "prefix_depth": row["depth"]},
    )
