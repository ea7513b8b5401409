"""Key-hash partitions: run a rule's ``aggregate`` over parts that keep each key's calls whole.

Why: some rules need all calls of one key together. LT201 replays each prefix's call sequence
(and sizes groups over every call of a system prefix); LT301 fits a line through each
conversation's turns. Their ``aggregate`` keeps per-call window state, so its memory grows with
the calls in the window: ~1.3 GB for LT201 at 5M calls, far past 4 GB at 50M. Split by a hash of
the key, each part holds about ``1/n`` of the calls and every key whole, so each part's partial
aggregate is exact and the rule's ``merge`` combines them into what one pass would give.

A rule opts in with ``partition_key`` (an expression over its ``columns``, or a method
``partition_key(ctx)`` returning one); rules without it (LT101, custom SQL rules) reduce to
additive sums that the streaming engine already computes in bounded memory, and are split, if
at all, by file.

Two ways to run the parts:

* ``spill`` (one machine): a single streaming pass writes the rule's columns to Parquet, one
  directory per part, then each part is read back and aggregated on its own. Time stays
  linear in the calls (each call is read, written and read once) and memory is bounded by one
  part. Rules that can use one key (``partition_family``, ``SHARED_KEYS``) share one spill of
  the union of their columns: writing a spill costs more than aggregating most rules, so six
  split rules spill three times, not six. At few parts, families go further and share one
  spill split by each family's key (``spill_grid``: a grid of cells, each family reading its
  part's cells): the lineage family's columns are all among the conversation family's, so at 3
  parts (the 10M store's 5.0M calls) the two are written once, 6.0-6.6 CPU-s against
  8.4-8.6 for the two spills (issue 15).
* ``filter`` (a cluster, ``llmtrace.rules.ray_engine``): each part scans the store itself and
  keeps the rows whose key hashes to it. No shuffle, no shared disk: the store is read once per
  part, spread over the workers.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace.record import CALL_SCHEMA
from llmtrace.rules.base import AuditContext

# Calls per part. LT201, the hungriest rule, peaked at ~0.7 GB on a part this size, which leaves
# room for the scan buffers and the other rules' aggregates under a 4 GB bound. Measured on the
# 10M-call demo store (5.0M calls in the window, issue 15): parts of 6M (one pass there) took
# 33-36 CPU-s and 2.07 GB peak, parts of 2.5M ~1.1 GB at the cost of the spill (~15 CPU-s).
# The memory bound wins: the spill is what keeps the audit near 1 GB.
PARTITION_ROWS = 2_500_000
# Seed of the part hash. Fixed, so every process (and every Ray worker) puts a key in one part.
_SEED = 0x5EED
_PART = "_part"
# Most cells of one grid spill (``spill_grid``): the sink keeps a buffer per cell. Two families
# in 3 parts (9 cells) peaked at 1.05 GB on the 10M store's 5.0M calls, the session family's
# spill alone at 1.0 GB; three families in 3 parts (27 cells) at 1.75-1.96 GB.
GRID_CELLS = 9
_GRID_ROW_GROUP = 65_536  # rows per row group in a grid's cells: smaller buffers per cell
# A spill is written once and read once per rule: no compression at all. On the 10M store's
# grid spill (5.0M calls, 19 columns) lz4 cost ~1 CPU-s more to write than none and its
# reads a little more, for 438 against 695 MB on disk (issue 15).
_SPILL_COMPRESSION = "uncompressed"

# Row groups a Parquet scan may fetch ahead (Polars reads ``POLARS_ROW_GROUP_PREFETCH_SIZE`` at
# each query; its default here is 7 per file and two files at once). The store's row groups
# hold 131,072 calls, so every scan of the audit held several of them decoded in flight: the
# 10M store's audit (5.0M calls in the window) peaked at 1.17-1.20 GB with the default and
# 0.88-0.93 GB with one row group ahead per thread, at the same CPU (issue 15).
_PREFETCH_ENV = "POLARS_ROW_GROUP_PREFETCH_SIZE"

Aggregate = Callable[[pl.LazyFrame], pl.LazyFrame]


@dataclass(frozen=True)
class Unparted:
    """Calls a family's rules need in no particular part, and their one-pass aggregates.

    ``rows`` says which calls need their key's part (true) and which merge under any split
    (false or null); ``aggregates`` are the rules' plans over the latter, read straight from
    the calls in one bounded pass. Why: LT202 drops the calls outside conversations and
    LT301 only sums them per cell, yet they are 73% of the window and the conversation
    family's own spill wrote and read them all (at 100M calls, 21 parts, where that family
    spills alone; issue 15). Given to ``aggregate_spilled_together`` only: a grid's cells
    serve other families, which need every call.
    """

    rows: pl.Expr
    aggregates: Mapping[str, Aggregate]
    # filters that split those calls into slices aggregated one after the other (exact: they
    # merge under any split). Why: one pass over the 100M window's 36M single calls peaked at
    # 3.47 GB, so the engine passes one slice per day of the window (a day's store files).
    slices: Sequence[pl.Expr] = (pl.lit(True),)


# Keys more than one rule can split by: every group each of the rules needs whole stays in one
# part. A rule names one in ``partition_family``; its own ``partition_key`` still serves alone
# (the Ray engine, a rule run without its family).
SHARED_KEYS: dict[str, pl.Expr] = {
    # one model and one system prefix (else prompt): LT203's lineages, and LT201's prefix
    # groups, which never span models or system prefixes either
    "lineage": pl.col("provider").hash(41)
    ^ pl.col("model").hash(42)
    ^ pl.coalesce(pl.col("prefix_hashes").list.first(), pl.col("prompt").hash(3)).hash(43),
    # the conversation, else the trace (one agent run): LT503's sessions (which the local
    # engine runs in one pass: ``bounded_memory``)
    "session": pl.when(pl.col("conversation_id").is_null())
    .then(pl.col("trace_id").hash(44))
    .otherwise(pl.col("conversation_id").hash(45)),
    # the conversation, else the call's start time: LT202 and LT301 need each conversation
    # whole and take calls outside conversations in any part (LT301's own key). Why not the
    # session key: it decodes and hashes the near-unique trace ids of the 73% of calls outside
    # conversations only to place calls anywhere; without them the 10M store's grid spill took
    # 2.9-3.2 against 3.4-3.8 CPU-s (issue 15)
    "conversation": pl.when(pl.col("conversation_id").is_null())
    .then(pl.col("start_time").hash(46))
    .otherwise(pl.col("conversation_id").hash(45)),
}
# Why xors of seeded column hashes: they split the calls by the same values as a struct's
# hash (each family's groups stay whole; which part a group lands in may differ, which no
# rule's merge depends on) at a fraction of its CPU: on the 10M store's window (5.0M calls)
# the two keys' parts took 0.18 against 0.61 CPU-s (the struct over (provider, model,
# prefix), and ``coalesce(conversation, "trace:" + trace)``'s string per call), inside the
# spill that computes them (issue 15).


class ColumnsNotSpilled(Exception):
    """Raised by a rule's ``aggregate`` on a part that lacks one of its ``rare_columns``: a
    spill does not write them (they are needed in few audits, but decoded for every call of
    every part), and the rule then runs over a second spill with every column
    (``_respilled``)."""


def present_columns(part: pl.LazyFrame, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that a part's frame holds (a spilled part lacks the rules' rare
    columns)."""
    held = set(part.collect_schema().names())
    return [name for name in names if name in held]


