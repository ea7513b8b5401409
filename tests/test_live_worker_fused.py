"""The live worker's fused steps give what the long way gives, field for field.

The worker maps a span of a known shape straight from the SDK span's fields
(``CallMapper.from_span``, no ``span_mapping`` dict; plain token counts through
``_plain_usage``) and prices it as a tuple (``LazyPriceBook.values`` -> ``cost_attributes_of``,
written into the record and the span's attributes without a dict of costs). Every span of every
recorded library fixture and the collector recording is replayed through two processors, four
times with other per-call values (ids, times, token counts, costs, response ids; counts made
invalid so both must refuse them alike): the shipped one, and one that maps each span with
``span_to_call`` over its ``span_mapping`` and prices through a plain callable (the dict path).
The priced records handed to the metrics and the exported spans' attributes must be equal, in
the same order.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags
from recorded import LIBRARIES, fixture_paths, readable_spans

from llmtrace import dialects, rates
from llmtrace.dialect_tables import _INDEXES
from llmtrace.otel import calls
from llmtrace.otel.pricer import PRICE_FIELDS, LazyPriceBook
from llmtrace.otel.processor import CostSpanProcessor
from llmtrace.otel.spans import span_mapping
from llmtrace.price_book import PRICE_FIELDS as BOOK_PRICE_FIELDS

PRICER = LazyPriceBook()
OTLP_FIXTURES = LIBRARIES.parent / "otlp"
PATHS = [*fixture_paths(), OTLP_FIXTURES / "collector.jsonl"]


def _varied(span: ReadableSpan, number: int) -> ReadableSpan:
    """The span with other per-call values: ids, times, and every attribute in a slot the
    record copies per call (tokens, cost, response/conversation/user id) changed."""
    attrs = dict(span.attributes or {})
    scope = span.instrumentation_scope.name if span.instrumentation_scope else None
    index = _INDEXES[dialects.detect_dialect(attrs, scope).name]
    for key, value in attrs.items():
        hit = index.get(key)
        if hit is None or hit[0] not in calls._VOLATILE_SLOTS:
            continue
        if type(value) is int:
            attrs[key] = value + number * 37
        elif type(value) is float:
            attrs[key] = value * (number + 1)
        elif type(value) is str:  # a count as text becomes an invalid one: both must refuse
            attrs[key] = f"{value}-{number}"
    context = span.context
    trace_id = context.trace_id ^ number
    parent = span.parent
    return ReadableSpan(
        name=span.name,
        context=SpanContext(trace_id, context.span_id ^ (number << 8), False, TraceFlags(1)),
        parent=None
        if parent is None
        else SpanContext(trace_id, parent.span_id ^ (number << 8), False, TraceFlags(1)),
        resource=span.resource,
        attributes=attrs,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time + number * 1_000_003,
        end_time=span.end_time + number * 2_000_011,
        instrumentation_scope=span.instrumentation_scope,
    )


def _run(spans: list[ReadableSpan], *, fused: bool) -> tuple[list[Any], list[Any]]:
    memory = InMemorySpanExporter()
    priced: list[Any] = []
    processor = CostSpanProcessor(
        [SimpleSpanProcessor(memory)],
        pricer=PRICER if fused else (lambda call: PRICER(call)),  # not a LazyPriceBook: dicts
        on_calls=lambda batch: priced.extend(batch),
        background=False,
    )
    if not fused:
        processor._to_call = lambda mapping: dialects.span_to_call(mapping)
    for span in spans:
        processor.on_end(span)
    processor.shutdown()
    exported = [
        (span.context.span_id, list((span.attributes or {}).items()))
        for span in memory.get_finished_spans()
    ]
    return [(list(call.items()), scope) for call, scope in priced], exported


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_fused_worker_gives_the_long_ways_records_and_spans(path: Any) -> None:
    recorded = readable_spans(path)
    spans = [_varied(span, number) if number else span for number in range(4) for span in recorded]
    fused_calls, fused_spans = _run(spans, fused=True)
    long_calls, long_spans = _run(spans, fused=False)
    assert fused_calls == long_calls  # field for field, in order, with the same scope
    assert fused_spans == long_spans  # attributes in order
    assert len(fused_spans) == len(spans)


def test_the_fused_path_is_taken_on_the_recordings() -> None:
    """The comparison above is not vacuous: known shapes are mapped by ``from_span``."""
    mapper = calls.CallMapper()
    for path in PATHS:
        for span in readable_spans(path):
            attrs = dict(span.attributes or {})
            for _ in range(2):
                with contextlib.suppress(dialects.SpanError):
                    mapper.from_span(span, dict(attrs))
    assert mapper.hits > 20


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_from_span_equals_span_to_call_on_its_mapping(path: Any) -> None:
    """Straight from the SDK span: the record ``span_to_call`` gives for the span's mapping."""
    mapper = calls.CallMapper()
    for number in range(4):
        for span in readable_spans(path):
            span = _varied(span, number) if number else span
            attrs = dict(span.attributes or {})
            got = _outcome(mapper.from_span, span, attrs)
            expected = _outcome(lambda s, a: dialects.span_to_call(span_mapping(s, a)), span, attrs)
            assert got == expected
            if isinstance(got, list):
                assert [k for k, _ in got] == [k for k, _ in expected]


