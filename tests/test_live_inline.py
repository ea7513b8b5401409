"""The processor's inline mode (``inline_when_idle``, ``LLMTRACE_PROCESSING=inline``).

An idle processor works an LLM span on the app's thread inside ``end()``; a span that ends
while another is queued or being worked is queued behind it; the first price load stays on the
worker; and both modes give the same exported spans, call records and metric points.

Deterministic: threads are held on ``threading.Event``s (a downstream processor that blocks
while it is handed a marked span), never on sleeps, and no duration is asserted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from recorded import fixture_paths, readable_spans

from llmtrace.otel import _guard
from llmtrace.otel.metrics import CostMetrics
from llmtrace.otel.processor import CostSpanProcessor, LazyPriceBook
from llmtrace.otel.settings import resolve

M = 1_000_000
CALL_COST = (125 * 2.50 + 1024 * 1.25 + 50 * 10.0) / M  # gpt-4o list prices
START = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
         "gen_ai.request.model": "gpt-4o"}  # fmt: skip
USAGE = {"gen_ai.usage.input_tokens": 1149, "gen_ai.usage.cache_read.input_tokens": 1024,
         "gen_ai.usage.output_tokens": 50}  # fmt: skip
T0 = int(datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp() * 1e9)


class _Counting(IdGenerator):
    """Span and trace ids 1, 2, 3...: two runs of the same spans get the same ids."""

    def __init__(self) -> None:
        self._next = 0

    def generate_span_id(self) -> int:
        self._next += 1
        return self._next

    def generate_trace_id(self) -> int:
        self._next += 1
        return self._next


class _Holds(SpanProcessor):
    """Downstream: blocks whichever thread hands it the span marked ``test.hold`` until
    ``release`` is set (the app's thread when that span is worked inline, else the worker)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.attributes.get("test.hold"):
            self.entered.set()
            self.release.wait(30)


class Rig:
    """Tracer provider with the cost processor, an in-memory exporter, real metrics; the
    priced call records are kept as the metrics are handed them."""

    def __init__(self, prices: Any, *, also: tuple[SpanProcessor, ...] = (), **options: Any):
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.metrics = CostMetrics(self.meters, resolve({}))
        self.records: list[tuple[dict[str, Any], str]] = []
        self.recorded_on: list[str] = []
        self.processor = CostSpanProcessor(
            [SimpleSpanProcessor(self.exporter), *also],
            pricer=prices,
            on_calls=self._calls,
            on_actions=self.metrics.record_actions,
            **options,
        )
        self.provider = TracerProvider(id_generator=_Counting())
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("test")

    def _calls(self, batch: list[Any]) -> None:
        self.recorded_on.append(threading.current_thread().name)
        self.records.extend((dict(call), scope) for call, scope in batch)
        self.metrics.record_many(batch)

    def call(self, number: int | None = None, **kwargs: Any) -> Any:
        span = self.tracer.start_span("chat gpt-4o", attributes=START, **kwargs)
        span.set_attributes(USAGE)
        if number is not None:
            span.set_attribute("test.n", number)
        return span

    def priced(self) -> list[ReadableSpan]:
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if "gen_ai.usage.cost" in (s.attributes or {})]

    def numbers(self) -> list[int]:
        return [s.attributes["test.n"] for s in self.priced() if "test.n" in s.attributes]

    def points(self) -> list[tuple[str, Any, Any, Any, Any]]:
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for dp in m.data.data_points:
                        value = getattr(dp, "value", None)
                        counts = tuple(getattr(dp, "bucket_counts", ()) or ())
                        total = getattr(dp, "sum", value)
                        out.append((m.name, dict(dp.attributes), total, counts,
                                    getattr(dp, "count", None)))  # fmt: skip
        return sorted(out, key=repr)

    def close(self) -> None:
        self.provider.shutdown()
        self.meters.shutdown()


@pytest.fixture
def guard() -> Iterator[None]:
    _guard.reset()
    yield
    assert _guard.error_counts() == {}


