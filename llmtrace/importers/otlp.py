"""Import OTLP trace files (JSON lines, JSON, protobuf, gzip, directories) as call records.

Inputs (JSON lines, JSON documents, protobuf, gzip, directories) are found and read by
``llmtrace.importers.otlp_files``; spans are decoded by ``otlp_spans``; the whole-batch Polars
steps are ``otlp_merge`` (one call = one record, actions, agents) and ``otlp_scores``.

JSON lines take the columnar lane (``otlp_columns`` and ``llmtrace.dialect_columns``): each
batch of decoded lines is flattened into columns and mapped by Polars expressions, with
per-span Python only for content fingerprints, Langfuse's JSON usage and spans the
expressions are not sure of (those go through ``_Collector.add``, as every span of the other
inputs does). The lanes give the same records and problems (tests/test_import_equivalence.py).

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace import twins
from llmtrace.accuracy import AccuracyConfig
from llmtrace.dialects import MS_PER_NS, SpanError
from llmtrace.importers import ImportProblem, ImportResult, otlp_columns
from llmtrace.importers.otlp_columns import Pending, list_column
from llmtrace.importers.otlp_files import INPUT_SUFFIXES, Progress, _read_file, find_inputs
from llmtrace.importers.otlp_merge import (
    _inherited_actions,
    _merge_duplicates,
    _resolve_actions,
    _resolve_agents,
    _twin_candidates,
)
from llmtrace.importers.otlp_rows import CALL_ROW, ROOTS_FIELDS, TREE_FIELDS, SpanRows
from llmtrace.importers.otlp_scores import (
    _EVALUATION_SCHEMA,
    _attach_scores,
    _evaluations_frame,
    empty_score_targets,
)
from llmtrace.importers.otlp_spans import (
    _VALUE_ERRORS,
    _check_unicode,
    _json_request_spans,
    _json_span,
    _Malformed,
    _proto_attributes,
    _proto_span,
    _value_error,
)
from llmtrace.record import (
    CALL_SCHEMA,
    COST_FIELDS,
    TWIN_IDS,
    conform,
)

__all__ = [
    "INPUT_SUFFIXES",
    "OtlpImportResult",
    "calls_from_spans",
    "empty_score_targets",
    "find_inputs",
    "import_otlp",
    "stream_otlp",
]


# --------------------------------------------------------------------------------------------
# Collecting spans from every file
# --------------------------------------------------------------------------------------------


class _Collector(SpanRows):
    """Accumulates calls, the span tree and evaluations across all files of one import.

    Its per-span step, ``add``, is ``SpanRows.add`` (Polars-free, shared with the live store
    exporter); this class adds the columnar lane, batching and the Polars frames.
    """

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
        # what was collected before the lists below, in input order: (raw calls, tree, roots,
        # evaluations) frames from the columnar lane and from earlier runs of the lists
        self.segments: list[tuple[pl.DataFrame, ...]] = []
        self.pending: Pending | None = None  # decoded lines for the columnar lane
        self.calls: list[tuple[Any, ...]] = []  # map_span_row + emitter (_CALL_ROW)
        self.tree: list[tuple[Any, ...]] = []  # one row per span, in _TREE_SCHEMA's order
        self.roots: list[tuple[str, str]] = []
        self.evaluations: list[tuple[Any, ...]] = []
        self.problems: list[ImportProblem] = []
        self.spans = 0
        self.llm_spans = 0
        self.rejected = 0

    def problem(self, file: str, line: int | None, span: str | None, message: str) -> None:
        if self.pending is not None:  # problems stay in input order
            self.settle()
        self.problems.append(ImportProblem(file, line, span, message))

    # ----------------------------------------------------------------------------------------
    # The columnar lane (``otlp_columns``)
    # ----------------------------------------------------------------------------------------

    def add_columnar(self, request: Any, file: str, line: int) -> bool:
        """One decoded JSON line into the columnar lane; False when it declines the line
        (which must then go through the per-span path)."""
        pending = self.pending
        if pending is None:
            pending = self.pending = Pending(self.keep_content)
        spans = pending.add_line(request, file, line)
        if spans is None:
            return False
        self.spans += spans
        full = len(pending) >= SETTLE_SPANS
        # no reference left here: once settled, the decoded lines are freed before a full
        # batch's gc.collect, which otherwise traversed their ~20k lists (~25 ms a batch)
        del pending
        if full:
            self.settle()
        self._check_full()
        return True

    def settle(self) -> None:
        """Map the pending lines (``otlp_columns.settle``); the spans it leaves to the
        per-span path go through ``add`` here, in order, and every row lands in one segment
        in span order."""
        pending, self.pending = self.pending, None
        if pending is None or not len(pending):
            return
        self._freeze()
        settled = otlp_columns.settle(pending, _RAW_NAMES)
        marks: dict[str, list[int]] = {"calls": [], "tree": [], "roots": [], "evaluations": []}
        for index in settled.python:
            before = (len(self.calls), len(self.tree), len(self.roots), len(self.evaluations))
            try:
                self.add(pending.span_mapping(index))
            except (SpanError, _Malformed) as exc:
                self.rejected += 1
                self.problem(*pending.where(index), str(exc))
            except _VALUE_ERRORS as exc:
                self.rejected += 1
                self.problem(*pending.where(index), _value_error(exc))
            for name, count in zip(marks, before, strict=True):
                marks[name].extend([index] * (len(getattr(self, name)) - count))
        self.llm_spans += settled.calls.height
        order = pl.col("_i")

        def merged(frame: pl.DataFrame, python: pl.DataFrame, name: str) -> pl.DataFrame:
            if python.height == 0:
                return frame.drop("_i")
            python = python.with_columns(pl.Series("_i", marks[name], dtype=pl.Int64))
            return pl.concat([frame, python.select(frame.columns)]).sort(order).drop("_i")

        segment = (
            merged(settled.calls, _raw_calls(self.calls), "calls"),
            merged(settled.tree, pl.DataFrame(_tree_columns(self), schema=_TREE_SCHEMA), "tree"),
            merged(
                settled.roots, pl.DataFrame(self.roots, schema=_ROOTS_SCHEMA, orient="row"), "roots"
            ),
            _evaluations_frame(self.evaluations),
        )
        self.segments.append(segment)
        self.calls, self.tree, self.roots, self.evaluations = [], [], [], []

    def _freeze(self) -> None:
        """Move what the per-span path collected into ``segments`` (input order is kept when
        columnar rows follow)."""
        if self.calls or self.tree or self.roots or self.evaluations:
            self.segments.append(self._lists())
            self.calls, self.tree, self.roots, self.evaluations = [], [], [], []

    def _lists(self) -> tuple[pl.DataFrame, ...]:
        return (
            _raw_calls(self.calls),
            pl.DataFrame(_tree_columns(self), schema=_TREE_SCHEMA),
            pl.DataFrame(self.roots, schema=_ROOTS_SCHEMA, orient="row"),
            _evaluations_frame(self.evaluations),
        )

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """(raw calls, tree, roots, evaluations) of everything collected, in input order."""
        self.settle()
        if not self.segments:
            return self._lists()  # type: ignore[return-value]
        self._freeze()
        parts = [pl.concat(p) for p in zip(*self.segments, strict=True)]
        return parts[0], parts[1], parts[2], parts[3]

    def take(self) -> _Collector:
        """Hand over what was collected since the last take and start an empty batch."""
        self.settle()
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
        if self.pending is not None:
            self.settle()
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

    def add_decoded(self, spans: list[tuple[str, dict[str, Any]]], file: str, line: int) -> None:
        """Every span of one request already decoded (``otlp_fast``: (raw span id, span)),
        kept as ``add_request`` keeps them, with the same problems for a bad span."""
        if self.pending is not None:
            self.settle()
        for span_id, span in spans:
            self.spans += 1
            try:
                self.add(span)
            except (SpanError, _Malformed) as exc:
                self.rejected += 1
                self.problem(file, line, span_id or None, str(exc))
            except _VALUE_ERRORS as exc:
                self.rejected += 1
                self.problem(file, line, span_id or None, _value_error(exc))
        self._check_full()

    def add_proto(self, request: Any, file: str, line: int | None) -> None:
        """Every span of one protobuf ExportTraceServiceRequest."""
        if self.pending is not None:
            self.settle()
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


_LIST_COLUMNS = [name for name, dtype in _RAW_SCHEMA.items() if isinstance(dtype, pl.List)]


_CALL_ROW = CALL_ROW
_RAW_NAMES = _RAW_SCHEMA.names()
SETTLE_SPANS = 20_000
"""Spans the columnar lane flattens before mapping them: its decoded lines are held until
then, so this bounds their memory whatever the batch size."""


def _raw_calls(calls: list[tuple[Any, ...]]) -> pl.DataFrame:
    """Call rows (``_CALL_ROW``) as one ``_RAW_SCHEMA`` frame, built once."""
    names = _RAW_SCHEMA.names()
    if not calls:  # the same columns as a full batch, so held and new calls concatenate
        columns: dict[str, Any] = {name: [] for name in names}
    else:  # one C-level transpose of the rows; no dict per call, no lookup per field
        by_field = dict(zip(_CALL_ROW, zip(*calls, strict=True), strict=True))
        columns = {name: by_field[name] for name in names}  # tuples: Polars reads them as lists
    for name in _LIST_COLUMNS:
        columns[name] = list_column(name, columns[name], _RAW_SCHEMA[name])
    return pl.DataFrame(columns, schema=_RAW_SCHEMA)


def _calls_frame(calls: list[tuple[Any, ...]], source: str) -> pl.DataFrame:
    """The collected call rows as one frame; ``source`` names where they came from."""
    return _timed_calls(_raw_calls(calls), source)


def _timed_calls(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Raw calls with times as datetimes and ``source`` naming where they came from."""
    return frame.with_columns(
        pl.from_epoch(pl.col("start_ns") // 1000, time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("start_time"),
        pl.from_epoch(pl.col("end_ns") // 1000, time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("end_time"),
        ((pl.col("end_ns") - pl.col("start_ns")) * MS_PER_NS).alias("duration_ms"),
        pl.lit(source).alias("source"),
    ).drop("start_ns", "end_ns")


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


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


# the Polars types of the per-span rows (``otlp_rows``), whose field names they take
_TREE_SCHEMA = {name: pl.Int64 if name == "tool_end" else pl.String for name in TREE_FIELDS}
_ROOTS_SCHEMA = dict.fromkeys(ROOTS_FIELDS, pl.String)
# what a late twin is matched by (``_merge_labels``), kept for calls already handed on
_TWIN_SCHEMA = {
    name: _RAW_SCHEMA[name] if name in _RAW_SCHEMA else CALL_SCHEMA[name]
    for name in twins.TWIN_COLUMNS
}


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
        new_calls, new_tree, roots, new_evaluations = sink.frames()
        calls = pl.concat([self.calls, _timed_calls(new_calls, self.source)])
        tree = pl.concat([self.tree, new_tree])
        evaluations = pl.concat([self.evaluations, new_evaluations])
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
    """The collected tree rows as columns (one C-level transpose)."""
    if not sink.tree:
        return {name: [] for name in _TREE_SCHEMA}
    return dict(zip(_TREE_SCHEMA, map(list, zip(*sink.tree, strict=True)), strict=True))


def _split(frame: pl.DataFrame, traces: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows of ``traces``, the other rows), each in input order (one membership test)."""
    inside = frame.get_column("trace_id").is_in(traces.get_column("trace_id").implode())
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
    # What exists before the import (modules, the price book: ~70k objects) is no garbage of
    # it: frozen, it is left out of the collection after each batch (~20-30 ms each otherwise).
    # Not when the caller froze objects itself: unfreezing at the end would thaw those too.
    freezing = gc.get_freeze_count() == 0
    if freezing:
        gc.freeze()
    try:
        for path in files:
            bytes_read += _read_file(path, sink, progress)
        flush(final=True)
    finally:
        if freezing:
            gc.unfreeze()
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
