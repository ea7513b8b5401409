"""Incremental reading of coding-agent transcripts (JSON lines that only ever grow).

Claude Code and Codex append one JSON object a line to a file per session, for as long as the
session lives. Importing them again and again (a cron job, or before each ``costs``) must read
only what was appended, so this module keeps a checkpoint per file in the store
(``Store.write_state``): the byte offset and line number up to which the file was consumed,
plus whatever the source's parser needs to carry over (Codex's current model and running
token totals). Everything source-specific lives in the source's module
(``importers.claude_code``, ``importers.codex``); this one knows files, lines and checkpoints.

Rules every transcript importer follows, decided here once:

* A last line without its newline is being written: it is not consumed (the offset stops
  before it) and is read complete next time.
* A line that is not a JSON object is reported as ``FILE:LINE: problem`` and skipped; the
  offset moves past it so it is reported once, not on every run.
* A file that shrank (rewritten or replaced) is read again from the start; the store's
  idempotent append keeps its calls once.
* A request is identified by a key of its own (Claude Code: message id + request id; Codex:
  session + running totals), and calls already in the store under that key for this source
  are dropped before appending, whichever trace (turn) they were read into: a resumed or
  forked session that copies earlier entries into a new file therefore adds nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace.importers import ImportProblem

try:  # orjson decodes several times faster; the stdlib decoder gives the same objects
    import orjson

    def _loads(raw: bytes) -> Any:
        return orjson.loads(raw)

    _DECODE_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is optional
    import json

    def _loads(raw: bytes) -> Any:
        return json.loads(raw)

    _DECODE_ERRORS = (ValueError, RecursionError)

# Files are read in groups of about this many bytes: each group is parsed, priced and stored
# before the next is read, so memory stays flat however many sessions a folder holds.
BATCH_BYTES = 64 * 1024 * 1024


@dataclass
class Line:
    """One complete line of a transcript: where it is and what it decoded to."""

    number: int  # 1-based line number in the file
    start: int  # byte offset of the line's first byte
    obj: dict[str, Any]


@dataclass
class FileRead:
    """What one read of one file gave: its new complete lines and where the next read starts."""

    path: Path
    lines: list[Line]
    end: int  # offset after the last consumed line
    end_line: int  # number of the last consumed line
    problems: list[ImportProblem]
    bytes_read: int
    active: bool  # modified within the settle period: a streamed message may still grow


def file_state(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint of ``path`` (offset, line, carry) inside an importer's state."""
    return state.setdefault("files", {}).setdefault(str(path.resolve()), {})


def read_new_lines(path: Path, checkpoint: dict[str, Any], *, settle_seconds: float) -> FileRead:
    """Read the complete lines of ``path`` appended since ``checkpoint``.

    Lines are decoded here (orjson when installed); bad ones become problems. A file shorter
    than its checkpoint was rewritten: it is read from the start and the carried state reset.
    """
    offset = int(checkpoint.get("offset", 0))
    number = int(checkpoint.get("line", 0))
    problems: list[ImportProblem] = []
    try:
        stat = path.stat()
        if stat.st_size < offset:
            offset, number = 0, 0
            checkpoint.clear()
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError as exc:
        problems.append(ImportProblem(str(path), None, None, f"cannot read: {exc.strerror}"))
        return FileRead(path, [], offset, number, problems, 0, False)
    active = time.time() - stat.st_mtime < settle_seconds
    lines: list[Line] = []
    position = 0
    end = offset
    while position < len(data):
        newline = data.find(b"\n", position)
        if newline < 0:
            break  # a line still being written: read again when it is complete
        raw = data[position:newline]
        number += 1
        start = offset + position
        position = newline + 1
        end = offset + position
        if not raw.strip():
            continue
        try:
            obj = _loads(raw)
        except _DECODE_ERRORS as exc:
            problems.append(ImportProblem(str(path), number, None, f"not valid JSON: {exc}"))
            continue
        except (RecursionError, UnicodeError, OverflowError) as exc:
            problems.append(ImportProblem(str(path), number, None, f"cannot decode: {exc}"))
            continue
        if not isinstance(obj, dict):
            problems.append(
                ImportProblem(str(path), number, None, "not a JSON object (a transcript entry)")
            )
            continue
        lines.append(Line(number, start, obj))
    return FileRead(path, lines, end, number, problems, len(data), active)


def find_files(paths: Sequence[Path], pattern: str) -> list[Path]:
    """Every transcript under ``paths`` (files as given, folders searched for ``pattern``)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in path.rglob(pattern) if p.is_file())
        elif path.exists():
            found.append(path)
    return sorted(set(found))


def batches(files: Sequence[Path], limit: int = BATCH_BYTES) -> Iterator[list[Path]]:
    """Groups of files of about ``limit`` bytes each, in the given order."""
    group: list[Path] = []
    size = 0
    for path in files:
        try:
            length = path.stat().st_size
        except OSError:
            length = 0
        if group and size + length > limit:
            yield group
            group, size = [], 0
        group.append(path)
        size += length
    if group:
        yield group


def hex_id(text: str, length: int) -> str:
    """A stable hex id of ``length`` characters from ``text`` (trace ids 32, span ids 16)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()[
        :length
    ]


def count(value: Any) -> int | None:
    """A token count as an int, or None when absent; ``ValueError`` when it is not a count."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not a token count: {value!r}")
    if value < 0 or value >= 2**62:
        raise ValueError(f"token count out of range: {value}")
    return value


def stored_keys(frame: pl.LazyFrame, source: str) -> set[str]:
    """Span ids of the calls of ``source`` already in the store (one column read once)."""
    return set(
        frame.filter(pl.col("source") == source).select("span_id").collect().to_series().to_list()
    )


def iter_reads(
    files: Iterable[Path],
    state: dict[str, Any],
    *,
    settle_seconds: float,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[FileRead, dict[str, Any]]]:
    """Each file's new lines with its checkpoint (to update once its calls are stored)."""
    for path in files:
        checkpoint = file_state(state, path)
        read = read_new_lines(path, checkpoint, settle_seconds=settle_seconds)
        if progress is not None:
            progress(max(read.bytes_read, 1))
        yield read, checkpoint
