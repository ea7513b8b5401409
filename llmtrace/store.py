"""The local store: call records as a Parquet dataset partitioned by UTC day.

Layout::

    STORE/calls/day=2026-11-27/part-<time>-<uuid>.parquet
    STORE/state/<name>.json        checkpoints of incremental importers
    STORE/state/spool-closed-2.msgpack  traces settled lately (``llmtrace.spool_carry``)
    STORE/spool/*.msgpack          batches a live app spooled, not settled yet (``settle``)
    STORE/.lock                    held while a writer changes the store

Why this shape: a day partition lets ``scan(since, until)`` open only the days asked for;
Parquet keeps the columns the rules need cheap to read; and writing a new file per append
(written under a temporary name, fsynced, then renamed) means a crash leaves either the whole
file or nothing, never half a batch. Appends are idempotent on ``(trace_id, span_id)``: rows whose
key is already stored are skipped, so importing the same file twice adds nothing and an
interrupted import can simply be run again.

Live apps do not write here: their store exporter spools each batch of spans as plain rows
(``llmtrace.spool``, no Polars in the app) and every reader settles the spool first
(``settle``, ``llmtrace.store_spool``), so a scan sees every call an app has exported.

This module is the store's face (append, scan, compact, attach scores, rewrite) and holds the
writer lock; the jobs under it live beside it: ``store_journal`` (how files are replaced
safely: the compaction journal and a day's consistent file set), ``store_scores`` (which calls a
late score belongs to, and their new score lists), ``store_files`` (which files are sound, their
checksums and snapshots) and ``store_check`` (``llmtrace store check``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from llmtrace import spool, store_files
from llmtrace.record import CALL_SCHEMA, KEY_FIELDS, SCORE_STRUCT, conform, empty_calls
from llmtrace.store_files import FIX, StoreProblem
from llmtrace.store_journal import (
    COMPACTED,
    JOURNAL,
    SPILL,
    day_of,
    file_stamp,
    finish_compaction,
    fsync_dir,
    live_files,
    minute_of_start,
    range_buckets,
    write_text_atomic,
)
from llmtrace.store_scores import (
    NEW,
    REPLACE,
    new_scores,
    score_rows,
    score_targets,
    sids,
    with_added_scores,
)

if TYPE_CHECKING:
    from llmtrace.accuracy import AccuracyConfig
    from llmtrace.store_spool import SettleResult

DEFAULT_STORE = ".llmtrace"
STORE_ENV = "LLMTRACE_STORE"

# Within a day file rows are sorted by these, so scans that filter by prompt or model can skip
# row groups by their statistics (row groups small enough that one holds few prompts).
_SORT_KEYS = ["prompt", "model", "start_time"]
_ROW_GROUP_SIZE = 128 * 1024
# Most rows one compacted file holds. A file is sorted in memory before it is written (~0.5 GB
# at 1M rows), so this bounds compaction's memory whatever a day holds; a day with more rows is
# split into files of consecutive (prompt, model, time) ranges, which file statistics prune too.
COMPACT_ROWS = 1_000_000
# Every read of store files casts with these: files written before the score struct gained a
# field (``id``) read with that field null, so an old store needs no migration step. Use it for
# any other reader of store files (e.g. a scan by URL) too.
SCAN_CAST = pl.ScanCastOptions(missing_struct_fields="insert")


def default_store_path() -> Path:
    """``$LLMTRACE_STORE`` if set, else ``./.llmtrace``."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def _by_day(frame: pl.DataFrame) -> list[tuple[date, pl.DataFrame]]:
    """(day, its rows in input order) per day of ``frame``, in the order days first appear;
    a frame of one day (most of an import's batches) as it is, without a group-by's copy."""
    days = frame.get_column("day")
    if days.n_unique() == 1:
        return [(days[0], frame)]
    return [(day, part) for (day,), part in frame.group_by("day", maintain_order=True)]


