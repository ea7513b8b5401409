"""Does the live worker's lock offer reach an app thread that waits for the interpreter lock?

    python bench/bench_live_gil.py [--modes none,sleep0,sched_yield,sleep50,sleep100]
                                   [--blocks 12] [--ops 400]

A direct experiment, without llmtrace: a worker thread runs Python without pause and offers the
interpreter lock every 0.5 ms of work (as llmtrace's worker does, ``_YIELD_AFTER_S``), while an
app thread does a little Python, then a blocking wait of 200 µs (an HTTP client between
reads: the lock released), then needs the lock back. The figure is the app's extra wait per
operation: its wall time for the 200 µs wait minus the same wait's median with no worker. The
ways of offering the lock, alternated in blocks in one process (the order shuffled per block):

* ``none``        - no offer: the app waits for the switch interval (5 ms) to force one;
* ``sleep0``      - ``time.sleep(0)`` (the lock released, a zero sleep; llmtrace until now);
* ``sched_yield`` - ``os.sched_yield()`` (the lock released, and the core offered to another
                    runnable thread);
* ``sleepN``      - ``time.sleep(N µs)``.

An offer that reaches the app shows as an extra wait under 0.5 ms (half that on average); one
that misses (the worker takes the lock back first) shows as more: the share over 0.6 ms is
printed. Process CPU per 1,000 worker steps is what the offers cost.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time

YIELD_AFTER_S = 0.0005
WAIT_S = 0.0002


def offer(mode: str) -> None:
    if mode == "sleep0":
        time.sleep(0)
    elif mode == "sched_yield":
        os.sched_yield()
    elif mode.startswith("sleep"):
        time.sleep(float(mode[5:]) * 1e-6)


def block(mode: str, ops: int, base: float) -> tuple[list[float], int, float]:
    """``ops`` app operations beside a worker offering the lock by ``mode``: the extra waits
    (s), the worker's steps and the process CPU (s)."""
    state = {"stop": False, "steps": 0}

    def worker() -> None:
        clock = time.perf_counter
        last = clock()
        while not state["stop"]:
            x = 0
            for i in range(200):  # a few µs of Python, as a step of the worker
                x += i
            state["steps"] += 1
            if mode != "none" and clock() - last >= YIELD_AFTER_S:
                offer(mode)
                last = clock()

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.005)
    clock = time.perf_counter
    extra = []
    cpu = time.process_time()
    for _ in range(ops):
        y = 0
        for i in range(300):
            y += i
        start = clock()
        time.sleep(WAIT_S)
        extra.append(clock() - start - base)
    state["stop"] = True
    thread.join()
    return extra, int(state["steps"]), time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="none,sleep0,sched_yield,sleep50,sleep100")
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--ops", type=int, default=400)
    args = parser.parse_args()
    modes = args.modes.split(",")
    alone = []
    for _ in range(2000):
        start = time.perf_counter()
        time.sleep(WAIT_S)
        alone.append(time.perf_counter() - start)
    base = statistics.median(alone)
    extra: dict[str, list[float]] = {m: [] for m in modes}
    steps = dict.fromkeys(modes, 0)
    cpu = dict.fromkeys(modes, 0.0)
    loads = [os.getloadavg()[0]]
    for _ in range(args.blocks):
        for mode in random.sample(modes, len(modes)):
            waits, n, seconds = block(mode, args.ops, base)
            extra[mode] += waits
            steps[mode] += n
            cpu[mode] += seconds
        loads.append(os.getloadavg()[0])
    print(
        f"{args.blocks} blocks x {args.ops} app operations per mode; a {WAIT_S * 1e6:.0f} us "
        f"wait alone takes {base * 1e6:.0f} us; load {min(loads):.1f} .. {max(loads):.1f}"
    )
    for mode in modes:
        values = sorted(x * 1e6 for x in extra[mode])
        q = statistics.quantiles(values, n=100)
        missed = sum(x > 600 for x in values) / len(values) * 100
        print(
            f"  {mode:12s} app's extra wait: median {statistics.median(values):6.0f}, mean "
            f"{statistics.fmean(values):6.0f}, p90 {q[89]:6.0f}, p99 {q[98]:6.0f} us; over 0.6 ms "
            f"{missed:5.2f}%; process CPU per 1,000 worker steps {cpu[mode] / steps[mode] * 1e9:7.1f} us"
        )


if __name__ == "__main__":
    main()
