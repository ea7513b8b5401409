"""LT101 reasoning-without-accuracy-gain: more thinking per call, no measurable accuracy for it.

Three comparisons share one aggregate (rules/LT101.yaml documents the rule):

* ``window``: per (prompt, model, service), the current window (arm B) against the baseline (A);
* ``version``: per (prompt name, model, service), the newest prompt version (B, by first call)
  against the version before it (A), over both windows;
* ``effort``: per (prompt, model, service), each reasoning effort (B) against the next lower
  effort (A) used in the current window.

``aggregate`` counts, per key, effort, period and reasoning-token histogram bin, the calls, their
reasoning tokens and cost, and their accuracy labels; every column merges by summing (``min`` for
the first-seen time). ``decide`` builds the two arms of every test from that table, runs the
histogram Mann–Whitney test for all of them at once, controls the false discovery rate across all
of them with Benjamini–Hochberg, and bounds the accuracy gain with the Newcombe interval.
"""

from __future__ import annotations

import math
from datetime import timedelta
from functools import cache
from statistics import NormalDist
from typing import Any, ClassVar

import polars as pl

from llmtrace.rules import runrate, stats
from llmtrace.rules.base import COVERAGE_SCHEMA, AuditContext, Finding, Severity

CODE = "LT101"
NAME = "reasoning-without-accuracy-gain"

# Keys of the mergeable aggregate. prompt_name/prompt_version/provider depend on prompt/model and
# ride along as max() (mergeable, and cheaper than grouping by them).
_GROUP = ["prompt", "model", "service", "reasoning_effort", "period", "bin"]
_SUMS = [
    "calls",
    "reasoning_tokens",
    "labelled",
    "correct",
    "reasoning_cost",
    "priced_reasoning_tokens",
]
_RIDE_ALONG = ["prompt_name", "prompt_version", "provider"]
_TEST = ["comparison", "prompt", "model", "service", "arm_a", "arm_b"]

# Reasoning effort names in increasing order; numeric efforts (thinking budgets) sort after them.
_EFFORT_ORDER = {"none": 0, "minimal": 1, "low": 2, "medium": 3, "high": 4, "xhigh": 5}


