"""Where one audit's CPU goes: one ``run_audit`` in this process, each Polars collect timed.

    python bench/profile_audit.py --store /tmp/lt-10m
    python bench/profile_audit.py --store /tmp/lt-10m --rows-per-part 250000   # 100M's layout
    python bench/profile_audit.py --store S --days 1 --rows-per-part 340000  # a 100M day, 21 parts

Why: every session profiling the audit wrote this harness again by hand (issue 15). Each
``LazyFrame.collect``, ``collect_all`` and ``sink_parquet`` the audit runs is timed in CPU
seconds of the whole process (user + system of every thread, ``getrusage``), with its minor
page faults, and filed under the step it serves, found on the call stack: ``spill`` (a key
family's own spill), ``grid spill`` (families sharing one), ``CODE parts`` (a rule over its
key-hash parts; LT202's and LT301's joint plan is filed under the first of them), ``CODE``
(a one-pass rule), ``shared cells`` (LT401, LT501 and the census in one group-by), ``count``
(the calls in the window), ``decide`` (merge, decide and coverage of every rule). What no
collect covers (plan building, Python in the rules) is the total minus their sum.

``--rows-per-part`` sets the engine's part size: 250,000 splits the 10M store's window
(5.0M calls) into 21 parts, as the 100M store's window is split, so each key family spills
alone (``partition.group_families``); the default is the engine's. The store is read, not
written, but the spill lands in ``STORE/tmp`` (link a read-only store's ``calls`` into a
directory of your own). ``--days`` audits only the last days of the window (its baseline as
long): one day of the 100M store (~7.1M calls) with ``--rows-per-part 340000`` is split into
21 parts as the whole 100M window is, at a seventh of its CPU. Not a bench row: one run, in one process, start-up not counted.
"""

from __future__ import annotations

import argparse
import collections
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

UNTIL = datetime(2026, 11, 20, tzinfo=UTC)

# function on the call stack -> the step its collects serve
_STEPS = {
    "spill": "spill",
    "spill_grid": "grid spill",
    "_shared_cells": "shared cells",
    "aggregate_locally": "count",
}


def _step() -> str:
    """The step the current collect serves, from the call stack: a rule over its parts or in
    one pass first, then a rule module's own collect while its plan is built (LT502's and
    LT503's first reads), then the engine's steps."""
    frame, rule, step = sys._getframe(2), None, None
    while frame is not None:
        name, local, path = frame.f_code.co_name, frame.f_locals, frame.f_code.co_filename
        if name == "_run_part":
            return f"{local.get('name')} parts"
        if name == "_collect" and "code" in local:
            return str(local["code"])
        module = Path(path).name
        if rule is None and "/rules/" in path and module[:2] == "lt" and module[2:5].isdigit():
            rule = f"{module[:5].upper()} (its first read)"
        if step is None and name in _STEPS and "llmtrace" in path:
            step = _STEPS[name]
        frame = frame.f_back
    return rule or step or "other"


class Profile:
    """CPU seconds, system seconds, minor faults and calls per step."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.system: dict[str, float] = collections.defaultdict(float)
        self.faults: dict[str, int] = collections.Counter()
        self.calls: dict[str, int] = collections.Counter()
        self._depth = 0

    def timed(self, call: Callable[..., Any], step: str | None = None) -> Callable[..., Any]:
        """``call`` timed under ``step`` (default: the one on the call stack); a collect
        inside another timed call counts as the outer one's."""

        def inner(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return call(*args, **kwargs)
            self._depth += 1
            where = step or _step()
            before = resource.getrusage(resource.RUSAGE_SELF)
            try:
                return call(*args, **kwargs)
            finally:
                after = resource.getrusage(resource.RUSAGE_SELF)
                system = after.ru_stime - before.ru_stime
                self.cpu[where] += after.ru_utime - before.ru_utime + system
                self.system[where] += system
                self.faults[where] += after.ru_minflt - before.ru_minflt
                self.calls[where] += 1
                self._depth -= 1

        return inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--rows-per-part", type=int, default=None)
    parser.add_argument(
        "--days", type=float, default=None, help="audit only the last DAYS of the window"
    )
    args = parser.parse_args()

    import polars as pl

    from llmtrace.config import Config
    from llmtrace.rules import engine
    from llmtrace.store import Store

    profile = Profile()
    pl.LazyFrame.collect = profile.timed(pl.LazyFrame.collect)  # type: ignore[method-assign]
    pl.LazyFrame.sink_parquet = profile.timed(pl.LazyFrame.sink_parquet)  # type: ignore[method-assign]
    pl.collect_all = profile.timed(pl.collect_all)
    # its Python and collects, every rule (``_decide`` before the engine's split: the same
    # script profiles older code for a pair, with PYTHONPATH naming its checkout)
    name = "merge_and_decide" if hasattr(engine, "merge_and_decide") else "_decide"
    setattr(engine, name, profile.timed(getattr(engine, name), "decide"))
    options: dict[str, Any] = {}
    if args.rows_per_part:
        options["rows_per_part"] = args.rows_per_part
    if args.days:
        options["since"] = UNTIL - timedelta(days=args.days)
    before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    result = engine.run_audit(
        Store(args.store), until=UNTIL, config=Config(data={}, path=None), **options
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    total = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(
        f"run_audit: {total:.2f} CPU-s (system {after.ru_stime - before.ru_stime:.2f}), "
        f"{wall:.1f} s wall, {result.calls_scanned:,} calls, {len(result.findings)} findings, "
        f"peak RSS {after.ru_maxrss / 1024:.0f} MB, "
        f"{(after.ru_minflt - before.ru_minflt) / 1e3:.0f}k minor faults"
    )
    for step, cpu in sorted(profile.cpu.items(), key=lambda item: -item[1]):
        print(
            f"  {cpu:7.2f}  system {profile.system[step]:6.2f}  "
            f"faults {profile.faults[step] / 1e3:6.0f}k  n={profile.calls[step]:<4d} {step}"
        )
    print(f"  {total - sum(profile.cpu.values()):7.2f}  outside the collects")


if __name__ == "__main__":
    main()
