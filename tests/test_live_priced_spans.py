"""Spans llmtrace priced read back as the source wrote them: store exporter and import.

The live processor writes its own ``gen_ai.usage.cost`` and ``langfuse.observation.cost_details``
on every span it prices (``llmtrace.otel.spans``), over the source's. The store exporter and
``llmtrace import otlp`` of the exported spans read those spans again: they must not take
llmtrace's attributes for the source's, neither as dialect markers (a plain semconv span turned
Langfuse, an OpenLIT-counted one semconv) nor as the source's reported cost. These tests run
spans through the real live pipeline (``CostSpanProcessor`` -> ``StoreSpanExporter``) and hold
the store rows to the worker's own records, and the import of the exported spans (both import
lanes) to the store rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtrace.importers import otlp_columns, otlp_files
from llmtrace.importers.otlp import import_otlp
from llmtrace.otel.exporters import StoreSpanExporter
from llmtrace.otel.processor import CostSpanProcessor, LazyPriceBook
from llmtrace.pricing import price_calls
from llmtrace.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_ANTHROPIC = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.cache_read.input_tokens": 400,
    "gen_ai.usage.cache_creation.input_tokens": 100,
    "gen_ai.usage.output_tokens": 50,
}
_OPENLIT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.usage.input_tokens": 2000,
    "gen_ai.usage.output_tokens": 60,
    "gen_ai.usage.cost": 0.0123,
}
# (scope, attributes, the dialect, the source's own cost and where it came from); each call
# its own counts, so none is taken for another's twin
CASES: dict[str, tuple[str, dict[str, Any], str, float | None, str | None]] = {
    # plain semconv from a scope no dialect knows: llmtrace's cost details made it Langfuse
    "semconv": ("myapp.llm", _ANTHROPIC, "otel-semconv", None, None),
    # OpenLIT's own cost, overwritten by llmtrace's: it was read as llmtrace's total
    "openlit": ("openlit.otel.tracing", _OPENLIT, "openlit", 0.0123, "gen_ai.usage.cost"),
    # OpenLIT by its marker alone (input excludes cache on Anthropic): the counting depends on it
    "openlit-marker": (
        "myapp.llm",
        {**_ANTHROPIC, "gen_ai.usage.output_tokens": 70, "gen_ai.usage.cost": 0.0456},
        "openlit",
        0.0456,
        "gen_ai.usage.cost",
    ),
    # Langfuse's own cost details, replaced by llmtrace's
    "langfuse-cost": (
        "myapp.llm",
        {
            **_ANTHROPIC,
            "gen_ai.usage.output_tokens": 80,
            "langfuse.observation.cost_details": json.dumps({"total": 0.5}),
        },
        "langfuse",
        0.5,
        "langfuse.observation.cost_details.total",
    ),
}
_RECORD_FIELDS = (
    "dialect",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "reported_cost",
    "reported_cost_source",
)


@pytest.fixture
def live(prices: LazyPriceBook, tmp_path: Path) -> tuple[dict[str, Any], pl.DataFrame, list[Any]]:
    """Each case's span through the live pipeline: the worker's records by case, the store's
    rows, and the spans the exporters received."""
    memory = InMemorySpanExporter()
    store = tmp_path / "live"
    records: dict[str, dict[str, Any]] = {}
    processor = CostSpanProcessor(
        [SimpleSpanProcessor(memory), SimpleSpanProcessor(StoreSpanExporter(store, pricer=prices))],
        pricer=prices,
        on_call=lambda call, scope: records.setdefault(str(call["span_id"]), dict(call)),
        background=False,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    case_of: dict[str, str] = {}
    for case, (scope, attributes, *_) in CASES.items():
        tracer = provider.get_tracer(scope)
        with (
            tracer.start_as_current_span(f"POST /{case}"),
            tracer.start_as_current_span("chat", attributes=attributes) as span,
        ):
            case_of[f"{span.get_span_context().span_id:016x}"] = case
    provider.shutdown()
    by_case = {case_of[span_id]: record for span_id, record in records.items()}
    assert sorted(by_case) == sorted(CASES)
    rows = Store(store).scan().collect().sort("span_id")
    rows = rows.with_columns(
        pl.col("span_id").replace_strict(case_of, return_dtype=pl.String).alias("_case")
    )
    return by_case, rows, list(memory.get_finished_spans())


def test_store_rows_read_the_source_not_llmtraces_cost_attributes(
    live: tuple[dict[str, Any], pl.DataFrame, list[Any]],
) -> None:
    records, rows, spans = live
    assert rows.height == len(CASES)
    for case, (_, _, dialect, cost, source) in CASES.items():
        record = records[case]
        assert record["dialect"] == dialect, case  # the worker read the source's span
        assert (record["reported_cost"], record["reported_cost_source"]) == (cost, source), case
    assert _by_case(rows) == _worker_view(records)
    assert rows["total_cost"].null_count() == 0
    # every exported LLM span carries llmtrace's cost attributes, and the source's cost kept
    exported = {f"{s.context.span_id:016x}": dict(s.attributes) for s in spans}
    for row in rows.iter_rows(named=True):
        attrs = exported[row["span_id"]]
        _, _, _, cost, source = CASES[row["_case"]]
        assert attrs["llmtrace.price.status"] == "ok"
        assert "langfuse.observation.cost_details" in attrs and "gen_ai.usage.cost" in attrs
        assert attrs.get("llmtrace.reported_cost") == cost
        assert attrs.get("llmtrace.reported_cost_source") == source


def _by_case(rows: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """The record fields the dialect decides, per case, of rows with a ``_case`` column."""
    return {row["_case"]: {f: row[f] for f in _RECORD_FIELDS} for row in rows.to_dicts()}


def _worker_view(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {case: {f: record[f] for f in _RECORD_FIELDS} for case, record in records.items()}


def _imported(path: Path, monkeypatch: pytest.MonkeyPatch, *, columnar: bool) -> Any:
    mapped = []
    settle = otlp_columns.settle

    def counting(pending: Any, raw_names: list[str]) -> Any:
        settled = settle(pending, raw_names)
        mapped.append(settled.calls.height)
        return settled

    with monkeypatch.context() as patch:
        patch.setattr(otlp_files, "_columnar", columnar)
        patch.setattr(otlp_columns, "settle", counting)
        result = import_otlp([path], accuracy_names=())
    assert result.problems == []
    return result, sum(mapped)


@pytest.mark.parametrize("columnar", [False, True], ids=["per-span", "columnar"])
def test_import_of_the_exported_spans_gives_the_store_rows(
    live: tuple[dict[str, Any], pl.DataFrame, list[Any]],
    prices: LazyPriceBook,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    columnar: bool,
) -> None:
    """``llmtrace import otlp`` of the spans llmtrace exported (OTLP JSON, as a Collector's
    file exporter writes them) gives the store's rows, through either import lane."""
    records, rows, spans = live
    path = tmp_path / "exported.jsonl"
    path.write_text(MessageToJson(encode_spans(spans), indent=None) + "\n")
    result, by_expressions = _imported(path, monkeypatch, columnar=columnar)
    assert by_expressions == (len(CASES) if columnar else 0)  # the lane under test mapped them
    imported = price_calls(result.calls, prices.get()).sort("span_id")
    cases = rows.select("span_id", "_case")
    assert _by_case(imported.join(cases, on="span_id")) == _worker_view(records)
    compare = [c for c in rows.columns if c not in ("source", "_case")]
    left, right = rows.select(compare), imported.select(compare)
    money = [c for c in compare if left.schema[c] == pl.Float64 and c != "reported_cost"]
    exact = [c for c in compare if c not in money]
    assert left.select(exact).equals(right.select(exact), null_equal=True), (left, right)
    for column in money:  # two price_calls over frames of other shapes may differ in a last bit
        for x, y in zip(left[column].to_list(), right[column].to_list(), strict=True):
            assert (x is None) == (y is None), column
            assert x is None or abs(x - y) <= 1e-12 * max(abs(x), abs(y), 1e-9), column
