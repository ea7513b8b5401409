"""bench/_resample.py: the p99 ratio's bootstrap interval that bench_overhead.py prints.

Fixed, seeded data only (no timing): the point estimate is the figure bench_overhead.py prints
(``statistics.quantiles(..., n=100)[98]`` of the pooled calls); rounds are resampled by the same
indices for both sides, so two identical single-process sides give exactly 1.0 in every draw;
CPU differences come out per call; the verdict reads the interval against the bound.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _resample import ratio_interval, verdict  # noqa: E402


def _cells(seed: int, processes: int, rounds: int, calls: int, scale: float = 1.0) -> list:
    rng = np.random.default_rng(seed)
    return [
        [list(rng.lognormal(np.log(0.002), 0.4, calls) * scale) for _ in range(rounds)]
        for _ in range(processes)
    ]


def test_point_estimate_is_the_pooled_p99_ratio() -> None:
    a, b = _cells(1, 3, 5, 200, 1.2), _cells(2, 3, 5, 200)
    found = ratio_interval(a, b, draws=200)
    pooled = [[x for p in side for r in p for x in r] for side in (a, b)]
    expected = (
        statistics.quantiles(pooled[0], n=100)[98] / statistics.quantiles(pooled[1], n=100)[98]
    )
    assert found["p99_ratio"] == pytest.approx(expected, rel=1e-12)
    low, high = found["p99_ratio_ci"]
    assert low < found["p99_ratio"] < high
    assert found["processes"] == [3, 3] and found["rounds"] == 5 and found["draws"] == 200


def test_rounds_are_paired_between_the_sides() -> None:
    # one process a side, the same calls: any draw takes the same rounds from both -> 1.0
    a = _cells(3, 1, 8, 100)
    found = ratio_interval(a, [list(map(list, p)) for p in a], draws=300)
    assert found["p99_ratio"] == 1.0
    assert found["p99_ratio_ci"] == [1.0, 1.0]


def test_cpu_difference_per_call() -> None:
    a, b = _cells(4, 2, 4, 50), _cells(5, 2, 4, 50)
    cpu_b = [[0.1 + 0.01 * i + 0.001 * r for r in range(4)] for i in range(2)]
    cpu_a = [[x + 50 * 10e-6 for x in p] for p in cpu_b]  # +10 us a call, 50 calls a cell
    cpu_a[1] = list(cpu_a[0])
    cpu_b[1] = list(cpu_b[0])  # processes alike: every draw sees the same difference
    found = ratio_interval(a, b, cpu_a=cpu_a, cpu_b=cpu_b, calls=50, draws=100)
    assert found["cpu_diff_s"] == pytest.approx(10e-6)
    assert found["cpu_diff_ci_s"] == pytest.approx([10e-6, 10e-6])


def test_rounds_must_match() -> None:
    with pytest.raises(ValueError, match="rounds differ"):
        ratio_interval(_cells(6, 1, 3, 10), _cells(7, 1, 4, 10))


def test_verdict() -> None:
    assert verdict(0.95, 1.08, 1.10) == "met"
    assert verdict(1.11, 1.40, 1.10) == "not met"
    assert verdict(1.02, 1.25, 1.10) == "undecided"
    assert verdict(1.10, 1.10, 1.10) == "met"
    # the A/A control's interval reaches past the bound: no verdict either way
    assert verdict(0.95, 1.08, 1.10, floor=(0.65, 1.38)) == "undecided"
    assert verdict(1.20, 1.40, 1.10, floor=(0.85, 1.05)) == "undecided"
    assert verdict(0.95, 1.08, 1.10, floor=(0.93, 1.06)) == "met"
    assert verdict(1.20, 1.40, 1.10, floor=(0.93, 1.06)) == "not met"


def test_live_latency_row_carries_the_interval_and_the_aa_floor() -> None:
    import bench_live_spans

    tail = {
        "intervals": {
            "official-aa": {"p99_ratio": 0.97, "p99_ratio_ci": [0.9, 1.2], "verdict": "undecided"},
            "llmtrace": {"p99_ratio": 1.3, "p99_ratio_ci": [1.15, 1.5], "verdict": "undecided"},
        },
        "p99_us": {"official": 2000.0, "official-aa": 1940.0, "llmtrace": 2600.0},
        "median_us": {"official": 1800.0, "official-aa": 1790.0, "llmtrace": 1830.0},
        "cpu_us_per_call": {"official": 1500.0, "official-aa": 1490.0, "llmtrace": 1560.0},
        "cpu_s_by_config": {"official": 15.0, "official-aa": 14.9, "llmtrace": 15.6},
        "peak_rss_mb": {"official": 76.0, "official-aa": 76.0, "llmtrace": 80.0},
        "wall_s": 60.0,
        "load": [0.8, 1.1],
        "rounds": 10,
        "calls": 1000,
    }
    row = bench_live_spans.latency_row(tail, "llmtrace")
    assert (
        "1.30× the bare instrumentation's** [1.15–1.50, 95% over rounds: undecided]"
        in (row["result"])
    )
    assert row["baseline"].endswith(
        "A/A control (official again, its own process): 0.97× [0.90–1.20]"
    )
    assert row["latency_intervals"]["llmtrace"]["p99_ratio_ci"] == [1.15, 1.5]
