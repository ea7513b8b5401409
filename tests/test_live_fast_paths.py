"""The live processor's shortcuts give the call records and exported spans the long way gives.

Each recorded library fixture (tests/fixtures/libraries) is replayed through
``CostSpanProcessor`` with a completion-hook input stashed for every span, twice: once the long
way (the fingerprints written as span attributes, then read back by ``span_to_call``; every
fingerprint hashed afresh) and once as shipped (the fingerprint fields put into the record as
computed, hash-chain steps kept between calls). The priced call records handed to the metrics
and the attributes of every exported span must be equal.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.instrumentation.genai.openai.utils import _prepare_input_messages
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.genai.types import TextPart
from recorded import LIBRARIES, fixture_paths, readable_spans

import llmtrace.otel.span_work as span_work_module
from llmtrace import dialects
from llmtrace.dialect_tables import _INDEXES
from llmtrace.otel import calls, hook
from llmtrace.otel.pricer import LazyPriceBook
from llmtrace.otel.processor import CostSpanProcessor
from llmtrace.otel.spans import span_mapping

PRICER = LazyPriceBook()
OTLP_FIXTURES = LIBRARIES.parent / "otlp"
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "Spain?"}],
    },
]


def _prompt(number: int) -> tuple[Any, Any, Any]:
    """A hook input: the conversation so far (growing, repeating), some with system parts."""
    messages = CONVERSATION[number % 2 : 1 + number % len(CONVERSATION)]
    system = [TextPart(content=f"rule {number % 3}")] if number % 2 else []
    return _prepare_input_messages(messages), system, None


def _run(path: Any, *, shortcuts: bool) -> tuple[list[Any], list[dict[str, Any]]]:
    memory = InMemorySpanExporter()
    calls: list[Any] = []
    processor = CostSpanProcessor(
        [SimpleSpanProcessor(memory)],
        pricer=PRICER,
        on_calls=lambda batch: calls.extend(call for call, _ in batch),
        background=False,
    )
    if not shortcuts:  # every record made by span_to_call itself
        processor._to_call = lambda mapping: dialects.span_to_call(mapping)
    for number, span in enumerate(readable_spans(path)):
        prompt = _prompt(number)
        if shortcuts:  # what the hook stashes: the texts when the input is plain text
            prompt = hook.plain_texts(*prompt) or prompt
        processor.stash_prompt(span.context.span_id, prompt)
        processor.on_end(span)
    processor.shutdown()
    spans = [dict(span.attributes or {}) for span in memory.get_finished_spans()]
    return calls, spans


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_shortcuts_give_the_same_records_and_spans(
    path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook._CACHE._steps.clear()
    fast_calls, fast_spans = _run(path, shortcuts=True)
    warm_calls, warm_spans = _run(path, shortcuts=True)  # every hash-chain step kept
    monkeypatch.setattr(span_work_module, "prompt_parts", lambda prompt: None)
    monkeypatch.setattr(hook, "_CACHE", hook._PrefixCache(limit=0))  # nothing kept
    slow_calls, slow_spans = _run(path, shortcuts=False)
    assert slow_calls, "the fixture has priced calls"
    assert any("llmtrace.prompt.prefix_hashes" in attrs for attrs in slow_spans)
    assert fast_calls == slow_calls == warm_calls
    assert fast_spans == slow_spans == warm_spans


def test_prefix_cache_equals_fingerprint_on_a_growing_conversation() -> None:
    """Hash-chain steps kept across calls, and the cache emptied when full, change nothing."""
    from llmtrace import fingerprint

    small = hook._PrefixCache(limit=5)
    for number in range(30):
        inputs, system, _ = _prompt(number)
        prompt = hook._direct_prompt(inputs, system)
        assert prompt is not None
        expected = fingerprint.fingerprint(prompt)
        assert small.fingerprint(prompt) == expected
        assert hook._CACHE.fingerprint(prompt) == expected


@pytest.mark.parametrize(
    "variants",
    [
        [{"role": "user", "content": "hi"}, {"role": "user", "content": "hi", "name": "bob"}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}],
        [
            {"role": "user", "content": "ab"},
            {"role": "user", "content": [{"type": "text", "text": "ab"}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ],
    ],
    ids=["name", "role", "parts"],
)
def test_prefix_cache_tells_apart_what_the_hash_tells_apart(variants: list[Any]) -> None:
    """Messages that differ only in name, role or text parts after the same prefix: each is
    hashed as ``fingerprint.fingerprint`` hashes it, whichever the cache saw first."""
    from llmtrace import fingerprint

    cache = hook._PrefixCache()
    seen, expected = set(), set()
    for message in variants * 2:
        prompt = hook._direct_prompt(_prepare_input_messages([message]), [])
        assert prompt is not None
        got = cache.fingerprint(prompt)
        assert got == fingerprint.fingerprint(prompt)
        seen.add(got["input_fingerprint"])
        expected.add(fingerprint.fingerprint(prompt)["input_fingerprint"])
    assert len(seen) == len(expected) >= 2


def test_attributes_are_read_from_the_plain_dict_under_the_sdk_proxy() -> None:
    """An SDK span's ``attributes`` is a read-only proxy over ``BoundedAttributes``, whose
    Python-level methods cost ~0.5 us per question: the hooks read the dict underneath, and
    the copy exporters get is a plain dict equal to the span's attributes."""
    from opentelemetry.sdk.trace import TracerProvider

    from llmtrace.otel.spans import attributes_to_read, plain_attributes

    span = TracerProvider().get_tracer("t").start_span("chat", attributes={"a": 1})
    span.set_attribute("b", (2, 3))
    read = attributes_to_read(span)
    assert type(read) is dict and read == {"a": 1, "b": (2, 3)}
    span.end()
    copy = plain_attributes(span)
    assert type(copy) is dict and copy == dict(span.attributes) and copy is not read
    copy["c"] = 4
    assert "c" not in span.attributes


