"""Dialects: each instrumentation's attributes, as it really writes them, become the same record.

Values are the recorded ones from shared/research/otel-genai-attributes.md: gpt-4o-mini prompt 1149
with 1024 cached; gpt-5-nano 228 completion tokens of which 192 reasoning; Claude 3.5 Sonnet
input 4 + cache_creation 1163 (then a read of 1163); Gemini prompt 8, candidates 339, thoughts
2292, total 2639.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.genai.handler import TelemetryHandler

from llmtrace.dialects import (
    SpanError,
    detect_dialect,
    is_llm_span,
    read_usage,
    span_to_call,
    token_count,
)
from llmtrace.record import CALL_SCHEMA

START_NS = 1_764_201_600_123_456_789  # 2025-11-27T00:00:00.123456789Z


def call(attrs: dict, scope: str | None = None, **span) -> dict:
    """span_to_call on a span mapping the way the importer builds it."""
    mapping = {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "parent_span_id": None,
        "name": "chat",
        "scope": scope,
        "start_ns": START_NS,
        "end_ns": START_NS + 2_500_000_000,
        "status_code": 0,
        "attributes": attrs,
        "resource": {"service.name": "support-bot", "deployment.environment.name": "prod"},
        "events": [],
    }
    mapping.update(span)
    return span_to_call(mapping)


def tokens(record: dict) -> tuple:
    return tuple(
        record[f]
        for f in (
            "input_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
        )
    )


def test_record_fields_are_call_record_columns():
    record = call({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 1})
    assert set(record) <= set(CALL_SCHEMA.names())
    assert record["start_time"] == datetime(2025, 11, 27, 0, 0, 0, 123456, tzinfo=UTC)
    assert record["duration_ms"] == pytest.approx(2500.0)
    assert (record["service"], record["environment"]) == ("support-bot", "prod")


# -- official OTel GenAI instrumentations ------------------------------------------------------


def _util_genai_span(provider: str, scope: str, **usage) -> dict:
    """Attributes exactly as opentelemetry-util-genai 1.3b0 writes them (a real SDK span)."""
    exporter = InMemorySpanExporter()
    provider_ = TracerProvider(resource=Resource.create({"service.name": "bot"}))
    provider_.add_span_processor(SimpleSpanProcessor(exporter))
    handler = TelemetryHandler(tracer_provider=provider_, instrumentation_scope_name=scope)
    with handler.inference(provider, request_model=usage.pop("model")) as invocation:
        invocation.response_model_name = usage.pop("response_model")
        invocation.response_id = "resp-1"
        for name, value in usage.items():
            setattr(invocation, name, value)
    (span,) = exporter.get_finished_spans()
    return {"attributes": dict(span.attributes), "scope": span.instrumentation_scope.name}


def test_util_genai_openai_chat_with_cached_prompt():
    span = _util_genai_span(
        "openai",
        "opentelemetry.instrumentation.genai.openai",
        model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        input_tokens=1149,
        cache_read_input_tokens=1024,
        output_tokens=12,
    )
    record = call(span["attributes"], span["scope"])
    assert record["dialect"] == "otel-genai"
    assert tokens(record) == (1149, 1024, None, 12, None)  # inclusive: unchanged
    assert (record["provider"], record["model"], record["request_model"]) == (
        "openai",
        "gpt-4o-mini-2024-07-18",
        "gpt-4o-mini",
    )
    assert (record["operation"], record["response_id"]) == ("chat", "resp-1")


def test_util_genai_anthropic_cache_write_uses_the_renamed_attribute():
    span = _util_genai_span(
        "anthropic",
        "opentelemetry.instrumentation.genai.anthropic",
        model="claude-3-5-sonnet-20240620",
        response_model="claude-3-5-sonnet-20240620",
        input_tokens=4 + 1163,
        cache_write_input_tokens=1163,
        output_tokens=339,
    )
    assert "gen_ai.usage.cache_write.input_tokens" in span["attributes"]
    record = call(span["attributes"], span["scope"])
    assert tokens(record) == (1167, None, 1163, 339, None)


@pytest.mark.parametrize(
    "name", ["gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.cache_creation.input_tokens"]
)
def test_both_cache_write_names_are_read(name):
    record = call({"gen_ai.usage.input_tokens": 1167, name: 1163, "gen_ai.usage.output_tokens": 1})
    assert record["cache_write_tokens"] == 1163


def test_google_genai_output_already_includes_thoughts():
    attrs = {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.5-flash",
        "gen_ai.usage.input_tokens": 8,
        "gen_ai.usage.output_tokens": 339 + 2292,
        "gen_ai.usage.reasoning.output_tokens": 2292,
    }
    record = call(attrs, "opentelemetry.instrumentation.google_genai")
    assert tokens(record) == (8, None, None, 2631, 2292)
    assert record["provider"] == "google"  # genai-prices id


def test_openai_reasoning_is_inside_output():
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-5-nano",
        "gen_ai.usage.input_tokens": 40,
        "gen_ai.usage.output_tokens": 228,
        "gen_ai.usage.reasoning.output_tokens": 192,
        "gen_ai.request.reasoning.level": "medium",
    }
    record = call(attrs, "opentelemetry.instrumentation.genai.openai")
    assert tokens(record) == (40, None, None, 228, 192)
    assert record["reasoning_effort"] == "medium"


def test_openai_v2_reports_input_and_output_only():
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 1149,
        "gen_ai.usage.output_tokens": 12,
    }
    record = call(attrs, "opentelemetry.instrumentation.openai_v2")
    assert record["dialect"] == "otel-openai-v2"
    assert tokens(record) == (1149, None, None, 12, None)


def test_semconv_1_26_prompt_and_completion_names():
    attrs = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.prompt_tokens": 1149,
        "gen_ai.usage.completion_tokens": 12,
    }
    assert detect_dialect(attrs).name == "otel-semconv-1.26"
    assert tokens(call(attrs)) == (1149, None, None, 12, None)


# -- OpenLLMetry -------------------------------------------------------------------------------


def test_openllmetry_new_names():
    attrs = {
        "gen_ai.provider.name": "openai",
        "llm.request.type": "chat",
        "gen_ai.request.model": "gpt-5-nano",
        "gen_ai.usage.input_tokens": 1149,
        "gen_ai.usage.output_tokens": 228,
        "gen_ai.usage.total_tokens": 1377,
        "gen_ai.usage.cache_read.input_tokens": 1024,
        "gen_ai.usage.reasoning_tokens": 192,
    }
    record = call(attrs, "opentelemetry.instrumentation.openai.v1")
    assert record["dialect"] == "openllmetry"
    assert tokens(record) == (1149, 1024, None, 228, 192)
    assert record["operation"] == "chat"


def test_openllmetry_legacy_underscore_names():
    attrs = {
        "gen_ai.system": "Anthropic",
        "llm.request.type": "chat",
        "gen_ai.request.model": "claude-3-5-sonnet-20240620",
        "gen_ai.usage.prompt_tokens": 4 + 1163,
        "gen_ai.usage.completion_tokens": 339,
        "gen_ai.usage.cache_creation_input_tokens": 1163,
        "gen_ai.usage.cache_read_input_tokens": 0,
        "llm.usage.total_tokens": 1506,
    }
    record = call(attrs, "opentelemetry.instrumentation.anthropic")
    assert record["dialect"] == "openllmetry-legacy"
    assert tokens(record) == (1167, 0, 1163, 339, None)
    assert record["provider"] == "anthropic"


def test_gemini_output_without_thoughts_is_made_inclusive():
    """An emitter that copies Gemini's candidates count into output (thoughts separate)."""
    attrs = {
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.5-flash",
        "gen_ai.usage.input_tokens": 8,
        "gen_ai.usage.output_tokens": 339,
        "gen_ai.usage.reasoning_tokens": 2292,
    }
    record = call(attrs, "opentelemetry.instrumentation.google_generativeai")
    assert tokens(record) == (8, None, None, 2631, 2292)


