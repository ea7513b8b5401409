"""Live side: cost attributes on exported spans, two spans of one call, metrics, no content.

Real ``openai`` and ``anthropic`` SDKs (with the official OpenTelemetry GenAI instrumentations
and the Anthropic SDK's own spans) call the loopback provider; spans and metrics are exported
over OTLP/HTTP to the loopback receiver and checked as decoded there. Expected costs are worked
out here from the providers' list prices, not from llmtrace's pricing code.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from live.clients import anthropic_client, openai_client

pytest_plugins = ["live.fixtures"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

M = 1_000_000
# gpt-4o: $2.50 input, $1.25 cached input, $10 output per million tokens.
# Loopback usage: 1149 prompt tokens of which 1024 cached, 50 completion tokens.
GPT4O = {
    "input": (1149 - 1024) * 2.50 / M,
    "cache_read": 1024 * 1.25 / M,
    "cache_write": 0.0,
    "output": 50 * 10.0 / M,
    "reasoning": 0.0,
}
# claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 5-minute cache write, $15 output (and
# thinking) per million. Loopback usage: 4 uncached input, 5000 read, 1163 written (5m),
# 500 output of which 300 thinking.
SONNET = {
    "input": 4 * 3.0 / M,
    "cache_read": 5000 * 0.30 / M,
    "cache_write": 1163 * 3.75 / M,
    "output": (500 - 300) * 15.0 / M,
    "reasoning": 300 * 15.0 / M,
}
COST_KEYS = ("input", "cache_read", "cache_write", "output", "reasoning", "total")
CONTENT_ATTRIBUTES = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


def _llm_spans(receiver: Any, count: int) -> list[Any]:
    assert receiver.wait_for(
        lambda: sum(1 for s in receiver.spans if "gen_ai.operation.name" in s.attributes) >= count
    ), f"expected {count} LLM spans, got {[s.name for s in receiver.spans]}"
    return [s for s in receiver.spans if "gen_ai.operation.name" in s.attributes]


def _assert_costs(span: Any, expected: dict[str, float]) -> None:
    total = sum(expected.values())
    attrs, types = span.attributes, span.types
    assert attrs["gen_ai.usage.cost"] == pytest.approx(total, rel=1e-9)
    assert types["gen_ai.usage.cost"] == "double_value"
    for key in COST_KEYS:
        want = total if key == "total" else expected[key]
        assert attrs[f"llmtrace.cost.{key}"] == pytest.approx(want, rel=1e-9, abs=1e-15), key
        assert types[f"llmtrace.cost.{key}"] == "double_value", key  # 0.0 must not become int
    details = json.loads(attrs["langfuse.observation.cost_details"])
    assert details == pytest.approx(
        {
            "input": expected["input"],
            "input_cached_tokens": expected["cache_read"],
            "input_cache_creation": expected["cache_write"],
            "output": expected["output"],
            "output_reasoning_tokens": expected["reasoning"],
            "total": total,
        },
        rel=1e-9,
        abs=1e-15,
    )
    assert attrs["llmtrace.price.status"] == "ok"
    assert attrs["llmtrace.price.source"].startswith("genai-prices ")


def test_openai_chat_and_stream_carry_cost(live: Any, provider: Any, receiver: Any) -> None:
    client = openai_client(provider)
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from the loopback."
    chunks = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    live.force_flush()
    spans = _llm_spans(receiver, 2)
    assert len(spans) == 2
    for span in spans:
        assert span.resource["service.name"] == "live-test"
        assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 1024
        _assert_costs(span, GPT4O)
    assert any(s.attributes.get("gen_ai.request.stream") for s in spans)


def test_anthropic_thinking_and_cache_priced_once(live: Any, provider: Any, receiver: Any) -> None:
    client = anthropic_client(provider, live.tracer_provider)
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "Say hello."}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    message = client.messages.create(**request)
    assert message.content[0].type == "thinking"
    with client.messages.stream(**request) as stream:
        assert "".join(stream.text_stream) == "Hello from the loopback."
    live.force_flush()
    spans = _llm_spans(receiver, 4)
    # each call has the instrumentation's span and the SDK's own span inside it
    assert sorted(s.scope for s in spans) == sorted(
        ["opentelemetry.instrumentation.genai.anthropic", "com.anthropic.sdk.python"] * 2
    )
    priced = [s for s in spans if "gen_ai.usage.cost" in s.attributes]
    deferred = [s for s in spans if "llmtrace.priced_span_id" in s.attributes]
    assert len(priced) == 2 and len(deferred) == 2
    for span in priced:
        _assert_costs(span, SONNET)
        assert "llmtrace.priced_span_id" not in span.attributes
    by_id = {s.span_id: s for s in priced}
    for span in deferred:
        assert not any(k.startswith("llmtrace.cost.") for k in span.attributes)
        assert "gen_ai.usage.cost" not in span.attributes
        target = by_id[span.attributes["llmtrace.priced_span_id"]]
        assert target.trace_id == span.trace_id
        assert span.parent_span_id == target.span_id  # the SDK span defers to its parent
    # what a TraceQL or Langfuse sum over all spans sees: each call once
    total = sum(s.attributes.get("gen_ai.usage.cost", 0.0) for s in spans)
    assert total == pytest.approx(2 * sum(SONNET.values()), rel=1e-9)


def test_unpriced_call_says_why_and_has_no_cost(live: Any, provider: Any, receiver: Any) -> None:
    provider.openai_usage["gpt-nonexistent-9"] = provider.openai_usage["gpt-4o"]
    client = openai_client(provider)
    client.chat.completions.create(model="gpt-nonexistent-9", messages=MESSAGES)
    live.force_flush()
    (span,) = _llm_spans(receiver, 1)
    assert span.attributes["llmtrace.price.status"] == "unknown_model"
    assert not any("cost" in key for key in span.attributes)


def test_content_is_not_exported_but_fingerprints_are(
    live: Any, provider: Any, receiver: Any
) -> None:
    client = openai_client(provider)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    client.chat.completions.create(
        model="gpt-4o", messages=[*MESSAGES, {"role": "assistant", "content": "Hello."}]
    )
    live.force_flush()
    first, second = sorted(_llm_spans(receiver, 2), key=lambda s: s.start_time_unix_nano)
    for span in (first, second):
        assert not set(CONTENT_ATTRIBUTES) & set(span.attributes)
        assert not any("You are terse" in str(v) for v in span.attributes.values())
    hashes_1 = first.attributes["llmtrace.prompt.prefix_hashes"]
    hashes_2 = second.attributes["llmtrace.prompt.prefix_hashes"]
    # template + 1 user message, then the same prefix extended by one message
    assert len(hashes_1) == 2 and len(hashes_2) == 3
    assert hashes_2[:2] == hashes_1
    assert first.attributes["llmtrace.prompt.template_fingerprint"] == hashes_1[0]
    tokens = second.attributes["llmtrace.prompt.prefix_tokens"]
    assert tokens == sorted(tokens) and tokens[0] > 0


def test_metrics_reach_otlp_with_costs_and_token_types(
    live: Any, provider: Any, receiver: Any
) -> None:
    openai_client(provider).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    anthropic_client(provider, live.tracer_provider).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=2048,
        messages=[{"role": "user", "content": "Say hello."}],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    live.force_flush()
    assert receiver.wait_for(lambda: bool(receiver.points("gen_ai.usage.cost")))
    cost = {p.attributes["gen_ai.request.model"]: p for p in receiver.points("gen_ai.usage.cost")}
    assert set(cost) == {"gpt-4o", "claude-sonnet-4-5"}
    assert cost["gpt-4o"].unit == "USD" and cost["gpt-4o"].kind == "histogram"
    assert cost["gpt-4o"].count == 1
    assert cost["gpt-4o"].sum == pytest.approx(sum(GPT4O.values()), rel=1e-9)
    assert cost["claude-sonnet-4-5"].count == 1  # two spans, one call, counted once
    assert cost["claude-sonnet-4-5"].sum == pytest.approx(sum(SONNET.values()), rel=1e-9)
    assert cost["gpt-4o"].bounds[0] < 0.001 and cost["gpt-4o"].bounds[-1] <= 100
    labels = cost["gpt-4o"].attributes
    assert labels["gen_ai.provider.name"] == "openai"
    assert labels["service.name"] == "live-test"
    assert labels["llmtrace.action"] == "chat gpt-4o"
    assert labels["llmtrace.prompt"].startswith("fp:")

    components = {
        (p.attributes["gen_ai.request.model"], p.attributes["llmtrace.cost.component"]): p.value
        for p in receiver.points("llmtrace.cost")
    }
    for key in ("input", "cache_read", "cache_write", "output", "reasoning"):
        for model, expected in (("gpt-4o", GPT4O), ("claude-sonnet-4-5", SONNET)):
            if expected[key]:
                assert components[(model, key)] == pytest.approx(expected[key], rel=1e-9)
            else:
                assert (model, key) not in components

    ours = [
        p for p in receiver.points("gen_ai.client.token.usage") if "llmtrace.action" in p.attributes
    ]
    tokens = {
        (p.attributes["gen_ai.request.model"], p.attributes["gen_ai.token.type"]): p.sum
        for p in ours
    }
    assert tokens == {
        ("gpt-4o", "cache_read"): 1024,
        ("claude-sonnet-4-5", "cache_read"): 5000,
        ("claude-sonnet-4-5", "cache_write"): 1163,
        ("claude-sonnet-4-5", "reasoning"): 300,
    }  # input/output are recorded by the official instrumentation, not again by llmtrace
    official = [
        p
        for p in receiver.points("gen_ai.client.token.usage")
        if "llmtrace.action" not in p.attributes
    ]
    assert {p.attributes["gen_ai.token.type"] for p in official} == {"input", "output"}


def test_metric_labels_are_folded_beyond_the_limit() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llmtrace.otel.metrics import CostMetrics
    from llmtrace.otel.settings import resolve

    reader = InMemoryMetricReader()
    settings = resolve({}, metric_max_values=2, metric_allow={"prompt": ["checkout"]})
    metrics = CostMetrics(MeterProvider(metric_readers=[reader]), settings)
    for model in ("a", "b", "c", "d"):
        for prompt in ("checkout", "search"):
            metrics.record({"request_model": model, "prompt": prompt, "total_cost": 0.5}, scope="x")
    points = [
        dp
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.usage.cost"
        for dp in m.data.data_points
    ]
    seen = {
        (dp.attributes["gen_ai.request.model"], dp.attributes["llmtrace.prompt"]): dp.count
        for dp in points
    }
    assert seen == {
        ("a", "checkout"): 1,
        ("a", "other"): 1,
        ("b", "checkout"): 1,
        ("b", "other"): 1,
        ("other", "checkout"): 2,
        ("other", "other"): 2,
    }


# -- cost per action ------------------------------------------------------------------------------


@pytest.fixture
def live_env(receiver: Any) -> Any:
    """``llmtrace.init()`` like ``live``, with an environment (a label of the action cost)."""
    from llmtrace.otel import _guard
    from llmtrace.otel.setup import init

    _guard.reset()
    handle = init(
        exporters="otlp",
        otlp_endpoint=receiver.endpoint,
        service_name="live-test",
        environment="staging",
        set_global=False,
        metric_interval_ms=3_600_000,
    )
    assert handle is not None
    yield handle
    handle.shutdown()


def _remote_parent() -> Any:
    """A context whose span came from another process (as a propagator would extract it)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(remote))