@dataclass(frozen=True)
class AppendResult:
    """What one append did: rows written, and rows skipped because their key was stored.

    ``keys``: the (trace_id, span_id) of the rows written, so an importer can tell which of
    its calls are new without reading the store again (``None`` when nothing was passed).
    """

    added: int
    duplicates: int
    keys: pl.DataFrame | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ScoreAttachResult:
    """What one ``attach_scores`` did, counted per score (a trace score can reach many calls).

    ``attached``: scores added to at least one stored call (and replacing none); ``replaced``:
    scores with a source id that replaced a different version held under the same (id,
    source) on at least one call (the score was edited at its source); ``present``: scores
    every call they match already held; ``unmatched_ids``: the ``score_id`` of each score that
    matched no stored call (callers tell "belongs to a call imported now" from "belongs to
    nothing" with it); ``calls`` and ``files``: stored calls that changed and files rewritten.
    """

    attached: int = 0
    present: int = 0
    unmatched_ids: frozenset[str] = frozenset()
    calls: int = 0
    files: int = 0
    replaced: int = 0

    @property
    def unmatched(self) -> int:
        return len(self.unmatched_ids)


@dataclass(frozen=True)
class RewriteResult:
    """What one ``Store.rewrite`` did: files read, and files replaced because calls changed."""

    files: int = 0
    rewritten: int = 0


