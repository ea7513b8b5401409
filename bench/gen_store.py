"""Build a store of N demo calls in bounded memory: generate, price and write chunk by chunk.

    python bench/gen_store.py --rows 10000000 --store /tmp/lt-10m
    python bench/gen_store.py --rows 100000000 --store /tmp/lt-100m --json /tmp/gen-100m.json

The deterministic generator is ``llmtrace.demo.generate_chunks`` (same seed and end: same calls,
ids included). Each chunk is priced with ``price_calls`` (one shared ``PriceBook``, as an import
would) and buffered; every ``--flush-rows`` rows the buffer is appended to the store without the
stored-key lookup (the ids are new by construction). At the end ``Store.compact`` merges each
day's files into sorted files of at most ``--file-rows`` rows. Printed (and written as JSON):
rows, time and rate of each stage (generation, pricing, writing, compaction), peak RSS, files and
bytes. Peak memory is bounded by the chunk, the flush buffer and one compacted file, not by N.
With ``--json`` the result is run_all.py's (``_measure``: CPU of all threads, peak RSS, load
average); run_all.py also uses this script to build the stores other benches read.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from llmtrace.demo import DEFAULT_CHUNK, generate_chunks
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.store import COMPACT_ROWS, Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Measure, Report, add_json_argument  # noqa: E402

# how run_all.py runs this script (read with ast.literal_eval, never imported by it)
RUN_ALL = {
    "name": "store",
    "order": 50,
    "full": ["--rows", "10000000", "--store", "/tmp/llmtrace-bench/gen-store-bench"],
    "quick": ["--rows", "50000", "--store", "/tmp/llmtrace-bench/gen-store-bench-quick"],
}

END = datetime(2026, 11, 20, tzinfo=UTC)  # fixed, so every run builds the same store


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def build(
    store: Store,
    rows: int,
    *,
    chunk: int = DEFAULT_CHUNK,
    flush_rows: int = 500_000,
    file_rows: int = COMPACT_ROWS,
    seed: int = 7,
    days: int = 14,
    progress: bool = True,
) -> dict[str, float]:
    """Fill ``store`` with ``rows`` priced demo calls; returns the seconds of each stage."""
    book = PriceBook.load()
    seconds = {"generate": 0.0, "price": 0.0, "write": 0.0, "compact": 0.0}
    buffer: list[pl.DataFrame] = []
    buffered = done = 0

    def flush() -> None:
        nonlocal buffer, buffered
        if not buffer:
            return
        began = time.perf_counter()
        store.append(pl.concat(buffer), check_stored=False)
        seconds["write"] += time.perf_counter() - began
        buffer, buffered = [], 0

    chunks = generate_chunks(rows, chunk_size=chunk, days=days, end=END, seed=seed)
    while True:
        began = time.perf_counter()
        calls = next(chunks, None)
        seconds["generate"] += time.perf_counter() - began
        if calls is None:
            break
        began = time.perf_counter()
        priced = price_calls(calls, book)
        seconds["price"] += time.perf_counter() - began
        del calls
        buffer.append(priced)
        buffered += priced.height
        done += priced.height
        if buffered >= flush_rows:
            flush()
        if progress:
            print(f"\r{done:,} / {rows:,} rows", end="", file=sys.stderr, flush=True)
    flush()
    if progress:
        print(file=sys.stderr)
    began = time.perf_counter()
    store.compact(max_rows_per_file=file_rows)
    seconds["compact"] = time.perf_counter() - began
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    parser.add_argument("--flush-rows", type=int, default=500_000)
    parser.add_argument("--file-rows", type=int, default=COMPACT_ROWS)
    parser.add_argument("--seed", type=int, default=7)
    add_json_argument(parser)
    args = parser.parse_args()
    report = Report("store")

    shutil.rmtree(args.store, ignore_errors=True)
    store = Store(args.store)
    began = time.perf_counter()
    with Measure() as measure:
        seconds = build(
            store,
            args.rows,
            chunk=args.chunk,
            flush_rows=args.flush_rows,
            file_rows=args.file_rows,
            seed=args.seed,
        )
    total = time.perf_counter() - began
    files = store.files()
    size = sum(f.stat().st_size for f in files)
    stored = store.scan().select(pl.len()).collect().item()
    figures = {
        "rows": args.rows,
        "stored_rows": stored,
        "seconds_total": round(total, 1),
        **{f"seconds_{k}": round(v, 1) for k, v in seconds.items()},
        "generate_rows_per_s": round(args.rows / seconds["generate"]),
        "price_rows_per_s": round(args.rows / seconds["price"]),
        "write_rows_per_s": round(args.rows / seconds["write"]),
        "files": len(files),
        "days": len(store.days()),
        "bytes": size,
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }
    print(json.dumps(figures, indent=2))
    report.row(
        figure="store build (generate, price, write, compact)",
        size=f"{args.rows:,} demo calls, 14 days",
        result=(
            f"generate {seconds['generate']:.0f} s, price {seconds['price']:.0f} s, "
            f"write {seconds['write']:.0f} s, compact {seconds['compact']:.0f} s (wall); "
            f"{len(files)} files, {size / 1e9:.2f} GB"
        ),
        measure=measure,
        **figures,
    )
    report.write(args.json)


if __name__ == "__main__":
    main()