def test_total_shows_output_excluded_reasoning():
    """reasoning < output, but the total says the output was exclusive."""
    attrs = {
        "gen_ai.usage.input_tokens": 8,
        "gen_ai.usage.output_tokens": 3000,
        "gen_ai.usage.reasoning_tokens": 200,
        "gen_ai.usage.total_tokens": 3208,
    }
    assert call(attrs, "opentelemetry.instrumentation.vertexai")["output_tokens"] == 3200
    attrs["gen_ai.usage.total_tokens"] = 3008
    assert call(attrs, "opentelemetry.instrumentation.vertexai")["output_tokens"] == 3000


# -- OpenInference -----------------------------------------------------------------------------


def test_openinference_token_counts_cost_and_identity():
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.provider": "openai",
        "llm.system": "openai",
        "llm.model_name": "gpt-4o-mini-2024-07-18",
        "llm.token_count.prompt": 1149,
        "llm.token_count.completion": 228,
        "llm.token_count.total": 1377,
        "llm.token_count.prompt_details.cache_read": 1024,
        "llm.token_count.completion_details.reasoning": 192,
        "llm.cost.total": 0.000321,
        "session.id": "conv-42",
        "user.id": "u-7",
    }
    record = call(attrs, "openinference.instrumentation.openai")
    assert record["dialect"] == "openinference"
    assert tokens(record) == (1149, 1024, None, 228, 192)
    assert (record["reported_cost"], record["reported_cost_source"]) == (0.000321, "llm.cost.total")
    assert (record["operation"], record["model"]) == ("chat", "gpt-4o-mini-2024-07-18")
    assert (record["conversation_id"], record["user_id"]) == ("conv-42", "u-7")


