"""Decoding OTLP spans, JSON and protobuf, into the plain mappings the importer reads.

One job: turn an ``ExportTraceServiceRequest`` (a JSON document or protobuf message) into
span mappings, validating every value at the edge (ids, times, nesting, Unicode), so a bad
value rejects its span with a message, never the batch. Collecting, merging and resolving the
spans is ``llmtrace.importers.otlp``'s job.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from llmtrace.limits import EARLIEST_NS, LATEST_NS, time_problem_ns

_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class _Malformed(ValueError):
    """A line or span that is not OTLP; the message says what is wrong."""


# Errors a hostile or broken value raises somewhere below the edge; caught per span (or line)
# so that one bad value rejects its span, never the batch. RecursionError: nesting deeper than
# the interpreter's stack; UnicodeError: a lone surrogate; OverflowError: a number too large.
_VALUE_ERRORS = (
    AttributeError,
    KeyError,
    TypeError,
    ValueError,
    OverflowError,
    RecursionError,
    UnicodeError,
)
# A JSON escape of a surrogate; a line without one cannot hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _value_error(exc: BaseException) -> str:
    """A problem text for an error from ``_VALUE_ERRORS``."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeError):
        return "invalid Unicode (a lone surrogate) in a string"
    return f"malformed span ({type(exc).__name__}: {exc})"


def _check_unicode(raw: Any) -> None:
    """Raise ``_Malformed`` if a string anywhere in ``raw`` is not encodable as UTF-8."""
    try:
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _Malformed("invalid Unicode (a lone surrogate) in a string") from None


# --------------------------------------------------------------------------------------------
# OTLP JSON -> span mappings
# --------------------------------------------------------------------------------------------

_MISSING = object()