def _outcome(make: Any, span: ReadableSpan, attrs: dict[str, Any]) -> Any:
    try:
        return list(make(span, dict(attrs)).items())
    except dialects.SpanError as exc:
        return ("SpanError", str(exc))


def _plain_usage_cases() -> list[dict[str, Any]]:
    rng = random.Random(7)
    counts = [None, 0, 1, 5, 90, 100, 250, 2**62, 2**63 - 1, -1, 3.0, "12", True]
    cases = []
    for _ in range(3000):
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": rng.choice(("openai", "anthropic")),
            "gen_ai.request.model": "gpt-4o",
        }
        for name in (
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.reasoning.output_tokens",
            "llm.usage.total_tokens",
        ):
            if rng.random() < 0.7:
                attrs[name] = rng.choice(counts)
        cases.append(attrs)
    return cases


def test_plain_usage_counts_as_usage_values() -> None:
    """``_plain_usage`` (a plain-usage shape's counts) equals ``_usage_values`` or steps
    aside (None) for every mix of counts: bad types, negatives, 64-bit overflow, cache
    inclusion per provider, reasoning inside or outside the output."""
    from llmtrace.dialect_values import _usage_values

    taken = 0
    for attrs in _plain_usage_cases():
        dialect = dialects.detect_dialect(attrs, "opentelemetry.instrumentation.genai.openai")
        shape = calls._shape(tuple(attrs), attrs, None)
        assert shape.plain is not None
        found: dict[str, Any] = {}
        for slot, names in shape.candidates:
            for name, rank, is_token in names:
                value = attrs[name]
                if value is None or (value == "" and not is_token):
                    continue
                found[slot] = (rank, name, value)
                break
        counts = [found[slot][2] if slot in found else None for slot in calls._TOKEN_SLOTS]
        provider = attrs["gen_ai.provider.name"]
        got = calls._plain_usage(counts, dialect, provider)
        try:
            expected: Any = _usage_values(found, attrs, dialect, provider)
        except dialects.SpanError:
            expected = "error"
        if got is None:
            continue
        taken += 1
        assert got == expected, attrs
    assert taken > 500


def _old_cost(r: rates.Rates, counts: tuple[int, ...]) -> dict[str, float]:
    """``Rates.cost`` as it was written before ``cost_values`` (the reference), times the
    reciprocal of PER as ``price_calls`` prices (``rates.PER_INVERSE``)."""
    inp, cache_read, cache_write, cache_write_1h, output, reasoning = counts
    token, request = rates.PER_INVERSE["input"], rates.PER_INVERSE["request"]
    costs = {
        "input_cost": (inp - cache_read - cache_write) * r.input.price_at(inp) * token,
        "cache_read_cost": cache_read * r.cache_read.price_at(inp) * token,
        "cache_write_cost": (cache_write - cache_write_1h) * r.cache_write.price_at(inp) * token
        + cache_write_1h * r.cache_write_1h.price_at(inp) * token,
        "output_cost": (output - reasoning) * r.output.price_at(inp) * token,
        "reasoning_cost": reasoning * r.reasoning.price_at(inp) * token,
        "request_cost": 1 * r.request.price_at(inp) * request,
    }
    costs["total_cost"] = rates.sum_costs(costs)
    return costs


