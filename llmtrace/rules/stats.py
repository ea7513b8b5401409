"""The statistics the rules decide with, written as Polars expressions over many keys at once.

Why these tests (shared/research/rules-domain.md §4):

* **Mann–Whitney U, one-sided** ("reasoning tokens rose"): per-call reasoning is heavy-tailed with
  a point mass at 0, so rise is detected with ranks; dollars are estimated with means elsewhere.
  Asymptotic normal approximation with tie correction and no continuity correction, i.e. scipy's
  ``mannwhitneyu(b, a, alternative="greater", method="asymptotic", use_continuity=False)``.
* **Wilson** intervals per arm and the **Newcombe hybrid score** interval for a difference of two
  proportions ("accuracy did not improve"): a p-value above 0.05 is never evidence of no gain, so
  waste is claimed only when the one-sided upper bound of the gain is below a meaningful δ.
* **Benjamini–Hochberg** across every key tested in one audit (= statsmodels ``fdr_bh``).
* **Sample size per arm** for a wanted bound half-width: what an inconclusive finding asks for.

Mann–Whitney from mergeable aggregates. A rule's ``aggregate`` step must produce partials that
merge by addition, and a rank sum does not. So reasoning tokens are counted in a fixed histogram
(``reasoning_bin``: bin 0 holds 0 tokens, then ``BINS_PER_OCTAVE`` log-spaced bins per doubling),
partial histograms merge by summing counts, and U is computed on the histogram with every pair of
calls in the same bin counted as a tie. That is *exactly* the Mann–Whitney test of the binned
values (tie-corrected), so its false-positive rate is controlled just like the raw test's; the
coarsening only loses power on differences smaller than one bin (2^(1/16) − 1 ≈ 4.4 % of the
value, while LT101 looks for rises of 15 % and more). Values below ~23 tokens each get their own
bin, so small counts are ranked exactly. ``mann_whitney_greater`` ranks raw values exactly for the
cases where the calls themselves are at hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

# norm.ppf(0.95): the one-sided 95 % normal quantile (1.645 rounded).
Z_ONE_SIDED_95 = 1.6448536269514722

BINS_PER_OCTAVE = 16


# -- reasoning-token histogram ------------------------------------------------------------------


def reasoning_bin(tokens: pl.Expr) -> pl.Expr:
    """Histogram bin of a token count: 0 for 0 tokens, else ``floor(16·log2(tokens)) + 1``.

    Fixed edges (not data-dependent) are what make partial histograms mergeable.
    """
    positive = tokens.cast(pl.Float64).clip(lower_bound=1.0)
    binned = (positive.log(2) * BINS_PER_OCTAVE).floor().cast(pl.Int32) + 1
    return pl.when(tokens <= 0).then(pl.lit(0, dtype=pl.Int32)).otherwise(binned)


def bin_lower_edge(bins: pl.Expr) -> pl.Expr:
    """Smallest token count that falls in ``bins`` (0 for bin 0)."""
    edge = (pl.lit(2.0).pow((bins.cast(pl.Float64) - 1) / BINS_PER_OCTAVE)).ceil()
    return pl.when(bins <= 0).then(0.0).otherwise(edge)


def bin_midpoint(bins: pl.Expr) -> pl.Expr:
    """A representative token count for a bin: its geometric middle (exact for small bins)."""
    lower = bin_lower_edge(bins)
    upper = bin_lower_edge(bins + 1) - 1
    return pl.when(upper <= lower).then(lower).otherwise((lower * upper).sqrt().round(0))


# -- Mann–Whitney U ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MannWhitney:
    """One-sided Mann–Whitney result for "B is stochastically greater than A"."""

    u: float  # U of arm B: pairs (b, a) with b > a, ties counted one half
    z: float
    p: float
    effect: float  # U / (n_a·n_b): estimated P(B > A) + ½ P(B = A)


def normal_sf(z: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """Upper tail of the standard normal, ½·erfc(z/√2), elementwise (NaN stays NaN)."""
    values = np.asarray(z, dtype=np.float64)
    flat = [
        0.5 * math.erfc(v / math.sqrt(2.0)) if not math.isnan(v) else math.nan
        for v in values.ravel()
    ]
    return np.array(flat, dtype=np.float64).reshape(values.shape)


def _normal_sf_expr(z: pl.Expr) -> pl.Expr:
    """``normal_sf`` on a column; runs on the small decided table (one value per key)."""
    return z.map_batches(
        lambda s: pl.Series(s.name, normal_sf(s.cast(pl.Float64).fill_null(math.nan).to_numpy())),
        return_dtype=pl.Float64,
    ).fill_nan(None)


def _mwu_from_parts(n_a: pl.Expr, n_b: pl.Expr, u_b: pl.Expr, ties: pl.Expr) -> list[pl.Expr]:
    """z, p and effect from the U of B, the arm sizes and Σ(t³ − t) over tie groups."""
    n = n_a + n_b
    valid = (n_a > 0) & (n_b > 0)
    variance = n_a * n_b / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    sigma = pl.when(valid).then(variance.clip(lower_bound=0.0).sqrt()).otherwise(0.0)
    z = pl.when(valid & (sigma > 0)).then((u_b - n_a * n_b / 2.0) / sigma).otherwise(None)
    # No spread at all (every call tied) or an empty arm: no evidence of a rise.
    p = pl.when(z.is_null()).then(1.0).otherwise(_normal_sf_expr(z))
    effect = pl.when(valid).then(u_b / (n_a * n_b)).otherwise(None)
    return [z.alias("z"), p.alias("p"), effect.alias("effect")]


def mann_whitney_from_histograms(
    hist: pl.DataFrame | pl.LazyFrame,
    by: Sequence[str],
    *,
    bin_col: str = "bin",
    n_a_col: str = "n_a",
    n_b_col: str = "n_b",
) -> pl.DataFrame:
    """One-sided Mann–Whitney (B > A) for every key in ``by`` from per-bin counts of both arms.

    ``hist`` has one row per key and bin with the count of calls of arm A and arm B in that bin
    (a bin may repeat: counts are summed first, which is how partial histograms merge). Calls in
    the same bin are ties. Returns one row per key: ``n_a, n_b, u, z, p, effect``.
    """
    keys = list(by)
    counts = (
        hist.lazy()
        .group_by([*keys, bin_col])
        .agg(
            pl.col(n_a_col).cast(pl.Float64).sum().alias("_a"),
            pl.col(n_b_col).cast(pl.Float64).sum().alias("_b"),
        )
        .sort([*keys, bin_col])
    )
    below_a = pl.col("_a").cum_sum().over(keys) - pl.col("_a")
    per_bin = counts.with_columns(
        (pl.col("_b") * (below_a + 0.5 * pl.col("_a"))).alias("_u"),
        ((pl.col("_a") + pl.col("_b")) ** 3 - (pl.col("_a") + pl.col("_b"))).alias("_t"),
    )
    summed = per_bin.group_by(keys).agg(
        pl.col("_a").sum().alias("n_a"),
        pl.col("_b").sum().alias("n_b"),
        pl.col("_u").sum().alias("u"),
        pl.col("_t").sum().alias("_ties"),
    )
    tested = summed.with_columns(
        _mwu_from_parts(pl.col("n_a"), pl.col("n_b"), pl.col("u"), pl.col("_ties"))
    )
    return (
        tested.drop("_ties")
        .with_columns(pl.col("n_a").cast(pl.Int64), pl.col("n_b").cast(pl.Int64))
        .sort(keys)
        .collect()
    )


def mann_whitney_greater(
    b: Sequence[float] | np.ndarray, a: Sequence[float] | np.ndarray
) -> MannWhitney:
    """One-sided Mann–Whitney "b > a" on raw values with exact mid-ranks (Polars ``rank``)."""
    values = pl.DataFrame(
        {
            "x": np.concatenate([np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)]),
            "is_b": np.concatenate([np.ones(len(b), dtype=bool), np.zeros(len(a), dtype=bool)]),
        }
    )
    n_b, n_a = float(len(b)), float(len(a))
    row = (
        values.lazy()
        .select(
            (pl.col("x").rank("average").filter(pl.col("is_b")).sum() - n_b * (n_b + 1) / 2).alias(
                "u"
            ),
            pl.col("x").value_counts().struct.field("count").cast(pl.Float64).alias("_t"),
        )
        .select(pl.col("u").first(), (pl.col("_t") ** 3 - pl.col("_t")).sum().alias("ties"))
        .select(
            pl.col("u"),
            *_mwu_from_parts(pl.lit(n_a), pl.lit(n_b), pl.col("u"), pl.col("ties")),
        )
        .collect()
        .row(0, named=True)
    )
    return MannWhitney(
        u=float(row["u"]),
        z=math.nan if row["z"] is None else float(row["z"]),
        p=float(row["p"]),
        effect=math.nan if row["effect"] is None else float(row["effect"]),
    )


# -- proportions ---------------------------------------------------------------------------------


def wilson_bounds(x: pl.Expr, n: pl.Expr, z: float = Z_ONE_SIDED_95) -> tuple[pl.Expr, pl.Expr]:
    """Wilson score interval ``(lower, upper)`` for x successes of n at normal quantile z.

    Null where n = 0. ``x`` may be fractional (a sum of scores in 0..1).
    """
    n_f = n.cast(pl.Float64)
    p = x.cast(pl.Float64) / n_f
    z2 = z * z
    denominator = 1.0 + z2 / n_f
    centre = (p + z2 / (2.0 * n_f)) / denominator
    half = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).clip(lower_bound=0.0).sqrt()
    half = half / denominator
    valid = n_f > 0
    lower = pl.when(valid).then((centre - half).clip(0.0, 1.0)).otherwise(None)
    upper = pl.when(valid).then((centre + half).clip(0.0, 1.0)).otherwise(None)
    return lower, upper


def newcombe_bounds(
    x_b: pl.Expr, n_b: pl.Expr, x_a: pl.Expr, n_a: pl.Expr, z: float = Z_ONE_SIDED_95
) -> tuple[pl.Expr, pl.Expr]:
    """Newcombe hybrid score interval ``(lower, upper)`` for Δ = p_B − p_A (method 10, 1998).

    Built from each arm's Wilson interval at the same z; with z = 1.645 the upper bound is the
    one-sided 95 % upper confidence bound of the gain. Null where either arm is empty.
    """
    p_b = x_b.cast(pl.Float64) / n_b.cast(pl.Float64)
    p_a = x_a.cast(pl.Float64) / n_a.cast(pl.Float64)
    l_b, u_b = wilson_bounds(x_b, n_b, z)
    l_a, u_a = wilson_bounds(x_a, n_a, z)
    delta = p_b - p_a
    lower = delta - ((p_b - l_b) ** 2 + (u_a - p_a) ** 2).sqrt()
    upper = delta + ((u_b - p_b) ** 2 + (p_a - l_a) ** 2).sqrt()
    return lower, upper


def wilson_interval(x: float, n: float, z: float = Z_ONE_SIDED_95) -> tuple[float, float]:
    """Scalar ``wilson_bounds``."""
    lower, upper = wilson_bounds(pl.lit(float(x)), pl.lit(float(n)), z)
    row = pl.select(lower.alias("l"), upper.alias("u")).row(0)
    return float(row[0]), float(row[1])


def newcombe_interval(
    x_b: float, n_b: float, x_a: float, n_a: float, z: float = Z_ONE_SIDED_95
) -> tuple[float, float]:
    """Scalar ``newcombe_bounds``: interval for p_B − p_A."""
    lower, upper = newcombe_bounds(
        pl.lit(float(x_b)), pl.lit(float(n_b)), pl.lit(float(x_a)), pl.lit(float(n_a)), z
    )
    row = pl.select(lower.alias("l"), upper.alias("u")).row(0)
    return float(row[0]), float(row[1])


def n_per_arm(
    p_a: pl.Expr | float,
    p_b: pl.Expr | float,
    half_width: pl.Expr | float,
    z: float = Z_ONE_SIDED_95,
) -> pl.Expr:
    """Labelled calls needed per arm for a bound on p_B − p_A of the given half-width.

    n = z²·(p_A(1 − p_A) + p_B(1 − p_B)) / h², rounded up; with p_A = p_B = p this is the
    z²·2p(1 − p)/h² of the research notes (85 %, ±2 pp → 1,725). Null where h ≤ 0.
    """
    p_a_e = p_a if isinstance(p_a, pl.Expr) else pl.lit(float(p_a))
    p_b_e = p_b if isinstance(p_b, pl.Expr) else pl.lit(float(p_b))
    h = half_width if isinstance(half_width, pl.Expr) else pl.lit(float(half_width))
    variance = p_a_e * (1.0 - p_a_e) + p_b_e * (1.0 - p_b_e)
    needed = (z * z * variance / (h * h)).ceil()
    return pl.when((h > 0) & needed.is_finite()).then(needed).otherwise(None).cast(pl.Int64)


def sample_size_per_arm(p: float, half_width: float, z: float = Z_ONE_SIDED_95) -> int:
    """Scalar ``n_per_arm`` with both arms at accuracy p."""
    return int(pl.select(n_per_arm(p, p, half_width, z)).item())


# -- multiple comparisons ------------------------------------------------------------------------


def benjamini_hochberg(frame: pl.DataFrame, p_col: str = "p", q_col: str = "q") -> pl.DataFrame:
    """Add Benjamini–Hochberg adjusted p-values (q-values) of ``p_col`` as ``q_col``.

    Same as statsmodels ``multipletests(p, method="fdr_bh")[1]``: q_(i) = min over j ≥ i of
    p_(j)·m/j, capped at 1. Null p-values (keys not tested) are not counted in m and get null q.
    """
    indexed = frame.with_row_index("_row")
    tested = indexed.filter(pl.col(p_col).is_not_null()).select("_row", p_col)
    m = tested.height
    if m == 0:
        return frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(q_col))
    adjusted = (
        tested.sort(p_col, maintain_order=True)
        .with_columns((pl.col(p_col) * m / pl.int_range(1, m + 1, dtype=pl.Int64)).alias(q_col))
        .with_columns(pl.col(q_col).reverse().cum_min().reverse().clip(upper_bound=1.0))
        .select("_row", q_col)
    )
    return indexed.join(adjusted, on="_row", how="left").sort("_row").drop("_row")
