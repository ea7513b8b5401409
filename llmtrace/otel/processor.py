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
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from llmtrace import dialects, twins
from llmtrace.fingerprint import PREFIX_HASHES_ATTRIBUTE
from llmtrace.otel import _guard
from llmtrace.otel.hook import fingerprint_attributes

# The record's price status and token fields (llmtrace.record), repeated here so the live side
# never imports polars while the app starts; tests/test_startup.py checks they agree.
PRICE_OK = "ok"
TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)

PRICED_SPAN_ID = "llmtrace.priced_span_id"
PRICED_TRACE_ID = "llmtrace.priced_trace_id"
PRICE_STATUS = "llmtrace.price.status"
PRICE_SOURCE = "llmtrace.price.source"
ACTION = "llmtrace.action"
AGENT_ATTRIBUTE = dialects.AGENT_ATTRIBUTE
TOOL_ATTRIBUTE = dialects.TOOL_ATTRIBUTE
AGENT_NAMES = dialects.AGENT_NAME_ATTRIBUTES
_TOOL_MARKER_NAMES = tuple(name for name, _ in dialects.TOOL_SPAN_MARKERS)
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
    call, its trace's local root (span id and name, the default ``action``) and, on a local
    root's own entry, whether LLM calls ended under it (so its end closes an action)."""

    __slots__ = ("parent", "llm", "root_name", "root", "calls", "agent", "run")

    def __init__(
        self,
        parent: int | None,
        llm: bool,
        root_name: str | None,
        root: int | None,
        agent: str | None = None,
        run: int | None = None,
    ) -> None:
        self.parent = parent
        self.llm = llm
        self.root_name = root_name
        self.root = root
        self.calls = False
        self.agent = agent  # the innermost agent (an invoke_agent span) this span runs in
        self.run = run  # that agent span's id (else the local root's): where tools are matched


def _maybe_tool(attrs: Mapping[str, Any]) -> bool:
    """A cheap first look (app thread, every span end): could this be a tool span?"""
    return attrs.get("gen_ai.operation.name") == "execute_tool" or any(
        name in attrs for name in _TOOL_MARKER_NAMES
    )


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


def plain_attributes(span: ReadableSpan) -> dict[str, Any]:
    """A plain ``dict`` copy of a span's attributes, made once per span.

    An SDK span's ``BoundedAttributes`` answer ``dict(...)`` through a Python-level
    ``__getitem__`` per key; their ``copy()`` copies the dict underneath in one C call (the
    worker made two such copies per LLM span before: ~10% of its time).
    """
    attrs = span.attributes
    if not attrs:
        return {}
    copy = getattr(attrs, "copy", None)
    if copy is not None:
        out = copy()
        if type(out) is dict:
            return out
    return dict(attrs)


