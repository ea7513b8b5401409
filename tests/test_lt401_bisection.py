"""LT401's non-inferiority p-values from numpy arrays are the same, bit for bit, as from the
Polars expressions they replaced (issue 15: 60 bisection steps, a frame each, cost 0.38 CPU-s
of the 10M store's audit). The reference below is the replaced code, kept as it was."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from llmtrace.rules import stats
from llmtrace.rules.loader import builtin_specs
from llmtrace.rules.lt401_rightsizing import noninferiority_p


def _wilson(x: pl.Expr, n: pl.Expr, z: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    n_f = n.cast(pl.Float64)
    p = x.cast(pl.Float64) / n_f
    z2 = z * z
    denominator = 1.0 + z2 / n_f
    centre = (p + z2 / (2.0 * n_f)) / denominator
    half = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).clip(lower_bound=0.0).sqrt()
    half = half / denominator
    return (centre - half).clip(0.0, 1.0), (centre + half).clip(0.0, 1.0)


def _reference(x_c, n_c, x_e, n_e, margin: float) -> np.ndarray:  # noqa: ANN001
    x_c, n_c, x_e, n_e = (np.asarray(v, dtype=np.float64) for v in (x_c, n_c, x_e, n_e))
    valid = (n_c > 0) & (n_e > 0)
    lo = np.full(x_c.shape, -12.0)
    hi = np.full(x_c.shape, 12.0)

    def lower(z: np.ndarray) -> np.ndarray:
        frame = pl.DataFrame({"xc": x_c, "nc": n_c, "xe": x_e, "ne": n_e, "z": z})
        p_c = pl.col("xc") / pl.col("nc")
        p_e = pl.col("xe") / pl.col("ne")
        z_abs = pl.col("z").abs()
        lc, _ = _wilson(pl.col("xc"), pl.col("nc"), z_abs)
        _, ue = _wilson(pl.col("xe"), pl.col("ne"), z_abs)
        spread = ((p_c - lc) ** 2 + (ue - p_e) ** 2).sqrt()
        bound = (p_c - p_e) - pl.col("z").sign() * spread
        return frame.select(bound.fill_nan(None)).to_series().fill_null(math.nan).to_numpy()

    for _ in range(60):
        mid = (lo + hi) / 2.0
        above = lower(mid) > -margin
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.where(valid, stats.normal_sf((lo + hi) / 2.0), np.nan)


def test_p_values_identical_to_the_polars_bisection() -> None:
    rng = np.random.default_rng(15)
    n_c, n_e = rng.integers(0, 500, 2000), rng.integers(0, 500, 2000)
    x_c = np.minimum(n_c, rng.integers(0, 500, 2000))
    x_e = np.minimum(n_e, rng.integers(0, 500, 2000))
    x_c[:40], x_e[40:80], n_c[80:90] = n_c[:40], 0, 0  # all correct, none correct, no labels
    for margin in (0.0, 0.02, 0.1):
        got = noninferiority_p(x_c, n_c, x_e, n_e, margin)
        want = _reference(x_c, n_c, x_e, n_e, margin)
        assert np.isnan(want).sum() >= 10  # arms without labels: NaN both ways
        assert np.array_equal(got, want, equal_nan=True), margin


def test_builtin_specs_are_read_once(monkeypatch) -> None:  # noqa: ANN001
    """The rule pack is parsed once per process; each call gets its own dict."""
    from llmtrace.rules import loader

    first = builtin_specs()

    def unread(*args: object) -> None:
        raise AssertionError("the rule pack was parsed again")

    monkeypatch.setattr(loader, "read_yaml", unread)
    again = builtin_specs()
    assert again == first and again is not first
    again.pop("LT101")
    assert "LT101" in builtin_specs()