class ReasoningRule:
    """The LT101 rule object (module attribute ``RULE``)."""

    code: ClassVar[str] = CODE
    name: ClassVar[str] = NAME
    needs_baseline: ClassVar[bool] = True
    columns: ClassVar[tuple[str, ...]] = (
        "prompt",
        "prompt_name",
        "prompt_version",
        "model",
        "provider",
        "service",
        "reasoning_effort",
        "start_time",
        "reasoning_tokens",
        "reasoning_cost",
        "accuracy",
    )

    def columns_for(self, ctx: AuditContext) -> tuple[str, ...]:
        """Read ``scores`` only when accuracy is recomputed from named scores."""
        return (*self.columns, "scores") if ctx.accuracy_scores else self.columns

    # -- aggregate --------------------------------------------------------------------------

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Per key, effort, period and histogram bin: counts and sums that merge by addition.

        The period is a boolean while the calls are grouped and becomes its name on the
        grouped rows, and the priced calls' tokens a column summed like the others: a string
        per call and a filtered sum per group were a third of the rule's CPU (1.7 -> 1.2 CPU-s
        over the 10M store's two windows, issue 15).
        """
        start = pl.col("start_time")
        current = (
            pl.when((start >= ctx.since) & (start < ctx.until))
            .then(pl.lit(True))
            .when((start >= ctx.baseline_since) & (start < ctx.baseline_until))
            .then(pl.lit(False))
        )
        accuracy = _accuracy_expr(ctx)
        priced = pl.col("reasoning_cost").is_not_null()
        keys = [c for c in _GROUP if c != "period"]
        return (
            calls.filter(
                pl.col("reasoning_tokens").is_not_null() & (pl.col("reasoning_tokens") >= 0)
            )
            .with_columns(
                current.alias("_current"),
                stats.reasoning_bin(pl.col("reasoning_tokens")).alias("bin"),
                accuracy.alias("_acc"),
                pl.when(priced).then(pl.col("reasoning_tokens")).otherwise(0).alias("_priced"),
            )
            .filter(pl.col("_current").is_not_null())
            .group_by([*keys, "_current"])
            .agg(
                pl.len().cast(pl.Int64).alias("calls"),
                pl.col("reasoning_tokens").sum().alias("reasoning_tokens"),
                pl.col("_acc").count().cast(pl.Int64).alias("labelled"),
                pl.col("_acc").sum().alias("correct"),
                pl.col("reasoning_cost").sum().alias("reasoning_cost"),
                pl.col("_priced").sum().alias("priced_reasoning_tokens"),
                start.min().alias("first_seen"),
                start.max().alias("last_seen"),
                pl.col("prompt_name").max(),
                pl.col("prompt_version").max(),
                pl.col("provider").max(),
            )
            .with_columns(
                pl.when(pl.col("_current"))
                .then(pl.lit("current"))
                .otherwise(pl.lit("baseline"))
                .alias("period")
            )
            .select(*_GROUP, *_SUMS, "first_seen", "last_seen", *_RIDE_ALONG)
        )

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Sum partitions' partials per group (first-seen time: min)."""
        if len(partials) == 1:
            return partials[0]
        return (
            pl.concat(partials, how="vertical_relaxed")
            .group_by(_GROUP)
            .agg(
                *[pl.col(c).sum() for c in _SUMS],
                pl.col("first_seen").min(),
                pl.col("last_seen").max(),
                pl.col("prompt_name").max(),
                pl.col("prompt_version").max(),
                pl.col("provider").max(),
            )
        )

    # -- decide -----------------------------------------------------------------------------

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """Test every comparison's arms, control the FDR across all, and bound the accuracy gain."""
        params = _Params.from_mapping(ctx.params)
        arms = _arms(aggregates, params.compare)
        if arms.is_empty():
            return []
        table = _tests(arms, params)
        table = _with_rates(table, ctx)
        table = _verdicts(table, params, ctx)
        flagged = _one_per_key(table.filter(pl.col("verdict").is_not_null()))
        return [_finding(row, params, ctx) for row in flagged.iter_rows(named=True)]

    def coverage(
        self,
        aggregates: pl.DataFrame,
        ctx: AuditContext,
        census: pl.DataFrame,
        findings: list[Finding],
    ) -> pl.DataFrame:
        """Keys with reasoning: judged when some comparison had enough calls in both arms;
        else "no baseline" (nothing to compare with) or "too few calls"; a finding without
        labels is "no labels", an inconclusive one "too few labels"."""
        params = _Params.from_mapping(ctx.params)
        key = ["prompt", "model", "service"]
        arms = _arms(aggregates, params.compare) if aggregates.height else pl.DataFrame()
        tested = set()
        compared = set()
        if arms.height:
            tests = _tests(arms, params)
            compared = set(tests.filter(pl.col("calls_a") > 0).select(key).unique().rows())
            tested = set(tests.filter(pl.col("p").is_not_null()).select(key).unique().rows())
        by_verdict = {(f.prompt, f.model, f.service): f.evidence.get("verdict") for f in findings}
        label_reason = {"unverified": "no labels", "inconclusive": "too few labels"}
        rows = []
        for prompt, model, service in (
            census.filter(pl.col("with_reasoning") > 0).select(key).iter_rows()
        ):
            k = (prompt, model, service)
            if k in by_verdict and by_verdict[k] in label_reason:
                reason = label_reason[by_verdict[k]]
            elif k in tested:
                reason = None
            elif k in compared:
                reason = "too few calls"
            else:
                reason = "no baseline"
            rows.append({"prompt": prompt, "model": model, "service": service, "reason": reason})
        return pl.DataFrame(rows, schema=COVERAGE_SCHEMA)