def test_openinference_anthropic_cache_write():
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.provider": "anthropic",
        "llm.model_name": "claude-3-5-sonnet-20240620",
        "llm.token_count.prompt": 1167,
        "llm.token_count.completion": 339,
        "llm.token_count.prompt_details.cache_write": 1163,
    }
    assert tokens(call(attrs, "openinference.instrumentation.anthropic")) == (
        1167,
        None,
        1163,
        339,
        None,
    )


# -- OpenLIT -----------------------------------------------------------------------------------


def _openlit(provider: str, **usage) -> dict:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": provider,
        "gen_ai.request.model": usage.pop("model"),
        "gen_ai.usage.cost": usage.pop("cost", 0.0),
        **{f"gen_ai.usage.{k}": v for k, v in usage.items()},
    }


def test_openlit_anthropic_input_excludes_cache_tokens():
    write = _openlit(
        "anthropic",
        model="claude-3-5-sonnet-20240620",
        input_tokens=4,
        output_tokens=339,
        **{"cache_creation.input_tokens": 1163, "cache_read.input_tokens": 0},
        cost=0.0094,
    )
    record = call(write, "openlit.otel.tracing")
    assert record["dialect"] == "openlit"
    assert tokens(record) == (1167, 0, 1163, 339, None)
    assert (record["reported_cost"], record["reported_cost_source"]) == (
        0.0094,
        "gen_ai.usage.cost",
    )
    read = _openlit(
        "anthropic",
        model="claude-3-5-sonnet-20240620",
        input_tokens=4,
        output_tokens=20,
        **{"cache_creation.input_tokens": 0, "cache_read.input_tokens": 1163},
    )
    assert tokens(call(read, "openlit.otel.tracing")) == (1167, 1163, 0, 20, None)


def test_openlit_anthropic_exclusive_even_when_input_exceeds_the_cache():
    """Only the scope and provider can tell: 5000 uncached + 1000 read is not impossible."""
    attrs = _openlit(
        "anthropic",
        model="claude-3-5-sonnet-20240620",
        input_tokens=5000,
        output_tokens=10,
        **{"cache_read.input_tokens": 1000, "cache_creation.input_tokens": 0},
    )
    assert call(attrs, "openlit.otel.tracing")["input_tokens"] == 6000
    assert call(attrs, "opentelemetry.instrumentation.genai.anthropic")["input_tokens"] == 5000


