"""The cost span processor: prices each LLM span and hands exporters an enriched copy.

Why a wrapper: by the time ``SpanProcessor.on_end`` runs, an SDK span is read-only, so setting
attributes there never reaches the exporter. ``CostSpanProcessor`` therefore *owns* the
downstream processors (usually a ``BatchSpanProcessor`` per exporter) and gives them, for each
LLM span, a copy carrying the original attributes plus the cost attributes; every other span is
passed through untouched. This works for spans from any instrumentation (official GenAI,
OpenLLMetry, OpenInference, OpenLIT, the ``anthropic`` SDK's own spans): ``llmtrace.dialects``
reads them all.

The attributes added to a priced span are listed in ``llmtrace.otel.spans``. This module is the
span processor and its scheduling (the app's threads, the worker, batches, flushes); the work
done on each LLM span when its turn comes is ``llmtrace.otel.span_work.SpanWork``, a mixin of it.

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

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from llmtrace import dialects, twins
from llmtrace.otel import _guard
from llmtrace.otel.calls import CallMapper
from llmtrace.otel.jobs import Action, ActionEnd, Flush, Job, LiveSpan, Parked
from llmtrace.otel.pricer import LazyPriceBook, default_pricer
from llmtrace.otel.span_work import SpanWork
from llmtrace.otel.spans import (
    ACTION,
    AGENT_ATTRIBUTE,
    AGENT_NAMES,
    COST_ATTRIBUTES,
    LANGFUSE_COST_DETAILS,
    PRICE_OK,
    PRICE_SOURCE,
    PRICE_STATUS,
    PRICED_SPAN_ID,
    PRICED_TRACE_ID,
    REQUEST_COST,
    TOKEN_FIELDS,
    TOOL_ATTRIBUTE,
    TOTAL_COST,
    attributes_to_read,
    cost_attributes,
    looks_like_llm_at_start,
    maybe_tool,
    plain_attributes,
    span_mapping,
    with_attributes,
)

# re-exported: the names other modules and tests import from here
__all__ = [
    "ACTION",
    "AGENT_ATTRIBUTE",
    "COST_ATTRIBUTES",
    "LANGFUSE_COST_DETAILS",
    "PRICED_SPAN_ID",
    "PRICED_TRACE_ID",
    "PRICE_OK",
    "PRICE_SOURCE",
    "PRICE_STATUS",
    "REQUEST_COST",
    "TOKEN_FIELDS",
    "TOOL_ATTRIBUTE",
    "TOTAL_COST",
    "CostSpanProcessor",
    "LazyPriceBook",
    "cost_attributes",
    "default_pricer",
    "looks_like_llm_at_start",
    "plain_attributes",
    "span_mapping",
    "with_attributes",
]

_MAX_HOPS = 64
# How much work the live worker does between offers of the interpreter lock to the app. Measured
# on a quiet machine (bench_live_spans.py, three pairs, load 1.0): after every span +167/+217/+173
# us CPU per call and the app's p99 at 1.41/1.80/1.27x the bare instrumentation's; every 0.5 ms
# +122/+107/+129 us and 1.34/1.36/1.14x.
_YIELD_AFTER_S = 0.0005

Pricer = Callable[[Mapping[str, Any]], Mapping[str, Any]]
CallSink = Callable[[Mapping[str, Any], str], None]


def _ready(pricer: Any) -> bool:
    """Whether pricing a call now cannot wait for price data to load (``LazyPriceBook``)."""
    return getattr(pricer, "loaded", True) is not False


ActionSink = Callable[[Mapping[str, Any], float], None]
CallsSink = Callable[[list[tuple[Mapping[str, Any], str]]], None]
ActionsSink = Callable[[list[tuple[Mapping[str, Any], float]]], None]
# at most this many priced calls (or actions) wait for a batch sink (``on_calls``) at a time
_RECORD_BATCH = 256


class CostSpanProcessor(SpanWork, SpanProcessor):
    """Wraps downstream span processors; gives them cost-enriched copies of LLM spans.

    ``pricer`` maps a call record to its cost fields (``PriceBook.price_one`` semantics);
    ``on_call`` (e.g. ``CostMetrics.record``) is called once per priced call with the priced
    record and the span's instrumentation scope; ``on_action`` (e.g.
    ``CostMetrics.record_action``) once per completed action instance with its first call and
    the sum of its calls' costs. ``on_calls`` and ``on_actions`` take the same as lists, once
    per batch of the worker (or per span worked inline), so metrics can take a batch's values
    in one go (``CostMetrics.record_many``; no later than the worker's batch or a flush).
    All are optional so the processor can be used on its own:
    ``provider.add_span_processor(CostSpanProcessor([BatchSpanProcessor(exp)]))``.

    **Threads.** The app's thread does only dictionary work: ``on_start`` tracks the span,
    ``on_end`` finds the LLM ancestor while it is still in progress and appends the span to a
    bounded deque, with no lock and no wake-up per span (only the first span of a batch sets an
    event). Reading attributes, pricing, fingerprinting, copying and metrics happen on one
    background worker that gathers a batch for ``batch_delay_millis`` (sooner when the queue is
    a quarter full or a flush waits) and works through it in one go: waking a thread per span
    made the app wait for the interpreter lock on every call (bench/bench_overhead.py). Between
    spans the worker offers the lock back (``sleep(0)``) every half millisecond of work, so an
    app thread that wants it waits for at most that, not for the batch (the app's p99 latency). A full queue falls
    back to inline work, never to blocking or dropping; ``background=False`` always works
    inline. ``force_flush`` waits until the worker has reached everything queued before it,
    then flushes downstream.

    **Inline when idle** (``inline_when_idle=True``; ``LLMTRACE_PROCESSING=inline``). The
    span is worked right in ``on_end``, on the app's thread, when nothing is ahead of it:
    nothing queued, no other thread working an item (``_busy``), the price data loaded.
    Otherwise it is queued for the worker as above, so spans are still worked in the order
    they ended and the app never waits for llmtrace (the first call's price load, another
    thread's item, a busy worker all send the span to the queue). Why: the worker competes
    with the app's threads for the interpreter lock, and an app thread that wants it back
    (after each socket read or write of its HTTP client) waits for the worker's next offer;
    worked inline, the same tens of microseconds are spread over every call instead of
    landing on the calls that overlap a batch. Metrics are still recorded by the worker
    once per batch (``on_calls``), for spans worked inline too, off the app's request.

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
        on_calls: CallsSink | None = None,
        on_actions: ActionsSink | None = None,
        keep_content: bool = False,
        max_tracked: int = 100_000,
        background: bool = True,
        max_queue_size: int = 4096,
        batch_delay_millis: float = 200.0,
        twin_wait_millis: float = 60_000.0,
        inline_when_idle: bool = False,
    ) -> None:
        self._downstream: tuple[SpanProcessor, ...] = (
            (downstream,) if isinstance(downstream, SpanProcessor) else tuple(downstream)
        )
        self._pricer = pricer or default_pricer()
        self._on_call = on_call
        self._on_action = on_action
        # batch sinks (``CostMetrics.record_many``): calls and actions wait in these deques
        # until the end of the worker's batch (or of an inline span), then go in one call
        self._on_calls = on_calls
        self._on_actions = on_actions
        self._calls_done: deque[tuple[Mapping[str, Any], str]] = deque()
        self._actions_done: deque[tuple[Mapping[str, Any], float]] = deque()
        self._keep_content = keep_content
        self._to_call = CallMapper(keep_content=keep_content)
        # hand priced spans' rows to the store exporter (``calls.call_row``) only when one is
        # downstream: the rows cost the worker ~1 us a call, and save that exporter ~9
        self._call_rows = not keep_content and _takes_call_rows(self._downstream)
        self._max_tracked = max_tracked
        self._live: dict[int, LiveSpan] = {}
        # per agent run (its invoke_agent span, else the local root): the tool that ended last
        # and whose result no call has read yet (app thread only, like ``_live``)
        self._tools: dict[int, str] = {}
        self._child_calls: dict[int, dict[str, Any]] = {}  # worker only
        self._actions: dict[int, Action] = {}  # worker only
        self._prompts: dict[int, tuple[Any, Any, Any]] = {}
        self._recent = twins.RecentCalls()  # worker only
        self._parked: dict[int, Parked] = {}  # worker only
        self._twin_wait = twin_wait_millis / 1000
        self._background = background
        self._inline_when_idle = inline_when_idle
        self._prices_ready = False  # set once the pricer says its data is loaded
        # held by whoever works an item (the worker, or an app thread working one inline
        # when idle): one at a time, in the order the items came
        self._busy = threading.Lock()
        self._max_queue = max_queue_size
        self._hurry_at = max(1, max_queue_size // 4)
        self._delay = batch_delay_millis / 1000
        self._queue: deque[Job | ActionEnd | Flush] = deque()
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
        if item is None or type(item) is ActionEnd:
            self._forward(span)  # not an LLM span: downstream as it is, now
            if item is None:
                return
        if self._inline_when_idle and self._background and self._run_if_idle(item):
            return
        if not (self._background and self._enqueue(item)):
            self._run(item)
            self._record_done()

    def shutdown(self) -> None:
        self._drain(30_000)
        # a worker stuck downstream must not hold the app's exit: after a while, without it
        busy = self._busy.acquire(timeout=5)
        try:
            self._release_parked(force=True)  # inline when there was no worker (or it is gone)
        finally:
            if busy:
                self._busy.release()
        self._record_done()
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
        self._record_done()  # worked inline and not recorded yet (no worker, or it is gone)
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
        attrs = attributes_to_read(span)
        if attrs and (AGENT_NAMES[0] in attrs or AGENT_NAMES[1] in attrs):
            own, _ = dialects.agent_and_tool(attrs)
            if own is not None:
                agent, run = own, span_id
        live[span_id] = LiveSpan(
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

    def _prepare(self, span: ReadableSpan) -> Job | ActionEnd | None:
        """What must be decided while the span's ancestors are still in progress."""
        span_id = span.context.span_id
        live = self._live.pop(span_id, None)
        self._tools.pop(span_id, None)  # an agent run that ended: its unread tool goes too
        llm_at_start = live is not None and live.llm
        attrs = attributes_to_read(span) if not llm_at_start else None
        if attrs is not None and not dialects.is_llm_span(attrs):
            self._prompts.pop(span_id, None)
            if live is not None and live.run is not None and attrs and maybe_tool(attrs):
                _, tool = dialects.agent_and_tool(attrs)
                if tool is not None:  # the next call of this agent run consumes its result
                    self._tools[live.run] = tool
            if live is not None and live.calls:
                return ActionEnd(span_id)  # a local root with LLM calls under it
            return None
        if live is None:
            return Job(span, span_id, None, None, llm_at_start)
        root = live.root
        is_root = root == span_id
        if root is not None and not is_root:
            root_entry = self._live.get(root)
            if root_entry is None:
                root = None  # the root has ended: this call belongs to no open action
            else:
                root_entry.calls = True
        ancestor = self._llm_ancestor(live.parent)
        job = Job(span, span_id, live.root_name, ancestor, llm_at_start, root, is_root)
        job.agent = live.agent
        if live.run is not None and ancestor is None:
            job.tool = self._tools.pop(live.run, None)
        return job

    def _run_if_idle(self, item: Job | ActionEnd) -> bool:
        """Work ``item`` now on this thread if nothing is queued or being worked and the
        prices are loaded; False (nothing done) otherwise, and the caller queues it.

        Never waits: the lock is only tried. An item queued by another thread between the
        check and the lock stays ahead of this one (checked again under the lock). What was
        priced here is recorded in the metrics by the worker, woken once per batch delay,
        which also releases spans held for a twin when their wait is over."""
        if self._queue or not self._prices_ready and not self._check_prices():
            return False
        busy = self._busy
        if not busy.acquire(blocking=False):
            return False
        try:
            if self._queue:  # queued by another thread meanwhile: behind it, on the worker
                return False
            self._run(item)
        except Exception as exc:  # noqa: BLE001 - never into the app's end()
            _guard.swallow("processor.inline", exc)
        finally:
            busy.release()
        if not self._armed:
            if self._calls_done or self._actions_done or self._parked:
                if self._worker is None:
                    self._start_worker()
                self._armed = True
                self._wake.set()
        elif len(self._calls_done) >= self._hurry_at and not self._hurry.is_set():
            self._hurry.set()  # a fast app: record before the batch delay is over
        return True

    def _check_prices(self) -> bool:
        """Whether the pricer's data is loaded (remembered once it is: it stays loaded)."""
        self._prices_ready = _ready(self._pricer)
        return self._prices_ready

    def _enqueue(self, item: Job | ActionEnd) -> bool:
        """Hand ``item`` to the worker; False when it must be done inline (full or stopped)."""
        queue = self._queue
        size = len(queue)
        # an action's end is tiny and must stay behind its calls: it may overfill the queue
        limit = self._max_queue if type(item) is Job else 2 * self._max_queue
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
        self._busy = threading.Lock()  # another thread of the parent's may have held it
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._armed = False
        self._worker = None

    def _work(self) -> None:
        queue = self._queue
        busy = self._busy
        while True:
            self._wake.wait(self._park_timeout())
            if not self._stopping:
                self._hurry.wait(self._delay)  # let a batch gather (the lock is released)
            self._wake.clear()
            self._hurry.clear()
            self._armed = False  # from here on, the next append wakes us again
            last_yield = time.perf_counter()
            while queue:
                with busy:  # taken before the item leaves the queue: see _run_if_idle
                    if queue:
                        self._run(queue.popleft())
                if len(self._calls_done) >= _RECORD_BATCH:
                    self._record_done()
                # Hand the interpreter lock back every _YIELD_AFTER_S of work: an app thread
                # that wants it would otherwise wait for the whole batch (up to the 5 ms switch
                # interval per turn), which is what the app's p99 latency showed. Not after
                # every span: each sleep(0) that lets the app run costs a thread switch, ~40-60
                # us of CPU per call in all (bench/bench_live_handoff.py).
                now = time.perf_counter()
                if now - last_yield >= _YIELD_AFTER_S:
                    time.sleep(0)
                    last_yield = time.perf_counter()
            if self._parked:
                with busy:
                    self._release_parked(force=False)
            # what app threads priced inline may be more than a batch: hand it over in
            # batches, offering the interpreter lock between them
            while self._calls_done or self._actions_done:
                self._record_done(_RECORD_BATCH)
                if self._calls_done or self._actions_done:
                    time.sleep(0)
            if self._stopping:
                return

    def _drain(self, timeout_millis: float) -> bool:
        """Wait until the worker has handled everything queued so far."""
        worker = self._worker
        if worker is None or not worker.is_alive() or worker is threading.current_thread():
            return True
        marker = Flush()
        self._queue.append(marker)
        self._armed = True
        self._hurry.set()
        self._wake.set()
        return marker.done.wait(max(0.0, timeout_millis / 1000))

    def _run(self, item: Job | ActionEnd | Flush) -> None:
        kind = type(item)
        if kind is Job:
            self._process(item)  # type: ignore[arg-type]
        elif kind is ActionEnd:
            self._finish_action(item.root_id)  # type: ignore[union-attr]
        else:
            self._release_parked(force=True)  # a flush delivers everything, held spans too
            self._record_done()
            item.done.set()  # type: ignore[union-attr]

    def _record_done(self, limit: int = 0) -> None:
        """Hand the calls and actions priced since the last time to the batch sinks (at most
        ``limit`` of each when it is not 0).

        Any thread may call this (the worker after a batch, an app thread after inline work):
        each item is taken with one ``popleft``, so a call priced meanwhile on another thread
        goes in this batch or in that thread's next one, never twice or never."""
        for done, sink, where in (
            (self._calls_done, self._on_calls, "processor.on_call"),
            (self._actions_done, self._on_actions, "processor.on_action"),
        ):
            if not done or sink is None:
                continue
            batch = []
            try:
                if limit:
                    for _ in range(limit):
                        batch.append(done.popleft())
                else:
                    while True:
                        batch.append(done.popleft())
            except IndexError:
                pass
            try:
                sink(batch)
            except Exception as exc:  # noqa: BLE001
                _guard.swallow(where, exc)


def _takes_call_rows(downstream: Iterable[SpanProcessor]) -> bool:
    """Whether an exporter behind ``downstream`` (the SDK's simple or batch processor) reads
    the rows the worker hands over (``takes_call_rows``: the store exporter)."""
    for processor in downstream:
        exporter = getattr(processor, "span_exporter", None)
        if exporter is None:  # BatchSpanProcessor keeps it in its BatchProcessor
            exporter = getattr(getattr(processor, "_batch_processor", None), "_exporter", None)
        if getattr(exporter, "takes_call_rows", False) is True:
            return True
    return False
