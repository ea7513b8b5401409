"""The local store: call records as a Parquet dataset partitioned by UTC day.

Layout::

    STORE/calls/day=2026-11-27/part-<time>-<uuid>.parquet
    STORE/state/<name>.json        checkpoints of incremental importers
    STORE/.lock                    held while a writer changes the store

Why this shape: a day partition lets ``scan(since, until)`` open only the days asked for;
Parquet keeps the columns the rules need cheap to read; and writing a new file per append
(written under a temporary name, fsynced, then renamed) means a crash leaves either the whole
file or nothing, never half a batch. Appends are idempotent on ``(trace_id, span_id)``: rows whose
key is already stored are skipped, so importing the same file twice adds nothing and an
interrupted import can simply be run again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace.record import CALL_SCHEMA, KEY_FIELDS, conform, empty_calls

DEFAULT_STORE = ".llmtrace"
STORE_ENV = "LLMTRACE_STORE"

# Within a day file rows are sorted by these, so scans that filter by prompt or model can skip
# row groups by their statistics.
_SORT_KEYS = ["prompt", "model", "start_time"]
_ROW_GROUP_SIZE = 256 * 1024


def default_store_path() -> Path:
    """``$LLMTRACE_STORE`` if set, else ``./.llmtrace``."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


@dataclass(frozen=True)
class AppendResult:
    """What one append did: rows written, and rows skipped because their key was stored."""

    added: int
    duplicates: int


