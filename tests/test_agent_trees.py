"""Agent trees: the agent and tool context of each call, from real GenAI semconv agent spans.

The spans come from the official OpenTelemetry GenAI utility (``opentelemetry-util-genai``'s
``TelemetryHandler``: ``invoke_agent``, ``execute_tool`` and ``chat`` spans in the semconv
shape, as the official agent instrumentations emit them), exported as OTLP protobuf, then
imported and grouped with ``costs --by agent / tool / conversation``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.genai.handler import TelemetryHandler

from llmtrace.cli import cli
from llmtrace.importers.otlp import import_otlp


def _agent_run(handler: TelemetryHandler, conversation: str) -> None:
    """triage agent: a call, a tool, a call that reads the tool's result, then a nested writer
    agent with one call."""
    with handler.invoke_local_agent(
        agent_name="triage", request_model="gpt-4o-mini", conversation_id=conversation
    ):
        with handler.inference("openai", request_model="gpt-4o-mini") as first:
            first.input_tokens, first.output_tokens = 500, 20
        with handler.tool("get_weather", agent_name="triage"):
            pass
        with handler.inference("openai", request_model="gpt-4o-mini") as second:
            second.input_tokens, second.output_tokens = 600, 30
        with handler.inference("openai", request_model="gpt-4o-mini") as third:
            third.input_tokens, third.output_tokens = 650, 10
        with (
            handler.invoke_local_agent(agent_name="writer", request_model="gpt-4o"),
            handler.inference("openai", request_model="gpt-4o") as nested,
        ):
            nested.input_tokens, nested.output_tokens = 900, 300


def _spans(runs: int = 2):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "helpdesk"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handler = TelemetryHandler(tracer_provider=provider)
    for i in range(runs):
        _agent_run(handler, f"conv-{i}")
    return exporter.get_finished_spans()


def test_calls_carry_innermost_agent_and_consumed_tool(tmp_path):
    path = tmp_path / "agents.pb"
    path.write_bytes(encode_spans(_spans(1)).SerializeToString())
    result = import_otlp([path])
    assert result.problems == []
    calls = result.calls.sort("start_time").select("agent", "tool", "input_tokens", "action")
    assert calls.rows() == [
        ("triage", None, 500, "invoke_agent triage"),
        ("triage", "get_weather", 600, "invoke_agent triage"),
        ("triage", None, 650, "invoke_agent triage"),  # the tool's result was read already
        ("writer", None, 900, "invoke_agent triage"),
    ]


def test_costs_by_agent_tool_and_conversation(tmp_path):
    path = tmp_path / "agents.pb"
    path.write_bytes(encode_spans(_spans(2)).SerializeToString())
    store = str(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(cli, ["import", "otlp", str(path), "--store", store]).exit_code == 0

    def rows(*by: str) -> list[dict]:
        args = ["costs", "--store", store, "--since", "1d", "--format", "json"]
        for key in by:
            args += ["--by", key]
        outcome = runner.invoke(cli, args)
        assert outcome.exit_code == 0, outcome.output
        return json.loads(outcome.stdout)

    by_agent = {r["agent"]: r for r in rows("agent")}
    assert set(by_agent) == {"triage", "writer"}
    assert by_agent["writer"]["calls"] == 2 and by_agent["triage"]["calls"] == 6
    writer = 2 * (900 * 2.5 + 300 * 10.0) / 1e6  # gpt-4o list prices
    assert abs(by_agent["writer"]["total_cost"] - writer) < 1e-9
    by_tool = {r["tool"]: r["calls"] for r in rows("tool")}
    assert by_tool == {"get_weather": 2, None: 6}
    by_conversation = {r["conversation"]: r["calls"] for r in rows("conversation")}
    assert by_conversation == {"conv-0": 4, "conv-1": 4}
    # an agent invocation is the action: cost per run, p50/p95, against a per-action price
    outcome = runner.invoke(
        cli,
        [
            "costs",
            "--store",
            store,
            "--since",
            "1d",
            "--format",
            "json",
            "--per-action-price",
            "invoke_agent triage=0.01",
        ],
    )
    (action,) = json.loads(outcome.stdout)
    assert action["instances"] == 2 and action["calls"] == 8
    total = pl.Series([r["total_cost"] for r in rows("conversation")]).sum()
    assert abs(action["token_cost"] - total) < 1e-12
    assert action["p50_cost"] == action["p95_cost"]  # two identical runs


def test_recorded_openai_agents_trace(tmp_path):
    """Spans recorded from a real run: openai-agents 0.24 with the OpenTelemetry contrib
    instrumentation (opentelemetry-instrumentation-openai-agents-v2 0.1.0), an agent with a
    function tool, two runs against a loopback Chat Completions server. That instrumentation
    puts a placeholder ``gen_ai.agent.name`` ("OpenAI Agent") on every chat and tool span and
    the tool span beside, not before, the call that reads its result: the agent must come
    from the ``invoke_agent`` span and the tool from the same invocation."""
    fixture = Path(__file__).parent / "fixtures" / "otlp-agents" / "openai-agents-v2.json"
    result = import_otlp([fixture])
    assert result.problems == []
    calls = result.calls.sort("start_time")
    assert calls.height == 4
    assert set(calls["agent"]) == {"triage"}
    assert calls["tool"].to_list() == [None, "get_weather", None, "get_weather"]
    assert set(calls["action"]) == {"Agent workflow"}  # the run's root span: the action
    assert calls["trace_id"].n_unique() == 2


def test_live_processor_labels_calls_with_agent_and_tool():
    """The live side: the cost processor reads the ancestry while spans are in progress, so
    priced spans carry llmtrace.agent / llmtrace.tool and the cost metrics the bounded
    gen_ai.agent.name label; the store exporter's records get both."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llmtrace.otel.exporters import spans_to_calls
    from llmtrace.otel.metrics import CostMetrics
    from llmtrace.otel.processor import CostSpanProcessor, LazyPriceBook
    from llmtrace.otel.settings import resolve

    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    metrics = CostMetrics(meters, resolve({}))
    processor = CostSpanProcessor(
        [SimpleSpanProcessor(exporter)],
        pricer=LazyPriceBook(),
        on_call=metrics.record,
        on_action=metrics.record_action,
        background=False,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    _agent_run(TelemetryHandler(tracer_provider=provider), "conv-live")
    provider.shutdown()
    priced = sorted(
        (s for s in exporter.get_finished_spans() if "gen_ai.usage.cost" in s.attributes),
        key=lambda s: s.start_time,
    )
    assert [
        (s.attributes.get("llmtrace.agent"), s.attributes.get("llmtrace.tool")) for s in priced
    ] == [
        ("triage", None),
        ("triage", "get_weather"),
        ("triage", None),
        ("writer", None),
    ]
    data = reader.get_metrics_data()
    agents = {
        dict(point.attributes).get("gen_ai.agent.name")
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.usage.cost"
        for point in m.data.data_points
    }
    assert agents == {"triage", "writer"}
    calls = spans_to_calls(exporter.get_finished_spans()).sort("start_time")
    assert calls["agent"].to_list() == ["triage", "triage", "triage", "writer"]
    assert calls["tool"].to_list() == [None, "get_weather", None, None]
    meters.shutdown()


def test_an_agent_run_stuck_on_one_tool_is_found_by_lt503(tmp_path):
    """An agent framework's run (no gen_ai.conversation.id: the trace is the session) that
    calls the same tool with the same arguments and reads the same result five times: the calls
    after it carry one step fingerprint, and LT503 prices the repeats."""
    from llmtrace.pricing import PriceBook, price_calls
    from llmtrace.rules.engine import run_audit

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "ci-fixer"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent-framework")
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 30_000,
        "gen_ai.usage.output_tokens": 400,
    }
    run = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "fixer"}
    with tracer.start_as_current_span("invoke_agent fixer", attributes=run):
        for _ in range(5):
            with tracer.start_as_current_span("chat gpt-4o", attributes=chat):
                pass
            tool = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "run_tests",
                "gen_ai.tool.call.arguments": '{"path": "tests/test_cart.py"}',
                "gen_ai.tool.call.result": "1 failed: assert 10.0 == 9.99",
            }
            with tracer.start_as_current_span("execute_tool run_tests", attributes=tool):
                pass
        with tracer.start_as_current_span("chat gpt-4o", attributes=chat):
            pass
    path = tmp_path / "run.pb"
    path.write_bytes(encode_spans(exporter.get_finished_spans()).SerializeToString())
    calls = import_otlp([path]).calls.sort("start_time")
    assert calls["tool"].to_list() == [None] + ["run_tests"] * 5
    assert calls["step_fingerprint"][1:].n_unique() == 1
    assert calls["conversation_id"].is_null().all()
    book = PriceBook()
    priced = price_calls(calls, book)
    start = priced["start_time"].min()
    result = run_audit(
        priced.lazy(),
        since=start,
        until=start + timedelta(days=1),
        select=["LT503"],
        price_book=book,
    )
    (finding,) = result.findings
    assert finding.service == "ci-fixer" and finding.evidence["repeated_calls"] == 4
    waste = priced.sort("start_time")["total_cost"][2:].sum()
    assert finding.evidence["repeated_cost_usd"] == pytest.approx(waste, abs=1e-6)
    (session,) = finding.evidence["worst_sessions"]
    assert session["conversation_id"] == f"trace:{calls['trace_id'][0]}"
