"""Confidence intervals for bench_overhead.py's end-to-end figures, by a two-stage bootstrap.

Why a bootstrap over processes and rounds, not over calls: on this machine a process's memory
layout and core placement move its times for its whole life, and a round's machine state (what
the other engineers run) moves every configuration measured in it. Calls within one process
and round are not independent draws, so resampling calls would give intervals far too narrow.
What is resampled here is what varies between runs of the bench:

* the rounds, by index, **the same indices for every configuration** (rounds are interleaved:
  round ``r`` of one configuration ran beside round ``r`` of the other, so pairing keeps what
  they shared out of the difference);
* the processes of each configuration, independently (each configuration runs in processes of
  its own).

A draw pools the per-call times of the chosen (process, round) cells and takes the same 99th
percentile as ``statistics.quantiles(..., n=100)[98]`` (numpy's ``weibull`` method), so the
point estimate is the figure bench_overhead.py prints. With few processes the process stage
has few distinct draws and the interval is too narrow: the A/A control (``--aa``: the official
configuration against a second, identical one in processes of its own) shows how wide the
noise really is, and is the check on this interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# cells[process][round] -> the per-call wall times (s) of that process in that round
Cells = Sequence[Sequence[Sequence[float]]]


def _stack(cells: Cells) -> np.ndarray:
    """(processes, rounds, calls) array; every round has the same number of calls."""
    return np.asarray([[np.asarray(r, dtype=float) for r in p] for p in cells], dtype=float)


def p99(values: np.ndarray) -> float:
    """The 99th percentile as ``statistics.quantiles(values, n=100)[98]`` computes it."""
    return float(np.quantile(values, 0.99, method="weibull"))


def ratio_interval(
    a: Cells,
    b: Cells,
    *,
    cpu_a: Sequence[Sequence[float]] | None = None,
    cpu_b: Sequence[Sequence[float]] | None = None,
    calls: int | None = None,
    draws: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """p99(a) / p99(b) with its bootstrap interval (percentile method), and, when the per-cell
    CPU seconds are given (``cpu_x[process][round]``, ``calls`` timed calls a cell), the CPU
    per call of ``a`` minus ``b`` in seconds with its interval, from the same draws."""
    xa, xb = _stack(a), _stack(b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"rounds differ: {xa.shape[1]} against {xb.shape[1]}")
    rounds = xa.shape[1]
    rng = np.random.default_rng(seed)
    ratios = np.empty(draws)
    cpus = np.empty(draws) if cpu_a is not None and cpu_b is not None else None
    ca = np.asarray(cpu_a, dtype=float) if cpus is not None else None
    cb = np.asarray(cpu_b, dtype=float) if cpus is not None else None
    for i in range(draws):
        r = rng.integers(0, rounds, rounds)
        pa = rng.integers(0, xa.shape[0], xa.shape[0])
        pb = rng.integers(0, xb.shape[0], xb.shape[0])
        ratios[i] = p99(xa[pa][:, r].ravel()) / p99(xb[pb][:, r].ravel())
        if cpus is not None:
            assert ca is not None and cb is not None and calls
            cpus[i] = (ca[pa][:, r].mean() - cb[pb][:, r].mean()) / calls
    tail = (1 - level) / 2 * 100
    result: dict[str, Any] = {
        "p99_ratio": p99(xa.ravel()) / p99(xb.ravel()),
        "p99_ratio_ci": [float(v) for v in np.percentile(ratios, [tail, 100 - tail])],
        "level": level,
        "draws": draws,
        "processes": [int(xa.shape[0]), int(xb.shape[0])],
        "rounds": rounds,
    }
    if cpus is not None:
        assert ca is not None and cb is not None and calls
        result["cpu_diff_s"] = float((ca.mean() - cb.mean()) / calls)
        result["cpu_diff_ci_s"] = [float(v) for v in np.percentile(cpus, [tail, 100 - tail])]
    return result


def verdict(low: float, high: float, bound: float, floor: tuple[float, float] | None = None) -> str:
    """'met' when the whole interval is within ``bound``, 'not met' when all of it is past it,
    else 'undecided' (the bench cannot tell at this noise: more processes or rounds).

    ``floor`` is the A/A control's interval (two identical configurations): when it reaches
    past ``bound`` either way, the run's noise alone spans the distance being judged, and
    any interval is 'undecided' (bootstrap intervals from few processes come out narrower
    than the noise the A/A shows)."""
    if floor is not None and (floor[1] > bound or floor[0] < 1 / bound):
        return "undecided"
    if high <= bound:
        return "met"
    if low > bound:
        return "not met"
    return "undecided"
