"""OTLP JSON lines decoded by msgspec into typed structs: the import's fast lane (issue 15).

Why: parsing each line with the stdlib ``json`` into dicts and then walking those dicts into
span mappings (``otlp_spans``) cost ~30% of an import. msgspec decodes a line straight into
typed structs in less CPU than orjson's parse alone (no dict per JSON object, field names
matched in C), and the structs are walked into exactly the span mappings ``_json_span`` builds.

The guarantee: a line this module accepts gives exactly the spans the per-span path would
give, value for value; any line it is not sure of is declined (``None``) and read by the
per-span path, which reports problems with file, line and span as it always did. It declines:

* anything msgspec rejects: invalid JSON (msgspec is no more lenient than ``json`` anywhere it
  was tried: control characters, invalid UTF-8, NaN, leading zeros, trailing text), a BOM, a
  value of another type than the one declared below (a number where text belongs, a boolean
  where a count belongs, a float time), a field OTLP does not have (``forbid_unknown_fields``
  everywhere, so no unknown field can hide nesting the stdlib would refuse: the structs bound
  the depth), the pre-1.0 ``instrumentationLibrary*`` names, a JSON list of requests;
* attribute values nested deeper than an array of scalars or a key-value list of scalars;
* lines holding a surrogate escape (``\\ud800``: the per-span path checks those for lone
  surrogates, which Polars cannot store);
* any span whose id, time or name the per-span checks would reject (the same functions run
  here; any exception declines the whole line, so no span of it has been kept yet).

Where the two parsers agree by design rather than by check: duplicate keys (both keep the
last), integers beyond 64 bits (both give exact Python ints), floats (both round correctly;
msgspec refuses overflow such as ``1e400``, which declines the line). tests/test_import_equivalence.py
imports the whole fixture corpus and 200 hostile mutations of it both ways.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from llmtrace.importers.otlp_spans import (
    _STATUS_CODES,
    _SURROGATE_ESCAPE,
    _hex_id,
    _nanos,
)

# Every struct forbids unknown fields: see the module docstring (bounded depth, exact types).
# gc=False: a decoded request is a tree that nothing mutates, so its structs can never be in a
# reference cycle; untracked, they cost the garbage collector nothing (~10% less decoding CPU).
_OPTS = {"forbid_unknown_fields": True, "gc": False}


class _Scalar(Struct, **_OPTS):
    """An AnyValue inside an array or key-value list: scalars only (deeper values decline)."""

    stringValue: str | None | UnsetType = UNSET
    intValue: str | int | None | UnsetType = UNSET
    doubleValue: float | int | str | None | UnsetType = UNSET
    boolValue: bool | None | UnsetType = UNSET
    bytesValue: str | None | UnsetType = UNSET


class _Array(Struct, **_OPTS):
    values: list[_Scalar] | None = None


class _InnerKeyValue(Struct, **_OPTS):
    key: str
    value: _Scalar | None = None


class _KeyValueList(Struct, **_OPTS):
    values: list[_InnerKeyValue] | None = None


class _Value(Struct, **_OPTS):
    stringValue: str | None | UnsetType = UNSET
    intValue: str | int | None | UnsetType = UNSET
    doubleValue: float | int | str | None | UnsetType = UNSET
    boolValue: bool | None | UnsetType = UNSET
    arrayValue: _Array | None | UnsetType = UNSET
    kvlistValue: _KeyValueList | None | UnsetType = UNSET
    bytesValue: str | None | UnsetType = UNSET


class _KeyValue(Struct, **_OPTS):
    key: str
    value: _Value | None = None


class _Event(Struct, **_OPTS):
    name: str | None = None
    timeUnixNano: str | int | None = None
    attributes: list[_KeyValue] | None = None
    droppedAttributesCount: int | None = None


class _Link(Struct, **_OPTS):
    traceId: str | None = None
    spanId: str | None = None
    traceState: str | None = None
    attributes: list[_KeyValue] | None = None
    droppedAttributesCount: int | None = None
    flags: int | None = None


class _Status(Struct, **_OPTS):
    code: int | str | None | UnsetType = UNSET
    message: str | None = None


class _Span(Struct, **_OPTS):
    traceId: str | None = None
    spanId: str | None = None
    parentSpanId: str | None = None
    traceState: str | None = None
    flags: int | None = None
    name: str | None = None
    kind: int | str | None = None
    startTimeUnixNano: str | int | None = None
    endTimeUnixNano: str | int | None = None
    attributes: list[_KeyValue] | None = None
    droppedAttributesCount: int | None = None
    events: list[_Event] | None = None
    droppedEventsCount: int | None = None
    links: list[_Link] | None = None
    droppedLinksCount: int | None = None
    status: _Status | None = None


class _Scope(Struct, **_OPTS):
    name: str | None = None
    version: str | None = None
    attributes: list[_KeyValue] | None = None
    droppedAttributesCount: int | None = None


class _ScopeSpans(Struct, **_OPTS):
    scope: _Scope | None = None
    spans: list[_Span] | None = None
    schemaUrl: str | None = None


class _Resource(Struct, **_OPTS):
    attributes: list[_KeyValue] | None = None
    droppedAttributesCount: int | None = None


class _ResourceSpans(Struct, **_OPTS):
    resource: _Resource | None = None
    scopeSpans: list[_ScopeSpans] | None = None
    schemaUrl: str | None = None


class _Request(Struct, **_OPTS):
    resourceSpans: list[_ResourceSpans] | None


_DECODER = msgspec.json.Decoder(_Request)


def _scalar(value: _Scalar | _Value | None) -> Any:
    """``otlp_spans._any_value`` for a decoded scalar AnyValue (the same order of fields)."""
    if value is None:
        return None
    text = value.stringValue
    if text is not UNSET:
        return text
    number = value.intValue
    if number is not UNSET:
        if type(number) is str:
            try:
                return int(number)
            except ValueError:
                return number
        return number
    number = value.doubleValue
    if number is not UNSET:
        return float(number) if type(number) is str else number
    flag = value.boolValue
    if flag is not UNSET:
        return flag
    if type(value) is _Value:
        array = value.arrayValue
        if array is not UNSET:
            return [_scalar(v) for v in array.values or ()] if array else []
        kvlist = value.kvlistValue
        if kvlist is not UNSET:
            return _inner_attributes(kvlist.values) if kvlist else {}
    data = value.bytesValue
    if data is not UNSET:
        return data
    return None


def _inner_attributes(items: list[_InnerKeyValue] | None) -> dict[str, Any]:
    if not items:
        return {}
    return {kv.key: _scalar(kv.value) for kv in items}


def _attributes(items: list[_KeyValue] | None) -> dict[str, Any]:
    """``otlp_spans._attributes`` for decoded key-values (the last of two equal keys wins)."""
    if not items:
        return {}
    attributes: dict[str, Any] = {}
    for kv in items:
        value = kv.value
        if value is not None:
            text = value.stringValue
            if text is not UNSET:
                attributes[kv.key] = text
                continue
        attributes[kv.key] = _scalar(value)
    return attributes


def _status(status: _Status | None) -> int:
    if status is None:
        return 0
    code = status.code
    if code is UNSET:
        return 0
    if type(code) is str:
        return _STATUS_CODES.get(code, 0)
    return code or 0


def decode_line(line: bytes) -> list[tuple[str, dict[str, Any]]] | None:
    """(raw span id, span mapping) for every span of one JSON line, exactly as the per-span
    path gives them; ``None`` when the line must go through that path (module docstring)."""
    if _SURROGATE_ESCAPE.search(line) is not None:
        return None
    try:
        request = _DECODER.decode(line)
        return _spans(request)
    except Exception:  # noqa: BLE001 - any doubt declines the line; the per-span path reports it
        return None


def _spans(request: _Request) -> list[tuple[str, dict[str, Any]]]:
    spans: list[tuple[str, dict[str, Any]]] = []
    # ids already checked in this request, as ``_hex_id`` returned them: the spans of a trace
    # share its id and siblings their parent's, so most checks are one lookup (failures are
    # never kept: they decline the line)
    traces: dict[Any, str] = {}
    parents: dict[Any, str] = {}
    for resource_spans in request.resourceSpans or ():
        resource_struct = resource_spans.resource
        resource = _attributes(resource_struct.attributes if resource_struct else None)
        for scope_spans in resource_spans.scopeSpans or ():
            scope = scope_spans.scope
            scope_name = scope.name if scope is not None else None
            for raw in scope_spans.spans or ():
                span = _span(raw, scope_name, resource, traces, parents)
                spans.append((raw.spanId, span))  # type: ignore[arg-type]
    return spans


def _span(
    raw: _Span,
    scope: str | None,
    resource: dict[str, Any],
    traces: dict[Any, str],
    parents: dict[Any, str],
) -> dict[str, Any]:
    trace = raw.traceId
    trace_id = traces.get(trace)
    if trace_id is None:
        trace_id = traces[trace] = _hex_id(trace, 16, "traceId")
    span_id = _hex_id(raw.spanId, 8, "spanId")
    parent = raw.parentSpanId
    if parent:
        parent_id = parents.get(parent)
        if parent_id is None:
            parent_id = parents[parent] = _hex_id(parent, 8, "parentSpanId")
    else:
        parent_id = None
    events = raw.events
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_id,
        "name": raw.name or "",
        "scope": scope,
        "start_ns": _nanos(raw.startTimeUnixNano, "startTimeUnixNano"),
        "end_ns": _nanos(raw.endTimeUnixNano, "endTimeUnixNano"),
        "status_code": _status(raw.status),
        "attributes": _attributes(raw.attributes),
        "resource": resource,
        "events": [{"name": e.name, "attributes": _attributes(e.attributes)} for e in events]
        if events
        else [],
    }