def test_openlit_openai_input_is_inclusive():
    attrs = _openlit(
        "openai",
        model="gpt-4o-mini",
        input_tokens=1149,
        output_tokens=12,
        **{"cache_read.input_tokens": 1024, "cache_creation.input_tokens": 0},
    )
    assert tokens(call(attrs, "openlit.otel.tracing")) == (1149, 1024, 0, 12, None)


def test_impossible_inclusive_counts_are_treated_as_exclusive():
    """An OpenLIT Anthropic span seen without its scope still gets inclusive input."""
    attrs = {
        "gen_ai.system": "anthropic",
        "gen_ai.usage.input_tokens": 4,
        "gen_ai.usage.cache_creation.input_tokens": 1163,
        "gen_ai.usage.output_tokens": 339,
    }
    assert call(attrs)["input_tokens"] == 1167


# -- Logfire / pydantic-ai ---------------------------------------------------------------------


def test_pydantic_ai_operation_cost_and_usage_details():
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-5-nano",
        "gen_ai.usage.input_tokens": 40,
        "gen_ai.usage.output_tokens": 228,
        "gen_ai.usage.details.reasoning_tokens": 192,
        "operation.cost": 0.0042,
    }
    record = call(attrs, "pydantic-ai")
    assert record["dialect"] == "logfire"
    assert tokens(record) == (40, None, None, 228, 192)
    assert (record["reported_cost"], record["reported_cost_source"]) == (0.0042, "operation.cost")


def test_logfire_raw_usage_fills_reasoning_and_one_hour_writes():
    raw = {
        "input_tokens": 4,
        "cache_creation_input_tokens": 1163,
        "cache_read_input_tokens": 0,
        "output_tokens": 339,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1163},
    }
    attrs = {
        "gen_ai.system": "anthropic",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 1167,
        "gen_ai.usage.output_tokens": 339,
        "gen_ai.usage.cache_creation.input_tokens": 1163,
        "gen_ai.usage.raw": json.dumps(raw),
    }
    record = call(attrs, "logfire.anthropic")
    assert tokens(record) == (1167, None, 1163, 339, None)
    assert record["cache_write_1h_tokens"] == 1163
    openai_raw = {"completion_tokens": 228, "completion_tokens_details": {"reasoning_tokens": 192}}
    attrs = {
        "gen_ai.usage.input_tokens": 40,
        "gen_ai.usage.output_tokens": 228,
        "gen_ai.usage.raw": json.dumps(openai_raw),
    }
    assert call(attrs, "logfire.openai")["reasoning_tokens"] == 192


# -- Langfuse ----------------------------------------------------------------------------------


def test_langfuse_exclusive_buckets_become_inclusive():
    attrs = {
        "langfuse.observation.type": "generation",
        "langfuse.observation.model.name": "gpt-5-nano",
        "langfuse.observation.usage_details": json.dumps(
            {
                "input": 125,
                "input_cached_tokens": 1024,
                "output": 36,
                "output_reasoning_tokens": 192,
            }
        ),
        "langfuse.observation.cost_details": json.dumps({"input": 0.001, "total": 0.0123}),
        "langfuse.observation.prompt.name": "support-answer",
        "langfuse.observation.prompt.version": 3,
        "langfuse.session.id": "sess-9",
    }
    record = call(attrs, "langfuse-sdk")
    assert record["dialect"] == "langfuse"
    assert tokens(record) == (1149, 1024, None, 228, 192)
    assert record["reported_cost"] == 0.0123
    assert record["reported_cost_source"] == "langfuse.observation.cost_details.total"
    assert (record["prompt_name"], record["prompt_version"], record["prompt"]) == (
        "support-answer",
        "3",
        "support-answer@3",
    )
    assert (record["model"], record["conversation_id"]) == ("gpt-5-nano", "sess-9")


def test_langfuse_gemini_raw_keys():
    details = {"promptTokenCount": 8, "candidatesTokenCount": 339, "thoughtsTokenCount": 2292}
    attrs = {
        "langfuse.observation.type": "generation",
        "langfuse.observation.usage_details": json.dumps(details),
    }
    assert tokens(call(attrs, "langfuse-sdk")) == (8, None, None, 2631, 2292)


