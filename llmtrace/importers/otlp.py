"""Import OTLP trace files (JSON lines, JSON, protobuf, gzip, directories) as call records.

Inputs, detected by content rather than name:

* OTLP JSON lines: one ``ExportTraceServiceRequest`` per line, as the Collector file exporter
  writes (``format: json``); hex ids, ``intValue`` and ``*UnixNano`` as strings.
* one OTLP JSON document (pretty-printed or not), or a JSON list of them.
* OTLP protobuf: one serialised ``ExportTraceServiceRequest``, or the Collector's
  ``format: proto`` stream (each message preceded by its 4-byte big-endian length).
* ``.gz`` of any of these, and directories (searched recursively for the suffixes in
  ``INPUT_SUFFIXES``, optionally followed by ``.gz``).

Problems name the file and the line (for protobuf: the message's number in the file) and, for a
rejected span, its span id.

Pipeline: parse each span into a plain mapping, keep LLM spans as call records via
``llmtrace.dialects.map_span`` and every span minimally (ids, parent, ``llmtrace.action``, root
names) to resolve actions; then, per batch of spans in Polars: merge spans that describe one
call, resolve each call's action through its ancestors, attach evaluation scores. Nothing is
priced here; the command prices and stores each batch (``stream_otlp``), so memory is bounded
by the batch size plus the traces still open, not by the input.

Actions: ``llmtrace.action`` on the call or its nearest ancestor, else the name of the trace's
root span, else the call's service. Children are often exported (and so written) before their
root, even in an earlier file, so a trace's calls are held back until its root has been read
(or the import ends) and only then finished: see ``stream_otlp`` for the policy.

One call = one record: spans of one trace with the same ``gen_ai.response.id``, and an LLM span
whose parent LLM span reports the same input and output tokens, are one call. The span with the
most token fields set is kept (ties: smallest span id, so re-imports pick the same key) and its
key is the record's key; fields it lacks are taken from the others.

Scores: span events named ``gen_ai.evaluation.result`` score the call they are attached to, else
the call with their ``gen_ai.response.id``, else the call that is the parent of the span holding
them. ``accuracy`` is computed from them as ``llmtrace.accuracy`` defines it (config
``[accuracy] names`` and ``[accuracy.categories]``): the mean over scores that count of the
value when it lies in [0, 1], else the label's value; other scores are kept in ``scores`` only.

Late scores: an evaluation often arrives in a later file than its call (an LLM judge runs
later). ``OtlpImportResult.score_targets`` lists every evaluation with where it may belong, in
the shape ``Store.attach_scores`` reads: the call it matched here, or else its span, its
response id and its span's parent, in that order; the command hands the ones not written with
a new call to the store once, after the last batch (as if batch by batch), so calls stored by an
earlier import get their scores, and a rerun adds nothing.
"""

from __future__ import annotations

import gc
import gzip
import io
import itertools
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from llmtrace import twins
from llmtrace.accuracy import AccuracyConfig
from llmtrace.dialects import SpanError, agent_and_tool, is_llm_span, map_span
from llmtrace.fingerprint import step_fingerprint
from llmtrace.importers import ImportProblem, ImportResult
from llmtrace.importers.otlp_spans import (
    _SURROGATE_ESCAPE,
    _VALUE_ERRORS,
    _check_unicode,
    _json_request_spans,
    _json_span,
    _Malformed,
    _proto_attributes,
    _proto_messages,
    _proto_span,
    _value_error,
)
from llmtrace.record import (
    CALL_SCHEMA,
    COST_FIELDS,
    KEY_FIELDS,
    SCORE_STRUCT,
    TOKEN_FIELDS,
    TWIN_IDS,
    conform,
)

# The stdlib parser: orjson parses these lines 1.2-1.35x faster, but that is about 7% of a whole
# import (bench/bench_import.py --parser orjson), not worth a dependency. Swappable for the bench.
_loads: Callable[[bytes], Any] = json.loads

INPUT_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson", ".pb", ".binpb", ".protobuf")
EVALUATION_EVENT = "gen_ai.evaluation.result"
_MAX_DEPTH = 256  # ancestor hops and merge rounds; deeper chains are cycles or absurd
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
# Collecting spans from every file
# --------------------------------------------------------------------------------------------


