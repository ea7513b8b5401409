"""How the store replaces files safely: the compaction journal, and the day's consistent file set.

Why a module of its own: every change to stored rows (compaction, late scores, repricing) goes
the same way - a journal (``compaction.json`` in the day folder) names the new files and the
files they replace before anything is renamed, and the next writer rolls an interrupted change
forward or back - and every reader needs the same rule to see a day as before or after, never
twice. ``llmtrace.store`` holds the lock and decides what to write; this module knows the
journal, the file names, the compaction plan (``range_buckets``) and the fsyncs.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace import store_files
from llmtrace.spool import fsync_dir  # one copy, in the module the app loads without Polars
from llmtrace.store_files import FIX, DamagedJournal

# Compacted files are named so; a day whose files are all compacted is left alone.
COMPACTED = "compact-"
SPILL = ".compact-spill"

JOURNAL = "compaction.json"


def file_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


def minute_of_start() -> pl.Expr:
    return pl.col("start_time").dt.truncate("1m").alias("_minute")


def range_buckets(scan: pl.LazyFrame, max_rows: int) -> pl.DataFrame:
    """(prompt, model, minute) -> consecutive file number, about ``max_rows`` rows per file.

    Counted on three columns only; cutting at minute granularity keeps each file a range of
    the sort order (prompt, model, start_time) while never needing a file per prompt.
    """
    keys = ["prompt", "model", "_minute"]
    counts = (
        scan.select("prompt", "model", minute_of_start())
        .group_by(keys)
        .agg(pl.len().alias("_n"))
        .sort(keys, nulls_last=True)
        .collect()
    )
    if counts.height == 0:
        return counts.with_columns(pl.lit(0, dtype=pl.Int64).alias("_bucket")).drop("_n")
    total = int(counts["_n"].sum())
    per_file = math.ceil(total / math.ceil(total / max_rows))  # even sizes, not max + remainder
    before = pl.col("_n").cum_sum() - pl.col("_n")
    raw = (before // per_file).alias("_raw")
    return counts.with_columns(raw).select(
        *keys, (pl.col("_raw").rank("dense") - 1).cast(pl.Int64).alias("_bucket")
    )


def journal_targets(plan: dict[str, Any]) -> list[str]:
    """New files of a compaction journal (older journals name a single ``target``)."""
    return list(plan.get("targets") or [plan["target"]])


def day_of(day_dir: Path) -> date | None:
    if not day_dir.name.startswith("day="):
        return None
    try:
        return date.fromisoformat(day_dir.name.removeprefix("day="))
    except ValueError:
        return None


Warn = Callable[[Path, str], None]


def live_files(day_dir: Path, warn: Warn | None = None) -> list[Path]:
    """The day's Parquet files as one consistent set while a compaction is unfinished.

    Once every new file is in place the replaced files are hidden; before that the new files
    written so far are. A writer may be renaming and removing files meanwhile (readers take no
    lock), so the folder is listed before and after the journal is read until both listings
    agree: then the journal read belongs to the files listed.
    """
    journal = day_dir / JOURNAL
    for _ in range(50):
        files = sorted(day_dir.glob("*.parquet"))
        try:
            plan = store_files.read_journal(journal)
        except DamagedJournal as exc:
            if warn is not None:
                warn(journal, f"{exc}; every file of the day is read: {FIX}")
            plan = None
        if sorted(day_dir.glob("*.parquet")) == files:
            break
    if plan is None:
        return files
    # Whether the compaction is complete is read from the listing the journal belongs to, not
    # from the folder now: a writer finishing its new files after the second listing would
    # otherwise hide the replaced files the listing holds, and the day would read as empty.
    listed = {f.name for f in files}
    targets = journal_targets(plan)
    complete = all(name in listed for name in targets)
    hidden = set(plan["replaces"]) if complete else set(targets)
    return [f for f in files if f.name not in hidden]


def finish_compaction(day_dir: Path, warn: Warn | None = None) -> None:
    """Roll an interrupted compaction forward (all new files present) or back (they are not),
    and remove what a killed writer left (callers hold the writer lock: see store_files)."""
    store_files.remove_leftovers(day_dir)
    journal = day_dir / JOURNAL
    try:
        plan = store_files.read_journal(journal)
    except DamagedJournal as exc:
        # Which files it meant is unknowable: keep every file, set the journal aside for a
        # person to read, and say so (a reader would otherwise stop at it on every run).
        moved = store_files.quarantine(day_dir.parent.parent, journal)
        if warn is not None:
            warn(journal, f"{exc}; moved to {moved}, every file of the day is kept")
        return
    if plan is None:
        return
    targets = journal_targets(plan)
    complete = all((day_dir / name).exists() for name in targets)
    for name in plan["replaces"] if complete else targets:
        (day_dir / name).unlink(missing_ok=True)
    shutil.rmtree(day_dir / SPILL, ignore_errors=True)
    journal.unlink()
    store_files.prune_checksums(day_dir)
    fsync_dir(day_dir)


def write_text_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)