RULE = ReasoningRule()


class _Params:
    """LT101's parameters, checked once (values come from YAML defaults and the user's config)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.delta = float(values["delta"])
        self.min_ratio = float(values["min_ratio"])
        self.fdr_q = float(values["fdr_q"])
        self.confidence = float(values["confidence"])
        self.min_calls = int(values["min_calls_per_arm"])
        self.min_saving = float(values["min_monthly_savings_usd"])
        self.medium_usd = float(values["medium_savings_usd"])
        self.high_usd = float(values["high_savings_usd"])
        compare = values["compare"]
        self.compare = (compare,) if isinstance(compare, str) else tuple(compare)
        unknown = set(self.compare) - {"window", "version", "effort"}
        if unknown:
            raise ValueError(f"LT101 compare: unknown comparison(s) {sorted(unknown)}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError("LT101 confidence must be between 0.5 and 1")
        self.z = NormalDist().inv_cdf(self.confidence)

    @classmethod
    def from_mapping(cls, values: Any) -> _Params:
        return cls(dict(values))


def _accuracy_expr(ctx: AuditContext) -> pl.Expr:
    """Accuracy of a call in 0..1: from the named scores if configured, else ``accuracy``."""
    stored = pl.col("accuracy")
    if ctx.accuracy_scores:
        stored = pl.coalesce(ctx.accuracy.from_scores("scores"), stored)
    return stored.clip(0.0, 1.0)


# -- building the arms of every test -----------------------------------------------------------


def _arm_rows(frame: pl.DataFrame, comparison: str, arm_a: pl.Expr, arm_b: pl.Expr) -> pl.DataFrame:
    """Rows of one comparison tagged with their test key; ``side`` says which arm a row is in."""
    return frame.select(
        pl.lit(comparison).alias("comparison"),
        "prompt",
        "model",
        "service",
        arm_a.cast(pl.String).alias("arm_a"),
        arm_b.cast(pl.String).alias("arm_b"),
        "side",
        "bin",
        *_SUMS,
        pl.when(pl.col("period") == "current").then(pl.col("calls")).otherwise(0).alias("current"),
        pl.when(pl.col("period") == "current").then(pl.col("first_seen")).alias("_first_now"),
        pl.when(pl.col("period") == "current").then(pl.col("last_seen")).alias("_last_now"),
        "provider",
    )


def _window_arms(agg: pl.DataFrame) -> pl.DataFrame:
    side = pl.when(pl.col("period") == "current").then(pl.lit("b")).otherwise(pl.lit("a"))
    return _arm_rows(
        agg.with_columns(side.alias("side")), "window", pl.lit("baseline"), pl.lit("current")
    )


def _version_arms(agg: pl.DataFrame) -> pl.DataFrame:
    """Newest version (with calls in the current window) against the version before it."""
    family = ["prompt_name", "model", "service"]
    named = agg.filter(pl.col("prompt_name").is_not_null() & pl.col("prompt_version").is_not_null())
    versions = (
        named.group_by([*family, "prompt_version", "prompt"])
        .agg(
            pl.col("first_seen").min(),
            pl.col("calls").filter(pl.col("period") == "current").sum().alias("_now"),
        )
        .sort([*family, "first_seen", "prompt_version"])
        .with_columns(
            pl.col("prompt_version").shift(1).over(family).alias("_prev"),
            pl.col("prompt").shift(1).over(family).alias("_prev_prompt"),
            pl.col("first_seen").rank("ordinal", descending=True).over(family).alias("_age"),
        )
        .filter((pl.col("_age") == 1) & pl.col("_prev").is_not_null() & (pl.col("_now") > 0))
        .select(*family, pl.col("prompt_version").alias("_b"), "_prev", "prompt", "_prev_prompt")
    )
    b_rows = named.join(
        versions.select(*family, pl.col("_b").alias("prompt_version"), "_prev", "_b"),
        on=[*family, "prompt_version"],
    ).with_columns(pl.lit("b").alias("side"))
    a_rows = (
        named.join(
            versions.select(
                *family, pl.col("_prev").alias("prompt_version"), "_prev", "_b", "prompt"
            ),
            on=[*family, "prompt_version"],
            suffix="_newest",
        )
        .with_columns(pl.col("prompt_newest").alias("prompt"), pl.lit("a").alias("side"))
        .drop("prompt_newest")
    )
    rows = pl.concat([b_rows, a_rows.select(b_rows.columns)])
    return _arm_rows(rows, "version", pl.col("_prev"), pl.col("_b"))


def _effort_rank(effort: pl.Expr) -> pl.Expr:
    """Order of reasoning efforts: named levels, then numeric thinking budgets by size."""
    named = effort.str.to_lowercase().replace_strict(
        _EFFORT_ORDER, default=None, return_dtype=pl.Float64
    )
    budget = effort.cast(pl.Float64, strict=False) + 100.0
    return pl.coalesce(named, budget)


def _effort_arms(agg: pl.DataFrame) -> pl.DataFrame:
    """Each effort used in the current window against the next lower effort of the same key."""
    key = ["prompt", "model", "service"]
    current = agg.filter(
        (pl.col("period") == "current") & pl.col("reasoning_effort").is_not_null()
    ).with_columns(_effort_rank(pl.col("reasoning_effort")).alias("_rank"))
    pairs = (
        current.filter(pl.col("_rank").is_not_null())
        .group_by([*key, "reasoning_effort"])
        .agg(pl.col("_rank").first())
        .sort([*key, "_rank"])
        .with_columns(pl.col("reasoning_effort").shift(1).over(key).alias("_lower"))
        .filter(pl.col("_lower").is_not_null())
        .select(*key, pl.col("reasoning_effort").alias("_higher"), "_lower")
    )
    b_rows = current.join(
        pairs.rename({"_higher": "reasoning_effort"}).with_columns(
            pl.col("reasoning_effort").alias("_higher")
        ),
        on=[*key, "reasoning_effort"],
    ).with_columns(pl.lit("b").alias("side"))
    a_rows = current.join(
        pairs.rename({"_lower": "reasoning_effort"}).with_columns(
            pl.col("reasoning_effort").alias("_lower")
        ),
        on=[*key, "reasoning_effort"],
    ).with_columns(pl.lit("a").alias("side"))
    rows = pl.concat([b_rows, a_rows.select(b_rows.columns)])
    return _arm_rows(rows, "effort", pl.col("_lower"), pl.col("_higher"))


def _arms(agg: pl.DataFrame, compare: tuple[str, ...]) -> pl.DataFrame:
    builders = {"window": _window_arms, "version": _version_arms, "effort": _effort_arms}
    frames = [builders[name](agg) for name in compare]
    frames = [f for f in frames if not f.is_empty()]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


# -- statistics over all tests at once ---------------------------------------------------------


def _side_sum(column: str, side: str) -> pl.Expr:
    return pl.col(column).filter(pl.col("side") == side).sum().alias(f"{column}_{side}")


def _medians(arms: pl.DataFrame) -> pl.DataFrame:
    """Approximate median reasoning tokens per arm from the histogram (bin midpoint)."""
    per_bin = (
        arms.group_by([*_TEST, "side", "bin"])
        .agg(pl.col("calls").sum())
        .sort([*_TEST, "side", "bin"])
        .with_columns(
            pl.col("calls").cum_sum().over([*_TEST, "side"]).alias("_cum"),
            pl.col("calls").sum().over([*_TEST, "side"]).alias("_n"),
        )
    )
    medians = per_bin.group_by([*_TEST, "side"]).agg(
        pl.col("bin").filter(pl.col("_cum") * 2 >= pl.col("_n")).first().alias("_median_bin")
    )
    medians = medians.with_columns(stats.bin_midpoint(pl.col("_median_bin")).alias("median"))
    return medians.pivot(on="side", index=_TEST, values="median").rename(
        {"a": "median_a", "b": "median_b"}, strict=False
    )


def _tests(arms: pl.DataFrame, params: _Params) -> pl.DataFrame:
    """One row per test: arm sizes and sums, Mann–Whitney p, BH q, medians."""
    hist = arms.group_by([*_TEST, "bin"]).agg(
        pl.col("calls").filter(pl.col("side") == "a").sum().alias("n_a"),
        pl.col("calls").filter(pl.col("side") == "b").sum().alias("n_b"),
    )
    mwu = stats.mann_whitney_from_histograms(hist, _TEST).select(*_TEST, "u", "p", "effect")
    sums = arms.group_by(_TEST).agg(
        *[_side_sum(c, side) for c in _SUMS for side in ("a", "b")],
        pl.col("current").filter(pl.col("side") == "b").sum().alias("current_b"),
        pl.col("_first_now").filter(pl.col("side") == "b").min().alias("since_b"),
        pl.col("_last_now").filter(pl.col("side") == "b").max().alias("until_b"),
        pl.col("provider").max(),
    )
    table = sums.join(mwu, on=_TEST, how="left", nulls_equal=True)
    table = table.join(_medians(arms), on=_TEST, how="left", nulls_equal=True)
    eligible = (pl.col("calls_a") >= params.min_calls) & (pl.col("calls_b") >= params.min_calls)
    table = table.with_columns(pl.when(eligible).then(pl.col("p")).otherwise(None).alias("p"))
    return stats.benjamini_hochberg(table, "p", "q")


def _with_rates(table: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """Reasoning price per token: arm B's priced calls, else both arms', else a priced probe call."""
    rate_b = pl.col("reasoning_cost_b") / pl.col("priced_reasoning_tokens_b")
    rate_ab = (pl.col("reasoning_cost_a") + pl.col("reasoning_cost_b")) / (
        pl.col("priced_reasoning_tokens_a") + pl.col("priced_reasoning_tokens_b")
    )
    valid_b = pl.col("priced_reasoning_tokens_b") > 0
    valid_ab = (pl.col("priced_reasoning_tokens_a") + pl.col("priced_reasoning_tokens_b")) > 0
    table = table.with_columns(
        pl.when(valid_b).then(rate_b).when(valid_ab).then(rate_ab).otherwise(None).alias("rate")
    )
    missing = table.filter(pl.col("rate").is_null() & pl.col("model").is_not_null())
    if missing.is_empty():
        return table
    probes = _probe_rates(missing.select("provider", "model").unique(), ctx)
    if probes is None:
        return table
    return (
        table.join(probes, on=["provider", "model"], how="left", nulls_equal=True)
        .with_columns(pl.coalesce("rate", "_probe_rate").alias("rate"))
        .drop("_probe_rate")
    )


_PROBE_TOKENS = 1_000_000


def _probe_rates(models: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame | None:
    """Price one synthetic call of 1M reasoning tokens per model with the run's price book."""
    at = ctx.until - timedelta(microseconds=1)
    probe = models.with_columns(
        pl.format("lt101-probe-{}", pl.int_range(pl.len())).alias("trace_id"),
        pl.lit("0").alias("span_id"),
        pl.lit(at).alias("start_time"),
        pl.lit(0, dtype=pl.Int64).alias("input_tokens"),
        pl.lit(_PROBE_TOKENS, dtype=pl.Int64).alias("output_tokens"),
        pl.lit(_PROBE_TOKENS, dtype=pl.Int64).alias("reasoning_tokens"),
    )
    try:
        priced = ctx.price(probe)
    except Exception:  # pricing unavailable: the saving is reported as unknown, not invented
        return None
    if "reasoning_cost" not in priced.columns:
        return None
    reasoning = pl.coalesce(
        pl.col("reasoning_cost"), pl.col("output_cost") if "output_cost" in priced.columns else None
    )
    return priced.select(
        "provider", "model", (reasoning / _PROBE_TOKENS).alias("_probe_rate")
    ).unique(subset=["provider", "model"])


