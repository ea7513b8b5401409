"""The rule statistics against scipy and published reference values."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.stats as sps
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtrace.rules import stats

Z95 = float(sps.norm.ppf(0.95))
Z975 = float(sps.norm.ppf(0.975))


def scipy_greater(b, a) -> tuple[float, float]:
    res = sps.mannwhitneyu(b, a, alternative="greater", method="asymptotic", use_continuity=False)
    return float(res.statistic), float(res.pvalue)


def histogram(frame: pl.DataFrame, value: pl.Expr) -> pl.DataFrame:
    """Per key and bin: counts of arm a and arm b (what LT101's aggregate produces)."""
    return frame.group_by("key", value.alias("bin")).agg(
        (pl.col("arm") == "a").sum().alias("n_a"), (pl.col("arm") == "b").sum().alias("n_b")
    )


def arms_frame(key: str, a, b) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": [key] * (len(a) + len(b)),
            "x": np.concatenate([a, b]).astype(np.int64),
            "arm": ["a"] * len(a) + ["b"] * len(b),
        }
    )


def test_constant_is_the_one_sided_95_quantile() -> None:
    assert abs(stats.Z_ONE_SIDED_95 - Z95) < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mann_whitney_raw_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 40, size=rng.integers(5, 300))  # many ties and zeros
    b = rng.integers(0, 45, size=rng.integers(5, 300))
    result = stats.mann_whitney_greater(b, a)
    u, p = scipy_greater(b, a)
    assert result.u == pytest.approx(u)
    assert result.p == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert result.effect == pytest.approx(u / (len(a) * len(b)))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=2, max_size=40),
    st.lists(st.integers(0, 30), min_size=2, max_size=40),
)
def test_mann_whitney_raw_matches_scipy_property(a: list[int], b: list[int]) -> None:
    result = stats.mann_whitney_greater(b, a)
    u, p = scipy_greater(b, a)
    assert result.u == pytest.approx(u)
    if math.isnan(p):  # every value tied: scipy gives NaN, we give "no evidence"
        assert result.p == 1.0
    else:
        assert result.p == pytest.approx(p, rel=1e-9, abs=1e-15)


def test_histogram_mann_whitney_is_exact_for_small_counts_and_vectorized() -> None:
    """Below ~23 tokens every count has its own bin: the histogram test is the raw test."""
    rng = np.random.default_rng(7)
    cases = {
        "k1": (rng.integers(0, 20, 200), rng.integers(0, 23, 150)),
        "k2": (rng.integers(0, 10, 80), rng.integers(0, 10, 90)),
        "k3": (rng.integers(5, 20, 60), rng.integers(0, 12, 70)),  # B lower: p near 1
    }
    frame = pl.concat([arms_frame(k, a, b) for k, (a, b) in cases.items()])
    result = stats.mann_whitney_from_histograms(
        histogram(frame, stats.reasoning_bin(pl.col("x"))), ["key"]
    )
    assert result["key"].to_list() == ["k1", "k2", "k3"]
    for row in result.iter_rows(named=True):
        a, b = cases[row["key"]]
        u, p = scipy_greater(b, a)
        assert (row["n_a"], row["n_b"]) == (len(a), len(b))
        assert row["u"] == pytest.approx(u)
        assert row["p"] == pytest.approx(p, rel=1e-9)


def test_histogram_mann_whitney_equals_scipy_on_binned_values() -> None:
    """For large counts it is the exact tie-corrected test of the binned values."""
    rng = np.random.default_rng(11)
    a = rng.lognormal(np.log(1000), 0.6, 500).astype(np.int64)
    b = rng.lognormal(np.log(1150), 0.6, 400).astype(np.int64)
    frame = arms_frame("k", a, b)
    binned = frame.with_columns(stats.reasoning_bin(pl.col("x")).alias("bin"))
    bins_a = binned.filter(pl.col("arm") == "a")["bin"].to_numpy()
    bins_b = binned.filter(pl.col("arm") == "b")["bin"].to_numpy()
    row = stats.mann_whitney_from_histograms(
        histogram(frame, stats.reasoning_bin(pl.col("x"))), ["key"]
    ).row(0, named=True)
    u, p = scipy_greater(bins_b, bins_a)
    assert row["u"] == pytest.approx(u)
    assert row["p"] == pytest.approx(p, rel=1e-9)
    # ... and close to the raw test: binning costs little at a 4.4 % bin width.
    assert row["p"] == pytest.approx(scipy_greater(b, a)[1], rel=0.25)


def test_histogram_partials_merge_by_summing() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 5000, 300), rng.integers(0, 6000, 300)
    frame = arms_frame("k", a, b)
    whole = histogram(frame, stats.reasoning_bin(pl.col("x")))
    parts = pl.concat(
        [
            histogram(frame[:250], stats.reasoning_bin(pl.col("x"))),
            histogram(frame[250:], stats.reasoning_bin(pl.col("x"))),
        ]
    )
    assert parts.height > whole.height  # the same bins appear in both partitions
    one = stats.mann_whitney_from_histograms(whole, ["key"])
    two = stats.mann_whitney_from_histograms(parts, ["key"])
    for row_one, row_two in zip(
        one.select("u", "p").rows(), two.select("u", "p").rows(), strict=True
    ):
        assert row_one == pytest.approx(row_two)


def test_all_ties_or_empty_arm_is_no_evidence() -> None:
    hist = pl.DataFrame({"key": ["tied", "empty"], "bin": [3, 3], "n_a": [10, 0], "n_b": [12, 9]})
    result = stats.mann_whitney_from_histograms(hist, ["key"])
    assert result["p"].to_list() == [1.0, 1.0]


