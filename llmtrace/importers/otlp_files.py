"""Finding OTLP trace files and reading them into the importer's collector.

Inputs, detected by content rather than name:

* OTLP JSON lines: one ``ExportTraceServiceRequest`` per line, as the Collector file exporter
  writes (``format: json``); hex ids, ``intValue`` and ``*UnixNano`` as strings.
* one OTLP JSON document (pretty-printed or not), or a JSON list of them.
* OTLP protobuf: one serialised ``ExportTraceServiceRequest``, or the Collector's
  ``format: proto`` stream (each message preceded by its 4-byte big-endian length).
* ``.gz`` of any of these, and directories (searched recursively for the suffixes in
  ``INPUT_SUFFIXES``, optionally followed by ``.gz``).

Problems name the file and the line (for protobuf: the message's number in the file). What
becomes of each request's spans is ``llmtrace.importers.otlp``'s job (its ``_Collector``).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from llmtrace.importers.otlp_columns import decode as decode_request
from llmtrace.importers.otlp_fast import decode_line
from llmtrace.importers.otlp_spans import (
    _SURROGATE_ESCAPE,
    _Malformed,
    _proto_messages,
    _value_error,
)

if TYPE_CHECKING:
    from llmtrace.importers.otlp import _Collector

# The stdlib parser, for lines the fast lane declines and whole documents. orjson was measured
# and left out (bench/README.md, issue 15): it reads integers beyond 64 bits as floats and
# nesting the stdlib refuses; msgspec's typed decoding (below) has neither problem.
_loads: Callable[[bytes], Any] = json.loads
# The fast lane for JSON lines (``otlp_fast``): spans decoded by msgspec, or None for a line it
# declines, which then goes through ``_loads`` and the per-span decoder. None here turns the
# lane off (tests/test_import_equivalence.py compares both ways).
_fast_line: Callable[[bytes], list[tuple[str, dict[str, Any]]] | None] | None = decode_line

# The columnar lane (``otlp_columns``): lines decoded by msgspec are flattened into columns
# and mapped by Polars expressions; a line it declines goes through ``_fast_line``, then
# ``_loads``. False turns it off (tests/test_import_equivalence.py compares the lanes).
_columnar = True

INPUT_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson", ".pb", ".binpb", ".protobuf")
_PROGRESS_EVERY = 32  # lines between progress callbacks

Progress = Callable[[int], None]


# --------------------------------------------------------------------------------------------
# Finding inputs
# --------------------------------------------------------------------------------------------


def _is_input_name(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return not path.name.startswith(".") and name.endswith(INPUT_SUFFIXES)


def find_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files to read: named files as given, directories searched recursively (sorted)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and _is_input_name(p)))
        else:
            found.append(path)
    unique: dict[Path, Path] = {}
    for path in found:  # the same file named twice (relative and absolute) is read once
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


class _Tracker:
    """Reports bytes consumed from disk (compressed bytes for .gz) to the progress callback."""

    def __init__(self, raw: BinaryIO, progress: Progress | None) -> None:
        self.raw, self.progress, self.done = raw, progress, 0

    def update(self) -> None:
        position = self.raw.tell()
        if self.progress is not None and position > self.done:
            self.progress(position - self.done)
        self.done = max(self.done, position)


def _open(raw: BinaryIO) -> BinaryIO:
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


_BOM = b"\xef\xbb\xbf"


def _read_file(path: Path, sink: _Collector, progress: Progress | None) -> int:
    """Feed one file to ``sink``; returns its size on disk."""
    name = str(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after the tracker's last read
    except OSError as exc:
        sink.problem(name, None, None, f"cannot read: {exc.strerror or exc}")
        return 0
    with raw:
        tracker = _Tracker(raw, progress)
        try:
            stream = _open(raw)
            head = stream.peek(64)[:64].lstrip().removeprefix(_BOM)  # type: ignore[attr-defined]
            if not head:
                pass
            elif head[:1] in (b"{", b"["):
                _read_json(stream, name, sink, tracker)
            else:
                _read_proto(stream.read(), name, sink)
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            # what was read before the damage is kept; the problem says where reading stopped
            sink.problem(name, None, None, f"cannot read past byte {raw.tell():,}: {exc}")
        tracker.update()
        return tracker.done


def _add_document(
    doc: Any, name: str, line: int, sink: _Collector, *, check_unicode: bool = False
) -> None:
    docs = doc if isinstance(doc, list) else [doc]
    try:
        for item in docs:
            sink.add_request(item, name, line, check_unicode=check_unicode)
    except _Malformed as exc:
        sink.problem(name, line, None, str(exc))
    except (RecursionError, UnicodeError) as exc:
        sink.problem(name, line, None, _value_error(exc))
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
        sink.problem(name, line, None, f"malformed OTLP request ({type(exc).__name__}: {exc})")


def _parse_line(line: bytes) -> Any:
    """One JSON value; ``ValueError`` (with a message for the problem line) if it is not one."""
    try:
        return _loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _add_line(doc: Any, line: bytes, name: str, line_no: int, sink: _Collector) -> None:
    check = _SURROGATE_ESCAPE.search(line) is not None
    _add_document(doc, name, line_no, sink, check_unicode=check)


def _read_json(stream: BinaryIO, name: str, sink: _Collector, tracker: _Tracker) -> None:
    """JSON lines, or one multi-line document when the first line is not a whole value."""
    lines = iter(stream)
    line_no = 0
    for first in lines:
        line_no += 1
        if first.strip():
            break
    else:
        return
    first = first.lstrip().removeprefix(_BOM)
    try:
        doc = _parse_line(first)
    except ValueError as exc:
        # A pretty-printed document, or JSON lines with a bad first line? Look at the next few
        # lines only: reading the whole rest to decide would hold a large file in memory.
        ahead = _lines_ahead(lines)
        if _has_json_line(b"".join(ahead)):
            sink.problem(name, line_no, None, f"not valid JSON: {_json_error(exc)}")
            rest = itertools.chain(ahead, lines)
            _read_lines(rest, line_no + 1, name, sink, tracker)
            return
        rest = b"".join(ahead) + stream.read()
        _read_whole_document(first, rest, line_no, name, sink, tracker)
        return
    del doc  # a whole value: read again by the lanes every line takes (the columnar lane first)
    _read_lines(itertools.chain([first], lines), line_no, name, sink, tracker)


def _lines_ahead(lines: Iterator[bytes], count: int = 3, limit: int = 1 << 20) -> list[bytes]:
    """Up to ``count`` non-empty lines (and the empty ones between), at most ~``limit`` bytes."""
    ahead: list[bytes] = []
    size = 0
    for line in lines:
        ahead.append(line)
        size += len(line)
        if line.strip():
            count -= 1
        if count == 0 or size >= limit:
            break
    return ahead


def _read_lines(
    lines: Iterator[bytes], start: int, name: str, sink: _Collector, tracker: _Tracker
) -> None:
    for line_no, line in enumerate(lines, start=start):
        if line_no % _PROGRESS_EVERY == 0:
            tracker.update()
        if not line.strip():
            continue
        if _columnar:
            request = decode_request(line)
            if request is not None and sink.add_columnar(request, name, line_no):
                continue
        if _fast_line is not None:
            spans = _fast_line(line)
            if spans is not None:
                sink.add_decoded(spans, name, line_no)
                continue
        try:
            doc = _parse_line(line)
        except ValueError as exc:
            sink.problem(name, line_no, None, f"not valid JSON: {_json_error(exc)}")
            continue
        _add_line(doc, line, name, line_no, sink)


def _read_whole_document(
    first: bytes, rest: bytes, first_line: int, name: str, sink: _Collector, tracker: _Tracker
) -> bool:
    """Import ``first + rest`` as one document if it is one, or report it once if it looks
    like one (pretty-printed, cut short); False when it is JSON lines with a bad first line."""
    data = first + rest
    del rest
    try:
        doc = _parse_line(data)
    except ValueError as exc:
        if _has_request_line(data):
            # JSON lines after all, whose first lines are damaged: read it line by line so
            # the good lines further on are kept
            _read_lines(iter(io.BytesIO(data)), first_line, name, sink, tracker)
            return True
        line = getattr(exc, "lineno", 1) + first_line - 1
        sink.problem(name, line, None, f"not valid JSON (truncated?): {_json_error(exc)}")
        return True
    _add_line(doc, data, name, first_line, sink)
    return True


def _has_json_line(data: bytes, tries: int = 3) -> bool:
    """Whether one of the first non-empty lines of ``data`` is a JSON object on its own."""
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            if isinstance(_parse_line(line), dict):
                return True
        except ValueError:
            pass
        tries -= 1
        if tries == 0:
            break
    return False


def _has_request_line(data: bytes) -> bool:
    """Whether any line of ``data`` is a whole OTLP request on its own (a pretty-printed
    document, even cut short, has none: its lines are fragments)."""
    for line in io.BytesIO(data):
        if b"resourceSpans" not in line or not line.lstrip().startswith(b"{"):
            continue
        try:
            doc = _parse_line(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "resourceSpans" in doc:
            return True
    return False


def _json_error(exc: ValueError) -> str:
    message = getattr(exc, "msg", None) or str(exc)
    column = getattr(exc, "colno", None)
    return f"{message} (column {column})" if column else message


def _read_proto(data: bytes, name: str, sink: _Collector) -> None:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    for number, message in enumerate(_proto_messages(data), start=1):
        try:
            request = ExportTraceServiceRequest.FromString(message)
        except (DecodeError, RuntimeError, ValueError) as exc:
            sink.problem(
                name, number, None, f"not OTLP JSON or a protobuf ExportTraceServiceRequest: {exc}"
            )
            continue
        if message and not request.resource_spans:
            sink.problem(name, number, None, "no OTLP spans in it: not OTLP JSON or protobuf?")
            continue
        sink.add_proto(request, name, number)