def _verdicts(table: pl.DataFrame, params: _Params, ctx: AuditContext) -> pl.DataFrame:
    """Means, ratio, saving, accuracy interval, and the verdict of every test."""
    z = params.z
    mean_a = pl.col("reasoning_tokens_a") / pl.col("calls_a")
    mean_b = pl.col("reasoning_tokens_b") / pl.col("calls_b")
    table = table.with_columns(mean_a.alias("mean_a"), mean_b.alias("mean_b"))
    ratio = (
        pl.when(pl.col("mean_a") > 0)
        .then(pl.col("mean_b") / pl.col("mean_a"))
        .when(pl.col("mean_b") > 0)
        .then(float("inf"))
        .otherwise(1.0)
    )
    # run-rate since the change: arm B's calls over the days from its first to its last call in
    # the current window (a version or effort switched on mid-window is not diluted)
    table = table.with_columns(runrate.basis_days("since_b", "until_b", ctx).alias("basis_days"))
    monthly_calls = runrate.monthly("current_b", "basis_days")
    extra = (pl.col("mean_b") - pl.col("mean_a")).clip(lower_bound=0.0)
    lower, upper = stats.newcombe_bounds(
        pl.col("correct_b"), pl.col("labelled_b"), pl.col("correct_a"), pl.col("labelled_a"), z
    )
    table = table.with_columns(
        ratio.alias("ratio"),
        monthly_calls.alias("monthly_calls"),
        extra.alias("extra_per_call"),
        (extra * monthly_calls * pl.col("rate")).fill_null(0.0).alias("monthly_savings_usd"),
        _share("correct_a", "labelled_a").alias("accuracy_a"),
        _share("correct_b", "labelled_b").alias("accuracy_b"),
        lower.alias("gain_lower"),
        upper.alias("gain_upper"),
    ).with_columns((pl.col("accuracy_b") - pl.col("accuracy_a")).alias("gain"))
    rose = (
        (pl.col("q") <= params.fdr_q)
        & (pl.col("ratio") >= params.min_ratio)
        & (pl.col("monthly_savings_usd") >= params.min_saving)
    )
    unlabelled = (pl.col("labelled_a") == 0) | (pl.col("labelled_b") == 0)
    verdict = (
        pl.when(~rose.fill_null(False))
        .then(None)
        .when(unlabelled)
        .then(pl.lit("unverified"))
        .when(pl.col("gain_upper") < params.delta)
        .then(pl.lit("waste"))
        .when(pl.col("gain_lower") > 0)
        .then(None)  # accuracy rose significantly: the extra reasoning buys something
        .otherwise(pl.lit("inconclusive"))
    )
    return table.with_columns(verdict.alias("verdict"), _labels_needed(params).alias("needed"))