def test_reasoning_bins() -> None:
    tokens = pl.Series("t", [0, 1, 2, 3, 22, 23, 1000, 1040, 1_000_000], dtype=pl.Int64)
    bins = pl.select(stats.reasoning_bin(pl.lit(tokens))).to_series().to_list()
    assert bins[0] == 0
    assert bins == sorted(bins)
    assert len(set(bins[:5])) == 5  # small counts are exact
    lower = pl.select(stats.bin_lower_edge(pl.lit(pl.Series(bins)))).to_series().to_list()
    assert all(lo <= t for lo, t in zip(lower, tokens.to_list(), strict=True))
    mid = pl.select(stats.bin_midpoint(pl.lit(pl.Series([bins[6]])))).item()
    assert mid == pytest.approx(1000, rel=0.05)


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 10), (30, 100), (195, 225), (225, 225), (7, 7)])
@pytest.mark.parametrize("confidence", [0.90, 0.95])
def test_wilson_matches_scipy(x: int, n: int, confidence: float) -> None:
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    expected = sps.binomtest(x, n).proportion_ci(confidence_level=confidence, method="wilson")
    lower, upper = stats.wilson_interval(x, n, z)
    assert lower == pytest.approx(expected.low, abs=1e-12)
    assert upper == pytest.approx(expected.high, abs=1e-12)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ((56, 70, 48, 80), (0.0524, 0.3339)),  # Newcombe (1998) Stat Med 17:873, Table II (a)
        ((9, 10, 3, 10), (0.1705, 0.8090)),  # Table II (b)
    ],
)
def test_newcombe_published_values(case, expected) -> None:
    lower, upper = stats.newcombe_interval(*case, z=Z975)
    assert (round(lower, 4), round(upper, 4)) == expected


@pytest.mark.parametrize("case", [(198, 225, 195, 225), (950, 1000, 950, 1000), (5, 40, 20, 40)])
def test_newcombe_from_scipy_wilson(case) -> None:
    """The one-sided 95 % bounds rebuilt by hand from scipy's Wilson intervals (90 % two-sided)."""
    x_b, n_b, x_a, n_a = case
    ci_b = sps.binomtest(x_b, n_b).proportion_ci(0.90, "wilson")
    ci_a = sps.binomtest(x_a, n_a).proportion_ci(0.90, "wilson")
    p_b, p_a = x_b / n_b, x_a / n_a
    d = p_b - p_a
    lower = d - math.hypot(p_b - ci_b.low, ci_a.high - p_a)
    upper = d + math.hypot(ci_b.high - p_b, p_a - ci_a.low)
    got = stats.newcombe_interval(x_b, n_b, x_a, n_a)
    assert got == pytest.approx((lower, upper), abs=1e-12)


def test_newcombe_research_example() -> None:
    """gpt-5 medium -> high on Aider polyglot: 195 -> 198 of 225; bound +6.5 pp (notes §4.2)."""
    lower, upper = stats.newcombe_interval(198, 225, 195, 225)
    assert upper == pytest.approx(0.065, abs=0.002)
    assert lower < 0 < upper


def test_newcombe_expression_is_null_for_empty_arm() -> None:
    lower, upper = stats.newcombe_bounds(pl.lit(0.0), pl.lit(0), pl.lit(5.0), pl.lit(10))
    assert pl.select(lower, upper.alias("u")).row(0) == (None, None)


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(0, 0.01, 5), rng.uniform(0, 1, 40), [0.02, 0.02, 0.02]])
    frame = pl.DataFrame({"p": p})
    q = stats.benjamini_hochberg(frame)["q"].to_numpy()
    assert q == pytest.approx(sps.false_discovery_control(p, method="bh"), abs=1e-12)


def test_benjamini_hochberg_skips_untested_keys() -> None:
    frame = pl.DataFrame({"key": list("abcde"), "p": [0.01, None, 0.04, 0.03, None]})
    result = stats.benjamini_hochberg(frame)
    expected = sps.false_discovery_control([0.01, 0.04, 0.03], method="bh")
    assert result["key"].to_list() == list("abcde")
    assert result["q"].to_list()[1] is None and result["q"].to_list()[4] is None
    got = [result["q"][i] for i in (0, 2, 3)]
    assert got == pytest.approx(list(expected))


def test_benjamini_hochberg_with_nothing_tested() -> None:
    result = stats.benjamini_hochberg(pl.DataFrame({"p": [None, None]}, schema={"p": pl.Float64}))
    assert result["q"].to_list() == [None, None]


@pytest.mark.parametrize(
    ("p", "h", "n"), [(0.85, 0.02, 1725), (0.85, 0.03, 767), (0.60, 0.03, 1443)]
)
def test_sample_size_matches_research_table(p: float, h: float, n: int) -> None:
    assert stats.sample_size_per_arm(p, h) == n


@pytest.mark.parametrize(
    ("p_a", "p_b", "h"), [(0.85, 0.85, 0.02), (0.7, 0.75, 0.04), (0.5, 0.6, 0.1)]
)
def test_sample_size_is_the_smallest_that_reaches_the_half_width(p_a, p_b, h) -> None:
    n = pl.select(stats.n_per_arm(p_a, p_b, h)).item()

    def half_width(size: int) -> float:
        return Z95 * math.sqrt((p_a * (1 - p_a) + p_b * (1 - p_b)) / size)

    assert half_width(n) <= h < half_width(n - 1)
    assert pl.select(stats.n_per_arm(p_a, p_b, 0.0)).item() is None


def test_normal_sf_matches_scipy() -> None:
    z = np.array([-3.0, -0.5, 0.0, 1.6448536269514722, 5.0, 30.0])
    assert stats.normal_sf(z) == pytest.approx(sps.norm.sf(z), rel=1e-12, abs=1e-300)
