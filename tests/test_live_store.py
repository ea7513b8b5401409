"""The store exporter writes the same rows ``llmtrace import otlp`` writes for the same spans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from live.clients import anthropic_client, openai_client
from live.spans import CHAT_USAGE, memory_provider
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtrace.importers.otlp import import_otlp
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.store import Store

pytest_plugins = ["live.fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FINGERPRINTS = ("prefix_hashes", "prefix_tokens", "template_fingerprint", "input_fingerprint")


@pytest.fixture
def recorded(provider: Any, tmp_path: Path) -> tuple[pl.DataFrame, list[Any]]:
    """Calls made under init(exporters='store'); the store rows and the exported spans."""
    from llmtrace.otel.setup import init

    memory = InMemorySpanExporter()
    handle = init(
        exporters="store",
        store=tmp_path / "live",
        span_exporters=[memory],
        service_name="store-test",
        set_global=False,
    )
    assert handle is not None
    try:
        client = openai_client(provider)
        system = {"role": "system", "content": "You are terse."}
        client.chat.completions.create(
            model="gpt-4o", messages=[system, {"role": "user", "content": "hi"}]
        )
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[system, {"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        list(stream)
        claude = anthropic_client(provider, handle.tracer_provider)
        claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=2048,
            messages=[{"role": "user", "content": "hi"}],
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    finally:
        handle.shutdown()
    rows = Store(tmp_path / "live").scan().collect()
    return rows, list(memory.get_finished_spans())


def _imported(spans: list[Any], path: Path) -> pl.DataFrame:
    path.write_bytes(encode_spans(spans).SerializeToString())
    result = import_otlp([path])
    assert result.problems == []
    return price_calls(result.calls, PriceBook())


def test_store_rows_equal_import_of_the_same_spans(
    recorded: tuple[pl.DataFrame, list[Any]], tmp_path: Path
) -> None:
    live_rows, spans = recorded
    imported = _imported(spans, tmp_path / "spans.pb")
    assert live_rows.height == 3  # two OpenAI calls, one Anthropic call seen by two spans
    assert set(live_rows["source"]) == {"live"}
    assert live_rows["total_cost"].null_count() == 0
    compare = [c for c in live_rows.columns if c != "source"]
    left = live_rows.select(compare).sort("span_id")
    right = imported.select(compare).sort("span_id")
    # money with a tolerance (the house rule): two price_calls runs over frames of different
    # shapes may round a product in the last bit (0.00128 vs 0.0012799999999999999)
    money = [c for c in compare if left.schema[c] == pl.Float64]
    exact = [c for c in compare if c not in money]
    assert left.select(exact).equals(right.select(exact)), (left, right)
    for column in money:
        a, b = left[column].to_list(), right[column].to_list()
        assert [x is None for x in a] == [y is None for y in b], column
        assert all(
            abs(x - y) <= 1e-12 * max(abs(x), abs(y), 1e-9)
            for x, y in zip(a, b, strict=True)
            if x is not None
        ), (column, a, b)
    # fingerprints come from the completion hook (the content itself is never exported)
    assert live_rows["input_fingerprint"].null_count() == 0
    openai_rows = live_rows.filter(pl.col("provider") == "openai")
    assert openai_rows["prompt"].str.starts_with("fp:").all()
    assert openai_rows["template_fingerprint"].n_unique() == 1


def test_store_exporter_writes_good_spans_and_counts_a_bad_one(tmp_path: Path) -> None:
    """One span the importer rejects (a negative token count) is counted, not raised, and the
    rest of the batch is stored, through the importer's own ``calls_from_spans``."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from llmtrace.otel import _guard
    from llmtrace.otel.exporters import StoreSpanExporter

    memory, tracer_provider = memory_provider()
    tracer = tracer_provider.get_tracer("test")
    usage = dict(CHAT_USAGE)
    with tracer.start_as_current_span("POST /ask"):
        with tracer.start_as_current_span("chat", attributes=usage):
            pass
        with tracer.start_as_current_span(
            "chat", attributes={**usage, "gen_ai.usage.output_tokens": -1}
        ):
            pass
    _guard.reset()
    exporter = StoreSpanExporter(tmp_path / "live", pricer=None)
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    rows = Store(tmp_path / "live").scan().collect()
    assert rows.select("action", "source", "output_tokens").rows() == [("POST /ask", "live", 10)]
    assert _guard.error_counts() == {"exporter.store.span": 1}


@pytest.mark.parametrize("capture", [False, True])
def test_store_keeps_content_only_when_capture_is_asked(
    provider: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capture: bool
) -> None:
    """``LLMTRACE_CAPTURE_CONTENT`` is the live side's ``--keep-content``: the messages reach
    the store with it and never without it (fingerprints either way)."""
    from llmtrace.otel.setup import init

    # init(capture_content=True) sets this for the instrumentation: restore it afterwards
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    handle = init(
        exporters="store",
        store=tmp_path / "live",
        capture_content=capture,
        service_name="content-test",
        set_global=False,
        metrics=False,
    )
    assert handle is not None
    try:
        openai_client(provider).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "secret order 4711"}]
        )
    finally:
        handle.shutdown()
    (row,) = Store(tmp_path / "live").scan().collect().to_dicts()
    assert row["input_fingerprint"] is not None
    if capture:
        assert "secret order 4711" in row["input_content"]
        assert row["output_content"] is not None
    else:
        assert row["input_content"] is None and row["output_content"] is None