def test_an_idle_span_is_priced_before_end_returns(prices: LazyPriceBook, guard: None) -> None:
    """Nothing queued, nothing worked, prices loaded: priced and downstream before ``end()``
    returns (the worker sleeps for a minute: only this thread can have done it); the metrics
    are recorded by the worker, not on the app's thread."""
    rig = Rig(prices, batch_delay_millis=60_000, inline_when_idle=True)
    try:
        rig.call(0).end()
        assert rig.numbers() == [0]  # no flush yet
        assert rig.priced()[0].attributes["gen_ai.usage.cost"] == pytest.approx(CALL_COST)
        assert rig.records == []  # metrics wait for the worker's batch
        assert rig.processor.force_flush(10_000)
        assert rig.recorded_on == ["llmtrace-costs"]
        (cost,) = [p for p in rig.points() if p[0] == "gen_ai.usage.cost"]
        assert cost[4] == 1 and cost[2] == pytest.approx(CALL_COST, rel=1e-9)
    finally:
        rig.close()


def test_worker_mode_leaves_the_app_thread_alone(prices: LazyPriceBook, guard: None) -> None:
    """The default (``inline_when_idle=False``): nothing is priced until the worker runs."""
    rig = Rig(prices, batch_delay_millis=60_000)
    try:
        rig.call(0).end()
        assert rig.numbers() == []
        assert rig.processor.force_flush(10_000)
        assert rig.numbers() == [0]
    finally:
        rig.close()


def test_spans_ending_while_the_worker_works_queue_behind_it(
    prices: LazyPriceBook, guard: None
) -> None:
    """The worker is held inside a span's work: spans ending meanwhile are queued (not worked
    on the app's thread ahead of it), ``end()`` returns, and they are priced in order."""
    holder = _Holds()
    rig = Rig(prices, also=(holder,), batch_delay_millis=60_000, inline_when_idle=True)
    try:
        rig.processor._inline_when_idle = False  # the first span goes to the worker
        held = rig.call(0)
        held.set_attribute("test.hold", True)
        held.end()
        rig.processor._inline_when_idle = True
        rig.processor._hurry.set()  # do not wait a minute for the batch to gather
        assert holder.entered.wait(30), "the worker never reached the held span"
        for number in (1, 2, 3):
            rig.call(number).end()
        assert rig.numbers() == [0]  # only the held one (exported before it blocked)
        holder.release.set()
        assert rig.processor.force_flush(10_000)
        assert rig.numbers() == [0, 1, 2, 3]
        rig.call(4).end()  # idle again: inline
        assert rig.numbers() == [0, 1, 2, 3, 4]
    finally:
        holder.release.set()
        rig.close()


def test_a_span_waiting_in_the_queue_stays_ahead(prices: LazyPriceBook, guard: None) -> None:
    """A span queued and not yet reached (the worker gathering its batch): a span ending now
    is queued behind it, not worked inline ahead of it, though no thread is working one."""
    rig = Rig(prices, batch_delay_millis=60_000, inline_when_idle=True)
    try:
        rig.processor._inline_when_idle = False
        rig.call(0).end()  # queued; the worker waits a minute for the batch
        rig.processor._inline_when_idle = True
        rig.call(1).end()
        assert rig.numbers() == []
        assert rig.processor.force_flush(10_000)
        assert rig.numbers() == [0, 1]
    finally:
        rig.close()


