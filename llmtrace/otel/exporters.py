"""Where enriched spans and metrics go: OTLP (gRPC or HTTP), the local store, the console.

``LLMTRACE_EXPORTERS=otlp,store,console`` picks any combination. Each exporter sits behind its
own ``BatchSpanProcessor`` with a bounded queue (``LLMTRACE_MAX_QUEUE_SIZE``): a slow backend or
disk drops spans rather than blocking or growing the app.

* ``otlp`` - the SDK's OTLP exporters; protocol from ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``
  (``http/protobuf`` default, as the OTLP spec recommends, or ``grpc``); endpoint, headers,
  timeout, compression and certificates are read by the exporters from the standard
  ``OTEL_EXPORTER_OTLP_*`` variables unless ``init()`` was given them. Metrics go the same way.
* ``store`` - call records for the local Parquet store, the same rows ``llmtrace import otlp``
  writes for the same spans, so ``llmtrace costs`` / ``llmtrace audit`` work on live data: the
  app spools each batch's rows (no Polars, no Parquet in the app) and the store's readers
  settle them (``llmtrace.spool``, ``Store.settle``).
* ``console`` - one line per LLM call on stderr (model, tokens, cost): for trying things out.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from llmtrace.otel import _guard
from llmtrace.otel.calls import ROW_ATTRIBUTE
from llmtrace.otel.processor import PRICED_SPAN_ID, span_mapping
from llmtrace.otel.settings import LiveSettings
from llmtrace.otel.spans import _SDK_SPANS, _resource_attributes, attributes_to_read

DEFAULT_STORE = ".llmtrace"  # store.DEFAULT_STORE, without importing the store (Polars)

if TYPE_CHECKING:
    import polars as pl

_SIGNAL_PATHS = {"traces": "v1/traces", "metrics": "v1/metrics"}


def _protocol(settings: LiveSettings, signal: str) -> str:
    """Per-signal protocol variable first (``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL``), then ours."""
    if signal == "metrics":
        value = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "").strip()
        if value in ("grpc", "http/protobuf"):
            return value
    return settings.otlp_protocol


def _endpoint(settings: LiveSettings, protocol: str, signal: str) -> str | None:
    """An explicit ``init(otlp_endpoint=...)`` is a base URL like OTEL_EXPORTER_OTLP_ENDPOINT."""
    base = settings.otlp_endpoint
    if base is None:
        return None
    if protocol == "grpc":
        return base
    return f"{base.rstrip('/')}/{_SIGNAL_PATHS[signal]}"


def _otlp_arguments(settings: LiveSettings, signal: str) -> tuple[str, dict[str, Any]]:
    """The protocol and the keywords for the SDK's OTLP exporter of ``signal``: only what
    ``init()`` was given, so the exporter reads the rest from ``OTEL_EXPORTER_OTLP_*``."""
    protocol = _protocol(settings, signal)
    kwargs: dict[str, Any] = {}
    endpoint = _endpoint(settings, protocol, signal)
    if endpoint:
        kwargs["endpoint"] = endpoint
    if settings.otlp_headers:
        kwargs["headers"] = dict(settings.otlp_headers)
    return protocol, kwargs


def otlp_span_exporter(settings: LiveSettings) -> SpanExporter:
    """The SDK's OTLP span exporter for the configured protocol."""
    protocol, kwargs = _otlp_arguments(settings, "traces")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(**kwargs)


def otlp_metric_exporter(settings: LiveSettings) -> Any:
    """The SDK's OTLP metric exporter for the configured protocol."""
    protocol, kwargs = _otlp_arguments(settings, "metrics")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(**kwargs)


