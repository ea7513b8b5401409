"""The cost span processor: prices each LLM span and hands exporters an enriched copy.

Why a wrapper: by the time ``SpanProcessor.on_end`` runs, an SDK span is read-only, so setting
attributes there never reaches the exporter. ``CostSpanProcessor`` therefore *owns* the
downstream processors (usually a ``BatchSpanProcessor`` per exporter) and gives them, for each
LLM span, a copy carrying the original attributes plus the cost attributes; every other span is
passed through untouched. This works for spans from any instrumentation (official GenAI,
OpenLLMetry, OpenInference, OpenLIT, the ``anthropic`` SDK's own spans): ``llmtrace.dialects``
reads them all.

Attributes added to a priced LLM span (always Python floats, never ints: Tempo does not compare
int with float):

* ``gen_ai.usage.cost`` - total USD (what Langfuse and OpenLIT-style dashboards read);
* ``llmtrace.cost.input``, ``.cache_read``, ``.cache_write``, ``.output``, ``.reasoning``,
  ``.total`` (and ``.request`` when a per-request fee applies) - disjoint components;
* ``langfuse.observation.cost_details`` - JSON with Langfuse's keys so it shows the breakdown;
* ``llmtrace.price.source`` (price data and version), ``llmtrace.price.status`` (``ok``).

An unpriced call gets no cost attributes, only ``llmtrace.price.status`` saying why.

**Two spans, one call.** When an LLM span starts inside another LLM span that is still in
progress (the ``anthropic`` SDK's span inside the official instrumentation's, or the other way
round), both describe one call. The inner one defers: it gets ``llmtrace.priced_span_id``
naming its nearest in-progress LLM ancestor and no cost, and leaves its usage with that ancestor
in case the ancestor's own span lacks it. So Langfuse and TraceQL sums count each call once, and
so do the metrics and the store.

**Never hurt the app.** Every step is guarded: an error is swallowed, logged once and counted
(``llmtrace.otel.error_counts()``), and the original span still goes downstream. Tracking of
in-progress spans is bounded (``max_tracked``) so spans that never end cannot grow memory.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from llmtrace import dialects
from llmtrace.fingerprint import PREFIX_HASHES_ATTRIBUTE
from llmtrace.otel import _guard
from llmtrace.otel.hook import fingerprint_attributes
from llmtrace.record import PRICE_OK, TOKEN_FIELDS

PRICED_SPAN_ID = "llmtrace.priced_span_id"
PRICE_STATUS = "llmtrace.price.status"
PRICE_SOURCE = "llmtrace.price.source"
ACTION = "llmtrace.action"
TOTAL_COST = "gen_ai.usage.cost"
LANGFUSE_COST_DETAILS = "langfuse.observation.cost_details"
# call-record cost field -> (llmtrace.cost.* attribute, Langfuse cost_details key)
COST_ATTRIBUTES: dict[str, tuple[str, str | None]] = {
    "input_cost": ("llmtrace.cost.input", "input"),
    "cache_read_cost": ("llmtrace.cost.cache_read", "input_cached_tokens"),
    "cache_write_cost": ("llmtrace.cost.cache_write", "input_cache_creation"),
    "output_cost": ("llmtrace.cost.output", "output"),
    "reasoning_cost": ("llmtrace.cost.reasoning", "output_reasoning_tokens"),
    "total_cost": ("llmtrace.cost.total", "total"),
}
REQUEST_COST = "llmtrace.cost.request"
_MAX_HOPS = 64

Pricer = Callable[[Mapping[str, Any]], Mapping[str, Any]]
CallSink = Callable[[Mapping[str, Any], str], None]


class _Live:
    """What is known about a span still in progress: its parent, whether it looks like an LLM
    call, and the name of its trace's local root (the default ``action``)."""

    __slots__ = ("parent", "llm", "root_name")

    def __init__(self, parent: int | None, llm: bool, root_name: str | None) -> None:
        self.parent = parent
        self.llm = llm
        self.root_name = root_name


def looks_like_llm_at_start(attrs: Mapping[str, Any] | None) -> bool:
    """Whether a span that just started is probably an LLM call (a candidate ancestor).

    Only start-time attributes are known here, so usage cannot decide; the operation name,
    OpenInference span kind and provider/system markers can. Agent, tool and workflow spans are
    excluded: an LLM call inside an agent span is its own call, not a second view of one.
    """
    if not attrs:
        return False
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        return operation in dialects.INFERENCE_OPERATIONS
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return kind in ("LLM", "EMBEDDING")
    if any(marker in attrs for marker in dialects.AGGREGATE_MARKERS):
        return False
    return "llm.request.type" in attrs or "gen_ai.system" in attrs


