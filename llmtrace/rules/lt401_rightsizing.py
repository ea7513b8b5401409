"""LT401 model-right-sizing: one prompt, two models, and the cheaper one is just as accurate.

When a prompt is served by several models (an A/B split, a canary, a fallback, a migration), the
traffic of the more expensive model could move to the cheaper one **if the cheaper model's
accuracy is non-inferior**: the one-sided Newcombe lower bound of Δ = p_cheap − p_expensive is
above −``margin_pp`` (default 2 pp). A switch is never recommended without that evidence.

Statistics (rules-domain.md §4.2, §4.4; ``llmtrace.rules.stats``):

* every (prompt, expensive model, cheaper model) pair with labels on both arms gets the
  non-inferiority p-value: the α at which the Newcombe lower bound meets −margin, found by
  bisection on z (the bound falls monotonically as z grows), p = 1 − Φ(z*);
* Benjamini–Hochberg across all pairs of the audit; a pair is non-inferior when q <= ``alpha``;
* a pair that is not shown non-inferior but whose point estimate is within the margin is
  *inconclusive* (severity info, not counted in the audit's total) with the labelled calls per
  arm needed for the bound to reach −margin if both models are equally accurate
  (``stats.n_per_arm`` at the expensive model's observed accuracy, else ``assumed_accuracy``).

Saving: the expensive model's calls for that prompt priced at the cheaper model's mean cost per
call for the same prompt (so prompt length and output size are those of this prompt), as a
run-rate over the days the expensive arm has data (``runrate``: from its first call to the end
of the audit's data, so a split started three days ago is not spread over a 30-day window).
Aggregates are per (provider, model, service, prompt) sums plus first/last call, which merge by
addition, min and max.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import polars as pl

from llmtrace.config import ConfigError
from llmtrace.rules import runrate, stats
from llmtrace.rules.base import AuditContext, Finding, RuleParams, Severity, merge_cells
from llmtrace.rules.cells import Cells, cells_aggregate

CODE = "LT401"
NAME = "model-right-sizing"

_KEY = ["service", "prompt"]
_CELL = ["provider", "model", *_KEY]
_SUMS = ["calls", "priced_calls", "cost", "labelled", "correct"]
NON_INFERIOR = "non-inferior"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT401's parameters (defaults in rules/LT401.yaml, overridable in llmtrace.toml)."""

    margin_pp: float = 2.0
    alpha: float = 0.05
    min_calls: int = 100
    min_labels: int = 30
    assumed_accuracy: float = 0.85
    min_monthly_savings_usd: float = 5.0
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.assumed_accuracy < 1:
            raise ConfigError(f"{CODE}: alpha and assumed_accuracy must be between 0 and 1")


class RightSizingRule:
    """The LT401 rule object (module attribute ``RULE``)."""

    code: ClassVar[str] = CODE
    name: ClassVar[str] = NAME
    columns: ClassVar[tuple[str, ...]] = (
        *_CELL,
        "start_time",
        "is_error",
        "total_cost",
        "accuracy",
    )

    def columns_for(self, ctx: AuditContext) -> tuple[str, ...]:
        """Read ``scores`` only when accuracy is recomputed from named scores."""
        return (*self.columns, "scores") if ctx.accuracy_scores else self.columns

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Per (provider, model, service, prompt): calls, cost, labelled and correct calls."""
        return cells_aggregate(calls, self.cells(ctx))

    def cells(self, ctx: AuditContext) -> Cells:
        """The aggregate as cells (``llmtrace.rules.cells``): the engine computes them in one
        group-by with the other one-pass rules'."""
        accuracy = pl.col("accuracy")
        if ctx.accuracy_scores:
            accuracy = pl.coalesce(ctx.accuracy.from_scores("scores"), accuracy)
        start = pl.col("start_time")
        return Cells(
            where=(start >= ctx.since)
            & (start < ctx.until)
            & pl.col("prompt").is_not_null()
            & pl.col("model").is_not_null()
            & ~pl.col("is_error").fill_null(False),
            keys={name: pl.col(name) for name in _CELL},
            aggs={
                "calls": (pl.len(), "sum"),
                "priced_calls": (pl.col("total_cost").is_not_null().sum(), "sum"),
                "cost": (pl.col("total_cost").sum(), "sum"),
                "labelled": (accuracy.is_not_null().sum(), "sum"),
                "correct": (accuracy.sum(), "sum"),
                "first_call": (start.min(), "min"),
                "last_call": (start.max(), "max"),
            },
        )

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        return merge_cells(partials, _CELL, sums=_SUMS, mins=["first_call"], maxes=["last_call"])

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """Test every pair, control the FDR across pairs, report each expensive arm once."""
        params = Params.from_mapping(ctx.params)
        table = evaluate(aggregates, ctx, params)
        if table.height == 0:
            return []
        chosen = (
            table.filter(
                pl.col("verdict").is_not_null()
                & (pl.col("monthly_savings_usd") >= params.min_monthly_savings_usd)
            )
            .sort(pl.col("verdict") == NON_INFERIOR, "monthly_savings_usd", descending=[True, True])
            .unique(subset=["provider_e", "model_e", *_KEY], keep="first", maintain_order=True)
            .sort("monthly_savings_usd", descending=True)
        )
        return [_finding(row, ctx, params) for row in chosen.iter_rows(named=True)]