def _share(part: str, whole: str) -> pl.Expr:
    return pl.when(pl.col(whole) > 0).then(pl.col(part) / pl.col(whole))


def _labels_needed(params: _Params) -> pl.Expr:
    """Labelled calls per arm that would settle an inconclusive test, if today's rates hold.

    Either the upper bound falls below δ (needs half-width δ − Δ̂) or the lower bound rises above
    0 (needs half-width Δ̂), whichever comes first. Rates are Agresti–Caffo adjusted so that an arm
    at 0 % or 100 % does not promise an impossibly small n.
    """
    p_a = (pl.col("correct_a") + 1) / (pl.col("labelled_a") + 2)
    p_b = (pl.col("correct_b") + 1) / (pl.col("labelled_b") + 2)
    gain = pl.col("gain")
    to_bound = stats.n_per_arm(p_a, p_b, params.delta - gain, params.z)
    to_gain = stats.n_per_arm(p_a, p_b, gain, params.z)
    needed = pl.min_horizontal(to_bound, to_gain)
    have = pl.max_horizontal("labelled_a", "labelled_b")
    return pl.max_horizontal(needed, have + 1)


# -- findings ------------------------------------------------------------------------------------

# The most informative verdict wins: waste (labels bound the gain below delta) says more than
# inconclusive (labels exist, too few to bound it), which says more than unverified (no labels).
_VERDICT_RANK = {"waste": 0, "inconclusive": 1, "unverified": 2}


