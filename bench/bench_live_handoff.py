"""What handing spans to llmtrace's worker costs, and what its lock yields cost, in CPU per call.

    python bench/bench_live_handoff.py [--spans 2000] [--rounds 8]

bench_live_spans.py's two pipelines (bare, and llmtrace's), one process, rounds alternating over
these ways of running llmtrace's per-span work (process CPU per call, all threads, medians):

* ``inline``              - on the app thread (``background=False``), no hand-off at all;
* ``worker``              - the shipped worker: it gathers a batch and offers the interpreter
                            lock back (``time.sleep(0)``) every 0.5 ms of work (after every
                            span until 4088943);
* ``worker, no yield``    - the same worker with that ``sleep(0)`` made a no-op;
* ``at flush`` (both)     - the worker started only by the round's flush, so the app thread is
                            idle (waiting for it) while the worker runs: what the yield costs
                            when no app thread competes for the lock.

The yield stays in the product whatever this shows: it is what keeps an app thread that wants
the lock from waiting for a whole batch (the app's p99 latency). This script measures its price.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_live_spans  # noqa: E402 - the same pipelines and spans


class _NoYield:
    """Stands in for the ``time`` module inside llmtrace.otel.processor: sleep(0) does nothing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds:
            time.sleep(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    import llmtrace.otel.processor as module

    bare, live = bench_live_spans.Config("bare"), bench_live_spans.Config("llmtrace")
    processor = live.handle.processor
    batch = (processor._delay, processor._hurry_at)
    at_flush = (1000.0, 10**9)  # never woken by the batch: only the flush's hurry wakes it
    modes = {
        "inline": (False, batch, time),
        "worker": (True, batch, time),
        "worker, no yield": (True, batch, _NoYield()),
        "at flush, worker": (True, at_flush, time),
        "at flush, no yield": (True, at_flush, _NoYield()),
    }
    count = 0

    def run(config: Any) -> float:
        nonlocal count
        start = time.process_time()
        config.calls(args.spans, count)
        count += args.spans
        return (time.process_time() - start) / args.spans * 1e6

    run(bare), run(live)  # warm
    results: dict[str, list[float]] = {"bare": []}
    for _ in range(args.rounds):
        results["bare"].append(run(bare))
        for name, (background, (delay, hurry), clock) in modes.items():
            processor._background = background
            processor._delay, processor._hurry_at = delay, hurry
            module.time = clock
            results.setdefault(name, []).append(run(live))
    module.time = time
    processor._background, (processor._delay, processor._hurry_at) = True, batch
    print(f"{args.rounds} rounds x {args.spans} spans, process CPU per call (median):")
    for name, values in results.items():
        print(f"  {name:20s} {statistics.median(values):7.1f} us")


if __name__ == "__main__":
    main()