def span_mapping(span: ReadableSpan) -> dict[str, Any]:
    """The plain mapping ``llmtrace.dialects.span_to_call`` reads, from an SDK span."""
    context = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    status = span.status.status_code
    mapping: dict[str, Any] = {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": span.name,
        "scope": scope.name if scope is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status_code": status.value,
        "attributes": dict(span.attributes or {}),
        "resource": span.resource.attributes if span.resource is not None else {},
    }
    if status is StatusCode.ERROR and span.events:
        mapping["events"] = [
            {"name": event.name, "attributes": event.attributes or {}} for event in span.events
        ]
    return mapping


def with_attributes(span: ReadableSpan, extra: Mapping[str, Any]) -> ReadableSpan:
    """A read-only copy of ``span`` with ``extra`` attributes added (what exporters receive)."""
    attributes = dict(span.attributes or {})
    attributes.update(extra)
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def cost_attributes(costs: Mapping[str, Any]) -> dict[str, Any]:
    """Span attributes for a priced call's cost fields (floats) or its price status."""
    status = costs.get("price_status")
    if status != PRICE_OK or costs.get("total_cost") is None:
        return {PRICE_STATUS: str(status or "not_priced")}
    out: dict[str, Any] = {TOTAL_COST: float(costs["total_cost"])}
    details: dict[str, float] = {}
    for field, (attribute, langfuse_key) in COST_ATTRIBUTES.items():
        value = float(costs.get(field) or 0.0)
        out[attribute] = value
        if langfuse_key is not None:
            details[langfuse_key] = value
    request = costs.get("request_cost")
    if request:
        out[REQUEST_COST] = float(request)
    # floats' repr is valid JSON for finite values and ~4x cheaper than json.dumps here
    out[LANGFUSE_COST_DETAILS] = (
        "{" + ",".join(f'"{k}":{v!r}' for k, v in details.items()) + "}"
        if all(math.isfinite(v) for v in details.values())
        else json.dumps(details, separators=(",", ":"))
    )
    out[PRICE_SOURCE] = str(costs.get("price_source") or "")
    out[PRICE_STATUS] = PRICE_OK
    return out


def _has_usage(call: Mapping[str, Any]) -> bool:
    return call.get("input_tokens") is not None or call.get("output_tokens") is not None


def _adopt_usage(call: dict[str, Any], child: Mapping[str, Any]) -> None:
    """Fill a call without usage from its deferring child's view of the same call."""
    for field in TOKEN_FIELDS:
        call[field] = child.get(field)
    for field in ("model", "request_model", "provider", "response_id"):
        if call.get(field) is None:
            call[field] = child.get(field)


def _utc(value: datetime | None) -> datetime:
    return value if value is not None else datetime.now(UTC)


class _Job:
    """One LLM span on its way from ``on_end`` (app thread) to the worker."""

    __slots__ = ("span", "span_id", "root_name", "ancestor_id", "llm_at_start")

    def __init__(
        self,
        span: ReadableSpan,
        span_id: int,
        root_name: str | None,
        ancestor_id: int | None,
        llm_at_start: bool,
    ) -> None:
        self.span = span
        self.span_id = span_id
        self.root_name = root_name
        self.ancestor_id = ancestor_id
        self.llm_at_start = llm_at_start