def _any_value(value: Any) -> Any:
    """An OTLP JSON AnyValue as a Python value (intValue strings become ints when they can)."""
    if not value:
        return None
    text = value.get("stringValue", _MISSING)
    if text is not _MISSING:
        return text
    if "intValue" in value:
        number = value["intValue"]
        if type(number) is str:
            try:
                return int(number)
            except ValueError:
                return number  # the dialect layer names the attribute if it matters
        return number
    if "doubleValue" in value:
        number = value["doubleValue"]
        return float(number) if type(number) is str else number
    if "boolValue" in value:
        return value["boolValue"]
    if "arrayValue" in value:
        return [_any_value(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return _attributes((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _attributes(items: Any) -> dict[str, Any]:
    if not items:
        return {}
    attributes: dict[str, Any] = {}
    try:
        for kv in items:
            key = kv["key"]
            value = kv.get("value")
            # most values are strings: read them inline (a call per attribute was ~10% of an
            # import); everything else, and every error, goes through _any_value as before
            if type(value) is dict and "stringValue" in value:
                attributes[key] = value["stringValue"]
            else:
                attributes[key] = _any_value(value)
    except (AttributeError, KeyError, TypeError):
        raise _Malformed("attributes are not a list of {key, value} objects") from None
    return attributes


_LOWER_HEX = {16: re.compile(r"[0-9a-f]{32}"), 8: re.compile(r"[0-9a-f]{16}")}


def _hex_id(value: Any, size: int, field: str) -> str:
    """A trace or span id as lowercase hex; base64 (protobuf's JSON mapping) is accepted too."""
    if type(value) is str and _LOWER_HEX[size].fullmatch(value) and value.strip("0"):
        return value  # the common case, already what the slow path would return
    if not value or not isinstance(value, str):
        raise _Malformed(f"no {field}")
    if len(value) == size * 2:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise _Malformed(f"{field} {value!r} is not hex") from None
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != size:
            raise _Malformed(f"{field} {value!r} is not a {size}-byte id")
    if not any(raw):
        raise _Malformed(f"{field} is all zeros")
    return raw.hex()


def _nanos(value: Any, field: str) -> int | None:
    if type(value) is str and value != "0" and value.isascii() and value.isdigit():
        number = int(value)  # the common case, a time as decimal text
        if EARLIEST_NS <= number < LATEST_NS:
            return number
    if value is None or value == "" or value == "0" or value == 0:
        return None
    if type(value) is not int:
        if type(value) is float or type(value) is bool:
            raise _Malformed(f"{field} {value!r} is not an integer")
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise _Malformed(f"{field} {value!r} is not an integer") from None
    return _checked_time(value, field)


def _checked_time(value: int, field: str) -> int:
    problem = time_problem_ns(value)
    if problem is not None:
        raise _Malformed(f"{field} {problem}")
    return value


def _status(span: Mapping[str, Any]) -> int:
    status = span.get("status")
    if not status:
        return 0
    code = status.get("code", 0)
    if type(code) is str:
        return _STATUS_CODES.get(code, 0)
    return code or 0


def _json_events(items: Any) -> list[dict[str, Any]]:
    if not items:
        return []
    return [{"name": e.get("name"), "attributes": _attributes(e.get("attributes"))} for e in items]


def _json_span(raw: Mapping[str, Any], scope: str | None, resource: dict[str, Any]):
    """One OTLP JSON span as the mapping ``llmtrace.dialects`` reads."""
    parent = raw.get("parentSpanId")
    name = raw.get("name") or ""
    if not isinstance(name, str):
        raise _Malformed(f"name is {type(name).__name__}, not text")
    return {
        "trace_id": _hex_id(raw.get("traceId"), 16, "traceId"),
        "span_id": _hex_id(raw.get("spanId"), 8, "spanId"),
        "parent_span_id": _hex_id(parent, 8, "parentSpanId") if parent else None,
        "name": name,
        "scope": scope,
        "start_ns": _nanos(raw.get("startTimeUnixNano"), "startTimeUnixNano"),
        "end_ns": _nanos(raw.get("endTimeUnixNano"), "endTimeUnixNano"),
        "status_code": _status(raw),
        "attributes": _attributes(raw.get("attributes")),
        "resource": resource,
        "events": _json_events(raw.get("events")),
    }


def _json_list(value: Any, field: str) -> list[Any]:
    """A repeated OTLP field: absent or null means empty; anything but a list is malformed."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed(f"{field} is {type(value).__name__}, not a list")
    return value


def _json_request_spans(doc: Any) -> Iterator[tuple[Any, Any]]:
    """(raw span, context) pairs of one ExportTraceServiceRequest; raises _Malformed if not one."""
    if not isinstance(doc, dict) or "resourceSpans" not in doc:
        raise _Malformed("not an OTLP trace request (no resourceSpans)")
    for resource_spans in _json_list(doc["resourceSpans"], "resourceSpans"):
        if not isinstance(resource_spans, dict):
            raise _Malformed("resourceSpans holds a non-object")
        resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
        scopes = resource_spans.get("scopeSpans")
        if scopes is None:
            scopes = resource_spans.get("instrumentationLibrarySpans")
        for scope_spans in _json_list(scopes, "scopeSpans"):
            if not isinstance(scope_spans, dict):
                raise _Malformed("scopeSpans holds a non-object")
            scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
            scope_name = scope.get("name") if isinstance(scope, dict) else None
            if not isinstance(scope_name, str):
                scope_name = None  # a scope name only helps to detect the dialect
            for raw in _json_list(scope_spans.get("spans"), "spans"):
                yield raw, (scope_name, resource)


# --------------------------------------------------------------------------------------------
# OTLP protobuf -> span mappings
# --------------------------------------------------------------------------------------------


def _proto_any(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_proto_any(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _proto_attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _proto_attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _proto_any(kv.value) for kv in items}


def _proto_id(value: bytes, size: int, field: str) -> str:
    if len(value) != size:
        raise _Malformed(f"no {field}" if not value else f"{field} is not {size} bytes")
    if not any(value):
        raise _Malformed(f"{field} is all zeros")
    return value.hex()


def _proto_span(raw: Any, scope: str | None, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "trace_id": _proto_id(raw.trace_id, 16, "traceId"),
        "span_id": _proto_id(raw.span_id, 8, "spanId"),
        "parent_span_id": _proto_id(raw.parent_span_id, 8, "parentSpanId")
        if raw.parent_span_id
        else None,
        "name": raw.name,
        "scope": scope,
        "start_ns": _checked_time(raw.start_time_unix_nano, "startTimeUnixNano")
        if raw.start_time_unix_nano
        else None,
        "end_ns": _checked_time(raw.end_time_unix_nano, "endTimeUnixNano")
        if raw.end_time_unix_nano
        else None,
        "status_code": raw.status.code,
        "attributes": _proto_attributes(raw.attributes),
        "resource": resource,
        "events": [
            {"name": e.name, "attributes": _proto_attributes(e.attributes)} for e in raw.events
        ],
    }


def _proto_messages(data: bytes) -> list[bytes]:
    """Split the Collector's length-prefixed stream; a lone request is one message."""
    if data[:1] == b"\x0a":  # field 1 (resource_spans), length-delimited: a bare request
        return [data]
    messages, pos = [], 0
    while pos + 4 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        messages.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return messages if pos == len(data) else [data]
