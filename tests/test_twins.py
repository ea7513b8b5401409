"""Twins: two spans of one call are one call record wherever they sit (llmtrace/twins.py).

Every span here was recorded from the real libraries (tests/fixtures/libraries): the
``anthropic`` SDK's own span beside OpenLLMetry's ``anthropic.chat`` in another trace,
OpenInference's ``messages.stream`` without a response id, Logfire's streaming request span
beside its log span. Variations (ids changed, spans split across files) are rewrites of those
recordings, never spans typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from recorded import (
    LIBRARIES,
    attribute,
    raw_spans,
    renamed,
    requests,
    single_span_request,
    write_requests,
)

from llmtrace import twins
from llmtrace.importers.otlp import import_otlp, stream_otlp
from llmtrace.record import PRICE_OK

OPENLLMETRY = LIBRARIES / "openllmetry-0.62.4.jsonl"
OPENINFERENCE = LIBRARIES / "openinference-0.1.66-3.1.0.jsonl"
LOGFIRE = LIBRARIES / "logfire-5.4.0.jsonl"
SCENARIOS = 12  # calls app.py makes: each recording holds exactly these


def _import(*paths: Path, **options: Any) -> pl.DataFrame:
    result = import_otlp(paths, **options)
    assert result.problems == []
    return result.calls


def _by_response(calls: pl.DataFrame, response_id: str) -> pl.DataFrame:
    return calls.filter(pl.col("response_id") == response_id)


def _split_spans(path: Path, keep: Any) -> list[dict[str, Any]]:
    """One request per span, for the spans ``keep(scope, span)`` selects."""
    return [
        single_span_request(resource, scope, span)
        for doc in requests(path)
        for resource, scope, span in raw_spans(doc)
        if keep(scope.get("name") or "", span)
    ]


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def test_openllmetry_and_sdk_spans_in_different_traces_are_one_call() -> None:
    calls = _import(OPENLLMETRY)
    assert calls.height == SCENARIOS
    merged = _by_response(calls, "msg_loop9")  # messages.create outside any app span
    assert merged.height == 1
    twin = merged["twin_ids"][0].to_list()
    assert len(twin) == 1 and not twin[0].startswith(merged["trace_id"][0])  # another trace
    # usage from the most detailed span (the SDK's: reasoning and 5m/1h cache writes)
    row = merged.row(0, named=True)
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (
        6167,
        5000,
        1163,
    )
    assert (row["output_tokens"], row["reasoning_tokens"]) == (500, 300)


def test_openinference_stream_without_response_id_merges_with_the_sdk_span() -> None:
    calls = _import(OPENINFERENCE)
    assert calls.height == SCENARIOS
    stream = _by_response(calls, "msg_loop14")  # the bare messages.stream() call
    assert stream.height == 1
    assert len(stream["twin_ids"][0]) == 1
    assert calls.filter(pl.col("provider") == "anthropic").height == 6


def test_logfire_streaming_request_and_log_span_are_one_priced_call() -> None:
    from llmtrace.pricing import price_calls

    calls = price_calls(_import(LOGFIRE))
    assert calls.height == SCENARIOS
    assert calls.filter(pl.col("price_status") != PRICE_OK).is_empty()
    streamed = calls.filter(pl.col("twin_ids").is_not_null())
    assert streamed.height == 6  # every streamed scenario: chat, responses, 2 anthropic, 2 in-app
    # the log span reports how long the stream took: the call starts at the request span
    for row in streamed.iter_rows(named=True):
        assert row["duration_ms"] > 0


def test_the_record_keeps_the_trace_with_the_apps_context() -> None:
    for path in (OPENLLMETRY, OPENINFERENCE, LOGFIRE):
        calls = _import(path)
        in_app = calls.filter(pl.col("action").is_in(["contract-review", "support-reply"]))
        assert in_app.height == 3, path.name  # the three in-app scenarios, once each
        spans = {span["spanId"]: span for doc in requests(path) for _, _, span in raw_spans(doc)}
        for row in in_app.iter_rows(named=True):
            parent = spans[row["span_id"]].get("parentSpanId")
            assert parent and spans[parent]["name"].startswith("handle "), path.name


def test_two_real_calls_with_equal_tokens_in_the_same_millisecond_stay_two(
    tmp_path: Path,
) -> None:
    """The recording again with new ids: every call made twice at the same instant, with the
    same usage, and (for OpenInference's streams) no response id to tell them apart."""
    for path in (OPENINFERENCE, LOGFIRE, OPENLLMETRY):
        docs = requests(path)
        twice = write_requests(tmp_path / path.name, docs + [renamed(d, "f") for d in docs])
        calls = _import(twice)
        assert calls.height == 2 * SCENARIOS, path.name
    # within one trace too: a copy whose spans keep the trace ids of the original
    docs = requests(OPENINFERENCE)
    same_traces = []
    for doc in docs:
        copy = renamed(doc, "f")
        for (_, _, original), (_, _, span) in zip(raw_spans(doc), raw_spans(copy), strict=True):
            span["traceId"] = original["traceId"]
        same_traces.append(copy)
    calls = _import(write_requests(tmp_path / "same-traces.jsonl", docs + same_traces))
    assert calls.height == 2 * SCENARIOS


def _stream_calls(paths: list[Path]) -> pl.DataFrame:
    """Every batch's calls, reading one request per batch."""
    batches: list[pl.DataFrame] = []
    stream_otlp(paths, lambda batch: batches.append(batch.calls), batch_spans=1)
    return pl.concat(batches)


def test_twins_merge_across_files_and_batches(tmp_path: Path) -> None:
    """Each span in its own request, the SDK's spans in one file and the instrumentations' in
    another, read one span per batch: late twins merge into the calls stored before them."""
    for path in (OPENLLMETRY, OPENINFERENCE, LOGFIRE):
        sdk = _split_spans(path, lambda scope, _: scope == "com.anthropic.sdk.python")
        logs = _split_spans(path, lambda _, span: attribute(span, "logfire.span_type") == "log")
        rest = _split_spans(
            path,
            lambda scope, span: (
                scope != "com.anthropic.sdk.python"
                and attribute(span, "logfire.span_type") != "log"
            ),
        )
        first = write_requests(tmp_path / f"a-{path.name}", rest)
        second = write_requests(tmp_path / f"b-{path.name}", sdk + logs)
        calls = _stream_calls([first, second])
        assert calls.height == SCENARIOS, path.name
        assert calls.select("trace_id", "span_id").is_duplicated().sum() == 0


def test_batch_and_one_at_a_time_rules_agree() -> None:
    """``time_edges`` (Polars, import) and ``are_twins`` (the live processor) on every pair of
    recorded spans without a shared response id."""
    from llmtrace.importers.otlp import _calls_frame, _Collector

    for path in (OPENLLMETRY, OPENINFERENCE, LOGFIRE):
        sink = _Collector(False)
        for doc in requests(path):
            sink.add_request(doc, str(path), 1)
        frame = _calls_frame(sink.calls, "otlp").with_row_index("_node")
        edges = {tuple(sorted(e)) for e in twins.time_edges(frame).iter_rows()}
        paired = {node for edge in edges for node in edge}
        rows = frame.to_dicts()
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                pair = (a["_node"], b["_node"])
                if a["response_id"] is not None and b["response_id"] is not None:
                    continue
                assert (pair in edges) <= twins.are_twins(a, b), (path.name, pair)
                if twins.are_twins(a, b):  # one to one: each has a twin, maybe this one
                    assert {a["_node"], b["_node"]} <= paired, (path.name, pair)


# --------------------------------------------------------------------------------------------
# Live: spans held back for their twin
# --------------------------------------------------------------------------------------------


def _logfire_stream_spans() -> tuple[Any, Any]:
    """Logfire's request span (no usage) and log span of the bare streamed chat completion."""
    from recorded import readable_spans

    spans = [s for s in readable_spans(LOGFIRE) if s.parent is None]
    request = next(s for s in spans if "usage" not in str(s.attributes) and "Chat" in s.name)
    log = next(
        s
        for s in spans
        if (s.attributes or {}).get("logfire.span_type") == "log"
        and s.attributes.get("gen_ai.response.id") == "chatcmpl-loop3"
    )
    return request, log


def _processor(**options: Any) -> tuple[Any, Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llmtrace.otel.processor import CostSpanProcessor, LazyPriceBook

    memory = InMemorySpanExporter()
    processor = CostSpanProcessor([SimpleSpanProcessor(memory)], pricer=LazyPriceBook(), **options)
    return processor, memory


def test_a_span_without_usage_waits_for_its_twin_then_defers_to_it() -> None:
    from llmtrace.otel.processor import PRICED_SPAN_ID

    request, log = _logfire_stream_spans()
    processor, memory = _processor(background=True, batch_delay_millis=1)
    processor.on_end(request)
    processor.on_end(log)
    assert processor.force_flush(10_000)
    exported = {s.name: dict(s.attributes or {}) for s in memory.get_finished_spans()}
    held, priced = exported[request.name], exported[log.name]
    assert priced["llmtrace.price.status"] == PRICE_OK
    assert held[PRICED_SPAN_ID] == f"{log.context.span_id:016x}"
    assert "llmtrace.price.status" not in held
    processor.shutdown()


def test_a_held_span_whose_twin_never_comes_is_released_unpriced() -> None:
    """After ``twin_wait_millis`` without a flush, and at once on a flush."""
    import time

    request, _ = _logfire_stream_spans()
    processor, memory = _processor(background=True, batch_delay_millis=1, twin_wait_millis=100)
    processor.on_end(request)
    deadline = time.monotonic() + 10
    while not memory.get_finished_spans() and time.monotonic() < deadline:
        time.sleep(0.02)
    (span,) = memory.get_finished_spans()
    assert span.attributes["llmtrace.price.status"] == "no_usage"
    processor.shutdown()

    processor, memory = _processor(background=True, batch_delay_millis=1)  # waits 60 s
    processor.on_end(request)
    assert processor.force_flush(10_000)
    assert [s.attributes["llmtrace.price.status"] for s in memory.get_finished_spans()] == [
        "no_usage"
    ]
    processor.shutdown()