class _Collector:
    """Accumulates calls, the span tree and evaluations across all files of one import."""

    def __init__(
        self,
        keep_content: bool,
        batch_spans: int | None = None,
        on_full: Callable[[], None] | None = None,
    ) -> None:
        self.keep_content = keep_content
        self.batch_spans = batch_spans
        self.on_full = on_full
        self._reset()

    def _reset(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.tree_trace: list[str] = []
        self.tree_span: list[str] = []
        self.tree_parent: list[str | None] = []
        self.tree_action: list[str | None] = []
        self.tree_agent: list[str | None] = []
        self.tree_tool: list[str | None] = []
        self.tree_end: list[int | None] = []
        self.tree_step: list[str | None] = []
        self.roots: list[tuple[str, str]] = []
        self.evaluations: list[tuple[Any, ...]] = []
        self.problems: list[ImportProblem] = []
        self.spans = 0
        self.llm_spans = 0
        self.rejected = 0

    def problem(self, file: str, line: int | None, span: str | None, message: str) -> None:
        self.problems.append(ImportProblem(file, line, span, message))

    def add(self, span: dict[str, Any]) -> None:
        """Keep one parsed span: always in the tree, and as a call if it is an LLM span.

        A span rejected for its content (a bad token count) still links its children to its
        ancestors: the tree is only used to resolve actions and is never stored.
        """
        attrs = span["attributes"]
        action = attrs.get("llmtrace.action")
        failure: Exception | None = None
        try:
            action = None if action is None else str(action)
            agent, tool = agent_and_tool(attrs)
            step = _tool_step(tool, attrs) if tool is not None else None
        except (SpanError, *_VALUE_ERRORS) as exc:  # e.g. a list as the operation name
            action = agent = tool = step = None
            failure = exc  # raised once the tree row is whole: the tree's lists stay aligned
        self.tree_trace.append(span["trace_id"])
        self.tree_span.append(span["span_id"])
        self.tree_parent.append(span["parent_span_id"])
        self.tree_action.append(action)
        self.tree_agent.append(agent)
        self.tree_tool.append(tool)
        self.tree_end.append(span["end_ns"] if tool is not None else None)
        self.tree_step.append(step)
        if span["parent_span_id"] is None:
            self.roots.append((span["trace_id"], span["name"]))
        if failure is not None:
            raise failure
        evaluations = [
            _evaluation(span, e) for e in span["events"] if e.get("name") == EVALUATION_EVENT
        ]
        if is_llm_span(attrs, span["name"], span["scope"]):
            if span["start_ns"] is None:
                raise _Malformed("LLM span has no startTimeUnixNano")
            call = map_span(span, keep_content=self.keep_content)
            call[twins.EMITTER] = twins.emitter(span["scope"], span["name"])
            self.calls.append(call)
            self.llm_spans += 1
        self.evaluations.extend(evaluations)

    def take(self) -> _Collector:
        """Hand over what was collected since the last take and start an empty batch."""
        batch = _Collector(self.keep_content)
        batch.__dict__.update(
            {k: v for k, v in self.__dict__.items() if k not in ("batch_spans", "on_full")}
        )
        self._reset()
        return batch

    def _check_full(self) -> None:
        """Called between requests (never inside one): a request's spans stay in one batch."""
        if self.on_full is not None and self.batch_spans and self.spans >= self.batch_spans:
            self.on_full()

    def add_request(
        self, doc: Any, file: str, line: int | None, *, check_unicode: bool = False
    ) -> None:
        """Every span of one OTLP JSON request; bad spans become problems, the rest is kept.

        ``check_unicode``: the line held a surrogate escape, so each span is checked for a
        lone surrogate (which Polars cannot store) before it is kept.
        """
        for raw, (scope, resource) in _json_request_spans(doc):
            self.spans += 1
            try:
                if check_unicode:
                    _check_unicode(raw)
                    _check_unicode([resource, scope])
                span = _json_span(raw, scope, resource)
                self.add(span)
            except (SpanError, _Malformed) as exc:
                self._reject(file, line, raw, str(exc))
            except _VALUE_ERRORS as exc:
                self._reject(file, line, raw, _value_error(exc))
        self._check_full()

    def add_proto(self, request: Any, file: str, line: int | None) -> None:
        """Every span of one protobuf ExportTraceServiceRequest."""
        for resource_spans in request.resource_spans:
            resource = _proto_attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope.name or None
                for raw in scope_spans.spans:
                    self.spans += 1
                    try:
                        self.add(_proto_span(raw, scope, resource))
                    except (SpanError, _Malformed) as exc:
                        self.rejected += 1
                        self.problem(file, line, raw.span_id.hex() or None, str(exc))
                    except _VALUE_ERRORS as exc:
                        self.rejected += 1
                        self.problem(file, line, raw.span_id.hex() or None, _value_error(exc))
        self._check_full()

    def _reject(self, file: str, line: int | None, raw: Any, message: str) -> None:
        self.rejected += 1
        span_id = raw.get("spanId") if isinstance(raw, Mapping) else None
        self.problem(file, line, str(span_id) if span_id else None, message)


def _tool_step(tool: str, attrs: Mapping[str, Any]) -> str | None:
    """The step fingerprint of a tool run whose arguments or result were recorded (the opt-in
    ``gen_ai.tool.call.arguments`` / ``.result``): the call that reads it took this step."""
    arguments = attrs.get("gen_ai.tool.call.arguments")
    result = attrs.get("gen_ai.tool.call.result")
    if arguments is None and result is None:
        return None
    return step_fingerprint("tool", tool, arguments, result)


def _score_number(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) is bool:
        raise SpanError(f"gen_ai.evaluation.score.value {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpanError(f"gen_ai.evaluation.score.value {value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SpanError(f"gen_ai.evaluation.score.value {value!r} is not finite")
    return number


def _evaluation(span: Mapping[str, Any], event: Mapping[str, Any]) -> tuple[Any, ...]:
    attrs = event.get("attributes") or {}
    name = attrs.get("gen_ai.evaluation.name")
    if not name:
        raise SpanError(f"{EVALUATION_EVENT} event has no gen_ai.evaluation.name")
    label = attrs.get("gen_ai.evaluation.score.label")
    response_id = attrs.get("gen_ai.response.id")
    return (
        span["trace_id"],
        span["span_id"],
        span["parent_span_id"],
        None if response_id is None else str(response_id),
        str(name),
        _score_number(attrs.get("gen_ai.evaluation.score.value")),
        None if label is None else str(label),
    )


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
    _add_line(doc, first, name, line_no, sink)
    _read_lines(lines, line_no + 1, name, sink, tracker)


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


# --------------------------------------------------------------------------------------------
# Whole-import steps (Polars)
# --------------------------------------------------------------------------------------------

# Filled later (times from nanoseconds, scores) or by pricing; conform() supplies the defaults.
_NOT_FROM_SPANS = frozenset(
    {"start_time", "end_time", "duration_ms", "day", "source", "accuracy", "scores", TWIN_IDS}
    | {"step_fingerprint"}
    | set(COST_FIELDS)
    | {"price_status", "price_source", "provider_assumed"}
)
_RAW_SCHEMA = pl.Schema(
    {
        **{name: dtype for name, dtype in CALL_SCHEMA.items() if name not in _NOT_FROM_SPANS},
        "start_ns": pl.Int64,
        "end_ns": pl.Int64,
        twins.EMITTER: pl.String,
    }
)


def _calls_frame(calls: list[dict[str, Any]], source: str) -> pl.DataFrame:
    """The collected call dicts as one frame, built once; ``source`` names where they came from."""
    names = _RAW_SCHEMA.names()
    if not calls:  # the same columns as a full batch, so held and new calls concatenate
        columns: dict[str, list[Any]] = {name: [] for name in names}
    else:
        try:  # one C-level pass per row, then a transpose: twice as fast as a .get per field
            rows = map(itemgetter(*names), calls)
            columns = dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))
        except KeyError:  # a producer that left fields out (they are optional)
            columns = {name: [c.get(name) for c in calls] for name in names}
    frame = pl.DataFrame(columns, schema=_RAW_SCHEMA)
    return frame.with_columns(
        pl.from_epoch(pl.col("start_ns") // 1000, time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("start_time"),
        pl.from_epoch(pl.col("end_ns") // 1000, time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("end_time"),
        ((pl.col("end_ns") - pl.col("start_ns")) / 1e6).alias("duration_ms"),
        pl.lit(source).alias("source"),
    ).drop("start_ns", "end_ns")


def _merge_labels(calls: pl.DataFrame) -> pl.DataFrame:
    """(_node, _label) for calls that are one call with others (connected components).

    Edges: the twin rules of ``llmtrace.twins`` (the same response id, or a one-to-one match
    by service, provider, model, time and usage when an id is missing), in any trace, and an
    LLM span whose parent LLM span reports the same input and output tokens."""
    by_response = twins.response_id_edges(calls)
    by_time = twins.time_edges(calls)
    parents = calls.select(
        "trace_id",
        pl.col("span_id").alias("parent_span_id"),
        pl.col("_node").alias("_peer"),
        pl.col("input_tokens").alias("_peer_in"),
        pl.col("output_tokens").alias("_peer_out"),
    )
    by_parent = (
        calls.select("_node", "trace_id", "parent_span_id", "input_tokens", "output_tokens")
        .join(parents, on=["trace_id", "parent_span_id"])
        .filter(
            pl.col("input_tokens").eq_missing(pl.col("_peer_in"))
            & pl.col("output_tokens").eq_missing(pl.col("_peer_out"))
            & (pl.col("input_tokens").is_not_null() | pl.col("output_tokens").is_not_null())
        )
        .select("_node", "_peer")
    )
    edges = pl.concat([by_response, by_time, by_parent]).filter(pl.col("_node") != pl.col("_peer"))
    if "_stored" in calls.columns:  # two calls handed on earlier are settled: never joined now
        flags = calls.select("_node", "_stored")
        edges = (
            edges.join(flags, on="_node")
            .join(flags.rename({"_node": "_peer", "_stored": "_peer_stored"}), on="_peer")
            .filter(~(pl.col("_stored") & pl.col("_peer_stored")))
            .select("_node", "_peer")
        )
    if edges.is_empty():
        return pl.DataFrame(schema={"_node": pl.UInt32, "_label": pl.UInt32})
    edges = pl.concat(
        [edges, edges.select(pl.col("_peer").alias("_node"), pl.col("_node").alias("_peer"))]
    )
    labels = edges.select(pl.col("_node").unique()).with_columns(pl.col("_node").alias("_label"))
    for _ in range(_MAX_DEPTH):
        lowest = (
            edges.join(labels.rename({"_node": "_peer"}), on="_peer")
            .group_by("_node")
            .agg(pl.col("_label").min().alias("_peer_label"))
        )
        updated = labels.join(lowest, on="_node", how="left").select(
            "_node", pl.min_horizontal("_label", "_peer_label").alias("_label")
        )
        changed = updated.join(labels, on="_node", suffix="_old").filter(
            pl.col("_label") != pl.col("_label_old")
        )
        labels = updated
        if changed.is_empty():
            break
    return labels


def _merge_duplicates(
    calls: pl.DataFrame, handed_on: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Collapse spans that describe one call; returns (calls, member key -> kept span id).

    ``handed_on``: calls of the same traces finished by earlier batches (``_TWIN_SCHEMA``), so
    already stored. A late span that is their twin is merged into them: it is dropped, and its
    evaluations go to the stored call through ``members``; a stored call is never emitted again.
    """
    calls = calls.unique(subset=list(KEY_FIELDS), keep="first", maintain_order=True)
    stored = pl.lit(False).alias("_stored")
    if handed_on is not None and handed_on.height:
        # a re-exported span (same key) is left to the store, which counts it as stored
        earlier = handed_on.join(calls, on=list(KEY_FIELDS), how="anti")
        calls = pl.concat(
            [calls.with_columns(stored), earlier.with_columns(pl.lit(True).alias("_stored"))],
            how="diagonal_relaxed",
        )
    else:
        calls = calls.with_columns(stored)
    calls = calls.with_row_index("_node")
    labels = _merge_labels(calls)
    detail = pl.sum_horizontal(pl.col(*TOKEN_FIELDS).is_not_null().cast(pl.Int32))
    grouped = calls.join(labels, on="_node", how="inner").with_columns(detail.alias("_detail"))
    singles = calls.join(labels, on="_node", how="anti").drop("_node")
    members = calls.filter(~pl.col("_stored")).select(
        "trace_id",
        pl.col("span_id").alias("_member"),
        "span_id",
        pl.col("trace_id").alias("_key_trace"),
    )
    if grouped.is_empty():
        return singles.filter(~pl.col("_stored")).drop("_stored"), members
    # Which member's key the record keeps: a stored call (it cannot be replaced), then a span
    # in the trace that carries the app's context (nested under a span that is not a twin),
    # then the most detailed span. Usage is the most detailed span's, each count it lacks
    # taken from the next; other fields come from the key's span first.
    twin_parent = grouped.select(
        "_label",
        "trace_id",
        pl.col("span_id").alias("parent_span_id"),
        pl.lit(1).alias("_twin_parent"),
    )
    nested = (pl.col("parent_span_id").is_not_null() & pl.col("_twin_parent").is_null()).cast(
        pl.Int8
    )
    grouped = (
        grouped.join(twin_parent, on=["_label", "trace_id", "parent_span_id"], how="left")
        .with_columns(nested.max().over("_label", "trace_id").alias("_context"))
        .sort(
            ["_label", "_stored", "_context", "_detail", "span_id"],
            descending=[False, True, True, True, False],
        )
    )
    by_usage = (["_stored", "_detail", "span_id"], [True, True, False])
    usage_columns = {*TOKEN_FIELDS, "dialect"}
    key_columns = {*KEY_FIELDS, "parent_span_id", "_stored"}

    def pick(column: str) -> pl.Expr:
        if column in key_columns:
            return pl.col(column).first()
        if column in usage_columns:
            ordered = pl.col(column).sort_by(by_usage[0], descending=by_usage[1])
            return ordered.drop_nulls().first()
        return pl.col(column).drop_nulls().first()

    merged = grouped.group_by("_label", maintain_order=True).agg(
        *[pick(c) for c in singles.columns if c != TWIN_IDS],
        pl.format("{}/{}", "trace_id", "span_id").slice(1).alias(TWIN_IDS),
    )
    winners = grouped.group_by("_label").agg(
        pl.col("span_id").first().alias("_winner"), pl.col("trace_id").first().alias("_wtrace")
    )
    remap = (
        grouped.filter(~pl.col("_stored"))
        .join(winners, on="_label")
        .select(
            "trace_id",
            pl.col("span_id").alias("_member"),
            pl.col("_winner").alias("span_id"),
            pl.col("_wtrace").alias("_key_trace"),
        )
    )
    members = pl.concat([members.join(remap, on=["trace_id", "_member"], how="anti"), remap])
    emitted = pl.concat([singles, merged.drop("_label")], how="diagonal_relaxed").filter(
        ~pl.col("_stored")
    )
    return emitted.drop("_stored"), members


def _walk_actions(walk: pl.DataFrame, tree: pl.DataFrame, column: str = "action") -> pl.DataFrame:
    """Climb ``walk`` (KEY_FIELDS, ``column``, ``_ancestor``) through ``tree`` until each row
    has the nearest ancestor's ``column`` or runs out of ancestors; returns KEY_FIELDS and
    ``column`` (``action``, or ``agent`` for the innermost agent)."""
    tree = tree.select("trace_id", "span_id", "parent_span_id", column)
    tree = tree.unique(subset=list(KEY_FIELDS), keep="first", maintain_order=True)
    ancestors = tree.rename({"span_id": "_ancestor", "parent_span_id": "_next", column: "_found"})
    for _ in range(_MAX_DEPTH):
        if walk.filter(pl.col("_ancestor").is_not_null()).is_empty():
            break
        walk = walk.join(ancestors, on=["trace_id", "_ancestor"], how="left").select(
            *KEY_FIELDS,
            pl.coalesce(column, "_found").alias(column),
            pl.when(pl.col("_found").is_null()).then(pl.col("_next")).alias("_ancestor"),
        )
    return walk.select(*KEY_FIELDS, column)


def _resolve_agents(calls: pl.DataFrame, tree: pl.DataFrame) -> pl.DataFrame:
    """Fill ``agent`` and ``tool`` from the span tree.

    ``agent``: the name on the innermost agent span (``invoke_agent``) above the call.
    ``tool``: the last ``execute_tool`` span of the same agent invocation (the whole trace
    without one) that ended before the call started and after the invocation's previous call
    started: the tool whose result the call consumed. Tool spans are matched within the
    invocation, not among siblings: openai-agents puts each model call and the tools it asks
    for under a turn span of their own, so the call that reads a result is the tool's cousin.
    """
    marked = tree.with_columns(
        pl.when(pl.col("agent").is_not_null()).then(pl.col("span_id")).alias("_agent_span")
    )

    def innermost(frame: pl.DataFrame, start: str) -> pl.DataFrame:
        walk = frame.select(
            *KEY_FIELDS,
            pl.lit(None, dtype=pl.String).alias("_agent_span"),
            pl.col(start).alias("_ancestor"),
        )
        found = _walk_actions(walk, marked, "_agent_span")
        names = marked.filter(pl.col("_agent_span").is_not_null()).select(
            "trace_id", pl.col("span_id").alias("_agent_span"), "agent"
        )
        names = names.unique(["trace_id", "_agent_span"], keep="first")
        return found.join(names, on=["trace_id", "_agent_span"], how="left")

    agents = innermost(calls, "span_id")
    tool_spans = marked.filter(pl.col("tool").is_not_null() & pl.col("tool_end").is_not_null())
    tools = (
        innermost(tool_spans, "parent_span_id")
        .join(tool_spans.select(*KEY_FIELDS, "tool", "tool_end", "tool_step"), on=list(KEY_FIELDS))
        .select(
            "trace_id",
            pl.col("_agent_span").fill_null("").alias("_run"),
            pl.from_epoch(pl.col("tool_end") // 1000, time_unit="us")
            .dt.replace_time_zone("UTC")
            .alias("_tool_end"),
            "tool",
            "tool_step",
        )
        .sort("_tool_end")
    )
    runs = (
        calls.select(*KEY_FIELDS, "start_time")
        .join(agents, on=list(KEY_FIELDS), how="left")
        .with_columns(pl.col("_agent_span").fill_null("").alias("_run"))
        .sort("start_time")
        .with_columns(pl.col("start_time").shift(1).over("trace_id", "_run").alias("_prev"))
    )
    consumed = (
        runs.join_asof(
            tools,
            left_on="start_time",
            right_on="_tool_end",
            by=["trace_id", "_run"],
            strategy="backward",
            check_sortedness=False,  # both sorted above
        )
        .filter(pl.col("_prev").is_null() | (pl.col("_tool_end") >= pl.col("_prev")))
        .select(*KEY_FIELDS, "tool", "tool_step")
    )
    tree_found = agents.select(*KEY_FIELDS, pl.col("agent").alias("_agent")).join(
        consumed.rename({"tool": "_tool", "tool_step": "step_fingerprint"}),
        on=list(KEY_FIELDS),
        how="left",
    )
    return (
        calls.drop("step_fingerprint", strict=False)
        .join(tree_found, on=list(KEY_FIELDS), how="left")
        .with_columns(  # what the live processor recorded on the span comes first
            pl.coalesce("agent", "_agent").alias("agent"),
            pl.coalesce("tool", "_tool").alias("tool"),
        )
        .drop("_agent", "_tool")
    )


def _resolve_actions(calls: pl.DataFrame, tree: pl.DataFrame, roots: pl.DataFrame) -> pl.DataFrame:
    """Fill ``action``: own attribute, nearest ancestor's, root span name, then service."""
    walk = calls.select(
        *KEY_FIELDS, pl.col("parent_span_id").alias("_ancestor"), "action"
    ).with_columns(pl.when(pl.col("action").is_null()).then(pl.col("_ancestor")).alias("_ancestor"))
    walk = _walk_actions(walk, tree)
    root_names = roots.unique(subset=["trace_id"], keep="first", maintain_order=True)
    resolved = walk.select(*KEY_FIELDS, pl.col("action").alias("_resolved")).join(
        calls.select(*KEY_FIELDS, "service"), on=list(KEY_FIELDS)
    )
    resolved = resolved.join(root_names, on="trace_id", how="left").select(
        *KEY_FIELDS, pl.coalesce("_resolved", "_root_name", "service").alias("_resolved")
    )
    return (
        calls.join(resolved, on=list(KEY_FIELDS), how="left")
        .with_columns(pl.col("_resolved").alias("action"))
        .drop("_resolved")
    )


def _inherited_actions(
    nodes: pl.DataFrame, tree: pl.DataFrame, roots: pl.DataFrame
) -> pl.DataFrame:
    """What each of ``nodes`` (spans of closed traces) passes to a descendant that arrives
    late: its own ``llmtrace.action``, else its nearest ancestor's in ``tree``, else the root's
    name. Shaped as tree rows without a parent, so a later walk stops there with this action."""
    walk = nodes.select(*KEY_FIELDS, pl.lit(None, dtype=pl.String).alias("action")).with_columns(
        pl.col("span_id").alias("_ancestor")
    )
    root_names = roots.unique(subset=["trace_id"], keep="first", maintain_order=True)
    return (
        _walk_actions(walk, tree)
        .join(root_names, on="trace_id", how="left")
        .select(
            *KEY_FIELDS,
            pl.lit(None, dtype=pl.String).alias("parent_span_id"),
            pl.coalesce("action", "_root_name").alias("action"),
            pl.lit(None, dtype=pl.String).alias("agent"),
            pl.lit(None, dtype=pl.String).alias("tool"),
            pl.lit(None, dtype=pl.Int64).alias("tool_end"),
            pl.lit(None, dtype=pl.String).alias("tool_step"),
        )
    )


_EVALUATION_SCHEMA = {
    "trace_id": pl.String,
    "_holder": pl.String,
    "_holder_parent": pl.String,
    "response_id": pl.String,
    "name": pl.String,
    "value": pl.Float64,
    "label": pl.String,
}


_TARGET_SCHEMA = {
    "score_id": pl.String,
    "rank": pl.Int64,
    "trace_id": pl.String,
    "span_id": pl.String,
    "response_id": pl.String,
    "score": SCORE_STRUCT,
    "matched": pl.Boolean,
}


def empty_score_targets() -> pl.DataFrame:
    """No evaluations: ``OtlpImportResult.score_targets`` with its columns."""
    return pl.DataFrame(schema=_TARGET_SCHEMA)


@dataclass
class OtlpImportResult(ImportResult):
    """An ``ImportResult`` plus what attaching late scores to stored calls needs.

    ``score_targets``: one row per place an evaluation may belong (``Store.attach_scores``
    columns; ``score_id`` is ``e<n>``, the evaluation's number in this import). An evaluation
    matched to a call here has one row (``matched``); an unmatched one has a row per
    candidate, tried by ``rank``: its own span (0), its response id (1), its span's parent (2).
    ``accuracy``: the settings the scores were read with, for recomputing stored calls.
    """

    score_targets: pl.DataFrame = field(default_factory=empty_score_targets)
    accuracy: AccuracyConfig = field(default_factory=AccuracyConfig)


def _score_targets(events: pl.DataFrame, matched: pl.DataFrame, first: int) -> pl.DataFrame:
    """Where each evaluation may belong in the store (see ``OtlpImportResult``); evaluations
    are numbered from ``first`` so ids stay unique across the batches of one import."""
    score = pl.struct(
        "name",
        "value",
        "label",
        pl.lit("otel").alias("source"),
        pl.lit(None, pl.String).alias("id"),
    ).cast(SCORE_STRUCT)  # no id: an OTel evaluation event is never edited, so copies add up
    score_id = pl.format("e{}", pl.col("_e") + first)
    here = matched.filter(pl.col("_span").is_not_null()).select(
        "_e",
        score_id.alias("score_id"),
        pl.lit(0, dtype=pl.Int64).alias("rank"),
        pl.col("_trace").alias("trace_id"),
        pl.col("_span").alias("span_id"),
        pl.lit(None, dtype=pl.String).alias("response_id"),
        score.alias("score"),
        pl.lit(True).alias("matched"),
    )
    lost = events.join(matched.filter(pl.col("_span").is_null()).select("_e"), on="_e")
    candidates = [
        (0, pl.col("trace_id"), pl.col("_holder"), pl.lit(None, dtype=pl.String)),
        (1, pl.lit(None, dtype=pl.String), pl.lit(None, dtype=pl.String), pl.col("response_id")),
        (2, pl.col("trace_id"), pl.col("_holder_parent"), pl.lit(None, dtype=pl.String)),
    ]
    elsewhere = [
        lost.select(
            "_e",
            score_id.alias("score_id"),
            pl.lit(rank, dtype=pl.Int64).alias("rank"),
            trace.alias("trace_id"),
            span.alias("span_id"),
            response.alias("response_id"),
            score.alias("score"),
            pl.lit(False).alias("matched"),
        ).filter(pl.col("span_id").is_not_null() | pl.col("response_id").is_not_null())
        for rank, trace, span, response in candidates
    ]
    # in event order: the store appends a call's new scores in the order of its input rows
    targets = pl.concat([here, *elsewhere]).sort("_e", "rank").drop("_e")
    return targets.cast(_TARGET_SCHEMA)


def _evaluations_frame(evaluations: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(evaluations, schema=_EVALUATION_SCHEMA, orient="row")


def _attach_scores(
    calls: pl.DataFrame,
    members: pl.DataFrame,
    evaluations: pl.DataFrame,
    accuracy: AccuracyConfig,
    first: int = 0,
) -> tuple[pl.DataFrame, int, int, pl.DataFrame]:
    """Add ``scores`` and ``accuracy``; returns (calls, scores attached, scores unmatched,
    score targets for the store)."""
    if evaluations.is_empty():
        return calls, 0, 0, empty_score_targets()
    events = evaluations.with_row_index("_e")
    by_span = events.join(
        members.rename({"_member": "_holder", "span_id": "_by_span", "_key_trace": "_span_trace"}),
        on=["trace_id", "_holder"],
        how="left",
    )
    responses = (
        calls.filter(pl.col("response_id").is_not_null())
        .unique(subset=["response_id"], keep="first", maintain_order=True)
        .select(
            "response_id",
            pl.col("trace_id").alias("_resp_trace"),
            pl.col("span_id").alias("_by_resp"),
        )
    )
    by_parent = members.rename(
        {"_member": "_holder_parent", "span_id": "_by_parent", "_key_trace": "_parent_trace"}
    )
    matched = (
        by_span.join(responses, on="response_id", how="left")
        .join(by_parent, on=["trace_id", "_holder_parent"], how="left")
        .select(
            "_e",
            pl.when(pl.col("_by_span").is_not_null())
            .then(pl.col("_span_trace"))
            .when(pl.col("_by_resp").is_not_null())
            .then(pl.col("_resp_trace"))
            .when(pl.col("_by_parent").is_not_null())
            .then(pl.col("_parent_trace"))
            .alias("_trace"),
            pl.coalesce("_by_span", "_by_resp", "_by_parent").alias("_span"),
            "name",
            "value",
            "label",
        )
        .unique(subset=["_e"], keep="first")
    )
    found = matched.filter(pl.col("_span").is_not_null())
    per_call = (
        found.sort("_e")
        .group_by("_trace", "_span", maintain_order=True)
        .agg(
            pl.struct(
                "name",
                "value",
                "label",
                pl.lit("otel").alias("source"),
                pl.lit(None, pl.String).alias("id"),
            ).alias("_scores")
        )
        .rename({"_trace": "trace_id", "_span": "span_id"})
    )
    calls = (
        calls.join(per_call, on=list(KEY_FIELDS), how="left")
        .with_columns(pl.col("_scores").cast(pl.List(SCORE_STRUCT)).alias("scores"))
        .drop("_scores")
        .with_columns(accuracy.from_scores("scores").alias("accuracy"))
    )
    targets = _score_targets(events, matched, first)
    return calls, found.height, matched.height - found.height, targets


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


_TREE_SCHEMA = {
    **{n: pl.String for n in ("trace_id", "span_id", "parent_span_id", "action", "agent", "tool")},
    "tool_end": pl.Int64,
    "tool_step": pl.String,
}
_ROOTS_SCHEMA = {"trace_id": pl.String, "_root_name": pl.String}
# what a late twin is matched by (``_merge_labels``), kept for calls already handed on
_TWIN_SCHEMA = {
    name: _RAW_SCHEMA[name] if name in _RAW_SCHEMA else CALL_SCHEMA[name]
    for name in twins.TWIN_COLUMNS
}


def _twin_candidates(closed: pl.DataFrame, calls: pl.DataFrame) -> pl.DataFrame:
    """The calls handed on earlier that may be twins of ``calls``: of the same traces, with
    one of their response ids, or starting or ending in the same second (or one either side)
    as one of them. Bounded by the retained table, and usually a small part of it."""
    if closed.is_empty() or calls.is_empty():
        return closed.clear()
    same_trace = closed.join(calls.select("trace_id").unique(), on="trace_id", how="semi")
    ids = calls.select("response_id").drop_nulls().unique()
    same_id = closed.join(ids, on="response_id", how="semi")
    second = pl.col("_t").dt.truncate("1s")
    times = (
        pl.concat(
            [
                calls.select(pl.col("start_time").alias("_t")),
                calls.select(pl.col("end_time").alias("_t")),
            ]
        )
        .drop_nulls()
        .select(second.alias("_s"))
        .unique()
    )
    near_seconds = pl.concat(
        [times.select(pl.col("_s") + pl.duration(seconds=shift)) for shift in (-1, 0, 1)]
    ).unique()
    near = pl.concat(
        [
            closed.join(
                near_seconds,
                left_on=pl.col("start_time").dt.truncate("1s"),
                right_on="_s",
                how="semi",
            ),
            closed.join(
                near_seconds,
                left_on=pl.col("end_time").dt.truncate("1s"),
                right_on="_s",
                how="semi",
            ),
        ]
    )
    return pl.concat([same_trace, same_id, near]).unique(
        subset=list(KEY_FIELDS), keep="first", maintain_order=True
    )


class _Stream:
    """Turns batches of collected spans into batches of finished call records.

    The policy (see ``stream_otlp``): a trace is closed once its local root (a span without a
    parent) has been read. A batch finishes the calls of every trace closed so far and holds
    back the rest: their calls, tree spans and evaluations, until a later batch brings the
    root or the import ends. For closed traces it keeps only compact tables: one row per
    span, of the action that span passes to a late descendant (``_inherited_actions``), the
    root names, and the match columns of the calls handed on (so a late twin of one merges
    into it instead of counting the call twice), each trimmed to the last ``retain`` rows so
    memory stays bounded.
    """

    def __init__(self, accuracy: AccuracyConfig, source: str, retain: int) -> None:
        self.accuracy, self.source, self.retain = accuracy, source, retain
        self.calls = _calls_frame([], source)
        self.tree = pl.DataFrame(schema=_TREE_SCHEMA)
        self.evaluations = pl.DataFrame(schema=_EVALUATION_SCHEMA)
        self.closed_nodes = pl.DataFrame(schema=_TREE_SCHEMA)
        self.closed_roots = pl.DataFrame(schema=_ROOTS_SCHEMA)
        self.closed_calls = pl.DataFrame(schema=_TWIN_SCHEMA)
        self.numbered = 0  # evaluations numbered so far: score ids stay unique across batches

    def step(self, sink: _Collector, *, final: bool) -> OtlpImportResult:
        """Finish the closed traces' calls among those held and those in ``sink``."""
        calls = pl.concat([self.calls, _calls_frame(sink.calls, self.source)])
        tree = pl.concat([self.tree, pl.DataFrame(_tree_columns(sink), schema=_TREE_SCHEMA)])
        evaluations = pl.concat([self.evaluations, _evaluations_frame(sink.evaluations)])
        roots = pl.DataFrame(sink.roots, schema=_ROOTS_SCHEMA, orient="row")
        known_roots = pl.concat([roots, self.closed_roots])
        if final:
            ready_calls, ready_tree, ready_evals = calls, tree, evaluations
            self.calls, self.tree = calls.clear(), tree.clear()
            self.evaluations = evaluations.clear()
        else:
            # probe the (up to ``retain``) known roots with this batch's traces, not the reverse:
            # per batch the cost is one scan of the roots, and the splits below hash only these
            candidates = tree.select("trace_id").unique()
            closed = known_roots.join(candidates, on="trace_id", how="semi").select("trace_id")
            ready_calls, self.calls = _split(calls, closed)
            ready_tree, self.tree = _split(tree, closed)
            ready_evals, self.evaluations = _split(evaluations, closed)
        ready = ready_tree.select("trace_id").unique()
        context_roots = known_roots.join(ready, on="trace_id", how="semi")
        context_tree = pl.concat(
            [ready_tree, self.closed_nodes.join(ready, on="trace_id", how="semi")]
        )
        handed_on = _twin_candidates(self.closed_calls, ready_calls)
        merged, members = _merge_duplicates(ready_calls, handed_on)
        merged = _resolve_actions(merged, context_tree, context_roots)
        merged = _resolve_agents(merged, context_tree)
        merged, attached, unmatched, targets = _attach_scores(
            merged, members, ready_evals, self.accuracy, self.numbered
        )
        self.numbered += ready_evals.height
        if not final:
            nodes = _inherited_actions(ready_tree, context_tree, context_roots)
            self._remember(nodes, roots, merged.select(list(_TWIN_SCHEMA)))
        frame = conform(merged).collect()
        return OtlpImportResult(
            calls=frame,
            problems=sink.problems,
            spans=sink.spans,
            llm_spans=sink.llm_spans,
            merged=ready_calls.height - frame.height,
            rejected=sink.rejected,
            scores=attached,
            unmatched_scores=unmatched,
            score_targets=targets,
            accuracy=self.accuracy,
        )

    def _remember(self, nodes: pl.DataFrame, roots: pl.DataFrame, calls: pl.DataFrame) -> None:
        """Keep the compact tables of closed traces, newest last, at most ``retain`` rows."""
        self.closed_nodes = pl.concat([self.closed_nodes, nodes]).tail(self.retain)
        self.closed_roots = pl.concat([self.closed_roots, roots]).tail(self.retain)
        self.closed_calls = pl.concat([self.closed_calls, calls]).tail(self.retain)


def _tree_columns(sink: _Collector) -> dict[str, list[Any]]:
    return {
        "trace_id": sink.tree_trace,
        "span_id": sink.tree_span,
        "parent_span_id": sink.tree_parent,
        "action": sink.tree_action,
        "agent": sink.tree_agent,
        "tool": sink.tree_tool,
        "tool_end": sink.tree_end,
        "tool_step": sink.tree_step,
    }


def _split(frame: pl.DataFrame, traces: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows of ``traces``, the other rows), each in input order."""
    inside = pl.col("trace_id").is_in(traces.get_column("trace_id").implode())
    return frame.filter(inside), frame.filter(~inside)


def _totals(batches: list[OtlpImportResult], accuracy: AccuracyConfig) -> OtlpImportResult:
    """One result from the batches of one import: calls and score targets concatenated."""
    total = OtlpImportResult(accuracy=accuracy)
    for batch in batches:
        _add_counts(total, batch)
    if batches:
        total.calls = pl.concat([b.calls for b in batches])
        total.score_targets = pl.concat([b.score_targets for b in batches])
    return total


def _add_counts(total: OtlpImportResult, batch: OtlpImportResult) -> None:
    total.problems.extend(batch.problems)
    total.spans += batch.spans
    total.llm_spans += batch.llm_spans
    total.merged += batch.merged
    total.rejected += batch.rejected
    total.scores += batch.scores
    total.unmatched_scores += batch.unmatched_scores


DEFAULT_BATCH_SPANS = 100_000
"""Spans read before a batch is finished: the whole import peaked at 0.7-0.8 GB RSS on OTLP
JSON at 1M and 10M spans (bench/README.md)."""
RETAIN_CLOSED_SPANS = 1_000_000
"""Spans of closed traces whose inherited action is kept for late descendants (~0.1 GB)."""

BatchSink = Callable[[OtlpImportResult], None]


def stream_otlp(
    paths: Iterable[str | Path],
    on_batch: BatchSink,
    *,
    batch_spans: int | None = DEFAULT_BATCH_SPANS,
    keep_content: bool = False,
    progress: Progress | None = None,
    accuracy_names: Iterable[str] | None = None,
    accuracy_labels: Mapping[str, float] | None = None,
    retain_spans: int = RETAIN_CLOSED_SPANS,
) -> OtlpImportResult:
    """Read OTLP trace files in batches of about ``batch_spans`` spans, handing each batch of
    finished call records to ``on_batch`` (priced and appended by the command), so memory is
    bounded by the batch size plus the open traces, not by the input. Returns the totals
    (counts, problems, files, bytes; ``calls`` and ``score_targets`` empty).

    Batches end between OTLP requests (lines), so one request's spans are never split.
    ``batch_spans=None`` reads everything as one batch.

    Whole-import guarantees, and the policy that keeps them while streaming: a trace is
    *closed* once its local root has been read (exporters write a parent when it ends, after
    its children, so the root is normally the last span of its trace). Until then its calls,
    other spans and evaluations are held back, so actions resolve through every ancestor and
    spans of one call merge wherever they sit in the input. When the import ends, the traces
    still open (no root exported) are finished as a whole import would finish them. A span
    of a trace read after its root (a late child) is finished in its own batch: its action
    comes from the compact table of closed traces (``retain_spans`` most recent spans), and
    when it is the twin of a call handed on earlier it merges into that call (the stored call
    is kept as it is; the late span adds nothing but its evaluations). Evaluations that match no call of their
    batch go to ``Store.attach_scores`` through ``score_targets``, as for late files.
    """
    accuracy = AccuracyConfig.resolve(accuracy_names, accuracy_labels)
    files = find_inputs(paths)
    stream = _Stream(accuracy, "otlp", retain_spans)
    total = OtlpImportResult(accuracy=accuracy)

    def flush(final: bool = False) -> None:
        batch = stream.step(sink.take(), final=final)
        _add_counts(total, batch)
        on_batch(batch)
        del batch
        gc.collect()  # the GC is off while reading: free any cycles once per batch, not per dict

    sink = _Collector(keep_content, batch_spans, flush)
    bytes_read = 0
    collecting = gc.isenabled()
    gc.disable()  # millions of small dicts: the cyclic GC would rescan them for nothing
    try:
        for path in files:
            bytes_read += _read_file(path, sink, progress)
        flush(final=True)
    finally:
        if collecting:
            gc.enable()
    total.files, total.bytes_read = len(files), bytes_read
    return total


def import_otlp(
    paths: Iterable[str | Path],
    *,
    keep_content: bool = False,
    progress: Progress | None = None,
    accuracy_names: Iterable[str] | None = None,
    accuracy_labels: Mapping[str, float] | None = None,
    batch_spans: int | None = None,
) -> OtlpImportResult:
    """Read OTLP trace files and return their LLM calls as call records (not priced).

    ``paths`` are files or directories. ``progress`` is called with the number of bytes read
    from disk as reading advances. ``accuracy_names`` defaults to the config's
    ``[accuracy] names`` and ``accuracy_labels`` to its ``[accuracy.categories]``
    (``llmtrace.accuracy``). Bad files, lines and spans become ``ImportResult.problems``; the
    rest is imported. Holds every call in memory: large imports use ``stream_otlp``
    (``batch_spans`` here is that function's, for comparing the two).
    """
    batches: list[OtlpImportResult] = []
    totals = stream_otlp(
        paths,
        batches.append,
        batch_spans=batch_spans,
        keep_content=keep_content,
        progress=progress,
        accuracy_names=accuracy_names,
        accuracy_labels=accuracy_labels,
    )
    result = _totals(batches, totals.accuracy)
    result.files, result.bytes_read = totals.files, totals.bytes_read
    return result


def calls_from_spans(
    spans: Iterable[Mapping[str, Any]],
    *,
    keep_content: bool = False,
    accuracy_names: Iterable[str] | None = None,
    accuracy_labels: Mapping[str, float] | None = None,
    source: str = "otlp",
) -> OtlpImportResult:
    """Call records from span mappings already decoded (the shape ``llmtrace.dialects`` reads,
    plus ``events``), with the same merging, actions and scores as a file import.

    For callers that hold spans rather than files (the live exporter, which passes
    ``source="live"``). A bad span becomes a problem whose file is ``<spans>`` and whose line is
    the span's position (1-based).
    """
    accuracy = AccuracyConfig.resolve(accuracy_names, accuracy_labels)
    sink = _Collector(keep_content)
    for number, span in enumerate(spans, start=1):
        sink.spans += 1
        try:
            sink.add({"events": [], "resource": {}, "scope": None, **span})
        except (SpanError, _Malformed, AttributeError, KeyError, TypeError, ValueError) as exc:
            sink.rejected += 1
            sink.problem("<spans>", number, span.get("span_id"), str(exc))
    return _Stream(accuracy, source, 0).step(sink, final=True)