def test_the_live_pricer_passes_every_token_field() -> None:
    """``LazyPriceBook`` names the token fields one by one: each must reach ``price_one``."""
    from datetime import UTC, datetime

    from llmtrace.otel.spans import TOKEN_FIELDS

    book = PRICER.get()
    base = {"provider": "openai", "model": "gpt-4o", "start_time": datetime(2026, 11, 2, tzinfo=UTC),
            "service_tier": None, "input_tokens": 10_000, "cache_read_tokens": 100,
            "cache_write_tokens": 200, "cache_write_1h_tokens": 0, "output_tokens": 1000,
            "reasoning_tokens": 0}  # fmt: skip
    seen = set()
    for field in TOKEN_FIELDS:
        call = {**base, field: base[field] + 100}
        expected = book.price_one(
            call["provider"],
            call["model"],
            call["start_time"],
            service_tier=None,
            **{name: call[name] for name in TOKEN_FIELDS},
        )
        assert PRICER(call) == expected
        partial = {name: value for name, value in call.items() if value}  # the .get path
        assert PRICER(partial) == book.price_one(
            "openai", "gpt-4o", call["start_time"], **{n: partial.get(n) for n in TOKEN_FIELDS}
        )
        seen.add(expected["total_cost"])
    assert len(seen) > 1


def test_rates_remembered_per_day_are_rates_for_answers() -> None:
    """``PriceBook.price_counts`` takes rates remembered per UTC day (models without
    time-of-day bands, times in UTC): the same prices as ``rates_for`` on a book without that
    memory, across days, times of day (DeepSeek's off-peak bands), tiers, naive and non-UTC
    times, unknown models."""
    from datetime import UTC, datetime, timedelta, timezone

    from llmtrace.price_book import PriceBook

    book = PriceBook()
    plain = PriceBook()
    plain._rates_on = lambda provider, model, at, tier: plain.rates_for(provider, model, at, tier)
    models = [("openai", "gpt-4o"), ("deepseek", "deepseek-chat"), ("openai", "no-such-model"),
              (None, "claude-sonnet-4-5"), ("google", "gemini-2.5-pro")]  # fmt: skip
    start = datetime(2026, 10, 11, 20, 30, tzinfo=UTC)
    times = [start + timedelta(hours=hours) for hours in range(0, 30, 3)]
    times += [datetime(2026, 10, 12, 1), start.astimezone(timezone(timedelta(hours=5)))]
    priced = set()
    for _ in range(2):  # the second time from what the first remembered
        for provider, model in models:
            for at in times:
                for tier in (None, "standard", "flex", "priority", "batch"):
                    args = (provider, model, at, 90_000, 1_000, 0, 0, 500, 0, tier)
                    got = book.price_counts(*args)
                    assert got == plain.price_counts(*args)
                    priced.add((model, got["total_cost"]))
    assert book._daily, "rates were remembered"
    deepseek = {cost for model, cost in priced if model == "deepseek-chat" and cost is not None}
    assert len(deepseek) > 1, "off-peak and peak hours of one day priced apart"