def partition_key(rule: Any, ctx: AuditContext) -> pl.Expr | None:
    """The rule's partition key expression, or None if any split of its calls merges exactly."""
    key = getattr(rule, "partition_key", None)
    if key is None:
        return None
    if isinstance(key, pl.Expr):
        return key
    if callable(key):
        return key(ctx)
    raise TypeError(f"{getattr(rule, 'code', rule)}: partition_key must be an expression")


def part_count(rows: int, rows_per_part: int = PARTITION_ROWS) -> int:
    """How many parts keep each at most ``rows_per_part`` calls (at least 1)."""
    if rows_per_part < 1:
        raise ValueError("rows_per_part must be >= 1")
    return max(1, math.ceil(rows / rows_per_part))


def part_of(key: pl.Expr, parts: int) -> pl.Expr:
    """The part (0 .. parts-1) of each row: a seeded hash of its key, the same in every process.

    Rows whose key is null all land in one part (null hashes to a constant), so a key should
    be null only for rows the rule drops.
    """
    return (key.hash(_SEED) % parts).cast(pl.UInt32)


def filter_part(calls: pl.LazyFrame, key: pl.Expr, part: int, parts: int) -> pl.LazyFrame:
    """The calls of one part (the ``filter`` way: a scan keeps only its own keys)."""
    if parts == 1:
        return calls
    return calls.filter(part_of(key, parts) == part)


