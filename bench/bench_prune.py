"""Do scans prune by date and key? Files opened, row groups read and time, with and without.

    python bench/bench_prune.py --store /tmp/lt-100m

Three scans of the same store, each reading every column of the rows it keeps:

* ``all``    - every call (the reference);
* ``day``    - one day (``Store.scan(since, until)``): only that day's files are opened;
* ``prompt`` - one prompt over all days: row groups whose ``prompt`` statistics exclude it are
  skipped (store files are sorted by prompt, model, start time, in row groups of 128k rows).

Row groups read are Polars' own count (``Predicate pushdown: reading k / n row groups``, printed
when verbose), so the figure is what the reader did, not what it could have done. Each scan runs
in its own process; its CPU seconds (all threads), wall time and peak RSS are that process's
(``_measure.run_child``, start-up included), and ``all`` is the same-run baseline of the other
two. ``--json`` writes the result run_all.py turns into bench/README.md's table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Report, add_json_argument, run_child  # noqa: E402

# how run_all.py runs this script (read with ast.literal_eval, never imported by it)
RUN_ALL = {
    "name": "prune",
    "order": 60,
    "full": [],
    "quick": [],
    "store": {"full": 10_000_000, "quick": 50_000},
}

DAY = datetime(2026, 11, 15, tzinfo=UTC)
PROMPT = "troubleshooter@v3"


def _one(store_path: Path, what: str) -> dict[str, Any]:
    import polars as pl

    from llmtrace.store import Store

    store = Store(store_path)
    if what == "all":
        lazy, files = store.scan(), store.files()
    elif what == "day":
        until = DAY + timedelta(days=1)
        lazy, files = store.scan(DAY, until), store.files(DAY, until)
    else:
        lazy, files = store.scan().filter(pl.col("prompt") == PROMPT), store.files()
    began = time.perf_counter()
    with pl.Config(verbose=True):
        # decode every kept value, and count the rows kept
        rows = lazy.select(pl.all().hash().sum(), pl.len().alias("__rows")).collect()
    return {
        "seconds": time.perf_counter() - began,
        "files": len(files),
        "_rows": int(rows["__rows"][0]),
    }


def measure(store: Path, what: str) -> dict[str, Any]:
    stdout, stderr, process = run_child(
        [sys.executable, __file__, "--store", str(store), "--one", what]
    )
    figures = json.loads(stdout.strip().splitlines()[-1])
    figures["process"] = process
    counts = re.findall(r"reading (\d+) / (\d+) row groups", stderr)
    if counts:
        figures["row_groups_read"] = sum(int(k) for k, _ in counts)
        figures["row_groups"] = sum(int(n) for _, n in counts)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--one", choices=["all", "day", "prompt"], help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.store, args.one)))
        return
    report = Report("prune")
    results = {what: measure(args.store, what) for what in ("all", "day", "prompt")}
    print(json.dumps({w: {k: v for k, v in f.items() if k != "_rows"} for w, f in results.items()},
                     indent=2))  # fmt: skip
    every = results["all"]
    baseline = (
        f"every call ({every['_rows']:,} rows, {every['files']} files): "
        f"{every['process']['cpu_s']:.2f} CPU-s, {every['seconds']:.2f} s scan"
    )
    size = f"{every['_rows']:,}-call store"
    day = results["day"]
    report.row(
        figure="**pruning by date**: scan one day (files opened)",
        size=f"{size}, {DAY:%Y-%m-%d}",
        result=f"{day['files']} of {every['files']} files opened; {day['_rows']:,} rows; "
        f"{day['seconds']:.2f} s scan",
        measure=day["process"],
        baseline=baseline,
        **{k: v for k, v in day.items() if k != "process"},
    )
    prompt = results["prompt"]
    groups = (
        f"{prompt['row_groups_read']:,} of {prompt['row_groups']:,} row groups read"
        if "row_groups" in prompt
        else "row groups not reported"
    )
    report.row(
        figure="**pruning by key**: scan one prompt (row groups read)",
        size=f"{size}, prompt {PROMPT}",
        result=f"{groups}; {prompt['_rows']:,} rows; {prompt['seconds']:.2f} s scan",
        measure=prompt["process"],
        baseline=baseline,
        **{k: v for k, v in prompt.items() if k != "process"},
    )
    report.write(args.json)


if __name__ == "__main__":
    main()