def test_action_cost_is_the_sum_of_its_calls(live_env: Any, provider: Any, receiver: Any) -> None:
    """One value per local root span: the sum of the calls under it, through OTLP."""
    tracer = live_env.tracer_provider.get_tracer("app")
    openai = openai_client(provider)
    claude = anthropic_client(provider, live_env.tracer_provider)
    sonnet = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "Say hello."}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    for _ in range(2):  # two instances of one action
        with tracer.start_as_current_span("checkout"):
            with tracer.start_as_current_span("load cart"):
                openai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            openai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            claude.messages.create(**sonnet)  # two spans, one call: counted once
    with tracer.start_as_current_span("search"):
        openai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    openai.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # its own root
    with tracer.start_as_current_span("no llm here"):
        pass
    with tracer.start_as_current_span("refund", context=_remote_parent()):
        openai.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # local root is unit
    live_env.force_flush()
    assert receiver.wait_for(lambda: bool(receiver.points("llmtrace.action.cost")))
    points = {p.attributes["llmtrace.action"]: p for p in receiver.points("llmtrace.action.cost")}
    gpt4o, claude_cost = sum(GPT4O.values()), sum(SONNET.values())
    expected = {
        "checkout": (2, 2 * (2 * gpt4o + claude_cost)),
        "search": (1, gpt4o),
        "chat gpt-4o": (1, gpt4o),
        "refund": (1, gpt4o),
    }
    assert {a: (p.count, pytest.approx(p.sum, rel=1e-9)) for a, p in points.items()} == expected
    checkout = points["checkout"]
    assert checkout.unit == "USD" and checkout.kind == "histogram"
    from llmtrace.otel.metrics import COST_BUCKETS

    assert checkout.bounds == list(COST_BUCKETS)
    # both instances cost 2 x 0.002093 + 0.0134 = 0.0176: the (0.01, 0.05] bucket
    assert checkout.bucket_counts[COST_BUCKETS.index(0.05)] == 2
    assert checkout.attributes == {
        "service.name": "live-test",
        "llmtrace.action": "checkout",
        "deployment.environment.name": "staging",
    }
    processor = live_env.processor
    assert processor.actions_recorded == 5 and processor.actions_unpriced == 0
    # per call, the same calls: 7 gpt-4o and 2 Sonnet
    calls: dict[str, int] = {}
    for point in receiver.points("gen_ai.usage.cost"):
        model = point.attributes["gen_ai.request.model"]
        calls[model] = calls.get(model, 0) + (point.count or 0)
    assert calls == {"gpt-4o": 7, "claude-sonnet-4-5": 2}