def _one_per_key(flagged: pl.DataFrame) -> pl.DataFrame:
    """One finding per (prompt, model, service), so the total does not count a saving twice.

    An effort change inside the window shows up both as window-vs-baseline and as
    effort-vs-effort; both estimate the same extra tokens. The most informative verdict wins
    (waste > inconclusive > unverified, then the larger saving), so a comparison without labels
    never hides one whose labels could be counted; the other comparisons are listed in
    ``also``.
    """
    key = ["prompt", "model", "service"]
    ranked = flagged.with_columns(
        pl.col("verdict").replace_strict(_VERDICT_RANK, return_dtype=pl.Int32).alias("_rank"),
        pl.format("{} {}->{}", "comparison", "arm_a", "arm_b").alias("_label"),
    ).sort(["_rank", "monthly_savings_usd"], descending=[False, True])
    also = ranked.group_by(key, maintain_order=True).agg(pl.col("_label").slice(1).alias("also"))
    best = ranked.unique(subset=key, keep="first", maintain_order=True)
    best = best.join(also, on=key, how="left", nulls_equal=True)
    return best.sort("monthly_savings_usd", descending=True).drop("_rank", "_label")


def _severity(verdict: str, saving: float, params: _Params, default: Severity) -> Severity:
    if verdict == "inconclusive":
        return "info"
    if verdict == "unverified":
        return "low"
    if saving >= params.high_usd:
        return "high"
    return default if saving >= params.medium_usd else "low"