def test_cost_values_are_the_dict_formulas_floats() -> None:
    from datetime import UTC, datetime

    book = PRICER.get()
    rng = random.Random(3)
    at = datetime(2026, 11, 2, tzinfo=UTC)
    models = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("openai", "o3"),
              ("google", "gemini-2.5-pro"), ("deepseek", "deepseek-chat")]  # fmt: skip
    checked = 0
    for provider, model in models:
        found = book.rates_for(provider, model, at)
        assert found is not None, model
        for _ in range(300):
            inp = rng.choice((0, 1, 999, 150_000, 200_001, 1_000_000))
            cache_read = rng.randint(0, inp // 3)
            cache_write = rng.randint(0, inp // 3)
            cache_write_1h = rng.randint(0, cache_write)
            output = rng.randint(0, 50_000)
            reasoning = rng.randint(0, output)
            counts = (inp, cache_read, cache_write, cache_write_1h, output, reasoning)
            expected = _old_cost(found, counts)
            assert found.cost_values(*counts) == tuple(expected.values())
            assert list(found.cost(*counts).items()) == list(expected.items())
            checked += 1
    assert checked == 1500


def test_price_values_are_price_counts_values() -> None:
    from datetime import UTC, datetime

    from llmtrace.otel.spans import TOKEN_FIELDS

    assert PRICE_FIELDS == BOOK_PRICE_FIELDS
    book = PRICER.get()
    at = datetime(2026, 11, 2, tzinfo=UTC)
    for model in ("gpt-4o", "no-such-model", None, " "):
        for usage in ((100, 10, 0, 0, 20, 5), (None,) * 6, (5, 10, 0, 0, 1, 0)):
            call = {"provider": "openai", "model": model, "start_time": at, "service_tier": None,
                    **dict(zip(TOKEN_FIELDS, usage, strict=True))}  # fmt: skip
            values = PRICER.values(call)
            assert list(PRICER(call).items()) == list(zip(PRICE_FIELDS, values, strict=True))
            assert PRICER(call) == book.price_one("openai", model, at, **dict(
                zip(TOKEN_FIELDS, usage, strict=True)))  # fmt: skip


def _random_texts(rng: random.Random) -> tuple[Any, ...]:
    """A ``plain_texts`` tuple: system parts, then role, name, content per message."""
    from llmtrace.otel import hook

    words = ["You are terse.", "Be kind.", "hi", "", "Paris?", "x" * 50, "naïve ✓"]
    out: list[Any] = [hook.PLAIN_TEXTS, tuple(rng.sample(words, rng.randint(0, 2)))]
    for _ in range(rng.randint(0, 5)):
        role = rng.choice(("user", "assistant", "system", "System", "developer", "tool", "USER"))
        name = rng.choice((None, None, "bob"))
        content: Any = rng.choice(words)
        if rng.random() < 0.3:
            content = tuple(rng.sample(words, rng.randint(1, 3)))
        out += (role, name, content)
    return tuple(out)


def test_texts_walk_equals_the_message_tuples_way() -> None:
    """``_PrefixCache.texts`` (the flat tuple walked in place) gives ``parts``' fields and
    attributes through message tuples, cold and warm, and so does ``texts_parts`` when a
    content is a list (unhashable: the message tuples' way)."""
    from llmtrace.otel import hook

    rng = random.Random(11)
    walked, listed = hook._PrefixCache(), hook._PrefixCache()
    for number in range(2000):
        texts = _random_texts(rng)
        expected = _message_tuples_way(listed, texts)
        assert walked.texts(texts) == expected, texts
        if number % 7 == 0:  # a list inside: the fallback
            as_lists = tuple(list(item) if type(item) is tuple else item for item in texts)
            assert hook.texts_parts((texts[0], *as_lists[1:])) == expected


def _message_tuples_way(cache: Any, texts: tuple[Any, ...]) -> Any:
    from llmtrace import fingerprint

    messages = [
        (fingerprint.canonical_role(texts[i]), texts[i + 1], texts[i + 2])
        for i in range(2, len(texts), 3)
    ]
    system = list(texts[1])
    while messages and messages[0][0] == fingerprint.SYSTEM_ROLE:
        system.append(messages.pop(0)[2])
    return cache.parts(system, messages)


def test_record_many_of_priced_records_equals_record_per_call() -> None:
    """Whole priced records (every field: ``record_many`` reads their costs and counts with
    one getter each) give the points and sums per-call ``record`` gives."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from test_live_histograms import _all_points

    from llmtrace.otel.metrics import CostMetrics
    from llmtrace.otel.settings import LiveSettings

    pairs: list[Any] = []
    for path in PATHS:
        spans = [_varied(span, n) if n else span for n in range(2) for span in readable_spans(path)]
        priced, _ = _run(spans, fused=True)
        pairs += [(dict(items), scope) for items, scope in priced]
    assert sum(call["total_cost"] is not None for call, _ in pairs) > 20
    points = []
    for batch in (False, True):
        reader = InMemoryMetricReader()
        metrics = CostMetrics(MeterProvider(metric_readers=[reader]), LiveSettings())
        if batch:
            metrics.record_many(pairs[:31])
            metrics.record_many(pairs[31:])
        else:
            for call, scope in pairs:
                metrics.record(call, scope)
        points.append(_all_points(reader))
    assert points[0] == points[1]
    assert any(name == "gen_ai.client.token.usage" for name, _, _ in points[1])