class Store:
    """A call-record store in one directory."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        on_problem: Callable[[StoreProblem], None] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.calls_dir = self.path / "calls"
        self.state_dir = self.path / "state"
        # Damaged files and stray folders met while reading or writing: skipped, and reported
        # once each (to ``on_problem``, e.g. a warning on stderr) so the rest still answers.
        self.problems: dict[Path, StoreProblem] = {}
        self.on_problem = on_problem
        self._holding = 0  # depth of this object's hold on the writer lock

    def _problem(self, path: Path, message: str) -> None:
        if path in self.problems:
            return
        problem = StoreProblem(path, message)
        self.problems[path] = problem
        if self.on_problem is not None:
            self.on_problem(problem)

    def _usable(self, files: list[Path]) -> list[Path]:
        """``files`` without the damaged ones (each reported once, with how to fix it)."""
        usable = []
        for path in files:
            problem = store_files.file_problem(path)
            if problem is None:
                usable.append(path)
            else:
                self._problem(path, f"{problem}; skipped: {FIX}")
        return usable

    def _live(self, day_dir: Path) -> list[Path]:
        return live_files(day_dir, self._problem)

    # -- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store's writer lock: concurrent appends must not both miss a key."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._holding += 1  # readers called under the lock do not settle (a second flock)
            try:
                yield
            finally:
                self._holding -= 1
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(
        self, calls: pl.DataFrame | pl.LazyFrame, *, check_stored: bool = True
    ) -> AppendResult:
        """Add call records whose (trace_id, span_id) is not stored yet.

        Rows without a start time or key cannot be placed or deduplicated and raise
        ``ValueError``; importers reject such spans before they get here.
        ``check_stored=False`` skips the lookup of stored keys (duplicates within ``calls`` are
        still dropped): for bulk loads whose keys are new by construction, such as
        ``demo.generate_chunks``, where reading every stored key of a day on each append would
        make loading 100M rows quadratic.
        """
        with self._locked():
            return self._append_held(calls, check_stored=check_stored)

    def _append_held(
        self, calls: pl.DataFrame | pl.LazyFrame, *, check_stored: bool = True
    ) -> AppendResult:
        """``append``'s work, for a caller that holds the writer lock (``append``, ``settle``)."""
        frame = conform(calls).collect()
        if frame.is_empty():
            return AppendResult(0, 0, frame.select(KEY_FIELDS))
        bad = frame.filter(pl.any_horizontal(pl.col(*KEY_FIELDS, "start_time").is_null())).height
        if bad:
            raise ValueError(f"{bad} call record(s) lack trace_id, span_id or start_time")
        incoming = frame.height
        # the check hashes two key columns, the de-duplication copies every column (~6x the
        # CPU): an importer's batch has unique keys (issue 15)
        if frame.select(pl.struct(*KEY_FIELDS).is_duplicated().any()).item():
            frame = frame.unique(subset=list(KEY_FIELDS), keep="first", maintain_order=True)
        added = 0
        written: list[pl.DataFrame] = [frame.select(KEY_FIELDS).clear()]
        for day, part in _by_day(frame):
            day_dir = self._day_dir(day)
            stored = self._stored_keys(day_dir) if check_stored else None
            if stored is not None:
                part = part.join(stored, on=list(KEY_FIELDS), how="anti")
            if part.is_empty():
                continue
            finish_compaction(day_dir, self._problem)
            self._write_atomic(day_dir, part)
            added += part.height
            written.append(part.select(KEY_FIELDS))
        return AppendResult(
            added=added, duplicates=incoming - added, keys=pl.concat(written, rechunk=False)
        )

    # -- the live exporter's spool -------------------------------------------------------------

    def settle(self, progress: Callable[[int, int], None] | None = None) -> SettleResult | None:
        """Add the calls the live store exporter spooled (``llmtrace.spool``) to the store.

        Every reader below calls this first, so ``scan()`` sees what a running app exported
        (one directory listing when nothing is spooled). Never raises: a store that cannot be
        written (read-only) or a failure is reported as a problem and readers still answer
        with what is stored. None when there was nothing to do (or the lock is held here).
        """
        if self._holding or not spool.has_pending(self.path):
            return None
        from llmtrace import store_spool

        try:
            with self._locked():
                return store_spool.settle(self, progress=progress)
        except Exception as exc:  # noqa: BLE001 - readers must still answer
            self._problem(spool.spool_dir(self.path), f"spooled live calls not settled yet: {exc}")
            return None

    def _day_dir(self, day: date) -> Path:
        return self.calls_dir / f"day={day.isoformat()}"

    def _stored_keys(self, day_dir: Path) -> pl.DataFrame | None:
        files = self._usable(self._live(day_dir)) if day_dir.is_dir() else []
        if not files:
            return None
        return Store._scan_files(files).select(KEY_FIELDS).collect()

    @staticmethod
    def _write_atomic(day_dir: Path, part: pl.DataFrame, final: Path | None = None) -> Path:
        day_dir.mkdir(parents=True, exist_ok=True)
        final = final or day_dir / f"part-{file_stamp()}-{uuid.uuid4().hex[:12]}.parquet"
        temp = day_dir / f".{final.name}.tmp"
        part.sort(_SORT_KEYS, nulls_last=True).write_parquet(
            temp, compression="zstd", statistics=True, row_group_size=_ROW_GROUP_SIZE
        )
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        # recorded before the rename: a file in place always has its digest (store check)
        store_files.record_checksum(day_dir, final.name, store_files.digest(temp))
        os.replace(temp, final)
        fsync_dir(day_dir)
        return final

    def compact(self, *, max_rows_per_file: int = COMPACT_ROWS) -> int:
        """Merge each day's files into sorted files; returns how many days were rewritten.

        Live exporters and bulk loads write many small files; few large sorted files keep scans
        fast and let row-group statistics prune by prompt and model. A day becomes one file, or
        files of at most ``max_rows_per_file`` rows covering consecutive ranges of the sort
        order, so memory stays bounded on days of millions of calls. A journal names the new
        files and the files they replace before anything is renamed, so a crash at any point
        leaves a day that reads either as before or as after, never twice.
        """
        if max_rows_per_file < 1:
            raise ValueError("max_rows_per_file must be >= 1")
        rewritten = 0
        with self._locked():
            for day_dir in self._day_dirs():
                finish_compaction(day_dir, self._problem)
                files = sorted(day_dir.glob("*.parquet"))
                if len(self._usable(files)) < len(files):
                    continue  # a damaged file is not rewritten: store check --repair first
                if not self._needs_compaction(files, max_rows_per_file):
                    continue
                self._compact_day(day_dir, files, max_rows_per_file)
                rewritten += 1
        return rewritten

    def _needs_compaction(self, files: list[Path], max_rows: int) -> bool:
        """Several files, or one too big to read whole; but not a day compacted before."""
        if not files or all(f.name.startswith(COMPACTED) for f in files):
            return False
        if len(files) > 1:
            return True
        return self._scan_files(files).select(pl.len()).collect().item() > max_rows  # footer only

    def _compact_day(self, day_dir: Path, files: list[Path], max_rows: int) -> None:
        scan = self._scan_files(files)
        buckets = range_buckets(scan, max_rows)
        count = int(buckets["_bucket"].max() or 0) + 1
        stamp, tag = file_stamp(), uuid.uuid4().hex[:12]
        targets = [day_dir / f"{COMPACTED}{stamp}-{i:04d}-{tag}.parquet" for i in range(count)]
        write_text_atomic(
            day_dir / JOURNAL,
            json.dumps({"targets": [t.name for t in targets], "replaces": [f.name for f in files]}),
        )
        unique = {"subset": list(KEY_FIELDS), "keep": "first", "maintain_order": True}
        if count == 1:
            self._write_atomic(day_dir, scan.unique(**unique).collect(), final=targets[0])
        else:
            # one streaming pass splits the day into its ranges, then each is sorted alone
            spill = day_dir / SPILL
            shutil.rmtree(spill, ignore_errors=True)
            on = ["prompt", "model", "_minute"]
            scan.with_columns(minute_of_start()).join(
                buckets.lazy(), on=on, how="left", nulls_equal=True
            ).drop("_minute").sink_parquet(
                pl.PartitionBy(spill, key="_bucket", include_key=False), mkdir=True
            )
            for i, target in enumerate(targets):
                part = pl.scan_parquet(spill / f"_bucket={i}", hive_partitioning=False)
                self._write_atomic(day_dir, part.unique(**unique).collect(), final=target)
            shutil.rmtree(spill, ignore_errors=True)
        finish_compaction(day_dir)

    # -- late scores -------------------------------------------------------------------------

    def attach_scores(self, scores: pl.DataFrame, accuracy: AccuracyConfig) -> ScoreAttachResult:
        """Merge evaluation scores into the stored calls they belong to and recompute accuracy.

        Evaluations often arrive after their call was stored (an LLM judge runs later; Langfuse
        trace scores are added after the trace), and ``append`` writes a call once, so this is
        the store's one update path. Columns of ``scores``:

        * ``score`` (the record's score struct) and ``trace_id``;
        * ``span_id`` (optional): the call; null means every call of the trace (with a null
          ``trace_id``, the call with this span id in any trace);
        * ``response_id`` (optional): with no ``span_id``, the calls with this response id in
          any trace (evaluators often run in a trace of their own);
        * ``score_id`` (optional): rows sharing one are alternative targets of one score, and
          only the matching rows of the lowest ``rank`` (optional, default 0) are used; without
          it every row is a score of its own.
        * ``batch`` (optional, default 0): rows of several batches attached in one call act as
          if each batch were attached after the one before: a call gains a copy of a score only
          as far as one batch gives more copies than it holds (an importer that streams defers
          its scores to one call at the end, so it reads the store's keys once, not per batch).

        Idempotent: a score without an ``id`` (an OTel evaluation event) is a copy: a call gains
        one (name, value, label, source) only as far as the batch gives it more copies than the
        call already holds, so running the same batch again adds nothing, while two evaluators'
        equal verdicts stay two. A score with an ``id`` (Langfuse's) is one score that its
        source can edit: a call holds one version per (id, source), so an equal one is present,
        a different one replaces the held version (the last of a batch, of the latest batch,
        wins), and a call's accuracy follows the edit. A held copy without id that equals an
        incoming score with one (a store written before scores had ids) becomes that score
        instead of gaining a second copy; it counts as present. Efficient: only the key columns
        are read to find the calls, and only files holding a call whose scores change are
        rewritten, through the compaction journal, so a crash leaves every call exactly once,
        either with its old scores or with the new.
        """
        if score_rows(scores).is_empty():
            return ScoreAttachResult()
        with self._locked():
            return self._attach_scores_held(scores, accuracy)

    def _attach_scores_held(
        self, scores: pl.DataFrame, accuracy: AccuracyConfig
    ) -> ScoreAttachResult:
        """``attach_scores``' work, for a caller that holds the writer lock (``attach_scores``,
        ``settle``: a second flock of the lock file from this process would wait for ever, and
        ``self.files()`` does not settle again while the lock is held here)."""
        rows = score_rows(scores)
        if rows.is_empty():
            return ScoreAttachResult()
        for day_dir in self._day_dirs():
            finish_compaction(day_dir, self._problem)
        files = self.files()
        targets = score_targets(rows, self._stored_score_keys(rows, files))
        ids = set(rows.get_column("_sid").unique())
        matched = set(targets.get_column("_sid").unique())
        if targets.is_empty():
            return ScoreAttachResult(unmatched_ids=frozenset(ids - matched))
        held = self._scan_files(sorted({Path(f) for f in targets["_file"]}))
        new, drops = new_scores(targets, held)
        changed = self._rewrite_scored(new, drops, accuracy)
        replaced = sids(new, REPLACE)
        gained = sids(new, NEW) - replaced
        return ScoreAttachResult(
            attached=len(gained),
            present=len(matched - gained - replaced),
            unmatched_ids=frozenset(ids - matched),
            calls=new.select(*KEY_FIELDS).n_unique() if new.height else 0,
            files=changed,
            replaced=len(replaced),
        )

    def _stored_score_keys(self, rows: pl.DataFrame, files: list[Path]) -> pl.DataFrame:
        """Keys (and file) of the stored calls any row could target: key columns only."""
        columns = ["trace_id", "span_id", "response_id", "_file"]
        if not files:
            return pl.DataFrame(schema={c: pl.String for c in columns})
        spans = rows.get_column("span_id").drop_nulls().unique()
        traces = rows.filter(pl.col("span_id").is_null() & pl.col("response_id").is_null())
        responses = rows.get_column("response_id").drop_nulls().unique()
        wanted = (
            pl.col("span_id").is_in(spans.implode())
            | pl.col("trace_id").is_in(traces.get_column("trace_id").drop_nulls().implode())
            | pl.col("response_id").is_in(responses.implode())
        )
        scan = pl.scan_parquet(
            files,
            schema=CALL_SCHEMA,
            hive_partitioning=False,
            missing_columns="insert",
            extra_columns="ignore",
            include_file_paths="_file",
            cast_options=SCAN_CAST,
        )
        return scan.select(columns).filter(wanted).collect()

    def _rewrite_scored(
        self, new: pl.DataFrame, drops: pl.DataFrame, accuracy: AccuracyConfig
    ) -> int:
        """Rewrite each file holding a call in ``new`` with the scores added and the held scores
        at ``drops`` (key, ``_pos``: position in the call's list) removed; returns how many.

        Per day, the compaction journal names the new files and the ones they replace before
        anything is written, so readers and the next writer see either all old or all new.
        """
        fields = list(SCORE_STRUCT.to_schema())
        additions = (
            new.sort("_o")
            .group_by("_file", *KEY_FIELDS, maintain_order=True)
            .agg(pl.struct(fields).alias("_add"))
            .with_columns(pl.col("_add").cast(pl.List(SCORE_STRUCT)))
        )
        by_day: dict[Path, list[Path]] = {}
        for name in additions.get_column("_file").unique().sort():
            path = Path(name)
            by_day.setdefault(path.parent, []).append(path)

        def build(old: Path) -> pl.DataFrame:
            adds = additions.filter(pl.col("_file") == str(old)).drop("_file")
            return with_added_scores(self._scan_files([old]).collect(), adds, drops, accuracy)

        for day_dir, olds in by_day.items():
            self._replace_files(day_dir, olds, build)
        return sum(len(olds) for olds in by_day.values())

    def _replace_files(
        self, day_dir: Path, olds: list[Path], build: Callable[[Path], pl.DataFrame]
    ) -> list[Path]:
        """Replace files of one day by ``build(old)`` each, through the compaction journal.

        The one way the store changes stored rows (late scores, repricing): the journal names
        the new files and the ones they replace before anything is written, so readers and the
        next writer see either all old or all new, and a crash leaves every call exactly once.
        The caller holds the lock. Returns the new files.
        """
        prefixes = [COMPACTED if f.name.startswith(COMPACTED) else "part-" for f in olds]
        news = [
            day_dir / f"{prefix}{file_stamp()}-{uuid.uuid4().hex[:12]}.parquet"
            for prefix in prefixes
        ]
        write_text_atomic(
            day_dir / JOURNAL,
            json.dumps({"targets": [f.name for f in news], "replaces": [f.name for f in olds]}),
        )
        for old, target in zip(olds, news, strict=True):
            self._write_atomic(day_dir, build(old), final=target)
        finish_compaction(day_dir)
        return news

    def rewrite(
        self,
        transform: Callable[[pl.DataFrame], pl.DataFrame | None],
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> RewriteResult:
        """Rewrite stored calls file by file: ``transform`` gets a file's calls and returns
        the file's new contents, or None when nothing in it changes (the file is left alone).

        For updates of stored fields that every call may need (``llmtrace reprice``). Only the
        files of the days overlapping [since, until) are read; ``transform`` sees whole files
        and must leave calls outside the window as they are. Each file is replaced through the
        journal (``_replace_files``), one at a time under the writer lock, so memory stays at one
        file and appends can run between days; a crash leaves every call exactly once, some
        files rewritten and the rest not, and running the same rewrite again finishes the job
        when ``transform`` is idempotent. ``progress(done, total)`` is called after each file.
        """
        day_dirs = {f.parent for f in self.files(since, until)}
        total = sum(len(live_files(d)) for d in day_dirs)
        done = rewritten = 0
        for day_dir in sorted(day_dirs):
            with self._locked():
                finish_compaction(day_dir, self._problem)
                # a damaged file is named and left alone (store check --repair moves it)
                for path in self._usable(sorted(day_dir.glob("*.parquet"))):
                    updated = transform(self._scan_files([path]).collect())
                    if updated is not None:
                        self._replace_files(day_dir, [path], lambda _old, new=updated: new)
                        rewritten += 1
                    done += 1
                    if progress is not None:
                        progress(done, max(total, done))
        return RewriteResult(files=done, rewritten=rewritten)

    # -- reading -----------------------------------------------------------------------------

    def _day_dirs(self) -> list[Path]:
        """``calls/day=YYYY-MM-DD`` folders; any other folder there is reported and skipped."""
        if not self.calls_dir.is_dir():
            return []
        days = []
        for path in sorted(self.calls_dir.iterdir()):
            if not path.is_dir():
                continue
            if day_of(path) is None:
                self._problem(
                    path,
                    "stray folder (not day=YYYY-MM-DD); skipped: "
                    "run `llmtrace store check --repair` to move it to quarantine",
                )
                continue
            days.append(path)
        return days

    def days(self) -> list[date]:
        """The days that hold at least one file."""
        self.settle()
        return [day for p in self._day_dirs() if self._live(p) and (day := day_of(p))]

    def files(self, since: datetime | None = None, until: datetime | None = None) -> list[Path]:
        """Parquet files of the days that overlap [since, until)."""
        self.settle()
        first = since.astimezone(UTC).date() if since else None
        # until is exclusive: a window ending at midnight does not open the next day's files
        last = (until.astimezone(UTC) - timedelta(microseconds=1)).date() if until else None
        chosen: list[Path] = []
        for day_dir in self._day_dirs():
            day = day_of(day_dir)
            if day is None or (first and day < first) or (last and day > last):
                continue
            chosen.extend(self._live(day_dir))
        return self._usable(chosen)

    @staticmethod
    def _scan_files(files: list[Path]) -> pl.LazyFrame:
        return pl.scan_parquet(
            files,
            schema=CALL_SCHEMA,
            hive_partitioning=False,
            missing_columns="insert",
            extra_columns="ignore",
            cast_options=SCAN_CAST,
        )

    def scan(self, since: datetime | None = None, until: datetime | None = None) -> pl.LazyFrame:
        """Call records with ``since <= start_time < until`` as a LazyFrame.

        Only the files of the days in range are opened; filters and column selections the
        caller adds are pushed down into the Parquet reader.
        """
        files = self._snapshot(since, until)
        if not files:
            return empty_calls().lazy()
        lazy = self._scan_files(files)
        if since is not None:
            lazy = lazy.filter(pl.col("start_time") >= since.astimezone(UTC))
        if until is not None:
            lazy = lazy.filter(pl.col("start_time") < until.astimezone(UTC))
        return lazy

    def _snapshot(self, since: datetime | None, until: datetime | None) -> list[Path]:
        """The files of ``files(since, until)`` as hard links that a writer replacing the
        originals cannot take away (or the files themselves where links cannot be made)."""
        for _ in range(20):
            files = self.files(since, until)
            if not files:
                return files
            try:
                linked = store_files.snapshot(self.path, files)
            except store_files.Vanished:
                continue  # a writer replaced a file between listing and linking: list again
            return files if linked is None else linked
        return self.files(since, until)

    # -- importer state ----------------------------------------------------------------------

    def read_state(self, name: str) -> dict[str, Any]:
        """An importer's checkpoint (empty if none was written)."""
        path = self.state_dir / f"{name}.json"
        if not path.exists():
            return {}
        return json.loads(path.read_text())

    def write_state(self, name: str, state: dict[str, Any]) -> None:
        """Replace an importer's checkpoint atomically."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            self.state_dir / f"{name}.json",
            json.dumps(state, indent=2, sort_keys=True, default=str),
        )

    def clear(self) -> None:
        """Remove every call record and checkpoint (used by ``llmtrace demo --fresh``)."""
        with self._locked():
            shutil.rmtree(self.calls_dir, ignore_errors=True)
            shutil.rmtree(self.state_dir, ignore_errors=True)
            shutil.rmtree(spool.spool_dir(self.path), ignore_errors=True)