@contextmanager
def spill_dir(base: Path | None = None) -> Iterator[Path]:
    """A temporary directory for spilled parts, removed afterwards (also on errors).

    Placed under ``base`` (the store's directory) when given, so the spill lands on the disk the
    store lives on rather than in a /tmp that may be memory-backed; a store that cannot be
    written to (a read-only mount, another user's store) spills to the system's temp directory.
    """
    try:
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="llmtrace-spill-", dir=base))
    except OSError:
        path = Path(tempfile.mkdtemp(prefix="llmtrace-spill-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def bounded_prefetch() -> Iterator[None]:
    """Scans inside read ahead one row group per Polars thread, not Polars' default of several
    per file: what bounds the audit's peak on a store of big row groups (``_PREFETCH_ENV``).

    A value the user set in the environment stands; ours is removed again on the way out, so
    a program that runs an audit keeps its own Polars settings afterwards.
    """
    if _PREFETCH_ENV in os.environ:
        yield
        return
    os.environ[_PREFETCH_ENV] = str(max(2, pl.thread_pool_size()))
    try:
        yield
    finally:
        os.environ.pop(_PREFETCH_ENV, None)


def spill(
    calls: pl.LazyFrame,
    key: pl.Expr,
    parts: int,
    directory: Path,
    keep: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``calls`` once, split by part, as Parquet; returns each part's directory.

    One streaming pass (the sink never holds the whole input). A part that got no rows has no
    directory; its entry is still returned so part numbers stay aligned. ``keep``: the columns
    to write (default: all); the key may read others, which are hashed, not written.
    """
    parted = calls.with_columns(part_of(key, parts).alias(_PART))
    _written(parted, keep, [_PART]).sink_parquet(
        pl.PartitionBy(directory, key=_PART, include_key=False),
        mkdir=True,
        compression=_SPILL_COMPRESSION,
    )
    return [directory / f"{_PART}={i}" for i in range(parts)]


def spill_grid(
    calls: pl.LazyFrame,
    keys: Mapping[str, pl.Expr],
    parts: int,
    directory: Path,
    keep: Sequence[str] | None = None,
) -> dict[str, list[list[Path]]]:
    """Write ``calls`` once, split by the part of each key: a grid of ``parts ** len(keys)``
    cells, one directory each. Returns, for each key's name, each of its parts' files (the cells
    of that part of that key, whatever the other keys' parts).

    Why: families whose columns overlap (LT201/LT203's lineage columns are all among the
    conversation family's) are written and encoded once instead of once per family, and each
    family still reads back parts that hold every one of its groups whole. The sink buffers
    each cell, so the grid is for few cells (``GRID_CELLS``), with small row groups. ``keep``
    as in ``spill``.
    """
    names = {f"{_PART}{i}": name for i, name in enumerate(keys)}
    columns = {column: part_of(keys[name], parts) for column, name in names.items()}
    _written(calls.with_columns(**columns), keep, list(columns)).sink_parquet(
        pl.PartitionBy(directory, key=list(columns), include_key=False),
        mkdir=True,
        compression=_SPILL_COMPRESSION,
        row_group_size=_GRID_ROW_GROUP,
    )
    files: dict[str, list[list[Path]]] = {name: [[] for _ in range(parts)] for name in keys}
    for path in sorted(directory.rglob("*.parquet")):
        cells = path.relative_to(directory).parts[:-1]  # ("_part0=2", "_part1=0")
        for cell, name in zip(cells, names.values(), strict=True):
            files[name][int(cell.partition("=")[2])].append(path)
    return files


def _written(calls: pl.LazyFrame, keep: Sequence[str] | None, parts: list[str]) -> pl.LazyFrame:
    """The columns a spill writes: ``keep`` (all when None) and the part columns. A column
    only a key reads (LT503's ``trace_id`` when LT503 does not run in parts) is hashed into
    the part and not written: the spill's Parquet encoding and every read of it cost per
    column, and near-unique strings the most."""
    if keep is None:
        return calls
    return calls.select(*dict.fromkeys(c for c in keep if c not in parts), *parts)


def group_families(
    columns: Mapping[str, Sequence[str]], parts: int, cells: int | None = None
) -> list[list[str]]:
    """Families to spill together (``spill_grid``), most shared columns first.

    Greedy: the family with the most columns opens a group, and the family adding the fewest
    columns joins it while the grid keeps at most ``cells`` cells (``GRID_CELLS``); at many
    parts every family spills alone, as a grid there would hold too many cells' buffers.
    """
    cells = GRID_CELLS if cells is None else cells
    left = sorted(columns, key=lambda name: -len(set(columns[name])))
    groups: list[list[str]] = []
    while left:
        group = [left.pop(0)]
        union = set(columns[group[0]])
        while left and parts ** (len(group) + 1) <= cells:
            best = min(left, key=lambda name: len(set(columns[name]) - union))
            left.remove(best)
            group.append(best)
            union |= set(columns[best])
        groups.append(group)
    return groups


def aggregate_spilled(
    calls: pl.LazyFrame,
    aggregate: Aggregate,
    key: pl.Expr,
    parts: int,
    directory: Path,
) -> list[pl.DataFrame]:
    """Spill ``calls`` by part, then collect ``aggregate`` over each part in turn.

    Memory is bounded by one part's aggregate; the partials are small and merged by the rule.
    """
    result = aggregate_spilled_together(calls, {"": aggregate}, key, parts, directory)[""]
    if isinstance(result, Exception):
        raise result
    return result


def aggregate_spilled_together(
    calls: pl.LazyFrame,
    aggregates: Mapping[str, Aggregate],
    key: pl.Expr,
    parts: int,
    directory: Path,
    keep: Sequence[str] | None = None,
    unparted: Unparted | None = None,
) -> dict[str, list[pl.DataFrame] | Exception]:
    """One spill of ``calls`` by part, then each named aggregate over each part in turn.

    The aggregates run one after the other on a part (memory stays bounded by the hungriest
    one, not their sum); each reads only its columns of the part's files. A failing aggregate
    gets its exception instead of partials and the others carry on. ``keep``: the columns
    the aggregates read (default: all of ``calls``; the key may read others). ``unparted``:
    only the calls its ``rows`` marks are spilled; its aggregates give one more partial each,
    of the other calls, read from ``calls`` (an aggregate it lacks: spilled as before).
    """
    schema = _schema(calls, keep)
    partials: dict[str, list[pl.DataFrame]] = {name: [] for name in aggregates}
    failed: dict[str, Exception] = {}
    spilled = calls
    if unparted is not None and set(aggregates) <= set(unparted.aggregates):
        needs_part = unparted.rows.fill_null(False)
        spilled = calls.filter(needs_part)
        for where in unparted.slices:
            others = calls.filter(~needs_part & where)
            others = others if keep is None else others.select(keep)
            _run_part(unparted.aggregates, others, partials, failed)
    for part_dir in spill(spilled, key, parts, directory, keep):
        if not part_dir.is_dir():
            continue
        part = pl.scan_parquet(part_dir, schema=schema, hive_partitioning=False)
        _run_part(aggregates, part, partials, failed)
        shutil.rmtree(part_dir, ignore_errors=True)  # free the disk as we go
    results = _finish(calls, aggregates, partials, failed)
    return results | _respilled(calls, aggregates, results, key, parts, directory, keep)


def aggregate_spilled_families(
    calls: pl.LazyFrame,
    families: Mapping[str, tuple[pl.Expr, Mapping[str, Aggregate]]],
    parts: int,
    directory: Path,
    keep: Sequence[str] | None = None,
    unparted: Mapping[str, Unparted] | None = None,
) -> dict[str, list[pl.DataFrame] | Exception]:
    """One spill of ``calls`` (the union of the families' columns) split by every family's
    key (``spill_grid``), then each family's aggregates over each of its parts in turn.

    ``families`` maps a family to its key and its named aggregates (names unique across
    families). Memory is bounded as in ``aggregate_spilled_together``: a family's part holds
    the same calls as its own spill would; the files go when the last family has read them.
    ``keep`` as in ``aggregate_spilled_together``; ``unparted``: a family's ``Unparted``,
    used when it spills alone.
    """
    if len(families) == 1:
        ((family, (key, aggregates)),) = families.items()
        alone = (unparted or {}).get(family)
        return aggregate_spilled_together(calls, aggregates, key, parts, directory, keep, alone)
    schema = _schema(calls, keep)
    spilled = spill_grid(
        calls, {name: key for name, (key, _) in families.items()}, parts, directory, keep
    )
    results: dict[str, list[pl.DataFrame] | Exception] = {}
    last = list(families)[-1]
    for family, (key, aggregates) in families.items():
        partials: dict[str, list[pl.DataFrame]] = {name: [] for name in aggregates}
        failed: dict[str, Exception] = {}
        for files in spilled[family]:
            if not files:
                continue
            part = pl.scan_parquet(files, schema=schema, hive_partitioning=False)
            _run_part(aggregates, part, partials, failed)
            if family == last:
                for path in files:  # free the disk as we go
                    path.unlink(missing_ok=True)
        done = _finish(calls, aggregates, partials, failed)
        results |= done | _respilled(calls, aggregates, done, key, parts, directory, keep)
    return results


def _schema(calls: pl.LazyFrame, keep: Sequence[str] | None) -> pl.Schema:
    """The schema of what a spill of ``calls`` writes (its parts are read with it)."""
    return (calls if keep is None else calls.select(keep)).collect_schema()


def _respilled(
    calls: pl.LazyFrame,
    aggregates: Mapping[str, Aggregate],
    results: Mapping[str, list[pl.DataFrame] | Exception],
    key: pl.Expr,
    parts: int,
    directory: Path,
    keep: Sequence[str] | None,
) -> dict[str, list[pl.DataFrame] | Exception]:
    """The aggregates that needed a column the spill did not write (``ColumnsNotSpilled``, a
    rule's ``rare_columns``), over a second spill of every column of ``calls`` by ``key``.

    Why a second spill and not each part read again from the store: a part's calls are
    found only by decoding the whole window (the key reads the prefix lists), so a re-read
    per part cost ~10 CPU-s more on the 10M window's 3 parts and would grow with the parts;
    one more spill costs about the first one at any size (issue 15)."""
    names = [n for n, r in results.items() if isinstance(r, ColumnsNotSpilled)]
    if not names or keep is None:  # a spill of every column lacks none
        return {}
    again = {name: aggregates[name] for name in names}
    return aggregate_spilled_together(calls, again, key, parts, directory / "whole")


def _run_part(
    aggregates: Mapping[str, Aggregate],
    part: pl.LazyFrame,
    partials: dict[str, list[pl.DataFrame]],
    failed: dict[str, Exception],
) -> None:
    """Each aggregate that has not failed yet, over one part (one that needs a column the
    spill did not write fails with ``ColumnsNotSpilled``: ``_respilled`` runs it again)."""
    for name in aggregates:
        if name in failed:
            continue
        try:
            partials[name].append(aggregates[name](part).collect())
        except Exception as exc:
            failed[name] = exc


def _finish(
    calls: pl.LazyFrame,
    aggregates: Mapping[str, Aggregate],
    partials: dict[str, list[pl.DataFrame]],
    failed: dict[str, Exception],
) -> dict[str, list[pl.DataFrame] | Exception]:
    """Partials or the exception of each aggregate; no calls at all: its empty aggregate."""
    for name in aggregates:
        if name not in failed and not partials[name]:
            _run_part({name: aggregates[name]}, calls.clear(), partials, failed)
    return {name: failed.get(name, partials[name]) for name in aggregates}


def is_url(location: str) -> bool:
    """An object-store (or ``file://``) URL rather than a local path."""
    return "://" in location


def scan_location(
    location: str,
    since: datetime,
    until: datetime,
    storage_options: dict[str, Any] | None = None,
) -> pl.LazyFrame:
    """Call records with ``since <= start_time < until`` from a store given as a path or URL.

    A local path opens the ``Store`` (only the files of the days in range). A URL
    (``s3://bucket/prefix``, ``gs://``, ``az://``, ``file://``) is scanned by Polars' cloud
    reader; each store file holds one day, so the start-time filter skips the other days' files
    by their statistics. Credentials come from ``storage_options`` or the environment, as for
    ``pl.scan_parquet``.
    """
    from llmtrace.store import SCAN_CAST, Store

    if not is_url(location):
        return Store(location).scan(since, until)
    lazy = pl.scan_parquet(
        f"{location.rstrip('/')}/calls/**/*.parquet",
        schema=CALL_SCHEMA,
        hive_partitioning=False,
        missing_columns="insert",
        extra_columns="ignore",
        cast_options=SCAN_CAST,  # files written before a score struct field was added
        storage_options=storage_options,
    )
    start = pl.col("start_time")
    return lazy.filter((start >= since.astimezone(UTC)) & (start < until.astimezone(UTC)))