def test_spans_ending_while_another_app_thread_works_one_queue_behind_it(
    prices: LazyPriceBook, guard: None
) -> None:
    """One app thread is inside its span's inline work (held downstream): another thread's
    spans do not wait for it and are not worked ahead of it; the worker prices them after it,
    in the order they ended."""
    holder = _Holds()
    rig = Rig(prices, also=(holder,), batch_delay_millis=60_000, inline_when_idle=True)

    def first() -> None:
        held = rig.call(0)
        held.set_attribute("test.hold", True)
        held.end()

    thread = threading.Thread(target=first, name="app-2")
    try:
        thread.start()
        assert holder.entered.wait(30), "the other thread never worked its span"
        for number in (1, 2, 3):
            rig.call(number).end()  # returns: the lock is only tried
        assert len(rig.processor._queue) == 3
        assert rig.numbers() == [0]
        holder.release.set()
        thread.join(30)
        rig.processor._hurry.set()
        assert rig.processor.force_flush(10_000)
        assert rig.numbers() == [0, 1, 2, 3]
    finally:
        holder.release.set()
        thread.join(30)
        rig.close()


def test_the_first_call_leaves_loading_the_prices_to_the_worker(guard: None) -> None:
    """Price data not loaded yet: the span is queued and the worker loads the data; once it is
    loaded, an idle processor works spans inline."""
    book = LazyPriceBook()
    loaders: list[str] = []
    get = book.get

    def watched_get() -> Any:
        if book._book is None:
            loaders.append(threading.current_thread().name)
        return get()

    book.get = watched_get  # type: ignore[method-assign]
    rig = Rig(book, batch_delay_millis=60_000, inline_when_idle=True)
    try:
        rig.call(0).end()
        assert rig.numbers() == []  # queued: the worker sleeps for a minute
        assert rig.processor.force_flush(10_000)
        assert rig.numbers() == [0]
        assert loaders == ["llmtrace-costs"]
        rig.call(1).end()
        assert rig.numbers() == [0, 1]  # inline now, no flush
    finally:
        rig.close()


def _scenario(rig: Rig) -> None:
    """Actions, nested LLM spans of one call, a call outliving its root, an agent's tool,
    a span without usage held for a twin: at fixed times, so two runs give equal records."""
    tracer, t = rig.tracer, T0
    for request in range(3):
        root = tracer.start_span(f"checkout {request % 2}", start_time=t)
        ctx = trace.set_span_in_context(root)
        agent = tracer.start_span(
            "invoke_agent planner",
            context=ctx,
            start_time=t + 1,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"},
        )
        actx = trace.set_span_in_context(agent)
        tool = tracer.start_span(
            "execute_tool search",
            context=actx,
            start_time=t + 2,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        )
        tool.end(end_time=t + 3)
        outer = rig.call(context=actx, start_time=t + 4)
        outer.set_attribute("gen_ai.response.id", f"chatcmpl-{request}")
        inner = tracer.start_span(
            "sdk chat", context=trace.set_span_in_context(outer), start_time=t + 5,
            attributes=START,
        )  # fmt: skip
        inner.set_attributes(USAGE)
        inner.end(end_time=t + 6)
        outer.end(end_time=t + 7)
        late = rig.call(context=ctx, start_time=t + 8)
        agent.end(end_time=t + 9)
        root.end(end_time=t + 10)
        late.end(end_time=t + 11)  # after its root: no action
        t += 1_000_000
    no_usage = tracer.start_span("chat gpt-4o", attributes=START, start_time=t)
    no_usage.end(end_time=t + 1)  # held for a twin until the flush


def _outcome(prices: LazyPriceBook, **options: Any) -> tuple[Any, Any, Any]:
    rig = Rig(prices, batch_delay_millis=60_000, **options)
    try:
        _scenario(rig)
        assert rig.processor.force_flush(10_000)
        spans = [
            (s.name, s.context.span_id, dict(s.attributes or {}))
            for s in rig.exporter.get_finished_spans()
        ]
        return spans, rig.records, rig.points()
    finally:
        rig.close()