def test_prefix_cache_holds_a_bounded_length_of_text() -> None:
    """The cache's keys hold the app's texts: their total length stays under ``max_chars``
    and a text longer than ``max_text`` is never kept, whatever the app sends."""
    from llmtrace import fingerprint

    cache = hook._PrefixCache(max_chars=1000, max_text=300)
    for number in range(40):
        text = f"{number} " + "x" * (50 + 10 * number)
        prompt = hook._direct_prompt(
            _prepare_input_messages([{"role": "user", "content": text}]), []
        )
        assert prompt is not None
        assert cache.fingerprint(prompt) == fingerprint.fingerprint(prompt)
        assert cache._chars <= 1000
        held = sum(len(k[3]) for k in cache._steps if k[0] != "T")
        assert held == cache._chars and held <= 1000
        assert all(len(k[3]) <= 300 for k in cache._steps if k[0] != "T")


# -- the call record, remembered per span shape (llmtrace.otel.calls) ---------------------------


def _outcome(to_call: Any, mapping: dict[str, Any]) -> Any:
    try:
        return to_call(mapping)
    except dialects.SpanError as exc:
        return ("SpanError", str(exc))


def _varied(mapping: dict[str, Any], number: int) -> dict[str, Any]:
    """The span with other per-call values: ids, times, and every attribute in a slot the
    record copies per call (tokens, cost, response/conversation/user id) changed."""
    attrs = dict(mapping["attributes"])
    index = _INDEXES[dialects.detect_dialect(attrs, mapping["scope"]).name]
    for key, value in attrs.items():
        hit = index.get(key)
        if hit is None or hit[0] not in calls._VOLATILE_SLOTS:
            continue
        if type(value) is int:
            attrs[key] = value + number
        elif type(value) is float:
            attrs[key] = value * (number + 1)
        elif type(value) is str:  # a count as text becomes an invalid one: both must raise
            attrs[key] = f"{value}-{number}"
    start = mapping["start_ns"]
    return {
        **mapping,
        "attributes": attrs,
        "trace_id": f"{number:032x}",
        "span_id": f"{number + 1:016x}",
        "start_ns": None if start is None else start + number * 1_000_003,
        "end_ns": mapping["end_ns"] + number * 2_000_011,
    }


def _mappings(path: Any) -> list[dict[str, Any]]:
    return [span_mapping(span) for span in readable_spans(path)]


@pytest.mark.parametrize(
    "path", [*fixture_paths(), OTLP_FIXTURES / "collector.jsonl"], ids=lambda p: p.stem
)
def test_call_mapper_gives_span_to_calls_records(path: Any) -> None:
    """Every span of every recording, again and again with other per-call values: the same
    record (or the same error) as span_to_call, field for field and in the same order."""
    mapper = calls.CallMapper()
    mappings = _mappings(path)
    for number in range(4):
        for mapping in mappings:
            span = _varied(mapping, number) if number else mapping
            got = _outcome(mapper, span)
            expected = _outcome(dialects.span_to_call, span)
            assert got == expected
            if isinstance(got, dict):
                assert list(got) == list(expected)
    assert mapper.hits > 0 or not any(
        isinstance(_outcome(dialects.span_to_call, m), dict)
        and m["status_code"] != dialects.STATUS_ERROR
        for m in mappings
    )


def _chat_span(**attributes: Any) -> dict[str, Any]:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 8,
        **attributes,
    }
    return {
        "trace_id": "1" * 32,
        "span_id": "2" * 16,
        "parent_span_id": None,
        "name": "chat gpt-4o",
        "scope": "opentelemetry.instrumentation.genai.openai",
        "start_ns": 1_700_000_000_000_000_000,
        "end_ns": 1_700_000_001_000_000_000,
        "status_code": 0,
        "attributes": attrs,
        "resource": {"service.name": "shop"},
    }


