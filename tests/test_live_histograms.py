"""FastHistogram gives the same histogram points as the SDK's public ``record``.

Two real SDK meter providers read by ``InMemoryMetricReader``s get the same values with the
same attribute sets, one through ``Histogram.record`` and one through ``FastHistogram``; the
collected points (attributes, count, sum, bucket counts, min, max) must be equal, including
where the fast path must step aside (views filtering keys, delta readers, cardinality
overflow, negative or non-finite values, exemplars).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View

from llmtrace.otel.histograms import FastHistogram

BUCKETS = (0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0)
SETS = [
    {"gen_ai.request.model": "gpt-4o", "service.name": "a", "llmtrace.action": "x"},
    {"gen_ai.request.model": "gpt-4o-mini", "service.name": "a", "llmtrace.action": "x"},
    {"gen_ai.request.model": "claude", "service.name": "b"},
]
VALUES = [0.0, 0.00002, 0.0004, 0.0031, 0.02, 0.5, 3.0, 0.0004, 1e-9, 0.00001]


def _points(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    data = reader.get_metrics_data()
    out = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    out.append(
                        (
                            metric.name,
                            tuple(sorted(point.attributes.items())),
                            point.count,
                            point.sum,
                            tuple(point.bucket_counts),
                            point.min,
                            point.max,
                            tuple(
                                sorted((e.value, e.span_id, e.trace_id) for e in point.exemplars)
                            ),
                        )
                    )
    return sorted(out, key=repr)


def _pair(**provider_options: Any) -> tuple[list[InMemoryMetricReader], Any, Any]:
    """Two providers built alike: (their readers, the public histogram, the fast one)."""
    readers, histograms = [], []
    _pair.providers = []  # type: ignore[attr-defined]
    for _ in range(2):
        reader_options = provider_options.pop("_reader", {})
        reader = InMemoryMetricReader(**reader_options)
        provider = MeterProvider(metric_readers=[reader], **provider_options)
        provider_options["_reader"] = reader_options
        _pair.providers.append(provider)  # type: ignore[attr-defined]
        meter = provider.get_meter("llmtrace")
        readers.append(reader)
        histograms.append(
            meter.create_histogram(
                "gen_ai.usage.cost", unit="USD", explicit_bucket_boundaries_advisory=BUCKETS
            )
        )
    return readers, histograms[0], FastHistogram(histograms[1])


def _feed(public: Any, fast: FastHistogram, values: list[float], sets: list[dict[str, str]]):
    for index, value in enumerate(values * 3):
        attrs = sets[index % len(sets)]
        public.record(value, dict(attrs))
        fast.record(value, attrs, tuple(attrs.items()))


def test_fast_path_is_taken_on_the_sdk_and_points_are_identical() -> None:
    readers, public, fast = _pair()
    assert isinstance(fast.histogram, SdkHistogram)
    _feed(public, fast, VALUES, SETS)
    assert fast.fast_records == len(VALUES) * 3 - len(SETS)  # all but each set's first
    assert _points(readers[0]) == _points(readers[1])
    # and again after a collection (cumulative: the kept aggregations go on counting)
    _feed(public, fast, VALUES[::-1], SETS)
    assert _points(readers[0]) == _points(readers[1])
    assert len(_points(readers[1])) == len(SETS)


def test_values_the_sdk_drops_are_dropped_alike() -> None:
    readers, public, fast = _pair()
    _feed(public, fast, [0.1, -1.0, math.nan, math.inf, 0.2], SETS[:1])
    assert _points(readers[0]) == _points(readers[1])
    (point,) = _points(readers[1])
    assert point[2] == 6  # 0.1 and 0.2, three times each


@pytest.mark.parametrize(
    "options",
    [
        {"views": [View(instrument_name="gen_ai.usage.cost", attribute_keys={"service.name"})]},
        {"_reader": {"preferred_temporality": {SdkHistogram: AggregationTemporality.DELTA}}},
        {"views": [View(instrument_name="*", aggregation_cardinality_limit=2)]},
        {
            "exemplar_filter": __import__(
                "opentelemetry.sdk.metrics", fromlist=["AlwaysOnExemplarFilter"]
            ).AlwaysOnExemplarFilter()
        },
    ],
    ids=["view-filters-keys", "delta-reader", "cardinality-overflow", "exemplars-always-on"],
)
def test_where_the_fast_path_steps_aside_points_are_identical(options: dict[str, Any]) -> None:
    readers, public, fast = _pair(**options)
    _feed(public, fast, VALUES, SETS)
    first = _points(readers[0])
    assert first == _points(readers[1])
    _feed(public, fast, VALUES, SETS)
    assert _points(readers[0]) == _points(readers[1])


def test_a_reader_added_later_gets_the_values_too() -> None:
    readers, public, fast = _pair()
    providers = _pair.providers  # type: ignore[attr-defined]
    if not hasattr(providers[0], "add_metric_reader"):
        pytest.skip("this opentelemetry-sdk cannot add a reader to a running provider")
    _feed(public, fast, VALUES, SETS)
    late = [InMemoryMetricReader(), InMemoryMetricReader()]
    for reader, provider in zip(late, providers, strict=True):
        provider.add_metric_reader(reader)
    _feed(public, fast, VALUES, SETS)
    assert _points(readers[0]) == _points(readers[1])
    assert _points(late[0]) == _points(late[1])
    assert _points(late[1])


def test_not_an_sdk_histogram_takes_the_public_path() -> None:
    seen: list[tuple[float, dict[str, str]]] = []

    class Plain:
        def record(self, value: float, attributes: dict[str, str]) -> None:
            seen.append((value, attributes))

    fast = FastHistogram(Plain())
    fast.record(0.5, SETS[0], "k")
    fast.record(0.25, SETS[0], "k")
    assert seen == [(0.5, SETS[0]), (0.25, SETS[0])]
    assert fast.fast_records == 0


def test_inside_a_sampled_span_exemplars_are_recorded_alike() -> None:
    """The default (trace-based) exemplar filter samples where a span is current: there the
    fast path steps aside and the SDK records the exemplar (the processor's inline work)."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    readers, public, fast = _pair()
    _feed(public, fast, VALUES, SETS)  # no span: fast path
    taken = fast.fast_records
    with tracer.start_as_current_span("app"):
        _feed(public, fast, VALUES, SETS)
    assert fast.fast_records == taken  # all public inside the span
    points = _points(readers[1])
    assert points == _points(readers[0])
    assert any(point[-1] for point in points)  # exemplars were recorded


def _feed_many(public: Any, fast: FastHistogram, values: list[float], sets: list[dict[str, str]]):
    """The same values as ``_feed``, given to ``record_many`` grouped by set in their order."""
    groups: dict[int, list[float]] = {}
    for index, value in enumerate(values * 3):
        public.record(value, dict(sets[index % len(sets)]))
        groups.setdefault(index % len(sets), []).append(value)
    for number, group in groups.items():
        fast.record_many(group, sets[number], tuple(sets[number].items()))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"views": [View(instrument_name="gen_ai.usage.cost", attribute_keys={"service.name"})]},
        {"_reader": {"preferred_temporality": {SdkHistogram: AggregationTemporality.DELTA}}},
        {"views": [View(instrument_name="*", aggregation_cardinality_limit=2)]},
    ],
    ids=["sdk", "view-filters-keys", "delta-reader", "cardinality-overflow"],
)
def test_values_recorded_as_a_batch_give_identical_points(options: dict[str, Any]) -> None:
    readers, public, fast = _pair(**options)
    _feed_many(public, fast, VALUES, SETS)
    assert _points(readers[0]) == _points(readers[1])
    _feed_many(public, fast, VALUES[::-1], SETS)  # after a collection, sets already filed
    assert _points(readers[0]) == _points(readers[1])
    if not options:
        assert fast.fast_records == len(VALUES) * 6 - len(SETS)  # all but each set's first