class Store:
    """A call-record store in one directory."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.calls_dir = self.path / "calls"
        self.state_dir = self.path / "state"

    # -- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store's writer lock: concurrent appends must not both miss a key."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, calls: pl.DataFrame | pl.LazyFrame) -> AppendResult:
        """Add call records whose (trace_id, span_id) is not stored yet.

        Rows without a start time or key cannot be placed or deduplicated and raise
        ``ValueError``; importers reject such spans before they get here.
        """
        frame = conform(calls).collect()
        if frame.is_empty():
            return AppendResult(0, 0)
        bad = frame.filter(pl.any_horizontal(pl.col(*KEY_FIELDS, "start_time").is_null())).height
        if bad:
            raise ValueError(f"{bad} call record(s) lack trace_id, span_id or start_time")
        incoming = frame.height
        frame = frame.unique(subset=list(KEY_FIELDS), keep="first", maintain_order=True)
        added = 0
        with self._locked():
            for (day,), part in frame.group_by("day", maintain_order=True):
                day_dir = self._day_dir(day)
                stored = self._stored_keys(day_dir)
                if stored is not None:
                    part = part.join(stored, on=list(KEY_FIELDS), how="anti")
                if part.is_empty():
                    continue
                _finish_compaction(day_dir)
                self._write_atomic(day_dir, part)
                added += part.height
        return AppendResult(added=added, duplicates=incoming - added)

    def _day_dir(self, day: date) -> Path:
        return self.calls_dir / f"day={day.isoformat()}"

    @staticmethod
    def _stored_keys(day_dir: Path) -> pl.DataFrame | None:
        files = _live_files(day_dir) if day_dir.is_dir() else []
        if not files:
            return None
        return pl.scan_parquet(files, hive_partitioning=False).select(KEY_FIELDS).collect()

    @staticmethod
    def _write_atomic(day_dir: Path, part: pl.DataFrame, final: Path | None = None) -> Path:
        day_dir.mkdir(parents=True, exist_ok=True)
        final = final or day_dir / f"part-{_stamp()}-{uuid.uuid4().hex[:12]}.parquet"
        temp = day_dir / f".{final.name}.tmp"
        part.sort(_SORT_KEYS, nulls_last=True).write_parquet(
            temp, compression="zstd", statistics=True, row_group_size=_ROW_GROUP_SIZE
        )
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        _fsync_dir(day_dir)
        return final

    def compact(self) -> int:
        """Merge each day's files into one sorted file; returns how many days were rewritten.

        Live exporters write many small files; one file per day keeps scans fast. A journal
        names the merged file and the files it replaces before anything is renamed, so a crash
        at any point leaves a day that reads either as before or as after, never twice.
        """
        rewritten = 0
        with self._locked():
            for day_dir in self._day_dirs():
                _finish_compaction(day_dir)
                files = sorted(day_dir.glob("*.parquet"))
                if len(files) < 2:
                    continue
                merged = (
                    self._scan_files(files)
                    .unique(subset=list(KEY_FIELDS), keep="first", maintain_order=True)
                    .collect()
                )
                journal = day_dir / _JOURNAL
                target = day_dir / f"part-{_stamp()}-{uuid.uuid4().hex[:12]}.parquet"
                _write_text_atomic(
                    journal,
                    json.dumps({"target": target.name, "replaces": [f.name for f in files]}),
                )
                self._write_atomic(day_dir, merged, final=target)
                _finish_compaction(day_dir)
                rewritten += 1
        return rewritten

    # -- reading -----------------------------------------------------------------------------

    def _day_dirs(self) -> list[Path]:
        if not self.calls_dir.is_dir():
            return []
        return sorted(
            p for p in self.calls_dir.iterdir() if p.is_dir() and p.name.startswith("day=")
        )

    def days(self) -> list[date]:
        """The days that hold at least one file."""
        return [
            date.fromisoformat(p.name.removeprefix("day="))
            for p in self._day_dirs()
            if _live_files(p)
        ]

    def files(self, since: datetime | None = None, until: datetime | None = None) -> list[Path]:
        """Parquet files of the days that overlap [since, until)."""
        first = since.astimezone(UTC).date() if since else None
        last = until.astimezone(UTC).date() if until else None
        chosen: list[Path] = []
        for day_dir in self._day_dirs():
            day = date.fromisoformat(day_dir.name.removeprefix("day="))
            if (first and day < first) or (last and day > last):
                continue
            chosen.extend(_live_files(day_dir))
        return chosen

    @staticmethod
    def _scan_files(files: list[Path]) -> pl.LazyFrame:
        return pl.scan_parquet(
            files,
            schema=CALL_SCHEMA,
            hive_partitioning=False,
            missing_columns="insert",
            extra_columns="ignore",
        )

    def scan(self, since: datetime | None = None, until: datetime | None = None) -> pl.LazyFrame:
        """Call records with ``since <= start_time < until`` as a LazyFrame.

        Only the files of the days in range are opened; filters and column selections the
        caller adds are pushed down into the Parquet reader.
        """
        files = self.files(since, until)
        if not files:
            return empty_calls().lazy()
        lazy = self._scan_files(files)
        if since is not None:
            lazy = lazy.filter(pl.col("start_time") >= since.astimezone(UTC))
        if until is not None:
            lazy = lazy.filter(pl.col("start_time") < until.astimezone(UTC))
        return lazy

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
        _write_text_atomic(
            self.state_dir / f"{name}.json",
            json.dumps(state, indent=2, sort_keys=True, default=str),
        )

    def clear(self) -> None:
        """Remove every call record and checkpoint (used by ``llmtrace demo --fresh``)."""
        with self._locked():
            shutil.rmtree(self.calls_dir, ignore_errors=True)
            shutil.rmtree(self.state_dir, ignore_errors=True)


_JOURNAL = "compaction.json"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


def _live_files(day_dir: Path) -> list[Path]:
    """The day's Parquet files, minus those an unfinished compaction already replaced."""
    files = sorted(day_dir.glob("*.parquet"))
    journal = day_dir / _JOURNAL
    if not journal.exists():
        return files
    plan = json.loads(journal.read_text())
    if (day_dir / plan["target"]).exists():
        replaced = set(plan["replaces"])
        return [f for f in files if f.name not in replaced]
    return files


def _finish_compaction(day_dir: Path) -> None:
    """Roll an interrupted compaction forward (merged file present) or back (it is not)."""
    journal = day_dir / _JOURNAL
    if not journal.exists():
        return
    plan = json.loads(journal.read_text())
    if (day_dir / plan["target"]).exists():
        for name in plan["replaces"]:
            (day_dir / name).unlink(missing_ok=True)
    journal.unlink()
    _fsync_dir(day_dir)


def _write_text_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
