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
from recorded import fixture_paths, readable_spans

import llmtrace.otel.processor as processor_module
from llmtrace.otel import hook
from llmtrace.otel.pricer import LazyPriceBook
from llmtrace.otel.processor import CostSpanProcessor

PRICER = LazyPriceBook()
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
    for number, span in enumerate(readable_spans(path)):
        processor.stash_prompt(span.context.span_id, _prompt(number))
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
    monkeypatch.setattr(processor_module, "fingerprint_fields", lambda *args: None)
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
        seen.add(expected["total_cost"])
    assert len(seen) > 1


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
