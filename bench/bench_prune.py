"""Do scans prune by date and key? Files opened, row groups read and time, with and without.

    python bench/bench_prune.py --store /tmp/lt-100m

Three scans of the same store, each reading every column of the rows it keeps:

* ``all``    - every call (the reference);
* ``day``    - one day (``Store.scan(since, until)``): only that day's files are opened;
* ``prompt`` - one prompt over all days: row groups whose ``prompt`` statistics exclude it are
  skipped (store files are sorted by prompt, model, start time, in row groups of 128k rows).

Row groups read are Polars' own count (``Predicate pushdown: reading k / n row groups``, printed
when verbose), so the figure is what the reader did, not what it could have done.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
        rows = lazy.select(pl.all().hash().sum()).collect()  # decode every kept value
    return {"seconds": time.perf_counter() - began, "files": len(files), "_rows": rows.height}


def measure(store: Path, what: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--store", str(store), "--one", what],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    counts = re.findall(r"reading (\d+) / (\d+) row groups", out.stderr)
    if counts:
        figures["row_groups_read"] = sum(int(k) for k, _ in counts)
        figures["row_groups"] = sum(int(n) for _, n in counts)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--one", choices=["all", "day", "prompt"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.store, args.one)))
        return
    results = {what: measure(args.store, what) for what in ("all", "day", "prompt")}
    for figures in results.values():
        figures.pop("_rows", None)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