def test_both_modes_give_the_same_spans_records_and_metrics(
    prices: LazyPriceBook, guard: None
) -> None:
    worker = _outcome(prices)
    inline = _outcome(prices, inline_when_idle=True)
    # exported spans and their attributes; a span that is not an LLM call goes downstream at
    # once in both modes, the LLM spans in the order they ended (after those, in worker mode)
    assert sorted(worker[0], key=repr) == sorted(inline[0], key=repr)
    llm = [[s for s in spans if "gen_ai.provider.name" in s[2]] for spans in (worker[0], inline[0])]
    assert llm[0] == llm[1]
    assert worker[1] == inline[1]  # call records handed to the metrics, in order
    assert worker[2] == inline[2]  # metric points
    names = {name for name, *_ in worker[2]}
    assert {"gen_ai.usage.cost", "llmtrace.action.cost"} <= names
    priced = [a for _, _, a in worker[0] if "gen_ai.usage.cost" in a]
    assert len(priced) == 6 and len(worker[1]) == 7  # 6 calls + the held one, at the flush
    assert any("llmtrace.priced_span_id" in a for _, _, a in worker[0])  # deferred inner spans


def _replayed(path: Any, **options: Any) -> tuple[list[Any], list[Any], int]:
    memory = InMemorySpanExporter()
    records: list[Any] = []
    processor = CostSpanProcessor(
        [SimpleSpanProcessor(memory)],
        pricer=LazyPriceBook(),
        on_calls=lambda batch: records.extend(dict(call) for call, _ in batch),
        batch_delay_millis=60_000,
        **options,
    )
    processor._pricer.get()
    for span in readable_spans(path):
        processor.on_end(span)
    before = len(memory.get_finished_spans())  # inline: the LLM spans are there already
    processor.shutdown()
    return records, [dict(s.attributes or {}) for s in memory.get_finished_spans()], before


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_recorded_library_spans_give_the_same_records_in_both_modes(path: Any) -> None:
    worker_records, worker_spans, worker_before = _replayed(path)
    inline_records, inline_spans, inline_before = _replayed(path, inline_when_idle=True)
    assert worker_before < len(worker_spans)  # the worker slept until the shutdown
    assert inline_before > worker_before  # ... where the app's thread worked them at once
    assert inline_records == worker_records  # in order
    # spans that are not LLM calls go downstream at once in both modes, ahead of the LLM
    # spans in worker mode: the same spans, attribute for attribute
    assert sorted(inline_spans, key=repr) == sorted(worker_spans, key=repr)


def test_processing_setting_reaches_the_processor(tmp_path: Any) -> None:
    from llmtrace.otel.settings import resolve as resolve_settings
    from llmtrace.otel.setup import init

    assert resolve_settings({}).processing == "worker"
    assert resolve_settings({"LLMTRACE_PROCESSING": "Inline"}).processing == "inline"
    assert resolve_settings({"LLMTRACE_PROCESSING": "inline"}, processing="worker").processing == (
        "worker"
    )
    _guard.reset()
    assert resolve_settings({"LLMTRACE_PROCESSING": "sideways"}).processing == "worker"
    assert set(_guard.error_counts()) == {"settings:LLMTRACE_PROCESSING"}
    _guard.reset()
    with pytest.raises(ValueError, match="processing"):
        resolve_settings({}, processing="sideways")
    for mode, inline in (("inline", True), ("worker", False)):
        handle = init(
            exporters="store",
            store=tmp_path,
            instrument="none",
            metrics=False,
            set_global=False,
            processing=mode,
        )
        assert handle is not None
        try:
            assert handle.processor._inline_when_idle is inline
        finally:
            handle.shutdown()


def test_an_error_in_inline_work_never_reaches_the_app(prices: LazyPriceBook) -> None:
    """Whatever fails while a span is worked on the app's thread is swallowed and counted;
    ``end()`` returns and the next span is worked again."""
    _guard.reset()
    rig = Rig(prices, batch_delay_millis=60_000, inline_when_idle=True)
    work = rig.processor._process
    try:
        rig.processor._process = lambda job: 1 / 0  # type: ignore[method-assign]
        rig.call(0).end()
        assert _guard.error_counts() == {"processor.inline": 1}
        rig.processor._process = work  # type: ignore[method-assign]
        rig.call(1).end()
        assert rig.numbers() == [1]
    finally:
        rig.close()
        _guard.reset()