class StoreSpanExporter(SpanExporter):
    """Spools the LLM calls of each batch of spans for the local store (``llmtrace.spool``).

    The app does not write Parquet, price in Polars or even import Polars: each batch goes
    through the OTLP importer's per-span step (``importers.otlp_rows.SpanRows``: dialects,
    fingerprints, the span tree, evaluations) and its rows are written as one spool file
    (``STORE/spool/``, atomically). Store readers settle spool files into the store
    (``Store.settle``: every reader, ``llmtrace costs`` / ``audit`` included, does it first)
    with the importer's batch step (merging two spans of one call, actions, scores) over many
    files at once and ``price_calls``, so the store holds the rows ``llmtrace import otlp``
    writes for the same spans (``source`` says ``live``), priced with the price file the app's
    pricer uses. As that import holds a trace's calls until its root has been read, a settle
    carries a trace's rows until its local root is spooled (``llmtrace.spool_carry``): readers
    see a running trace's calls once it ends, or when the app shuts down (``shutdown`` spools
    a final batch saying so), or ``spool.CARRY_S`` (15 minutes) after they were spooled. A
    judge's evaluation exported after (or before) its call reaches the stored call.

    Merging needs both spans of a call in one batch. A span that defers to another
    (``llmtrace.priced_span_id``) whose target is not in the batch yet is held back until the
    target arrives (bounded; flushed as-is at shutdown), so a batch boundary between the two
    cannot turn one call into two rows. A twin in another trace is often priced first and so
    written in an earlier batch: a span deferring to a span written lately (the last
    ``max_pending`` ids) is already counted there: its call is not written again, but its
    span is (without the call), since it is often its trace's root and names the action.

    A batch is spooled as far as it concerns LLM calls: the spans of traces with a call or an
    evaluation in it or in a recent batch (a root or ancestor exported after its call still
    names the call's action, as settling finishes many batches together, the way ``llmtrace
    import otlp`` finishes the spans of its files); a batch of an app's other traces writes
    nothing. A root that ended before its first LLM call's batch is not seen, as before.

    ``keep_content`` keeps the messages spans carry (``LLMTRACE_CAPTURE_CONTENT``), as
    ``import otlp --keep-content`` does; without it only their fingerprints reach the spool
    file (and the store). A span the importer rejects is counted through the guard, never
    raised; a full disk fails the batch (``FAILURE``), never the app.
    """

    takes_call_rows = True
    """The live worker hands this exporter each priced span's row (``calls.call_row``): see
    ``span_rows``."""

    def __init__(
        self,
        path: Any = None,
        *,
        pricer: Any = None,
        max_pending: int = 10_000,
        keep_content: bool = False,
    ) -> None:
        # the variable is read now, as Store() would; the spool folder is made on first write
        self._path = path if path is not None else (os.environ.get("LLMTRACE_STORE") or None)
        self._writer: Any = None
        self._pricer = pricer
        self._keep_content = keep_content
        self._pending: dict[str, list[ReadableSpan]] = {}
        self._pending_count = 0
        self._max_pending = max_pending
        self._written: OrderedDict[str, None] = OrderedDict()  # span ids of recent batches
        self._twins: list[ReadableSpan] = []  # of this batch: deferring to a written span
        self._llm_traces: OrderedDict[str, None] = OrderedDict()  # traces with a call lately
        self.rows_written = 0  # call rows spooled (settling merges twins and drops stored keys)
        self.twins_dropped = 0

    @property
    def store_path(self) -> Path:
        """The store's folder (``$LLMTRACE_STORE``, else ``./.llmtrace``, as ``Store()``)."""
        return Path(self._path) if self._path is not None else Path(DEFAULT_STORE)

    def _spool(self) -> Any:
        if self._writer is None:
            from llmtrace.spool import SpoolWriter

            self._writer = SpoolWriter(
                self.store_path,
                keep_content=self._keep_content,
                prices=_price_file(self._pricer),
                config=_config_file(),
            )
        return self._writer

    def _ready(self, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
        """This batch plus held-back spans whose target arrived, minus newly held-back ones;
        twins of spans written lately go to ``self._twins`` (spooled without their call)."""
        ids = {f"{s.context.span_id:016x}" for s in spans}
        ready: list[ReadableSpan] = []
        for span in spans:
            # an SDK span's dict itself (attributes_to_read), not the read-only proxy its
            # property makes on each call: the same value
            attrs = attributes_to_read(span) if type(span) in _SDK_SPANS else span.attributes
            target = (attrs or {}).get(PRICED_SPAN_ID)
            if target is not None and str(target) in self._written:
                self.twins_dropped += 1  # its twin is stored already: one call, one row
                self._twins.append(span)
                continue
            if target is not None and target not in ids and self._pending_count < self._max_pending:
                self._pending.setdefault(str(target), []).append(span)
                self._pending_count += 1
            else:
                ready.append(span)
        for span_id in ids & self._pending.keys():
            held = self._pending.pop(span_id)
            self._pending_count -= len(held)
            ready.extend(held)
        return ready

    def _write(self, spans: Sequence[ReadableSpan]) -> None:
        twins, self._twins = self._twins, []
        try:
            self._spool_rows(spans, twins)
        except UnicodeEncodeError:
            # a lone surrogate (text UTF-8 cannot hold) in a span's rows: the spool file could
            # not be written, and every call of the batch was lost. The import rejects such a
            # span (``otlp_spans._check_unicode``): so does this, and spools the others
            bad = [s for s in [*spans, *twins] if not _spoolable(s, self._keep_content)]
            if not bad:
                raise  # not the spans' text (a header's file name): the batch fails, as before
            # nor remembered as written: a span deferring to a rejected one carries the call
            spans = [s for s in spans if s not in bad]
            self._spool_rows(spans, [s for s in twins if s not in bad], bad)
        written = self._written
        for span in spans:
            written[f"{span.context.span_id:016x}"] = None
        while len(written) > self._max_pending:
            written.popitem(last=False)

    def _spool_rows(
        self,
        spans: Sequence[ReadableSpan],
        twins: Sequence[ReadableSpan],
        bad: Sequence[ReadableSpan] = (),
    ) -> None:
        """Spool the rows of ``spans`` and ``twins`` (``_write``); ``bad``: spans rejected for
        text the spool cannot encode, counted and logged as the importer's rejections are."""
        rows = span_rows([*spans, *twins], keep_content=self._keep_content)
        for span in bad:
            rows.spans += 1
            _reject(
                rows,
                rows.spans,
                f"{span.context.span_id:016x}",
                ValueError("invalid Unicode (a lone surrogate) in a string"),
            )
        if twins:  # their span (often the trace's root) still names actions; not their call
            from llmtrace.importers.otlp_rows import CALL_ROW  # Polars-free

            dropped = {f"{s.context.span_id:016x}" for s in twins}
            span_id = CALL_ROW.index("span_id")
            kept = [call for call in rows.calls if call[span_id] not in dropped]
            rows.llm_spans -= len(rows.calls) - len(kept)
            rows.calls = kept
        if self._keep_relevant(rows):
            # a span whose parent is in another process is its trace's root here: no span
            # without a parent will come, so the settle must not wait for one (store_spool);
            # a twin's too (spooled without its call, it is often the trace's root)
            local = {
                f"{s.context.trace_id:032x}"
                for group in (spans, twins)
                for s in group
                if s.parent is not None and s.parent.is_remote
            }
            self._spool().write(rows, sorted(local & self._llm_traces.keys()))
            self.rows_written += len(rows.calls)

    def _keep_relevant(self, rows: Any) -> bool:
        """Keep only the tree rows and roots of traces with an LLM call or evaluation in this
        batch or a recent one (the last ``max_pending`` such traces): actions and agents
        resolve within a trace, and ancestors end after their calls, so this loses nothing a
        settle uses, while an app's other traces (HTTP, database) spool nothing. False when
        nothing is left to spool."""
        from llmtrace.importers import otlp_rows as fields  # Polars-free, loaded with the rows

        call_trace = fields.CALL_ROW.index("trace_id")
        evaluation_trace = fields.EVALUATION_FIELDS.index("trace_id")
        tree_trace = fields.TREE_FIELDS.index("trace_id")
        root_trace = fields.ROOTS_FIELDS.index("trace_id")
        traces = self._llm_traces
        for trace in {call[call_trace] for call in rows.calls} | {
            evaluation[evaluation_trace] for evaluation in rows.evaluations
        }:
            traces[trace] = None
            traces.move_to_end(trace)
        while len(traces) > self._max_pending:
            traces.popitem(last=False)
        rows.tree = [row for row in rows.tree if row[tree_trace] in traces]
        rows.roots = [row for row in rows.roots if row[root_trace] in traces]
        return bool(rows.calls or rows.evaluations or rows.tree)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._twins = []
        try:
            self._write(self._ready(spans))
            return SpanExportResult.SUCCESS
        except Exception as exc:  # noqa: BLE001 - a full disk must not reach the app
            _guard.swallow("exporter.store", exc)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        try:
            held = [span for spans in self._pending.values() for span in spans]
            self._pending.clear()
            self._pending_count = 0
            if held:
                self._write(held)
            if self._writer is not None:  # this process spooled: its open traces end here
                self._writer.write_final()
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("exporter.store.shutdown", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _price_file(pricer: Any) -> str | None:
    """The price file the app's pricer loads (``LazyPriceBook``'s path, else what
    ``PriceBook.load`` resolves: ``$LLMTRACE_PRICES``, the config's ``prices``); None for the
    bundled prices, also when the config is unreadable (the pricer then uses those too)."""
    from llmtrace.price_file import find_price_file

    try:
        found = find_price_file(getattr(pricer, "path", None))
    except Exception as exc:  # noqa: BLE001 - the pricer reports it; settle uses bundled prices
        _guard.swallow("exporter.store.prices", exc)
        return None
    return None if found is None else str(Path(found).resolve())


def _config_file() -> str | None:
    """The config file in force in the app (for the accuracy settings settle applies)."""
    from llmtrace.config import find_config

    try:
        found = find_config()
    except Exception as exc:  # noqa: BLE001
        _guard.swallow("exporter.store.config", exc)
        return None
    return None if found is None else str(Path(found).resolve())


def importer_mapping(span: ReadableSpan) -> dict[str, Any]:
    """The span mapping the OTLP importer builds from a decoded span, from an SDK span."""
    mapping = span_mapping(span)
    mapping["events"] = [
        {"name": event.name, "attributes": dict(event.attributes or {})} for event in span.events
    ]
    return mapping


def span_rows(spans: Sequence[ReadableSpan], *, keep_content: bool = False) -> Any:
    """The importer's rows (``otlp_rows.SpanRows``) of a batch of SDK spans, without Polars.

    As ``calls_from_spans`` collects them: a span the importer rejects is counted and logged
    once (``<spans>:N: span ID: why``), never raised. This runs for every span an app ends,
    on the exporter thread, so an SDK span is read from its fields once: a span without
    events that is not an LLM span (most of an app's: HTTP, database) goes straight to
    ``SpanRows.add_tree_row`` (its tree row), any other to ``SpanRows.add`` with the mapping
    ``importer_mapping`` gives (with the importer's defaults), built in one go: the
    attributes read in place (an ended span's do not change), the events list made only for
    a span that has events, no intermediate dicts. Other span classes go the plain way.

    An LLM span without events that the live worker priced carries its call row already
    (``calls.ROW_ATTRIBUTE``, made from the worker's record by ``calls.call_row``, the values
    ``map_span_row`` gives for this copy): it gets its tree row and that row, without mapping
    it again (~9 us a call). Without content only (the worker maps without it); any other
    LLM span is mapped here (tests/test_live_span_rows.py compares both, field by field).
    """
    from llmtrace.dialects import is_llm_span
    from llmtrace.importers.otlp_rows import SpanRows

    rows = SpanRows(keep_content)
    add, add_tree_row, calls = rows.add, rows.add_tree_row, rows.calls
    take_rows = not keep_content  # the worker hands rows over only without content
    for number, span in enumerate(spans, start=1):
        rows.spans += 1
        if type(span) not in _SDK_SPANS:
            mapping = {"events": [], "resource": {}, "scope": None, **importer_mapping(span)}
        else:  # importer_mapping's values, each read once from the span's fields
            attrs = attributes_to_read(span)  # read in place: the rows keep values, not it
            context, parent, scope = span._context, span._parent, span._instrumentation_scope
            scope_name = scope.name if scope is not None else None
            name, events = span._name, span._events
            trace_id = f"{context.trace_id:032x}"
            span_id = f"{context.span_id:016x}"
            parent_id = f"{parent.span_id:016x}" if parent is not None else None
            if not events:
                try:  # add asks this after the tree row: if it cannot answer, add says why
                    llm: bool | None = is_llm_span(attrs, name, scope_name)
                except Exception:  # noqa: BLE001
                    llm = None  # add decides
                if llm is False:
                    try:
                        add_tree_row(trace_id, span_id, parent_id, name, span._end_time, attrs)
                    except (AttributeError, KeyError, TypeError, ValueError) as exc:
                        _reject(rows, number, span_id, exc)
                    continue
                row = getattr(span, ROW_ATTRIBUTE, None) if take_rows and llm is True else None
                if row is not None:  # the worker's record of it: what add would map
                    try:
                        add_tree_row(trace_id, span_id, parent_id, name, span._end_time, attrs)
                    except (AttributeError, KeyError, TypeError, ValueError) as exc:
                        _reject(rows, number, span_id, exc)
                        continue
                    calls.append(row)
                    rows.llm_spans += 1
                    continue
            mapping = {
                "events": [
                    {"name": event.name, "attributes": dict(event.attributes or {})}
                    for event in events
                ]
                if events
                else [],
                "resource": _resource_attributes(span._resource),
                "scope": scope_name,
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_span_id": parent_id,
                "name": name,
                "start_ns": span._start_time,
                "end_ns": span._end_time,
                "status_code": span._status.status_code.value,
                "attributes": attrs,
            }
        try:
            add(mapping)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # SpanError, _Malformed
            _reject(rows, number, mapping.get("span_id"), exc)
    return rows


def _spoolable(span: ReadableSpan, keep_content: bool) -> bool:
    """Whether the rows of ``span`` alone can be written to a spool file (no lone surrogate)."""
    from llmtrace import spool

    rows = span_rows([span], keep_content=keep_content)
    try:
        spool.encode_rows((rows.calls, rows.tree, rows.roots, rows.evaluations))
    except UnicodeEncodeError:
        return False
    return True


def _reject(rows: Any, number: int, span_id: Any, exc: Exception) -> None:
    """Count and log (once) a span the importer rejects, as ``calls_from_spans`` does."""
    from llmtrace.importers import ImportProblem

    rows.rejected += 1
    problem = ImportProblem("<spans>", number, span_id, str(exc))
    _guard.swallow("exporter.store.span", ValueError(str(problem)))


def spans_to_calls(spans: Sequence[ReadableSpan], *, keep_content: bool = False) -> pl.DataFrame:
    """Call records (``CALL_SCHEMA``, not priced, ``source='live'``) for a batch of SDK spans.

    The OTLP importer's own span->record path (``calls_from_spans``), so both give the same rows
    (fingerprints come from the completion hook's ``llmtrace.prompt.*`` attributes, read by
    dialects). A span the importer rejects is counted and logged once, never raised.
    """
    from llmtrace.importers.otlp import calls_from_spans

    result = calls_from_spans(
        (importer_mapping(span) for span in spans), keep_content=keep_content, source="live"
    )
    for problem in result.problems:
        _guard.swallow("exporter.store.span", ValueError(str(problem)))
    return result.calls


class ConsoleCostExporter(SpanExporter):
    """One line per LLM span on stderr: name, model, tokens and cost (or why unpriced)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            stream = self.stream or sys.stderr
            for span in spans:
                line = _console_line(span)
                if line:
                    stream.write(line + "\n")
            stream.flush()
            return SpanExportResult.SUCCESS
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("exporter.console", exc)
            return SpanExportResult.FAILURE


def _console_line(span: ReadableSpan) -> str | None:
    attrs = span.attributes or {}
    status = attrs.get("llmtrace.price.status")
    if status is None and "llmtrace.priced_span_id" not in attrs:
        return None
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model") or "?"
    tokens = (
        f"in={attrs.get('gen_ai.usage.input_tokens', '?')} "
        f"out={attrs.get('gen_ai.usage.output_tokens', '?')}"
    )
    if "llmtrace.priced_span_id" in attrs:
        cost = f"(priced on span {attrs['llmtrace.priced_span_id']})"
    elif status == "ok":
        cost = f"${attrs.get('gen_ai.usage.cost', 0.0):.6f}"
    else:
        cost = f"unpriced: {status}"
    return f"llmtrace: {span.name} {model} {tokens} {cost}"


def span_processors(settings: LiveSettings, pricer: Any = None) -> list[SpanProcessor]:
    """One bounded batch processor per selected exporter (the cost processor's downstream)."""
    processors: list[SpanProcessor] = []
    for name in settings.exporters:
        try:
            exporter = _span_exporter(name, settings, pricer)
        except Exception as exc:  # noqa: BLE001 - a missing extra must not stop the others
            _guard.swallow(f"exporters.{name}", exc)
            continue
        processors.append(BatchSpanProcessor(exporter, max_queue_size=settings.max_queue_size))
    return processors


def _span_exporter(name: str, settings: LiveSettings, pricer: Any) -> SpanExporter:
    if name == "otlp":
        from llmtrace.otel.bounded import BoundedSpanExporter

        inner = otlp_span_exporter(settings)
        return BoundedSpanExporter(inner, settings.exit_timeout_ms, _describe(inner))
    if name == "store":
        return StoreSpanExporter(
            settings.store, pricer=pricer, keep_content=settings.capture_content
        )
    if name == "console":
        return ConsoleCostExporter()
    raise ValueError(f"unknown exporter {name!r}")


def _describe(exporter: Any) -> str:
    """The exporter's endpoint for log lines, credentials removed."""
    from llmtrace.safe_text import redact_url

    endpoint = getattr(exporter, "_endpoint", None)
    return redact_url(str(endpoint)) if endpoint else "the OTLP endpoint"


def metric_readers(settings: LiveSettings) -> list[Any]:
    """Periodic readers for the selected exporters that carry metrics (OTLP only)."""
    if not settings.metrics or "otlp" not in settings.exporters:
        return []
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    try:
        from llmtrace.otel.bounded import bounded_metric_exporter

        inner = otlp_metric_exporter(settings)
        exporter = bounded_metric_exporter(inner, settings.exit_timeout_ms, _describe(inner))
    except Exception as exc:  # noqa: BLE001
        _guard.swallow("exporters.otlp_metrics", exc)
        return []
    return [
        PeriodicExportingMetricReader(exporter, export_interval_millis=settings.metric_interval_ms)
    ]
