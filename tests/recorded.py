"""Recorded spans of real instrumentation libraries (tests/fixtures/libraries), for the tests.

The fixtures are OTLP JSON as each library's own exporter sent it (re-recorded by
``tests/fixtures/libraries/record.py``). Here they are read back as the span mappings the
importer builds, as SDK ``ReadableSpan`` objects (to replay them through the live processor in
the order they ended), and rewritten (ids changed, spans split into files) for the tests that
need variations of a real recording.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LIBRARIES = Path(__file__).resolve().parent / "fixtures" / "libraries"


def fixture_paths() -> list[Path]:
    return sorted(LIBRARIES.glob("*.jsonl"))


def requests(path: Path) -> list[dict[str, Any]]:
    """The export requests of one recording, in arrival order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def raw_spans(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any], Any]]:
    """(resource attributes, scope, raw span) of one request."""
    for resource_spans in doc["resourceSpans"]:
        resource = resource_spans.get("resource") or {}
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                yield resource, scope_spans.get("scope") or {}, span


def attribute(span: dict[str, Any], key: str) -> Any:
    for kv in span.get("attributes") or ():
        if kv["key"] == key:
            return next(iter(kv["value"].values()), None)
    return None


def single_span_request(resource: Any, scope: Any, span: Any) -> dict[str, Any]:
    """An export request holding one span (its resource and scope kept)."""
    return {
        "resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": [span]}]}]
    }


def write_requests(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    return path


def renamed(doc: dict[str, Any], tag: str) -> dict[str, Any]:
    """A copy of a request whose trace, span and response ids differ from the original's
    (``tag`` is a hex digit put in front of each id, and after each response id): the same
    calls, made a second time at the same instant with the same tokens."""
    doc = copy.deepcopy(doc)

    def new(old: str) -> str:  # another first digit, whatever the old one was
        return (tag if old[0] != tag else format(int(tag, 16) ^ 1, "x")) + old[1:]

    for _, _, span in raw_spans(doc):
        span["traceId"] = new(span["traceId"])
        span["spanId"] = new(span["spanId"])
        if span.get("parentSpanId"):
            span["parentSpanId"] = new(span["parentSpanId"])
        for kv in span.get("attributes") or ():
            if kv["key"] == "gen_ai.response.id":
                kv["value"] = {"stringValue": kv["value"]["stringValue"] + tag}
    return doc


def _value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return value["boolValue"]
    if "arrayValue" in value:
        return tuple(_value(v) for v in value["arrayValue"].get("values") or ())
    return json.dumps(value)  # kvlists: no SDK attribute type; kept as text


def readable_spans(path: Path) -> list[Any]:
    """The recording as SDK ``ReadableSpan`` objects, in the order the spans ended (the order
    a span processor's ``on_end`` saw them in the app)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    spans = []
    for doc in requests(path):
        for resource, scope, raw in raw_spans(doc):
            attrs = {kv["key"]: _value(kv["value"]) for kv in raw.get("attributes") or ()}
            res = {kv["key"]: _value(kv["value"]) for kv in resource.get("attributes") or ()}
            trace_id, span_id = int(raw["traceId"], 16), int(raw["spanId"], 16)
            parent = raw.get("parentSpanId")
            code = (raw.get("status") or {}).get("code", 0)
            spans.append(
                ReadableSpan(
                    name=raw["name"],
                    context=SpanContext(trace_id, span_id, False, TraceFlags(1)),
                    parent=SpanContext(trace_id, int(parent, 16), False, TraceFlags(1))
                    if parent
                    else None,
                    resource=Resource(res),
                    attributes=attrs,
                    kind=SpanKind(raw.get("kind", 1) - 1 if raw.get("kind") else 0),
                    status=Status(StatusCode(code)),
                    start_time=int(raw["startTimeUnixNano"]),
                    end_time=int(raw["endTimeUnixNano"]),
                    instrumentation_scope=InstrumentationScope(scope.get("name") or ""),
                )
            )
    return sorted(spans, key=lambda span: span.end_time)


def replay(
    path: Path, pricer: Any, store: Path | None = None, exporter_class: Any = None
) -> list[Any]:
    """Feed a recording's spans to the live ``CostSpanProcessor`` in the order they ended
    (with a ``StoreSpanExporter``, or ``exporter_class``, into ``store`` when given); returns
    what reached the exporters, after the processor's shutdown."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llmtrace.otel.exporters import StoreSpanExporter
    from llmtrace.otel.processor import CostSpanProcessor

    memory = InMemorySpanExporter()
    downstream = [SimpleSpanProcessor(memory)]
    if store is not None:
        exporter_class = exporter_class or StoreSpanExporter
        downstream.append(SimpleSpanProcessor(exporter_class(store, pricer=pricer)))
    processor = CostSpanProcessor(downstream, pricer=pricer, background=False)
    for span in readable_spans(path):
        processor.on_end(span)
    processor.shutdown()
    return list(memory.get_finished_spans())
