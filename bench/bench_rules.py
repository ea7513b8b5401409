"""Each audit rule's aggregate step alone, in CPU seconds: where the audit's time goes, per rule.

    python bench/bench_rules.py --store /tmp/lt-10m                 # every built-in rule, once
    python bench/bench_rules.py --store /tmp/lt-10m --rules LT101,LT502 --runs 3
    python bench/bench_rules.py --store /tmp/lt-10m --parts /tmp/spill   # split rules in parts

Why: ``bench_audit.py`` measures the whole audit; to speed one rule up its own CPU must be seen
apart from the engine's (the census, the spill) and from the other rules'. Each rule's
aggregate is built as the local engine builds it (``AggregateJob``: the same window, columns
and parameters; LT101 also reads the baseline window) and collected alone, ``--runs`` times;
the CPU seconds (``time.process_time``: every thread of this process) of each collect are
printed with their median. One process runs every rule, so start-up is not counted.

``--parts DIR``: the rules with a partition family (LT201, LT202, LT203, LT301, LT503) run as
the engine runs them at 10M calls, over the parts of one spill grid of every family's columns
(``partition.spill_grid``, written to DIR once and kept, so reruns and other code read the
same files); each rule's figure is then the sum over its parts. Without it every rule runs in
one pass over the window (a rule's ``bounded_memory`` or not). Interleave old and new code by
running this script twice with ``PYTHONPATH`` set to each tree. Not in run_all.py: a
development aid, its rows are per-rule figures, not a goal's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

UNTIL = datetime(2026, 11, 20, tzinfo=UTC)  # bench_audit.py's window


def _job(store: Path, codes: list[str] | None):  # noqa: ANN202 - AggregateJob, imported late
    from llmtrace.config import Config
    from llmtrace.rules.engine import AggregateJob, audit_window, load_catalogue, rule_contexts
    from llmtrace.store import Store

    config = Config(data={}, path=None)
    catalogue = load_catalogue(config)
    chosen = codes or sorted(catalogue.entries)
    window = audit_window(None, UNTIL, config)
    contexts = rule_contexts(catalogue, chosen, window, config)
    return AggregateJob(
        source=Store(store),
        window=window,
        entries={c: catalogue.entries[c] for c in chosen},
        contexts=contexts,
    )


def _cpu(collect) -> tuple[float, int]:  # noqa: ANN001
    began = time.process_time()
    frame = collect()
    return time.process_time() - began, frame.height


def _window_plan(job, code: str):  # noqa: ANN001, ANN202
    import polars as pl

    window = job.window
    scan = job.source.scan(job.start(code), window.until)
    if not job.needs_baseline(code):
        scan = scan.filter(pl.col("start_time") >= window.since)
    return lambda: job.aggregate(code, scan.select(job.column_exprs(code))).collect()


def _grid(job, directory: Path) -> tuple[dict[str, str], dict[str, list[list[Path]]]]:  # noqa: ANN001
    import polars as pl

    from llmtrace.rules.job import column_exprs
    from llmtrace.rules.local_engine import family_columns
    from llmtrace.rules.partition import SHARED_KEYS, part_count, spill_grid

    window = job.window
    current = job.source.scan(window.since, window.until)
    families: dict[str, list[str]] = {}
    for code in job.entries:
        family = job.family(code)
        if family in SHARED_KEYS and not job.bounds_memory(code):
            families.setdefault(family, []).append(code)
    of = {code: family for family, codes in families.items() for code in codes}
    names = sorted(families)
    marker = directory / "done"
    if not marker.exists():
        parts = part_count(int(current.select(pl.len()).collect().item()))
        read = list(dict.fromkeys(c for f in names for c in family_columns(job, families[f])))
        keyed = [c for f in names for c in SHARED_KEYS[f].meta.root_names() if c not in read]
        derived = job.derived([code for f in names for code in families[f]])
        began = time.process_time()
        spill_grid(  # as the engine writes it: the rules' columns, a key's others hashed only
            current.select(column_exprs(list(dict.fromkeys([*read, *keyed])), derived)),
            {f: SHARED_KEYS[f] for f in names},
            parts,
            directory,
            keep=read,
        )
        print(f"spill grid of {names} in {parts} parts: {time.process_time() - began:.2f} CPU-s")
        marker.write_text(str(parts))
    files: dict[str, list[list[Path]]] = {}
    parts = int(marker.read_text())
    for family in names:
        files[family] = [[] for _ in range(parts)]
    index = {f"_part{i}": f for i, f in enumerate(names)}
    for path in sorted(directory.rglob("*.parquet")):
        for cell in path.relative_to(directory).parts[:-1]:
            column, _, part = cell.partition("=")
            files[index[column]][int(part)].append(path)
    return of, files


def _parts_plan(job, code: str, files: list[list[Path]]):  # noqa: ANN001, ANN202
    import polars as pl

    from llmtrace.rules.partition import present_columns

    def collect() -> pl.DataFrame:
        schema = job.source.scan(job.window.since, job.window.until).collect_schema()
        out = []
        for part_files in files:
            if part_files:
                part = pl.scan_parquet(part_files, hive_partitioning=False)
                columns = present_columns(part, job.columns(code))  # not a rare column
                part = part.select(columns).cast({c: schema[c] for c in columns if c in schema})
                out.append(job.aggregate(code, part).collect())
        return pl.concat(out, how="vertical_relaxed")

    return collect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--rules", help="comma-separated codes (default: every built-in rule)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--parts", type=Path, help="spill grid directory (kept between runs)")
    args = parser.parse_args()
    import llmtrace

    codes = args.rules.split(",") if args.rules else None
    job = _job(args.store, codes)
    print(f"code: {Path(llmtrace.__file__).parent.parent}")
    # the grid of every partition family, as the engine spills it, whichever rules are timed
    of, files = _grid(_job(args.store, None), args.parts) if args.parts else ({}, {})
    for code in job.entries:
        plan = _parts_plan(job, code, files[of[code]]) if code in of else _window_plan(job, code)
        times, rows = [], 0
        for _ in range(args.runs):
            seconds, rows = _cpu(plan)
            times.append(seconds)
        where = f"{len(files[of[code]])} parts" if code in of else "one pass"
        shown = " ".join(f"{t:.2f}" for t in times)
        print(
            f"{code}: median {statistics.median(times):.2f} CPU-s ({shown}; {where}, {rows} rows)"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
