"""The cost processor's threading and action bookkeeping, with real SDK spans and real prices.

Spans are made by the OpenTelemetry SDK's tracer (what an instrumentation does), priced with
the bundled genai-prices data and recorded into real SDK metric instruments read back with
``InMemoryMetricReader``. No timing is asserted: a worker that is asleep for a minute is asleep.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtrace.otel import _guard
from llmtrace.otel.metrics import CostMetrics
from llmtrace.otel.processor import CostSpanProcessor, LazyPriceBook
from llmtrace.otel.settings import resolve

M = 1_000_000
# gpt-4o list prices: $2.50 input, $1.25 cached input, $10 output per million tokens
CALL_COST = (125 * 2.50 + 1024 * 1.25 + 50 * 10.0) / M
START = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
         "gen_ai.request.model": "gpt-4o"}  # fmt: skip
USAGE = {"gen_ai.usage.input_tokens": 1149, "gen_ai.usage.cache_read.input_tokens": 1024,
         "gen_ai.usage.output_tokens": 50}  # fmt: skip


class Rig:
    """A tracer provider with the cost processor, an in-memory exporter and real metrics."""

    def __init__(
        self, prices: LazyPriceBook, *, also: tuple[SpanProcessor, ...] = (), **options: Any
    ) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        metrics = CostMetrics(self.meters, resolve({}))
        self.processor = CostSpanProcessor(
            [SimpleSpanProcessor(self.exporter), *also],
            pricer=prices,
            on_call=metrics.record,
            on_action=metrics.record_action,
            **options,
        )
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("test")

    def call(self, name: str = "chat gpt-4o", **kwargs: Any) -> Any:
        """Start an LLM span (as an instrumentation does); the caller ends it."""
        span = self.tracer.start_span(name, attributes=START, **kwargs)
        span.set_attributes(USAGE)
        return span

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            dp
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for dp in m.data.data_points
        ]

    def priced(self) -> list[Any]:
        return [
            s for s in self.exporter.get_finished_spans() if "gen_ai.usage.cost" in s.attributes
        ]


@pytest.fixture
def rig(prices: LazyPriceBook) -> Iterator[Rig]:
    _guard.reset()
    made = Rig(prices)
    yield made
    made.provider.shutdown()
    made.meters.shutdown()
    assert _guard.error_counts() == {}


def test_on_end_only_queues_and_flush_delivers(prices: LazyPriceBook) -> None:
    """The app's thread prices nothing: with the worker asleep, nothing is downstream yet."""
    rig = Rig(prices, batch_delay_millis=60_000, max_queue_size=1000)
    try:
        for _ in range(3):
            rig.call().end()
        assert rig.exporter.get_finished_spans() == ()  # queued, not processed on this thread
        assert rig.processor.force_flush(10_000)
        assert len(rig.priced()) == 3
        assert all(
            s.attributes["gen_ai.usage.cost"] == pytest.approx(CALL_COST) for s in rig.priced()
        )
    finally:
        rig.provider.shutdown()


class _HoldsTheWorker(SpanProcessor):
    """Downstream of the cost processor: blocks the span marked ``test.hold`` until released.

    The worker forwards spans downstream, so while it forwards that span it is busy and the
    queue fills deterministically, whatever the machine's load or the interpreter's switching.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.attributes.get("test.hold"):
            self.entered.set()
            self.release.wait(30)


def test_a_full_queue_falls_back_to_inline_work(prices: LazyPriceBook) -> None:
    holder = _HoldsTheWorker()  # after the exporter: the held span is exported before it blocks
    rig = Rig(prices, also=(holder,), batch_delay_millis=60_000, max_queue_size=2)
    try:
        held = rig.call()  # named as the others are: a different name would make it their twin
        held.set_attribute("test.hold", True)
        held.end()
        rig.processor._hurry.set()  # do not wait a minute for the batch to gather
        assert holder.entered.wait(30), "the worker never reached the held span"
        for _ in range(5):
            rig.call().end()
        # the worker is busy: two wait in the queue, the three that found it full were priced
        # inline on this thread (plus the held span, exported before it blocked)
        assert len([s for s in rig.priced() if not s.attributes.get("test.hold")]) == 3
        holder.release.set()
        assert rig.processor.force_flush(10_000)
        assert len([s for s in rig.priced() if not s.attributes.get("test.hold")]) == 5
    finally:
        holder.release.set()
        rig.provider.shutdown()


def test_action_closes_when_its_root_ends(rig: Rig) -> None:
    with rig.tracer.start_as_current_span("checkout"):
        rig.call().end()
        with rig.tracer.start_as_current_span("step"):
            rig.call().end()
        assert rig.processor.force_flush(10_000)
        assert rig.points("llmtrace.action.cost") == []  # the root is still running
    assert rig.processor.force_flush(10_000)
    (point,) = rig.points("llmtrace.action.cost")
    assert point.attributes["llmtrace.action"] == "checkout"
    assert point.count == 1 and point.sum == pytest.approx(2 * CALL_COST, rel=1e-9)


def test_a_call_ending_after_its_root_belongs_to_no_action(rig: Rig) -> None:
    """Fire-and-forget: the call outlives the request that started it."""
    root = rig.tracer.start_span("request")
    from opentelemetry import trace

    late = rig.call(context=trace.set_span_in_context(root))
    root.end()
    late.end()
    assert rig.processor.force_flush(10_000)
    assert len(rig.priced()) == 1  # still priced and counted per call
    assert rig.points("llmtrace.action.cost") == []
    assert rig.points("gen_ai.usage.cost")[0].count == 1


def test_nested_llm_spans_of_one_call_count_once_in_the_action(rig: Rig) -> None:
    """An SDK's own span inside the instrumentation's: one call, so one cost in the action."""
    tracer = rig.tracer
    with (
        tracer.start_as_current_span("answer"),
        tracer.start_as_current_span("chat gpt-4o", attributes=START) as outer,
    ):
        outer.set_attributes(USAGE)
        rig.call("sdk span").end()
    assert rig.processor.force_flush(10_000)
    (point,) = rig.points("llmtrace.action.cost")
    assert point.sum == pytest.approx(CALL_COST, rel=1e-9)
    assert rig.processor.calls_deferred == 1


def test_an_llm_span_that_is_its_own_root_is_its_own_action(rig: Rig) -> None:
    rig.call().end()
    assert rig.processor.force_flush(10_000)
    (point,) = rig.points("llmtrace.action.cost")
    assert point.attributes["llmtrace.action"] == "chat gpt-4o"
    assert point.sum == pytest.approx(CALL_COST, rel=1e-9)


def test_roots_that_never_end_cannot_grow_the_action_table(prices: LazyPriceBook) -> None:
    rig = Rig(prices, max_tracked=3)
    try:
        roots = [rig.tracer.start_span(f"open {i}") for i in range(6)]
        from opentelemetry import trace

        for root in roots:
            rig.call(context=trace.set_span_in_context(root)).end()
        assert rig.processor.force_flush(10_000)
        assert len(rig.processor._actions) <= 3
        assert len(rig.processor._live) <= 3
    finally:
        rig.provider.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_worker(rig: Rig) -> None:
    rig.call().end()
    assert rig.processor.force_flush(10_000)  # the parent's worker is running
    pid = os.fork()
    if pid == 0:  # the child: a fresh worker must price its calls
        code = 1
        try:
            rig.exporter.clear()
            rig.call().end()
            ok = rig.processor.force_flush(10_000)
            code = 0 if ok and len(rig.priced()) == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