def test_langfuse_anthropic_write_with_ttl_split():
    details = {
        "input": 4,
        "input_cache_creation_5m": 0,
        "input_cache_creation_1h": 1163,
        "output": 9,
    }
    attrs = {"langfuse.observation.usage_details": json.dumps(details)}
    record = call(attrs, "langfuse-sdk")
    assert tokens(record) == (1167, None, 1163, 9, None)
    assert record["cache_write_1h_tokens"] == 1163


def test_langfuse_cost_without_total_is_summed():
    attrs = {
        "langfuse.observation.usage_details": json.dumps({"input": 1, "output": 1}),
        "langfuse.observation.cost_details": json.dumps({"input": 0.25, "output": 0.5}),
    }
    record = call(attrs, "langfuse-sdk")
    assert record["reported_cost"] == pytest.approx(0.75)
    assert record["reported_cost_source"] == "langfuse.observation.cost_details"


# -- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"gen_ai.operation.name": "chat"}, True),
        ({"gen_ai.operation.name": "embeddings", "gen_ai.usage.input_tokens": 5}, True),
        ({"gen_ai.usage.input_tokens": 5}, True),
        ({"llm.token_count.prompt": 5, "openinference.span.kind": "LLM"}, True),
        ({"llm.token_count.prompt": 500, "openinference.span.kind": "CHAIN"}, False),
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 900}, False),
        ({"gen_ai.operation.name": "execute_tool"}, False),
        ({"gen_ai.agent.name": "support", "gen_ai.usage.input_tokens": 900}, False),
        ({"langfuse.observation.type": "span", "gen_ai.usage.input_tokens": 1}, False),
        ({"langfuse.observation.type": "generation"}, True),
        ({"llm.request.type": "chat"}, True),
        ({"http.request.method": "POST", "llmtrace.action": "answer"}, False),
        ({}, False),
    ],
)
def test_is_llm_span(attrs, expected):
    assert is_llm_span(attrs, "span", None) is expected


@pytest.mark.parametrize(
    ("scope", "attrs", "expected"),
    [
        ("openlit.otel.tracing", {}, "openlit"),
        ("openinference.instrumentation.langchain", {}, "openinference"),
        ("opentelemetry.instrumentation.genai.openai", {}, "otel-genai"),
        ("opentelemetry.instrumentation.openai_v2", {}, "otel-openai-v2"),
        ("opentelemetry.instrumentation.openai.v1", {}, "openllmetry"),
        (
            "opentelemetry.instrumentation.openai.v1",
            {"llm.usage.total_tokens": 1},
            "openllmetry-legacy",
        ),
        ("pydantic-ai", {}, "logfire"),
        ("langfuse-sdk", {}, "langfuse"),
        (None, {"llm.token_count.prompt": 1}, "openinference"),
        (None, {"langfuse.observation.usage_details": "{}"}, "langfuse"),
        (None, {"operation.cost": 0.1}, "logfire"),
        (None, {"gen_ai.usage.cost": 0.1}, "openlit"),
        (None, {"gen_ai.usage.input_tokens": 1}, "otel-semconv"),
    ],
)
def test_detect_dialect(scope, attrs, expected):
    assert detect_dialect(attrs, scope).name == expected


# -- fields besides usage ----------------------------------------------------------------------


def test_error_status_type_and_exception_event():
    record = call({"gen_ai.operation.name": "chat", "error.type": "RateLimitError"})
    assert (record["is_error"], record["error_type"]) == (True, "RateLimitError")
    event = {"name": "exception", "attributes": {"exception.type": "openai.APITimeoutError"}}
    record = call({"gen_ai.operation.name": "chat"}, status_code=2, events=[event])
    assert (record["is_error"], record["error_type"]) == (True, "openai.APITimeoutError")
    assert call({"gen_ai.operation.name": "chat"})["is_error"] is False