def _pp(value: float | None, signed: bool = True) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value * 100:+.1f} pp" if signed else f"{value * 100:.1f}%"


def _what_changed(row: dict[str, Any]) -> str:
    if row["comparison"] == "version":
        return f"from prompt version {row['arm_a']} to {row['arm_b']}"
    if row["comparison"] == "effort":
        return f"at reasoning effort {row['arm_b']} vs {row['arm_a']}"
    return "against the baseline window"


def _q_text(q: float) -> str:
    """q-value for a message: ``q=0`` would claim certainty, so tiny values read as a bound."""
    return "q<1e-16" if q < 1e-16 else f"q={q:.2g}"


def _message(row: dict[str, Any], params: _Params) -> str:
    ratio = row["ratio"]
    ratio_text = "from 0" if math.isinf(ratio) else f"{ratio:.2f}x"
    head = (
        f"Reasoning per call rose {ratio_text} {_what_changed(row)} "
        f"({row['mean_a']:,.0f} -> {row['mean_b']:,.0f} tokens, {_q_text(row['q'])})"
    )
    labels = f"{row['labelled_a']:,} / {row['labelled_b']:,} labelled calls"
    if row["verdict"] == "unverified":
        return f"{head}; no accuracy labels to show it helped ({labels}): unverified"
    accuracy = (
        f"accuracy {_pp(row['accuracy_a'], False)} -> {_pp(row['accuracy_b'], False)}, "
        f"gain at most {_pp(row['gain_upper'])} ({params.confidence:.0%} bound) over {labels}"
    )
    if row["verdict"] == "waste":
        return f"{head}; {accuracy}, below {params.delta * 100:.1f} pp"
    return (
        f"{head}; {accuracy}: inconclusive, needs about {row['needed']:,} labelled calls per arm "
        f"to tell whether the gain reaches {params.delta * 100:.1f} pp"
    )