def test_a_batch_with_values_the_sdk_drops_is_recorded_alike() -> None:
    readers, public, fast = _pair()
    _feed_many(public, fast, [0.1, -1.0, math.nan, 0.2], SETS[:1])
    assert _points(readers[0]) == _points(readers[1])
    assert _points(readers[1])[0][2] == 6


def _all_points(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    """Every point read, histograms and sums alike, without its timestamps."""
    out = []
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    fields = {
                        k: v
                        for k, v in vars(point).items()
                        if not k.endswith("time_unix_nano") and k != "attributes"
                    }
                    out.append((metric.name, sorted(point.attributes.items()), repr(fields)))
    return sorted(out, key=repr)


@pytest.mark.parametrize("max_values", [50, 1], ids=["kept", "folded"])
def test_cost_metrics_record_many_equals_record_per_call(max_values: int) -> None:
    """The worker's batch (``CostMetrics.record_many`` / ``record_actions``) gives the points
    and component sums per-call ``record`` / ``record_action`` give, for varied calls; also
    when several label sets fold into one (``other``), their values interleaved in the calls'
    order."""
    from llmtrace.otel.metrics import CostMetrics
    from llmtrace.otel.settings import LiveSettings

    calls = []
    for number in range(40):
        calls.append(
            {
                "service": "svc",
                "request_model": ("gpt-4o", "gpt-4o-mini", "claude-x")[number % 3],
                "provider": "openai",
                "action": ("a", "b")[number % 2],
                "total_cost": None if number % 7 == 0 else 0.001 * number + 1e-7,
                "input_cost": 0.0006 * number,
                "output_cost": 0.0004 * number + 1e-7,
                "cache_read_cost": 0.0 if number % 2 else 0.00011 * number,
                "input_tokens": 100 + number,
                "output_tokens": 7 * number,
                "cache_read_tokens": number % 3 and 64,
                "reasoning_tokens": None,
            }
        )
    scopes = ["opentelemetry.instrumentation.genai.openai", "anthropic"]
    points = []
    for batch in (False, True):
        reader = InMemoryMetricReader()
        metrics = CostMetrics(
            MeterProvider(metric_readers=[reader]), LiveSettings(metric_max_values=max_values)
        )
        pairs = [(call, scopes[n % 2]) for n, call in enumerate(calls)]
        actions = [(call, 0.01 * n) for n, call in enumerate(calls)]
        if batch:
            metrics.record_many(pairs[:25])
            metrics.record_many(pairs[25:])
            metrics.record_actions(actions)
        else:
            for call, scope in pairs:
                metrics.record(call, scope)
            for call, cost in actions:
                metrics.record_action(call, cost)
        points.append(_all_points(reader))
    assert points[0] == points[1]
    names = {point[0] for point in points[1]}
    assert {"gen_ai.usage.cost", "llmtrace.cost", "llmtrace.action.cost"} <= names


def test_record_many_adds_a_folded_sets_values_in_the_calls_order() -> None:
    """Two label sets folded into one (``other``) are one set: its sum adds the values in the
    calls' order, interleaved as they came (0.255, 0.495, 0.449 sum to 1.199 in that order and
    to 1.1989999999999998 with each model's values together), as per-call ``record`` does."""
    from llmtrace.otel.metrics import CostMetrics
    from llmtrace.otel.settings import LiveSettings

    calls = [
        {"service": "svc", "request_model": model, "provider": "openai", "action": "a",
         "total_cost": cost, "input_cost": cost, "input_tokens": 10}
        for model, cost in (("gpt-4o", 0.1), ("mini", 0.255), ("claude", 0.495), ("mini", 0.449))
    ]  # fmt: skip
    points = []
    for batch in (False, True):
        reader = InMemoryMetricReader()
        metrics = CostMetrics(
            MeterProvider(metric_readers=[reader]), LiveSettings(metric_max_values=1)
        )
        pairs = [(call, "anthropic") for call in calls]
        if batch:
            metrics.record_many(pairs)
        else:
            for call, scope in pairs:
                metrics.record(call, scope)
        points.append(_all_points(reader))
    assert points[0] == points[1]
    assert any("1.199," in point[2] for point in points[1])  # the folded set's sum, in order
