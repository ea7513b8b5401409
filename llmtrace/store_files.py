"""The store's files on disk: which are sound, their checksums, snapshots for readers, leftovers.

``llmtrace.store`` decides what the files mean (days, journals, appends); this module knows
what can go wrong with them and how to keep one damaged file from costing the rest:

* ``file_problem(path)``: why a Parquet file cannot be read as call records (empty, truncated,
  not Parquet, a foreign schema), from its footer only; cached per (path, size, mtime) since a
  store file never changes once renamed into place.
* Checksums: every file a writer renames into place gets its SHA-256 in the day's
  ``checksums.jsonl``, appended under the writer lock. Polars (the writer and reader used
  here) writes no Parquet page checksums and verifies none on read, so a flipped byte inside a
  data page would otherwise read back silently as different data; ``llmtrace store check``
  verifies every file against its recorded digest. Reads (costs, audit) do not hash files:
  that would double their I/O.
* Snapshots: a reader hard-links the files it is about to scan into ``.snapshots/<id>/`` and
  scans the links. A writer that replaces a file (compaction, late scores) unlinks only its
  own name, so the reader's copy stays readable until the reader's process ends.
* Leftovers: temporary files of a writer that was killed (``.part-*.parquet.tmp``,
  ``.compact-*.parquet.tmp``, the compaction spill folder). Writers create them only while
  holding the store's exclusive lock, so the next writer, holding that lock, removes them: no
  live writer of this store can own one at that moment (the kernel drops a dead process's lock).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from llmtrace.record import CALL_SCHEMA, KEY_FIELDS
from llmtrace.safe_text import escape

CHECKSUMS = "checksums.jsonl"
QUARANTINE = "quarantine"
SNAPSHOTS = ".snapshots"
FIX = "run `llmtrace store check --repair` to move it to the store's quarantine folder"
_REQUIRED = (*KEY_FIELDS, "start_time")
_MAGIC = b"PAR1"


@dataclass(frozen=True)
class StoreProblem:
    """A file or folder of the store that cannot be used, and what is wrong with it."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{escape(self.path)}: {escape(self.message)}"


class DamagedJournal(ValueError):
    """A compaction journal that is not the JSON a writer writes."""


# -- soundness of one file ---------------------------------------------------------------------

_CHECKED: dict[tuple[str, int, int], str | None] = {}


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as call records, or None; reads the footer only."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None  # replaced meanwhile: the caller lists again
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKED:
        _CHECKED[key] = _footer_problem(path, stat.st_size)
    return _CHECKED[key]