def test_action_with_an_unpriced_call_is_not_recorded(
    live_env: Any, provider: Any, receiver: Any
) -> None:
    """An unknown model makes the action's cost unknown: no value rather than a low one."""
    provider.openai_usage["gpt-nonexistent-9"] = provider.openai_usage["gpt-4o"]
    tracer = live_env.tracer_provider.get_tracer("app")
    client = openai_client(provider)
    with tracer.start_as_current_span("mixed"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.chat.completions.create(model="gpt-nonexistent-9", messages=MESSAGES)
    with tracer.start_as_current_span("priced"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    live_env.force_flush()
    assert receiver.wait_for(lambda: bool(receiver.points("llmtrace.action.cost")))
    actions = {p.attributes["llmtrace.action"] for p in receiver.points("llmtrace.action.cost")}
    assert actions == {"priced"}
    assert live_env.processor.actions_unpriced == 1


def test_hook_fingerprints_equal_those_of_captured_content(
    receiver: Any, provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook hashes util-genai's message objects; with content captured the same call's
    JSON messages must hash to the same prefixes (so live and imported spans agree)."""
    from llmtrace import fingerprint
    from llmtrace.otel.setup import init

    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    handle = init(
        exporters="otlp",
        otlp_endpoint=receiver.endpoint,
        capture_content=True,
        set_global=False,
        metrics=False,
    )
    assert handle is not None
    try:
        schema = {"type": "object", "properties": {"q": {"type": "string"}}}
        tools = [
            {
                "type": "function",
                "function": {"name": "lookup", "description": "Find.", "parameters": schema},
            }
        ]
        two_parts = [{"type": "text", "text": "Say"}, {"type": "text", "text": "hi"}]
        messages = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": two_parts},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Again, with ünïcode."},
        ]
        openai_client(provider).chat.completions.create(
            model="gpt-4o", messages=messages, tools=tools
        )
        handle.force_flush()
        (span,) = _llm_spans(receiver, 1)
    finally:
        handle.shutdown()
    attrs = span.attributes
    assert "gen_ai.input.messages" in attrs  # content was captured
    content = {k: v for k, v in attrs.items() if not k.startswith("llmtrace.prompt.")}
    fields = fingerprint.content_fields(content)
    hooked = attrs["llmtrace.prompt.prefix_hashes"]
    assert [f"{h:016x}" for h in fields["prefix_hashes"]] == hooked
    assert len(hooked) == 4  # template (system + tools) + three messages
    assert fields["prefix_tokens"] == attrs["llmtrace.prompt.prefix_tokens"]
    assert fields["template_fingerprint"] == attrs["llmtrace.prompt.template_fingerprint"]