RULE = RightSizingRule()


# -- statistics ----------------------------------------------------------------------------------


def noninferiority_p(
    x_c: np.ndarray, n_c: np.ndarray, x_e: np.ndarray, n_e: np.ndarray, margin: float
) -> np.ndarray:
    """One-sided p-value of H0: p_c − p_e <= −margin, from the Newcombe hybrid score bound.

    p = 1 − Φ(z*) where z* is the z at which the Newcombe lower bound of p_c − p_e equals
    −margin (bisection; the bound decreases as z grows). NaN where an arm has no labels.
    """
    x_c, n_c, x_e, n_e = (np.asarray(v, dtype=np.float64) for v in (x_c, n_c, x_e, n_e))
    valid = (n_c > 0) & (n_e > 0)
    lo = np.full(x_c.shape, -12.0)
    hi = np.full(x_c.shape, 12.0)

    def lower(z: np.ndarray) -> np.ndarray:
        # Newcombe's bound at |z|, mirrored for negative z so it falls monotonically in z
        z_abs = np.abs(z)
        lc, _ = _wilson(x_c, n_c, z_abs)
        _, ue = _wilson(x_e, n_e, z_abs)
        spread = np.sqrt((p_c - lc) ** 2 + (ue - p_e) ** 2)
        return (p_c - p_e) - np.sign(z) * spread

    with np.errstate(divide="ignore", invalid="ignore"):  # arms without labels: NaN
        p_c, p_e = x_c / n_c, x_e / n_e
        for _ in range(60):
            mid = (lo + hi) / 2.0
            above = lower(mid) > -margin
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
    z_star = (lo + hi) / 2.0
    p = stats.normal_sf(z_star)
    return np.where(valid, p, np.nan)