def _footer_problem(path: Path, size: int) -> str | None:
    if size == 0:
        return "empty file"
    if size < 12:
        return f"truncated ({size} bytes): not a Parquet file"
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(-4, os.SEEK_END)
            tail = handle.read(4)
        if head != _MAGIC:
            return "not a Parquet file (no PAR1 header)"
        if tail != _MAGIC:
            return "truncated Parquet file (no footer)"
        schema = pl.read_parquet_schema(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - any reader error means the same: unreadable
        return f"unreadable Parquet footer ({type(exc).__name__}: {_first_line(exc)})"
    return schema_problem(schema)


def schema_problem(schema: dict[str, pl.DataType]) -> str | None:
    """Why a file with ``schema`` is not call records (a foreign file), or None."""
    missing = [name for name in _REQUIRED if name not in schema]
    if missing:
        return f"foreign schema: no {', '.join(missing)} column (not llmtrace call records)"
    for name, dtype in schema.items():
        expected = CALL_SCHEMA.get(name)
        if expected is None or dtype == expected:
            continue
        if dtype.is_nested() and expected.is_nested():
            continue  # an older score struct: read with missing fields as null
        if name == "start_time" and isinstance(dtype, pl.Datetime):
            continue  # another time unit casts losslessly enough
        return f"foreign schema: column {name} is {dtype}, expected {expected}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def read_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read whole (data pages included), or None: reads every row."""
    problem = file_problem(path)
    if problem:
        return problem
    try:
        frame = pl.read_parquet(path, hive_partitioning=False)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        return f"unreadable data ({type(exc).__name__}: {_first_line(exc)})"
    if frame.select(pl.any_horizontal(pl.col(*KEY_FIELDS).is_null()).any()).item():
        return "rows without trace_id or span_id (damaged data)"
    return None


# -- checksums ---------------------------------------------------------------------------------


def digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def record_checksum(day_dir: Path, name: str, sha256: str) -> None:
    """Append ``name``'s digest to the day's manifest (callers hold the writer lock)."""
    line = json.dumps({"file": name, "sha256": sha256}) + "\n"
    with open(day_dir / CHECKSUMS, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def checksums(day_dir: Path) -> dict[str, str]:
    """File name -> SHA-256 as recorded (a torn last line from a crash is ignored)."""
    try:
        text = (day_dir / CHECKSUMS).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            found[str(entry["file"])] = str(entry["sha256"])
        except (ValueError, KeyError, TypeError):
            continue
    return found


def prune_checksums(day_dir: Path) -> None:
    """Keep the manifest entries of files that still exist (after files were replaced)."""
    recorded = checksums(day_dir)
    kept = {name: sha for name, sha in recorded.items() if (day_dir / name).exists()}
    if kept == recorded:
        return
    temp = day_dir / f".{CHECKSUMS}.tmp"
    temp.write_text(
        "".join(json.dumps({"file": n, "sha256": s}) + "\n" for n, s in sorted(kept.items()))
    )
    os.replace(temp, day_dir / CHECKSUMS)


# -- journals and leftovers --------------------------------------------------------------------


def read_journal(journal: Path) -> dict | None:
    """A compaction journal, None if there is none; ``DamagedJournal`` if it is not one."""
    try:
        text = journal.read_text()
    except FileNotFoundError:
        return None
    try:
        plan = json.loads(text)
        targets = plan.get("targets") or [plan["target"]]
        if not all(isinstance(n, str) for n in [*targets, *plan["replaces"]]):
            raise TypeError("names are not strings")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DamagedJournal(f"damaged compaction journal ({exc})") from None
    return plan


def leftovers(day_dir: Path) -> list[Path]:
    """Temporary files and folders a killed writer left in a day folder."""
    found = [p for p in day_dir.glob(".*.tmp") if p.is_file()]
    found.extend(p for p in day_dir.glob(".compact-spill*") if p.is_dir())
    return sorted(found)


def remove_leftovers(day_dir: Path) -> list[Path]:
    """Remove ``leftovers``; call only while holding the store's writer lock."""
    removed = leftovers(day_dir)
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


def quarantine(store_path: Path, path: Path) -> Path:
    """Move ``path`` (a file or folder of the store) under ``STORE/quarantine/``, keeping its
    place in the layout; returns the new path. Nothing is deleted: the user can inspect it."""
    relative = path.resolve().relative_to(store_path.resolve())
    target = store_path / QUARANTINE / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}")
    os.replace(path, target)
    return target


# -- snapshots for readers ---------------------------------------------------------------------

_OWN_SNAPSHOTS: list[Path] = []


class Vanished(FileNotFoundError):
    """A listed file was replaced before it could be linked: list again."""


def snapshot(store_path: Path, files: list[Path]) -> list[Path] | None:
    """Hard links to ``files`` in a new snapshot folder; None if the store cannot hold one
    (read-only, or a file system without hard links): then the caller reads the files as they
    are. Raises ``Vanished`` when a file is gone before it was linked."""
    root = store_path / SNAPSHOTS
    folder = root / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        folder.mkdir(parents=True)
    except OSError:
        return None
    if not _OWN_SNAPSHOTS:
        atexit.register(_remove_own_snapshots)
        _remove_stale_snapshots(root)
    _OWN_SNAPSHOTS.append(folder)
    linked: list[Path] = []
    try:
        for index, path in enumerate(files):
            target = folder / f"{index:06d}-{path.name}"
            try:
                os.link(path, target)
            except FileNotFoundError:
                raise Vanished(str(path)) from None
            linked.append(target)
    except Vanished:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return linked


def _remove_own_snapshots() -> None:
    for folder in _OWN_SNAPSHOTS:
        shutil.rmtree(folder, ignore_errors=True)
    _OWN_SNAPSHOTS.clear()


def stale_snapshots(root: Path, max_age_s: float = 7 * 24 * 3600) -> list[Path]:
    """Snapshot folders of reader processes that are gone (or older than ``max_age_s``)."""
    if not root.is_dir():
        return []
    stale = []
    now = time.time()
    for folder in root.iterdir():
        pid_text = folder.name.split("-", 1)[0]
        alive = pid_text.isdigit() and _alive(int(pid_text))
        with contextlib.suppress(OSError):
            if not alive or now - folder.stat().st_mtime > max_age_s:
                stale.append(folder)
    return stale


def _remove_stale_snapshots(root: Path) -> None:
    for folder in stale_snapshots(root):
        if folder not in _OWN_SNAPSHOTS:
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