def _fix(row: dict[str, Any]) -> str:
    if row["verdict"] != "waste":
        return (
            f"Label more calls of both arms (about {row['needed']:,} per arm) or run a paired "
            "offline evaluation of both settings before changing anything."
            if row["verdict"] == "inconclusive"
            else "Add accuracy scores (evaluations) for this prompt, or A/B test the previous "
            "setting, before deciding whether the extra reasoning is worth it."
        )
    if row["comparison"] == "version":
        return (
            f"Compare prompt version {row['arm_b']} with {row['arm_a']}: go back, or cap reasoning."
        )
    if row["comparison"] == "effort":
        return f"Use reasoning effort {row['arm_a']} instead of {row['arm_b']} for this prompt."
    return (
        "Find what raised reasoning since the baseline (effort, thinking budget, model alias, "
        "prompt) and set it back, or cap reasoning with max_output_tokens."
    )


def _round(value: Any, significant: bool = False) -> Any:
    """JSON-friendly numbers: p and q to 3 significant digits, the rest to 4 decimals."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return float(f"{value:.3g}") if significant else round(value, 4)
    return value


def _evidence(row: dict[str, Any], params: _Params) -> dict[str, Any]:
    evidence = {
        "verdict": row["verdict"],
        "comparison": row["comparison"],
        "arm_a": row["arm_a"],
        "arm_b": row["arm_b"],
        "calls_a": row["calls_a"],
        "calls_b": row["calls_b"],
        "mean_reasoning_a": row["mean_a"],
        "mean_reasoning_b": row["mean_b"],
        "median_reasoning_a": row.get("median_a"),
        "median_reasoning_b": row.get("median_b"),
        "ratio_of_means": row["ratio"],
        "p": row["p"],
        "q": row["q"],
        "prob_b_greater": row["effect"],
        "labelled_a": row["labelled_a"],
        "labelled_b": row["labelled_b"],
        "accuracy_a": row["accuracy_a"],
        "accuracy_b": row["accuracy_b"],
        "accuracy_gain": row["gain"],
        "accuracy_gain_lower": row["gain_lower"],
        "accuracy_gain_upper": row["gain_upper"],
        "confidence": params.confidence,
        "delta": params.delta,
        "extra_reasoning_tokens_per_call": row["extra_per_call"],
        "monthly_calls": row["monthly_calls"],
        "reasoning_usd_per_million_tokens": None if row["rate"] is None else row["rate"] * 1e6,
        "run_rate_basis": runrate.basis_evidence(
            row["since_b"], row["until_b"], row["basis_days"], row["current_b"]
        ),
    }
    if row["verdict"] == "inconclusive":
        evidence["labelled_needed_per_arm"] = row["needed"]
    if row.get("also"):
        evidence["also_flagged_by"] = list(row["also"])
    return {k: _round(v, significant=k in {"p", "q"}) for k, v in evidence.items()}


@cache
def _default_severity() -> Severity:
    """The severity rules/LT101.yaml gives a confirmed finding in the middle saving band."""
    from llmtrace.rules.loader import builtin_specs

    return builtin_specs()[CODE].default_severity


def _finding(row: dict[str, Any], params: _Params, ctx: AuditContext) -> Finding:
    default = _default_severity()
    return Finding(
        rule=CODE,
        name=NAME,
        severity=_severity(row["verdict"], row["monthly_savings_usd"], params, default),
        prompt=row["prompt"],
        model=row["model"],
        service=row["service"],
        window_start=ctx.since,
        window_end=ctx.until,
        monthly_savings_usd=float(row["monthly_savings_usd"]),
        message=_message(row, params),
        fix=_fix(row),
        evidence=_evidence(row, params),
        key={
            "prompt": row["prompt"],
            "model": row["model"],
            "service": row["service"],
            "comparison": row["comparison"],
            "arm_a": row["arm_a"],
            "arm_b": row["arm_b"],
        },
    )