def _wilson(x: np.ndarray, n: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``stats.wilson_bounds`` with z per row (for the bisection over z), on numpy arrays:
    60 bisection steps over a few dozen pairs, where a Polars frame per step cost 0.38 CPU-s
    of the 10M store's audit (issue 15). The same operations in the same order as the Polars
    expressions it replaced, so the same bounds."""
    p = x / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z * np.sqrt(np.clip(p * (1.0 - p) / n + z2 / (4.0 * n * n), 0.0, None))
    half = half / denominator
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


# -- decide --------------------------------------------------------------------------------------


def evaluate(aggregates: pl.DataFrame, ctx: AuditContext, params: Params) -> pl.DataFrame:
    """Every (prompt, expensive arm e, cheaper arm c) pair with its test, verdict and saving."""
    if aggregates.height == 0:
        return pl.DataFrame()
    arms = aggregates.filter(
        (pl.col("calls") >= params.min_calls) & (pl.col("priced_calls") > 0)
    ).with_columns(
        (pl.col("cost") / pl.col("priced_calls")).alias("cpc"),
        pl.when(pl.col("labelled") > 0).then(pl.col("correct") / pl.col("labelled")).alias("acc"),
    )
    cols = ["provider", "model", "calls", "cost", "cpc", "labelled", "correct", "acc"]
    cols += ["first_call", "last_call"]
    pairs = (
        arms.select(*_KEY, *(pl.col(c).alias(f"{c}_e") for c in cols))
        .join(arms.select(*_KEY, *(pl.col(c).alias(f"{c}_c") for c in cols)), on=_KEY)
        .filter(pl.col("cpc_c") < pl.col("cpc_e"))
    )
    if pairs.height == 0:
        return pl.DataFrame()
    margin = params.margin_pp / 100.0
    labelled = (pl.col("labelled_c") >= params.min_labels) & (
        pl.col("labelled_e") >= params.min_labels
    )
    p = noninferiority_p(
        pairs["correct_c"].to_numpy(),
        pairs["labelled_c"].to_numpy(),
        pairs["correct_e"].to_numpy(),
        pairs["labelled_e"].to_numpy(),
        margin,
    )
    pairs = pairs.with_columns(
        pl.Series("p", p, dtype=pl.Float64).fill_nan(None),
        (pl.col("acc_c") - pl.col("acc_e")).alias("delta"),
    ).with_columns(pl.when(labelled).then(pl.col("p")).alias("p"))
    pairs = stats.benjamini_hochberg(pairs, "p", "q")
    lower, upper = stats.newcombe_bounds(
        pl.col("correct_c"), pl.col("labelled_c"), pl.col("correct_e"), pl.col("labelled_e")
    )
    base = pl.coalesce(pl.col("acc_e"), pl.col("acc_c"), pl.lit(params.assumed_accuracy))
    p_e = pl.coalesce(pl.col("acc_e"), base)
    # labels per arm for the bound to reach -margin if the models are truly equally accurate
    # (sizing on the observed difference would swing with every few labels)
    needed = stats.n_per_arm(p_e, p_e, margin)
    non_inferior = (pl.col("q") <= params.alpha).fill_null(False)
    plausible = pl.col("delta").is_null() | (pl.col("delta") > -margin)
    saving = pl.col("calls_e") * (pl.col("cpc_e") - pl.col("cpc_c"))
    # the traffic that would move is the expensive arm's: its rate is the run-rate
    pairs = pairs.with_columns(
        runrate.basis_days("first_call_e", "last_call_e", ctx).alias("basis_days")
    )
    return pairs.with_columns(
        lower.alias("delta_lower"),
        upper.alias("delta_upper"),
        needed.alias("needed_per_arm"),
        runrate.monthly(saving, "basis_days").alias("monthly_savings_usd"),
        saving.alias("saving_in_window"),
        pl.when(non_inferior)
        .then(pl.lit(NON_INFERIOR))
        .when(plausible)
        .then(pl.lit(INCONCLUSIVE))
        .otherwise(None)
        .alias("verdict"),
    )


def _round(value: float | None, digits: int) -> float | None:
    """Evidence numbers rounded: sums of floats differ in the last bits with summation order
    (parts, partitions), and the report must not."""
    return None if value is None else round(float(value), digits)


def _severity(verdict: str, monthly: float, params: Params) -> Severity:
    if verdict != NON_INFERIOR:
        return "info"
    if monthly >= params.high_savings_usd:
        return "high"
    if monthly >= params.medium_savings_usd:
        return "medium"
    return "low"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _finding(row: dict[str, Any], ctx: AuditContext, params: Params) -> Finding:
    monthly = float(row["monthly_savings_usd"])
    e, c = row["model_e"], row["model_c"]
    labels = (
        f"{c} {_pct(row['acc_c'])} on {row['labelled_c']:,} labelled calls vs {e} "
        f"{_pct(row['acc_e'])} on {row['labelled_e']:,}"
    )
    move = (
        f"moving {e}'s {row['calls_e']:,} calls (${row['cpc_e']:.5f}/call) to {c} "
        f"(${row['cpc_c']:.5f}/call for this prompt)"
    )
    if row["verdict"] == NON_INFERIOR:
        message = (
            f"{c} is non-inferior to {e} on this prompt: {labels}; the 95% lower bound of the "
            f"difference is {row['delta_lower'] * 100:+.1f} pp, within -{params.margin_pp:g} pp "
            f"(q={row['q']:.2g}). {move.capitalize()} saves ${monthly:,.2f}/month."
        )
        fix = (
            f"Route this prompt's {e} traffic to {c} (keep evaluating a sample), or make the "
            f"split that already sends part of it to {c} the default."
        )
    else:
        have = f"{labels}" if row["labelled_c"] and row["labelled_e"] else "labels missing"
        message = (
            f"Inconclusive: {move} would save ${monthly:,.2f}/month, but accuracy cannot yet be "
            f"shown within {params.margin_pp:g} pp ({have}); about "
            f"{row['needed_per_arm'] or 0:,} labelled calls per model are needed."
        )
        fix = (
            f"Label (evaluate) about {row['needed_per_arm'] or 0:,} calls of each model for this "
            "prompt; do not switch before the accuracy is known."
        )
    evidence = {
        "expensive_model": e,
        "cheaper_model": c,
        "calls_expensive": int(row["calls_e"]),
        "calls_cheaper": int(row["calls_c"]),
        "cost_per_call_expensive": _round(row["cpc_e"], 8),
        "cost_per_call_cheaper": _round(row["cpc_c"], 8),
        "labelled_expensive": int(row["labelled_e"]),
        "labelled_cheaper": int(row["labelled_c"]),
        "accuracy_expensive": _round(row["acc_e"], 6),
        "accuracy_cheaper": _round(row["acc_c"], 6),
        "accuracy_difference": _round(row["delta"], 6),
        "difference_lower_95": _round(row["delta_lower"], 6),
        "margin_pp": params.margin_pp,
        "p_noninferiority": _round(row["p"], 8),
        "q": _round(row["q"], 8),
        "needed_labels_per_model": row["needed_per_arm"],
        "saving_in_window_usd": _round(row["saving_in_window"], 6),
        "verdict": row["verdict"],
        "run_rate_basis": runrate.basis_evidence(
            row["first_call_e"], row["last_call_e"], row["basis_days"], row["calls_e"]
        ),
    }
    return Finding(
        rule=CODE,
        name=NAME,
        severity=_severity(row["verdict"], monthly, params),
        prompt=row["prompt"],
        model=e,
        service=row["service"],
        window_start=ctx.since,
        window_end=ctx.until,
        monthly_savings_usd=monthly,
        message=message,
        fix=fix,
        evidence=evidence,
        key={"prompt": row["prompt"], "service": row["service"], "model": e, "to_model": c},
    )