def test_call_mapper_reuses_a_record_per_static_part() -> None:
    mapper = calls.CallMapper()
    first = mapper(_chat_span())
    assert mapper.hits == 0
    second = mapper(_chat_span(**{"gen_ai.usage.input_tokens": 7, "gen_ai.response.id": "b"}))
    assert mapper.hits == 1
    assert (second["input_tokens"], second["response_id"]) == (7, "b")
    assert (first["input_tokens"], first["response_id"]) == (120, "chatcmpl-1")
    assert second == dialects.span_to_call(
        _chat_span(**{"gen_ai.usage.input_tokens": 7, "gen_ai.response.id": "b"})
    )


def test_call_mapper_tells_apart_equal_values_of_other_types() -> None:
    """1 and True are one dict key, but the record's text differs: the types are in the key."""
    mapper = calls.CallMapper()
    as_int = mapper(_chat_span(**{"llmtrace.action": 1}))
    as_bool = mapper(_chat_span(**{"llmtrace.action": True}))
    assert (as_int["action"], as_bool["action"]) == ("1", "True")


def test_call_mapper_follows_the_resource_and_leaves_errors_to_span_to_call() -> None:
    mapper = calls.CallMapper()
    mapper(_chat_span())
    other = {**_chat_span(), "resource": {"service.name": "billing"}}
    assert mapper(other)["service"] == "billing"
    failed = {**_chat_span(), "status_code": dialects.STATUS_ERROR, "events": []}
    hits = mapper.hits
    assert mapper(failed) == dialects.span_to_call(failed)
    assert mapper.hits == hits


def test_call_mapper_takes_span_to_call_for_unhashable_values() -> None:
    mapper = calls.CallMapper()
    span = _chat_span(**{"custom.list": ["a", "b"]})
    for _ in range(3):
        assert mapper(span) == dialects.span_to_call(span)
    assert mapper.hits == 0


def test_sdk_spans_are_read_and_copied_by_their_fields_as_their_properties_give() -> None:
    """``span_mapping`` and ``with_attributes`` read an SDK span's fields directly: the same
    mapping and the same exported copy (every field) as through its properties."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Status, StatusCode

    from llmtrace.otel import spans

    provider = TracerProvider(resource=Resource({"service.name": "shop"}))
    tracer = provider.get_tracer("opentelemetry.instrumentation.genai.openai")
    with tracer.start_as_current_span("agent") as parent:
        other = parent.get_span_context()
        span = tracer.start_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"})
    span.add_link(other, {"why": "retry"})
    span.add_link(other, {"why": "second"})
    span.add_event("exception", {"exception.type": "Timeout"})
    span.add_event("retry", {"attempt": 2})
    span.set_status(Status(StatusCode.ERROR, "timed out"))
    span.end()
    # read by its fields, unless this SDK's ReadableSpan has other fields than spans copies
    assert type(span) in spans._SDK_SPANS or not spans._SDK_SPANS
    for subject in (span, spans.with_attributes(span, {"x": 1})):
        fast_map = spans.span_mapping(subject)
        fast_copy = spans.with_attributes(subject, {"llmtrace.cost.total": 0.5})
        saved = spans._SDK_SPANS
        spans._SDK_SPANS = ()
        try:
            slow_map = spans.span_mapping(subject)
            slow_copy = spans.with_attributes(subject, {"llmtrace.cost.total": 0.5})
        finally:
            spans._SDK_SPANS = saved
        assert fast_map == slow_map
        assert fast_map["events"] and fast_map["parent_span_id"]
        assert type(fast_copy) is type(slow_copy)
        assert vars(fast_copy) == vars(slow_copy)
        assert (
            len(fast_copy.links) == len(fast_copy.events) == 2
            and fast_copy.attributes["llmtrace.cost.total"] == 0.5
        )
    bare = tracer.start_span("chat gpt-4o")  # no events, no links: the empty tuples
    bare.end()
    copy = spans.with_attributes(bare, {})
    assert copy.events == () == copy.links and copy._events == bare.events