def test_conversation_user_prompt_action_and_environment_fallbacks():
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.conversation.id": "c-1",
        "session.id": "ignored: conversation id wins",
        "enduser.id": "u-1",
        "gen_ai.prompt.name": "triage",
        "llmtrace.action": "classify-ticket",
        "deployment.environment": "staging",
    }
    record = call(attrs, resource={"service.name": "api"})
    assert record["conversation_id"] == "c-1"
    assert record["user_id"] == "u-1"
    assert (record["prompt_name"], record["prompt"]) == ("triage", "triage")
    assert record["action"] == "classify-ticket"
    assert (record["service"], record["environment"]) == ("api", "staging")


def test_prompt_falls_back_to_the_template_fingerprint():
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
        ),
    }
    record = call(attrs)
    assert record["prompt"] == f"fp:{record['template_fingerprint']}"
    assert record["input_content"] is None


# -- coercion and errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(12, 12), ("12", 12), (12.0, 12), ("12.0", 12), (0, 0)]
)
def test_token_counts_coerce_exact_integers(value, expected):
    assert token_count(value, "gen_ai.usage.input_tokens") == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-5, "negative"),
        ("-5", "negative"),
        (12.5, "whole number"),
        ("12.5", "whole number"),
        ("lots", "not a number"),
        ("", "not a number"),
        (True, "not a number"),
        ([1], "not a number"),
        (float("nan"), "whole number"),
    ],
)
def test_bad_token_counts_name_the_attribute(value, problem):
    with pytest.raises(SpanError, match=rf"gen_ai\.usage\.output_tokens: .*{problem}"):
        call({"gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": value})


def test_bad_json_usage_and_cost_name_the_attribute():
    with pytest.raises(SpanError, match="langfuse.observation.usage_details: not valid JSON"):
        call({"langfuse.observation.usage_details": "{input: 3"}, "langfuse-sdk")
    with pytest.raises(SpanError, match=r"usage_details\.output: token count -1 is negative"):
        call({"langfuse.observation.usage_details": '{"output": -1}'}, "langfuse-sdk")
    with pytest.raises(SpanError, match="operation.cost: cost 'cheap' is not a number"):
        call({"gen_ai.usage.input_tokens": 1, "operation.cost": "cheap"}, "pydantic-ai")


def test_read_usage_is_usable_on_its_own():
    """The live side calls it with a plain attribute mapping."""
    attrs = {"gen_ai.usage.input_tokens": "1149", "gen_ai.usage.cache_read.input_tokens": 1024.0}
    dialect = detect_dialect(attrs, None)
    assert read_usage(attrs, dialect, "openai")["input_tokens"] == 1149
    assert read_usage(attrs, dialect, "openai")["cache_read_tokens"] == 1024


def test_pydantic_ai_provider_details_fill_cache_counts():
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 1149,
        "gen_ai.usage.output_tokens": 12,
        "gen_ai.usage.details.cached_tokens": 1024,
    }
    assert call(attrs, "pydantic-ai")["cache_read_tokens"] == 1024


def test_durations_have_the_same_bits_alone_and_in_an_import() -> None:
    """``span_to_call`` (the live side, one span) and ``import otlp``'s Polars batch give the
    same ``duration_ms``: Polars divides a multi-row column by a scalar through its reciprocal,
    so ``/ 1e6`` in Python differed in the last bit for about a third of these durations."""
    from llmtrace.importers.otlp import calls_from_spans

    durations = [1_234_567, 7_000_001, 2_500_000_000, 333_333_333, 98_765_432_109, 1, 17]
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 1}
    spans = [
        {
            "trace_id": f"{i + 1:032x}",
            "span_id": f"{i + 1:016x}",
            "parent_span_id": None,
            "name": "chat",
            "start_ns": START_NS,
            "end_ns": START_NS + duration,
            "status_code": 0,
            "attributes": attrs,
        }
        for i, duration in enumerate(durations)
    ]
    alone = [call(attrs, **span)["duration_ms"] for span in spans]
    imported = calls_from_spans(spans).calls.sort("span_id")["duration_ms"].to_list()
    assert alone == imported
    assert any(d / 1e6 != ms for d, ms in zip(durations, alone, strict=True))  # the case it tests