class CostSpanProcessor(SpanProcessor):
    """Wraps downstream span processors; gives them cost-enriched copies of LLM spans.

    ``pricer`` maps a call record to its cost fields (``PriceBook.price_one`` semantics);
    ``on_call`` (e.g. ``CostMetrics.record``) is called once per priced call with the priced
    record and the span's instrumentation scope. Both are optional so the processor can be used
    on its own: ``provider.add_span_processor(CostSpanProcessor([BatchSpanProcessor(exp)]))``.

    Threads: ``on_start`` / ``on_end`` do only dictionary work on the app's thread (tracking,
    finding the LLM ancestor while it is still in progress). Reading attributes, pricing,
    fingerprinting, copying and metrics happen on one background worker fed by a bounded queue
    (``background=False`` does it inline); a full queue falls back to inline work, never to
    blocking or dropping. ``force_flush`` drains the queue before flushing downstream.
    """

    def __init__(
        self,
        downstream: SpanProcessor | Iterable[SpanProcessor],
        *,
        pricer: Pricer | None = None,
        on_call: CallSink | None = None,
        keep_content: bool = False,
        max_tracked: int = 100_000,
        background: bool = True,
        max_queue_size: int = 4096,
    ) -> None:
        self._downstream: tuple[SpanProcessor, ...] = (
            (downstream,) if isinstance(downstream, SpanProcessor) else tuple(downstream)
        )
        self._pricer = pricer or default_pricer()
        self._on_call = on_call
        self._keep_content = keep_content
        self._max_tracked = max_tracked
        self._live: dict[int, _Live] = {}
        self._child_calls: dict[int, dict[str, Any]] = {}  # worker only
        self._prompts: dict[int, tuple[Any, Any, Any]] = {}
        self._background = background
        self._max_queue = max_queue_size
        self._queue: deque[_Job | None] = deque()
        self._cond = threading.Condition()
        self._busy = 0  # jobs queued or being processed
        self._worker: threading.Thread | None = None
        self._worker_pid = 0
        self._stopped = False
        self.calls_priced = 0
        self.calls_deferred = 0

    # -- SpanProcessor ---------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            self._track(span)
        except Exception as exc:  # noqa: BLE001 - never into the app
            _guard.swallow("processor.on_start", exc)
        for processor in self._downstream:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("downstream.on_start", exc)

    def _on_ending(self, span: Span) -> None:
        for processor in self._downstream:
            try:
                processor._on_ending(span)
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("downstream._on_ending", exc)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            job = self._prepare(span)
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("processor.on_end", exc)
            job = None
        if job is None:
            self._forward(span)
        elif not (self._background and self._enqueue(job)):
            self._process(job)

    def shutdown(self) -> None:
        self._drain(30_000)
        with self._cond:
            self._stopped = True
            self._queue.append(None)
            self._cond.notify_all()
        for processor in self._downstream:
            try:
                processor.shutdown()
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("downstream.shutdown", exc)
        self._live.clear()
        self._prompts.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        ok = self._drain(timeout_millis)
        for processor in self._downstream:
            try:
                ok = processor.force_flush(timeout_millis) and ok
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("downstream.force_flush", exc)
                ok = False
        return ok

    def stash_prompt(self, span_id: int, prompt: tuple[Any, Any, Any]) -> bool:
        """Keep a call's input (from the completion hook) until its span is processed.

        Fingerprinting then happens on the worker, not in the app's request. Bounded: when
        full, returns False and the hook fingerprints inline instead.
        """
        if len(self._prompts) >= self._max_tracked:
            return False
        self._prompts[span_id] = prompt
        return True

    # -- app thread ------------------------------------------------------------------------------

    def _forward(self, span: ReadableSpan) -> None:
        for processor in self._downstream:
            try:
                processor.on_end(span)
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("downstream.on_end", exc)

    def _track(self, span: Span) -> None:
        if len(self._live) >= self._max_tracked:
            return
        parent = span.parent
        parent_id = parent.span_id if parent is not None and not parent.is_remote else None
        if parent_id is None:
            root_name = span.name
        else:
            parent_entry = self._live.get(parent_id)
            root_name = parent_entry.root_name if parent_entry is not None else None
        llm = looks_like_llm_at_start(span.attributes)
        self._live[span.context.span_id] = _Live(parent_id, llm, root_name)

    def _llm_ancestor(self, parent_id: int | None) -> int | None:
        """The nearest in-progress ancestor that looks like an LLM call, if any."""
        for _ in range(_MAX_HOPS):
            if parent_id is None:
                return None
            entry = self._live.get(parent_id)
            if entry is None:
                return None
            if entry.llm:
                return parent_id
            parent_id = entry.parent
        return None

    def _prepare(self, span: ReadableSpan) -> _Job | None:
        """What must be decided while the span's ancestors are still in progress."""
        span_id = span.context.span_id
        live = self._live.pop(span_id, None)
        llm_at_start = live is not None and live.llm
        if not llm_at_start and not dialects.is_llm_span(span.attributes or {}):
            self._prompts.pop(span_id, None)
            return None
        ancestor = self._llm_ancestor(live.parent if live is not None else None)
        return _Job(span, span_id, live.root_name if live else None, ancestor, llm_at_start)

    def _enqueue(self, job: _Job) -> bool:
        with self._cond:
            if self._stopped or len(self._queue) >= self._max_queue:
                return False
            if self._worker is None or self._worker_pid != os.getpid():
                self._start_worker()
            self._queue.append(job)
            self._busy += 1
            self._cond.notify()
        return True

    # -- worker ----------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        """Start (or, in a forked child, restart) the worker; called holding the condition."""
        self._worker_pid = os.getpid()
        self._worker = threading.Thread(target=self._work, name="llmtrace-costs", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                job = self._queue.popleft()
            if job is None:
                return
            try:
                self._process(job)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _drain(self, timeout_millis: float) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            while self._busy > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _process(self, job: _Job) -> None:
        try:
            out = self._enrich(job)
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("processor.on_end", exc)
            out = job.span
        self._forward(out)

    def _enrich(self, job: _Job) -> ReadableSpan:
        span = job.span
        attrs = span.attributes or {}
        adopted = self._child_calls.pop(job.span_id, None)
        if adopted is None and not dialects.is_llm_span(attrs):
            self._prompts.pop(job.span_id, None)
            return span
        extra: dict[str, Any] = {}
        prompt = self._prompts.pop(job.span_id, None)
        if prompt is not None and PREFIX_HASHES_ATTRIBUTE not in attrs:
            extra.update(fingerprint_attributes(*prompt))
        if job.root_name and ACTION not in attrs:
            extra[ACTION] = job.root_name
        mapping = span_mapping(span)
        if extra:
            mapping["attributes"] = {**mapping["attributes"], **extra}
        try:
            call = dialects.span_to_call(mapping, keep_content=self._keep_content)
        except dialects.SpanError as exc:
            _guard.swallow("processor.span_to_call", exc)
            return with_attributes(span, {**extra, PRICE_STATUS: "invalid_usage"})
        if job.ancestor_id is not None:
            if job.ancestor_id not in self._child_calls and _has_usage(call):
                self._child_calls[job.ancestor_id] = call
            extra[PRICED_SPAN_ID] = f"{job.ancestor_id:016x}"
            self.calls_deferred += 1
            return with_attributes(span, extra)
        if adopted is not None and not _has_usage(call):
            _adopt_usage(call, adopted)
        call["start_time"] = _utc(call.get("start_time"))
        costs = self._pricer(call)
        extra.update(cost_attributes(costs))
        call.update(costs)
        self.calls_priced += 1
        if self._on_call is not None:
            scope = span.instrumentation_scope
            try:
                self._on_call(call, scope.name if scope is not None else "")
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("processor.on_call", exc)
        return with_attributes(span, extra)


class LazyPriceBook:
    """Loads the PriceBook once, on first use or in a background thread started by ``init``.

    Loading imports genai-prices and reads its data (~0.5 s): doing it on the app's first LLM
    call would add that to one request, doing it at ``import llmtrace`` would slow every import.
    A price file that cannot be read is reported through the guard and the bundled prices used.
    """

    def __init__(self, path: Any = None) -> None:
        self._path = path
        self._book: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        book = self._book
        if book is not None:
            return book
        with self._lock:
            if self._book is None:
                from llmtrace.pricing import PriceBook

                try:
                    self._book = PriceBook.load(self._path)
                except Exception as exc:  # noqa: BLE001 - a bad price file must not stop pricing
                    _guard.swallow("pricing.load", exc)
                    self._book = PriceBook()
            return self._book

    def warm_in_background(self) -> None:
        """Start loading now, off the app's thread."""

        def load() -> None:
            try:
                self.get()
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("pricing.warm", exc)

        threading.Thread(target=load, name="llmtrace-prices", daemon=True).start()

    def __call__(self, call: Mapping[str, Any]) -> Mapping[str, Any]:
        """Price one call record with the loaded book."""
        return self.get().price_one(
            call.get("provider"),
            call.get("model"),
            call["start_time"],
            **{field: call.get(field) for field in TOKEN_FIELDS},
        )


def default_pricer() -> LazyPriceBook:
    """A pricer over the default price book (``$LLMTRACE_PRICES`` or the config's file)."""
    return LazyPriceBook()
