"""The live store exporter's spool: one file of collected rows per batch of spans, no Polars.

Why: an app that exports to the store used to run the whole importer inside itself on every
batch (Polars frames, pricing, a Parquet write that first read every key stored that day):
+0.2 ms of CPU per call and twice the memory, growing over the day. Now the app only turns
each batch into the importer's plain rows (``importers.otlp_rows.SpanRows``) and writes them
here; a store reader *settles* them into the store (``llmtrace.store_spool``): the same
merging, actions, scores and prices as before, so the same rows. It is the OpenTelemetry
Collector's file-exporter pattern with the store as the reader.

Layout::

    STORE/spool/<utc-stamp>-<pid>-<seq>.msgpack    one batch, complete (renamed into place)
    STORE/spool/.<name>.tmp                        being written (never read; removed by a
                                                   settle once an hour old: a killed app's)
    STORE/spool/<batch>-carry-<sec>-<tag>.msgpack  rows a settle carried over (open traces,
                                                   scores waiting for their call; see
                                                   ``llmtrace.spool_carry``)
    STORE/spool/rejected/<name>                    a file settle could not read, kept

A file is msgpack (msgspec) of ``{"header": ..., "calls": [...], "tree": [...], "roots":
[...], "evaluations": [...]}``. The header names the format and its version, the source
(``live``), ``keep_content``, the field names of each list (a later llmtrace maps rows by
name, and refuses a file it cannot read instead of guessing), the counts of spans, and the
price file and config file the app would use, so settling prices and scores as the app would
have; ``local_roots`` names the traces whose local root (a span whose parent is in another
process) is in the batch, and ``final`` marks the empty batch an exporter writes when it shuts
down; ``process`` says which exporter in which process wrote it (older readers ignore these).
Without ``keep_content`` no prompt or completion text is in the rows (only
fingerprints), as in the store itself.

Written as ``.tmp``, fsynced, renamed, and the folder fsynced: a reader sees a whole batch or
none, and a crash loses at most the batch being written.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from llmtrace.importers.otlp_rows import (
    CALL_ROW,
    EVALUATION_FIELDS,
    ROOTS_FIELDS,
    TREE_FIELDS,
    SpanRows,
)

FORMAT = "llmtrace-spool"
VERSION = 1
"""Bumped when a file of this version would be misread by an older reader (which then leaves
such files in place, with a problem, for a newer llmtrace to settle)."""
SUFFIX = ".msgpack"
SPOOL = "spool"
REJECTED = "rejected"
LISTS = ("calls", "tree", "roots", "evaluations")
FIELDS = {
    "calls": CALL_ROW,
    "tree": TREE_FIELDS,
    "roots": ROOTS_FIELDS,
    "evaluations": EVALUATION_FIELDS,
}

_ENCODER = msgspec.msgpack.Encoder()


class SpoolError(Exception):
    """A spool file that cannot be settled: unreadable, not a spool file, or missing fields."""


class SpoolTooNew(SpoolError):
    """A spool file of a newer format version: left for a newer llmtrace to settle."""


@dataclass
class SpoolBatch:
    """One spool file read back: its header and its four lists in this llmtrace's field order."""

    path: Path
    header: dict[str, Any]
    calls: list[Any]
    tree: list[Any]
    roots: list[Any]
    evaluations: list[Any]


def spool_dir(store: Path) -> Path:
    return store / SPOOL