def span_mapping(span: ReadableSpan, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain mapping ``llmtrace.dialects.span_to_call`` reads, from an SDK span
    (``attributes``: its attributes already copied by ``plain_attributes``, used as they are)."""
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
        "attributes": plain_attributes(span) if attributes is None else attributes,
        "resource": span.resource.attributes if span.resource is not None else {},
    }
    if status is StatusCode.ERROR and span.events:
        mapping["events"] = [
            {"name": event.name, "attributes": event.attributes or {}} for event in span.events
        ]
    return mapping


def with_attributes(
    span: ReadableSpan, extra: Mapping[str, Any], base: dict[str, Any] | None = None
) -> ReadableSpan:
    """A read-only copy of ``span`` with ``extra`` attributes added (what exporters receive).

    ``base``: a private copy of the span's attributes (``plain_attributes``) that the copy may
    take over and extend, instead of copying them again."""
    attributes = plain_attributes(span) if base is None else base
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
    """One LLM span on its way from ``on_end`` (app thread) to the worker.

    ``root_id`` is the local root whose action the call belongs to (None when unknown or when
    the root had already ended); ``is_root`` says the LLM span is that root itself, so its own
    processing closes the action.
    """

    __slots__ = ("span", "span_id", "root_name", "ancestor_id", "llm_at_start", "root_id",
                 "is_root", "agent", "tool")  # fmt: skip

    def __init__(
        self,
        span: ReadableSpan,
        span_id: int,
        root_name: str | None,
        ancestor_id: int | None,
        llm_at_start: bool,
        root_id: int | None = None,
        is_root: bool = False,
    ) -> None:
        self.span = span
        self.span_id = span_id
        self.root_name = root_name
        self.ancestor_id = ancestor_id
        self.llm_at_start = llm_at_start
        self.root_id = root_id
        self.is_root = is_root
        self.agent: str | None = None
        self.tool: str | None = None


class _ActionEnd:
    """A local root that is not an LLM call ended with LLM calls under it: close its action.

    Queued behind the jobs of those calls (they ended first), so the worker has priced them all
    by the time it gets here."""

    __slots__ = ("root_id",)

    def __init__(self, root_id: int) -> None:
        self.root_id = root_id


class _Flush:
    """``force_flush``'s marker: the worker sets ``done`` when it gets to it (FIFO)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Action:
    """The calls of one action instance priced so far (worker only)."""

    __slots__ = ("call", "cost", "calls", "unpriced")

    def __init__(self, call: Mapping[str, Any]) -> None:
        self.call = call  # the first call: service, environment and action labels
        self.cost = 0.0
        self.calls = 0
        self.unpriced = 0


ActionSink = Callable[[Mapping[str, Any], float], None]


class CostSpanProcessor(SpanProcessor):
    """Wraps downstream span processors; gives them cost-enriched copies of LLM spans.

    ``pricer`` maps a call record to its cost fields (``PriceBook.price_one`` semantics);
    ``on_call`` (e.g. ``CostMetrics.record``) is called once per priced call with the priced
    record and the span's instrumentation scope; ``on_action`` (e.g.
    ``CostMetrics.record_action``) once per completed action instance with its first call and
    the sum of its calls' costs. All are optional so the processor can be used on its own:
    ``provider.add_span_processor(CostSpanProcessor([BatchSpanProcessor(exp)]))``.

    **Threads.** The app's thread does only dictionary work: ``on_start`` tracks the span,
    ``on_end`` finds the LLM ancestor while it is still in progress and appends the span to a
    bounded deque, with no lock and no wake-up per span (only the first span of a batch sets an
    event). Reading attributes, pricing, fingerprinting, copying and metrics happen on one
    background worker that gathers a batch for ``batch_delay_millis`` (sooner when the queue is
    a quarter full or a flush waits) and works through it in one go: waking a thread per span
    made the app wait for the interpreter lock on every call (bench/bench_overhead.py). Between
    spans the worker offers the lock back (``sleep(0)``), so an app thread that wants it waits
    for one span's work, not the batch's (the app's p99 latency). A full queue falls
    back to inline work, never to blocking or dropping; ``background=False`` always works
    inline. ``force_flush`` waits until the worker has reached everything queued before it,
    then flushes downstream.

    **Actions.** An action instance is one local root span (a span without a parent in this
    process: the trace's root, or the entry span of a distributed trace's part that runs here)
    with everything under it. Its cost is the sum of its LLM calls' costs, closed when the root
    ends. In a distributed trace each process closes its own part under its own local root, so
    a request that crosses services gives one action cost per service (labelled with each
    service), never one sum across processes. An action with an unpriced call has no known cost
    and is not recorded (``actions_unpriced``); a call that ends after its root has ended is
    priced and counted per call but not added to any action.
    """

    def __init__(
        self,
        downstream: SpanProcessor | Iterable[SpanProcessor],
        *,
        pricer: Pricer | None = None,
        on_call: CallSink | None = None,
        on_action: ActionSink | None = None,
        keep_content: bool = False,
        max_tracked: int = 100_000,
        background: bool = True,
        max_queue_size: int = 4096,
        batch_delay_millis: float = 200.0,
        twin_wait_millis: float = 60_000.0,
    ) -> None:
        self._downstream: tuple[SpanProcessor, ...] = (
            (downstream,) if isinstance(downstream, SpanProcessor) else tuple(downstream)
        )
        self._pricer = pricer or default_pricer()
        self._on_call = on_call
        self._on_action = on_action
        self._keep_content = keep_content
        self._max_tracked = max_tracked
        self._live: dict[int, _Live] = {}
        # per agent run (its invoke_agent span, else the local root): the tool that ended last
        # and whose result no call has read yet (app thread only, like ``_live``)
        self._tools: dict[int, str] = {}
        self._child_calls: dict[int, dict[str, Any]] = {}  # worker only
        self._actions: dict[int, _Action] = {}  # worker only
        self._prompts: dict[int, tuple[Any, Any, Any]] = {}
        self._recent = twins.RecentCalls()  # worker only
        self._parked: dict[int, _Parked] = {}  # worker only
        self._twin_wait = twin_wait_millis / 1000
        self._background = background
        self._max_queue = max_queue_size
        self._hurry_at = max(1, max_queue_size // 4)
        self._delay = batch_delay_millis / 1000
        self._queue: deque[_Job | _ActionEnd | _Flush] = deque()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()  # something is queued
        self._hurry = threading.Event()  # ... and should not wait for the batch to fill
        self._armed = False  # the worker has been woken for what is queued
        self._worker: threading.Thread | None = None
        self._stopping = False
        self.calls_priced = 0
        self.calls_deferred = 0
        self.actions_recorded = 0
        self.actions_unpriced = 0
        self.actions_dropped = 0
        if hasattr(os, "register_at_fork"):
            reinit = weakref.WeakMethod(self._after_fork)

            def after_in_child() -> None:
                method = reinit()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

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
            item = self._prepare(span)
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("processor.on_end", exc)
            item = None
        if item is None or type(item) is _ActionEnd:
            self._forward(span)  # not an LLM span: downstream as it is, now
            if item is None:
                return
        if not (self._background and self._enqueue(item)):
            self._run(item)

    def shutdown(self) -> None:
        self._drain(30_000)
        self._release_parked(force=True)  # inline when there was no worker (or it is gone)
        self._stopping = True
        self._hurry.set()
        self._wake.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(5)
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
        live = self._live
        if len(live) >= self._max_tracked:
            return
        span_id = span.context.span_id
        parent = span.parent
        agent = run = None
        if parent is None or parent.is_remote:
            parent_id, root, root_name = None, span_id, span.name
            run = span_id
        else:
            parent_id = parent.span_id
            entry = live.get(parent_id)
            root, root_name = (entry.root, entry.root_name) if entry is not None else (None, None)
            if entry is not None:
                agent, run = entry.agent, entry.run
        attrs = span.attributes
        if attrs and (AGENT_NAMES[0] in attrs or AGENT_NAMES[1] in attrs):
            own, _ = dialects.agent_and_tool(attrs)
            if own is not None:
                agent, run = own, span_id
        live[span_id] = _Live(
            parent_id, looks_like_llm_at_start(attrs), root_name, root, agent, run
        )

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

    def _prepare(self, span: ReadableSpan) -> _Job | _ActionEnd | None:
        """What must be decided while the span's ancestors are still in progress."""
        span_id = span.context.span_id
        live = self._live.pop(span_id, None)
        self._tools.pop(span_id, None)  # an agent run that ended: its unread tool goes too
        llm_at_start = live is not None and live.llm
        if not llm_at_start and not dialects.is_llm_span(span.attributes or {}):
            self._prompts.pop(span_id, None)
            attrs = span.attributes
            if live is not None and live.run is not None and attrs and _maybe_tool(attrs):
                _, tool = dialects.agent_and_tool(attrs)
                if tool is not None:  # the next call of this agent run consumes its result
                    self._tools[live.run] = tool
            if live is not None and live.calls:
                return _ActionEnd(span_id)  # a local root with LLM calls under it
            return None
        if live is None:
            return _Job(span, span_id, None, None, llm_at_start)
        root = live.root
        is_root = root == span_id
        if root is not None and not is_root:
            root_entry = self._live.get(root)
            if root_entry is None:
                root = None  # the root has ended: this call belongs to no open action
            else:
                root_entry.calls = True
        ancestor = self._llm_ancestor(live.parent)
        job = _Job(span, span_id, live.root_name, ancestor, llm_at_start, root, is_root)
        job.agent = live.agent
        if live.run is not None and ancestor is None:
            job.tool = self._tools.pop(live.run, None)
        return job

    def _enqueue(self, item: _Job | _ActionEnd) -> bool:
        """Hand ``item`` to the worker; False when it must be done inline (full or stopped)."""
        queue = self._queue
        size = len(queue)
        # an action's end is tiny and must stay behind its calls: it may overfill the queue
        limit = self._max_queue if type(item) is _Job else 2 * self._max_queue
        if self._stopping or size >= limit:
            return False
        if self._worker is None:
            self._start_worker()
        queue.append(item)  # deque.append is atomic: no lock on the app's thread
        if not self._armed:
            self._armed = True
            self._wake.set()
        elif size >= self._hurry_at and not self._hurry.is_set():
            self._hurry.set()
        return True

    # -- worker ----------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        with self._start_lock:
            if self._worker is None:
                worker = threading.Thread(target=self._work, name="llmtrace-costs", daemon=True)
                worker.start()
                self._worker = worker

    def _after_fork(self) -> None:
        """In a forked child: the parent's queue is the parent's; start afresh, lazily."""
        self._queue.clear()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._armed = False
        self._worker = None

    def _work(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(self._park_timeout())
            if not self._stopping:
                self._hurry.wait(self._delay)  # let a batch gather (the lock is released)
            self._wake.clear()
            self._hurry.clear()
            self._armed = False  # from here on, the next append wakes us again
            while queue:
                self._run(queue.popleft())
                # Hand the interpreter lock back after each span: an app thread that wants it
                # would otherwise wait for the whole batch (up to the 5 ms switch interval per
                # turn), which is what the app's p99 latency showed. A sleep(0) is ~1 us.
                time.sleep(0)
            if self._parked:
                self._release_parked(force=False)
            if self._stopping:
                return

    def _drain(self, timeout_millis: float) -> bool:
        """Wait until the worker has handled everything queued so far."""
        worker = self._worker
        if worker is None or not worker.is_alive() or worker is threading.current_thread():
            return True
        marker = _Flush()
        self._queue.append(marker)
        self._armed = True
        self._hurry.set()
        self._wake.set()
        return marker.done.wait(max(0.0, timeout_millis / 1000))

    def _run(self, item: _Job | _ActionEnd | _Flush) -> None:
        kind = type(item)
        if kind is _Job:
            self._process(item)  # type: ignore[arg-type]
        elif kind is _ActionEnd:
            self._finish_action(item.root_id)  # type: ignore[union-attr]
        else:
            self._release_parked(force=True)  # a flush delivers everything, held spans too
            item.done.set()  # type: ignore[union-attr]

    def _process(self, job: _Job) -> None:
        try:
            out = self._enrich(job)
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("processor.on_end", exc)
            out = job.span
        if out is not None:  # None: held back until its twin arrives (``_park``)
            self._forward(out)
        if job.is_root:
            self._finish_action(job.span_id)

    # -- actions (worker) ------------------------------------------------------------------------

    def _add_to_action(self, root_id: int, call: Mapping[str, Any]) -> None:
        actions = self._actions
        action = actions.get(root_id)
        if action is None:
            if len(actions) >= self._max_tracked:  # roots that never end: forget the oldest
                actions.pop(next(iter(actions)))
                self.actions_dropped += 1
            action = actions[root_id] = _Action(call)
        total = call.get("total_cost")
        if total is None:
            action.unpriced += 1
        else:
            action.cost += total
            action.calls += 1

    def _finish_action(self, root_id: int) -> None:
        action = self._actions.pop(root_id, None)
        if action is None:
            return
        if action.unpriced:
            self.actions_unpriced += 1
            return
        self.actions_recorded += 1
        if self._on_action is not None:
            try:
                self._on_action(action.call, action.cost)
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("processor.on_action", exc)

    def _enrich(self, job: _Job) -> ReadableSpan | None:
        span = job.span
        # one private copy of the attributes: read by span_to_call, then extended into the
        # exported copy's (the call record keeps no reference to the dict itself)
        attrs = plain_attributes(span)
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
        if job.agent is not None and AGENT_ATTRIBUTE not in attrs:
            extra[AGENT_ATTRIBUTE] = job.agent
        if job.tool is not None and TOOL_ATTRIBUTE not in attrs:
            extra[TOOL_ATTRIBUTE] = job.tool
        if extra:
            attrs.update(extra)
        mapping = span_mapping(span, attrs)
        try:
            call = dialects.span_to_call(mapping, keep_content=self._keep_content)
        except dialects.SpanError as exc:
            _guard.swallow("processor.span_to_call", exc)
            if job.root_id is not None and job.ancestor_id is None:
                self._add_to_action(job.root_id, {})  # a call of unknown cost
            return with_attributes(span, {**extra, PRICE_STATUS: "invalid_usage"}, attrs)
        if job.ancestor_id is not None:
            if job.ancestor_id not in self._child_calls and _has_usage(call):
                self._child_calls[job.ancestor_id] = call
            extra[PRICED_SPAN_ID] = f"{job.ancestor_id:016x}"
            self.calls_deferred += 1
            return with_attributes(span, extra, attrs)
        if adopted is not None and not _has_usage(call):
            _adopt_usage(call, adopted)
        if adopted is not None and call.get("service_tier") is None:
            call["service_tier"] = adopted.get("service_tier")  # often only the SDK's span says
        scope = span.instrumentation_scope
        call[twins.EMITTER] = twins.emitter(scope.name if scope is not None else None, span.name)
        twin = self._recent.find(call)
        if twin is not None:  # a twin in another trace (or not in progress) was priced already
            extra[PRICED_SPAN_ID] = str(twin.get("span_id"))
            extra[PRICED_TRACE_ID] = str(twin.get("trace_id"))
            self.calls_deferred += 1
            return with_attributes(span, extra, attrs)
        if not _has_usage(call) and not call.get("is_error") and self._twin_wait > 0:
            self._park(job, span, call, extra)
            return None
        held = self._take_parked(call) if _has_usage(call) else None
        if held is not None:
            for field in _FROM_HELD_TWIN:
                if call.get(field) is None:
                    call[field] = held.call.get(field)
        out = self._price(job, span, call, extra, attrs)
        self._recent.remember(call)
        if held is not None:
            self.calls_deferred += 1
            self._forward(
                with_attributes(
                    held.span,
                    {
                        **held.extra,
                        PRICED_SPAN_ID: str(call.get("span_id")),
                        PRICED_TRACE_ID: str(call.get("trace_id")),
                    },
                )
            )
        return out

    def _price(
        self,
        job: _Job,
        span: ReadableSpan,
        call: dict[str, Any],
        extra: dict[str, Any],
        attrs: dict[str, Any] | None = None,
    ) -> ReadableSpan:
        """Price one call, count it (metrics, its action) and return the span to forward
        (``attrs``: the span's attributes already copied, as ``with_attributes`` takes them)."""
        call["start_time"] = _utc(call.get("start_time"))
        costs = self._pricer(call)
        extra.update(cost_attributes(costs))
        call.update(costs)
        self.calls_priced += 1
        if job.root_id is not None:
            self._add_to_action(job.root_id, call)
        if self._on_call is not None:
            scope = span.instrumentation_scope
            try:
                self._on_call(call, scope.name if scope is not None else "")
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("processor.on_call", exc)
        return with_attributes(span, extra, attrs)

    # -- twins held back (worker) ---------------------------------------------------------------

    def _park(
        self, job: _Job, span: ReadableSpan, call: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        """Hold a span without usage (and without error) for up to ``twin_wait_millis``: a
        twin that carries the call's usage (Logfire's streaming log span, the SDK's span of a
        stream an instrumentation reports without usage) may still come. Bounded: when full,
        the oldest held span is released first."""
        if len(self._parked) >= self._max_tracked:
            self._release_one(next(iter(self._parked)))
        deadline = time.monotonic() + self._twin_wait
        self._parked[job.span_id] = _Parked(deadline, job, span, call, extra)

    def _take_parked(self, call: Mapping[str, Any]) -> _Parked | None:
        """The nearest held span that is a twin of ``call``, removed from the held ones."""
        best, best_distance = None, None
        for span_id, held in list(self._parked.items()):  # an app thread may add (inline work)
            if twins.are_twins(call, held.call):
                gap = twins.distance(call, held.call)
                if best_distance is None or gap < best_distance:
                    best, best_distance = span_id, gap
        return None if best is None else self._parked.pop(best, None)

    def _release_one(self, span_id: int) -> None:
        held = self._parked.pop(span_id, None)
        if held is None:
            return
        try:
            job = held.job
            if job.root_id is not None and job.root_id not in self._actions:
                job.root_id = None  # its action closed meanwhile: counted per call only
            out = self._price(job, held.span, held.call, held.extra)
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("processor.release", exc)
            out = held.span
        self._forward(out)

    def _release_parked(self, *, force: bool) -> None:
        """Price and forward held spans whose wait is over (all of them when ``force``)."""
        if not self._parked:
            return
        now = time.monotonic()
        for span_id in [s for s, h in list(self._parked.items()) if force or h.deadline <= now]:
            self._release_one(span_id)

    def _park_timeout(self) -> float | None:
        """How long the idle worker may sleep: until the first held span's wait is over."""
        deadlines = [held.deadline for held in list(self._parked.values())]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())


# Fields a priced twin takes from the held span of the same call when it lacks them.
_FROM_HELD_TWIN = (
    "request_model",
    "model",
    "response_id",
    "conversation_id",
    "user_id",
    "prompt_name",
    "prompt_version",
    "prompt",
    "reasoning_effort",
    "action",
    "service_tier",
)


class _Parked:
    """A span held back by ``_park`` with what is needed to finish it later."""

    __slots__ = ("deadline", "job", "span", "call", "extra")

    def __init__(
        self,
        deadline: float,
        job: _Job,
        span: ReadableSpan,
        call: dict[str, Any],
        extra: dict[str, Any],
    ) -> None:
        self.deadline = deadline
        self.job = job
        self.span = span
        self.call = call
        self.extra = extra


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
            service_tier=call.get("service_tier"),
        )


def default_pricer() -> LazyPriceBook:
    """A pricer over the default price book (``$LLMTRACE_PRICES`` or the config's file)."""
    return LazyPriceBook()