def pending(store: Path) -> list[Path]:
    """The complete spool files of ``store`` in name order (batch order within a process)."""
    try:
        with os.scandir(spool_dir(store)) as entries:
            names = [
                e.name
                for e in entries
                if e.name.endswith(SUFFIX) and not e.name.startswith(".") and e.is_file()
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []
    folder = spool_dir(store)
    return [folder / name for name in sorted(names)]


def has_pending(store: Path, now: float | None = None) -> bool:
    """Whether ``store`` holds spooled batches a settle would act on: one directory listing,
    no file read. A carry file (``carry_name``) alone counts only once its oldest rows are
    ``CARRY_S`` old: until then only a new batch can close its traces or match its
    evaluations, so readers do not re-read it for nothing."""
    clock = time.time() if now is None else now
    try:
        with os.scandir(spool_dir(store)) as entries:
            return any(
                e.name.endswith(SUFFIX)
                and not e.name.startswith(".")
                and (not is_carry(e.name) or carry_due(e.name) <= clock)
                for e in entries
            )
    except (FileNotFoundError, NotADirectoryError):
        return False


CARRY = "-carry-"
CARRY_S = 900.0
"""How long a settle carries rows over (``llmtrace.store_spool``): the calls of a trace whose
local root has not been spooled (a running request or agent run), and evaluations whose call is
not stored yet (a judge's trace exported before the call's). Past it, such a trace is finished
as it is (an app that died, a root in another process) and such an evaluation is dropped as
matching no call, as ``llmtrace import otlp`` does at the end of its input. Fifteen minutes:
longer than a request or most agent runs, short enough that ``llmtrace costs`` is not an hour
behind an app that died."""


def is_carry(name: str) -> bool:
    """Whether a spool file name is a settle's carry file rather than an app's batch."""
    return CARRY in name


def carry_name(first: str, oldest_ns: int, tag: str) -> str:
    """The name of a carry file: the name of the oldest batch it holds rows of (so it sorts
    where its rows came from, before newer batches), then the spool time of its oldest row
    in seconds, rounded up (``has_pending`` reads when it is due from the name: rounded down,
    every read in the second before the rows were due settled the carry for nothing), and a
    unique tag."""
    base = first.split(CARRY, 1)[0].removesuffix(SUFFIX)
    seconds = -(-oldest_ns // 1_000_000_000)
    return f"{base}{CARRY}{seconds:012d}-{tag}{SUFFIX}"


def carry_due(name: str) -> float:
    """When a carry file's oldest rows reach ``CARRY_S`` (epoch seconds); 0 when unreadable."""
    try:
        return int(name.split(CARRY, 1)[1].split("-", 1)[0]) + CARRY_S
    except (IndexError, ValueError):
        return 0.0


def batch_origin(name: str) -> tuple[int | None, int | None]:
    """(spool time in ns, pid) of an app's batch, from its name; (None, None) if not one."""
    try:
        stamp, pid, _ = name.split(CARRY, 1)[0].removesuffix(SUFFIX).split("-", 2)
        seconds = calendar.timegm(time.strptime(stamp[:15], "%Y%m%dT%H%M%S"))
        return seconds * 1_000_000_000 + int(stamp[16:25]), int(pid)
    except ValueError:
        return None, None


STALE_TEMPORARY_S = 3600.0
"""A ``.tmp`` this old is what a killed app left mid-write (a batch takes milliseconds)."""


def stale_temporaries(store: Path, now: float | None = None) -> list[Path]:
    """The half-written files of apps killed mid-write. A younger ``.tmp`` may be a live
    app's batch being written: not listed."""
    limit = (time.time() if now is None else now) - STALE_TEMPORARY_S
    try:
        with os.scandir(spool_dir(store)) as entries:
            return sorted(
                Path(e.path)
                for e in entries
                if e.name.startswith(".")
                and e.name.endswith(".tmp")
                and e.stat(follow_symlinks=False).st_mtime < limit
            )
    except (FileNotFoundError, NotADirectoryError):
        return []


def remove_stale_temporaries(store: Path, now: float | None = None) -> list[Path]:
    """Remove the half-written files of apps killed mid-write (``stale_temporaries``);
    returns the ones removed."""
    removed = []
    for path in stale_temporaries(store, now):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    return removed


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (the folder's own entry list on disk); the
    store's writers use it too (``store_journal``), from here because the app loads this
    module without Polars."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """Writes one spool file per batch of rows into ``STORE/spool`` (the app's side).

    ``prices`` and ``config`` are the files the app's pricer and accuracy settings come from
    (None: the bundled prices, no config); they go into every header.
    """

    def __init__(
        self,
        store: Path,
        *,
        keep_content: bool,
        prices: str | None,
        config: str | None,
    ) -> None:
        self.folder = spool_dir(store)
        self._seq = 0
        self._process: tuple[int, int] = (0, 0)  # (pid, ``process`` in the headers it wrote)
        self._made = False
        self._header = {
            "format": FORMAT,
            "version": VERSION,
            "source": "live",
            "keep_content": keep_content,
            "fields": {name: list(fields) for name, fields in FIELDS.items()},
            "prices": prices,
            "config": config,
        }

    def write(self, rows: SpanRows, local_roots: Sequence[str] = ()) -> Path:
        """Spool ``rows`` as one file; returns its path. Raises ``OSError`` (full disk...).

        ``local_roots``: traces of which a span whose parent is in another process ended in
        this batch (the trace's root here): a settle then stops carrying the trace's calls,
        as it does when a span without a parent (``rows.roots``) arrives."""
        header = {
            **self._header,
            "spans": rows.spans,
            "llm_spans": rows.llm_spans,
            "rejected": rows.rejected,
            "local_roots": list(local_roots),
        }
        lists = (rows.calls, rows.tree, rows.roots, rows.evaluations)
        return self._write(header, lists)

    def write_final(self) -> Path:
        """Spool the process's last word (its exporter shut down): an empty batch whose header
        says ``final``, so a settle finishes this process's open traces at once instead of
        carrying them for ``CARRY_S`` (``llmtrace run -- python app.py``, then ``costs``)."""
        header = {**self._header, "spans": 0, "llm_spans": 0, "rejected": 0, "final": True}
        return self._write(header, ([], [], [], []))

    def _write(self, header: dict[str, Any], lists: tuple[list[Any], ...]) -> Path:
        if not self._made:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made = True
        self._seq += 1
        pid = os.getpid()
        if self._process[0] != pid:  # first write, or a forked child: a process of its own
            self._process = (pid, PROCESS_MIN + int.from_bytes(os.urandom(7), "big"))
        header["process"] = self._process[1]
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000))
        name = f"{stamp}.{now % 1_000_000_000:09d}Z-{pid}-{self._seq:09d}{SUFFIX}"
        return write_file(self.folder / name, header, lists)


PROCESS_MIN = 2**32
"""The least ``process`` a writer puts in its headers (random, 56 bits above this; not a pid,
which Linux keeps below 2**22). Why not the pid of the file's name: a settle finishes the open
traces of a process at its final batch, and a pid is not one process of one store: two
containers sharing a store each run their app as pid 1 (or the same small pid), an app
restarted keeps it, two exporters in one process share it. Finished at another's final, a
running trace's calls were stored without their root's action. An int, as pids are: a carry
file lists both, and a reader of 514d29e..07b0a0f sorts them."""


def process_of(header: dict[str, Any], pid: int | None) -> int | None:
    """Which writer spooled a batch: its header's ``process``, or else (a file of an llmtrace
    before it) the ``pid`` of its name."""
    process = header.get("process")
    if type(process) is int and process >= PROCESS_MIN:
        return process
    return pid


def encode_rows(lists: Sequence[list[Any]]) -> bytes:
    """The rows as the spool encodes them; raises ``UnicodeEncodeError`` for a lone surrogate
    (``StoreSpanExporter`` then finds the spans that hold one)."""
    return _ENCODER.encode(list(lists))


def write_file(final: Path, header: dict[str, Any], lists: Sequence[list[Any]]) -> Path:
    """Write one spool file atomically (``.tmp``, fsync, rename, fsync of the folder): a
    reader sees the whole file or none. ``lists`` in ``LISTS`` order."""
    data = _ENCODER.encode({"header": header, **dict(zip(LISTS, lists, strict=True))})
    temp = final.parent / f".{final.name}.tmp"
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    return final


def read(path: Path) -> SpoolBatch:
    """A spool file's header and lists, each row in this llmtrace's field order.

    Raises ``FileNotFoundError`` (settled meanwhile by another reader), ``SpoolTooNew`` and
    ``SpoolError`` (cannot be read; the message says why).
    """
    data = path.read_bytes()
    try:
        doc = msgspec.msgpack.decode(data)
    except msgspec.DecodeError as exc:
        raise SpoolError(f"not a readable spool file ({exc})") from None
    header = doc.get("header") if isinstance(doc, dict) else None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SpoolError(f"not a spool file (no {FORMAT!r} header)")
    version = header.get("version")
    if not isinstance(version, int):
        raise SpoolError("spool header has no version")
    if version > VERSION:
        raise SpoolTooNew(
            f"spool format version {version} is newer than this llmtrace reads ({VERSION}); "
            "left in place: settle it with a newer llmtrace"
        )
    fields = header.get("fields")
    if not isinstance(fields, dict):
        raise SpoolError("spool header has no field names")
    lists = {name: _by_name(name, doc.get(name), fields.get(name)) for name in LISTS}
    return SpoolBatch(path, header, **lists)


def _by_name(name: str, rows: Any, stored: Any) -> list[Any]:
    """``rows`` of list ``name`` reordered from the file's fields to ours. A call field the
    file lacks is null (as a column missing from an old Parquet file); any other missing
    field, or a row of the wrong length, makes the file unreadable."""
    ours: Sequence[str] = FIELDS[name]
    if not isinstance(rows, list) or not isinstance(stored, list):
        raise SpoolError(f"spool list {name!r} or its field names are missing")
    if any(len(row) != len(stored) for row in rows if isinstance(row, list)) or not all(
        isinstance(row, list) for row in rows
    ):
        raise SpoolError(f"a row of spool list {name!r} does not match its field names")
    if list(ours) == stored:
        return rows
    position = {field: i for i, field in enumerate(stored)}
    missing = [field for field in ours if field not in position]
    if missing and (name != "calls" or {"trace_id", "span_id", "start_ns"} & set(missing)):
        raise SpoolError(f"spool list {name!r} lacks field(s) {', '.join(missing)}")
    picks = [position.get(field) for field in ours]
    return [[None if i is None else row[i] for i in picks] for row in rows]
