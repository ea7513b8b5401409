"""Reading an SDK span and making the copy exporters receive: the cost span processor's span work.

Attributes added to a priced LLM span (always Python floats, never ints: Tempo does not compare
int with float):

* ``gen_ai.usage.cost`` - total USD (what Langfuse and OpenLIT-style dashboards read);
* ``llmtrace.cost.input``, ``.cache_read``, ``.cache_write``, ``.output``, ``.reasoning``,
  ``.total`` (and ``.request`` when a per-request fee applies) - disjoint components;
* ``langfuse.observation.cost_details`` - JSON with Langfuse's keys so it shows the breakdown;
* ``llmtrace.price.source`` (price data and version), ``llmtrace.price.status`` (``ok``);
* ``llmtrace.reported_cost`` (float) and ``llmtrace.reported_cost_source``, only when the
  source carried a cost of its own (``gen_ai.usage.cost``, Langfuse's cost details, ...): the
  record's ``reported_cost`` and the attribute it came from, kept because the attributes above
  replace the source's. Readers of a span with ``llmtrace.price.status`` ``ok`` take its
  reported cost from these alone (``dialect_values._priced_reported_cost``).

An unpriced call gets no cost attributes, only ``llmtrace.price.status`` saying why.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk import trace as _sdk_trace
from opentelemetry.sdk import util as _sdk_util
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from llmtrace import dialects

# The record's price status and token fields (llmtrace.record), repeated here so the live side
# never imports polars while the app starts; tests/test_startup.py checks they agree.
PRICE_OK = "ok"
TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)

PRICED_SPAN_ID = "llmtrace.priced_span_id"
PRICED_TRACE_ID = "llmtrace.priced_trace_id"
PRICE_STATUS = dialects.PRICE_STATUS
REPORTED_COST = dialects.REPORTED_COST
REPORTED_COST_SOURCE = dialects.REPORTED_COST_SOURCE
PRICE_SOURCE = "llmtrace.price.source"
ACTION = "llmtrace.action"
AGENT_ATTRIBUTE = dialects.AGENT_ATTRIBUTE
TOOL_ATTRIBUTE = dialects.TOOL_ATTRIBUTE
AGENT_NAMES = dialects.AGENT_NAME_ATTRIBUTES
_TOOL_MARKER_NAMES = tuple(name for name, _ in dialects.TOOL_SPAN_MARKERS)
TOTAL_COST = "gen_ai.usage.cost"
LANGFUSE_COST_DETAILS = "langfuse.observation.cost_details"
# call-record cost field -> (llmtrace.cost.* attribute, Langfuse cost_details key)
COST_ATTRIBUTES: dict[str, tuple[str, str | None]] = {
    "input_cost": ("llmtrace.cost.input", "input"),
    "cache_read_cost": ("llmtrace.cost.cache_read", "input_cached_tokens"),
    "cache_write_cost": ("llmtrace.cost.cache_write", "input_cache_creation"),
    "output_cost": ("llmtrace.cost.output", "output"),
    "reasoning_cost": ("llmtrace.cost.reasoning", "output_reasoning_tokens"),
    "total_cost": ("llmtrace.cost.total", "total"),
}
REQUEST_COST = "llmtrace.cost.request"
# Langfuse's cost_details keys in COST_ATTRIBUTES' order, and that JSON object as a template
_DETAIL_KEYS = tuple(key for _, key in COST_ATTRIBUTES.values() if key is not None)
_DETAILS = "{" + ",".join(f'"{key}":%r' for key in _DETAIL_KEYS) + "}"


def maybe_tool(attrs: Mapping[str, Any]) -> bool:
    """A cheap first look (app thread, every span end): could this be a tool span?"""
    return attrs.get("gen_ai.operation.name") == "execute_tool" or any(
        name in attrs for name in _TOOL_MARKER_NAMES
    )


def looks_like_llm_at_start(attrs: Mapping[str, Any] | None) -> bool:
    """Whether a span that just started is probably an LLM call (a candidate ancestor).

    Only start-time attributes are known here, so usage cannot decide; the operation name,
    OpenInference span kind and provider/system markers can. Agent, tool and workflow spans are
    excluded: an LLM call inside an agent span is its own call, not a second view of one.
    """
    if not attrs:
        return False
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        return operation in dialects.INFERENCE_OPERATIONS
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return kind in ("LLM", "EMBEDDING")
    if any(marker in attrs for marker in dialects.AGGREGATE_MARKERS):
        return False
    return "llm.request.type" in attrs or "gen_ai.system" in attrs


def attributes_to_read(span: ReadableSpan) -> Mapping[str, Any]:
    """A span's attributes for reading on the app's thread, without copying them.

    An SDK span's ``attributes`` is a read-only proxy over its ``BoundedAttributes``, which
    answer every ``get`` and ``in`` through Python-level methods (~0.5 us each; the hooks ask
    a dozen questions per span); the plain dict underneath answers in C. Only read here, never
    kept or changed.
    """
    inner = _inner_dict(span)
    if inner is not None:
        return inner
    attrs = span.attributes
    return attrs if attrs else {}


def _inner_dict(span: Any) -> dict[str, Any] | None:
    """The plain dict holding an SDK span's attributes (the ``BoundedAttributes``' own, or a
    copy's plain dict), or None when the span is not built that way."""
    attrs = getattr(span, "_attributes", None)
    if type(attrs) is dict:
        return attrs
    inner = getattr(attrs, "_dict", None)
    return inner if type(inner) is dict else None


def plain_attributes(span: ReadableSpan) -> dict[str, Any]:
    """A plain ``dict`` copy of a span's attributes, made once per span.

    Copied from the dict under the SDK's read-only proxy in one C call: through the proxy
    (``dict(...)`` or its ``copy()``) each key goes through a Python-level ``__getitem__``.
    """
    inner = _inner_dict(span)
    if inner is not None:
        return inner.copy()
    attrs = span.attributes
    if not attrs:
        return {}
    copy = getattr(attrs, "copy", None)
    if copy is not None:
        out = copy()
        if type(out) is dict:
            return out
    return dict(attrs)


_last_resource: tuple[Any, dict[str, Any]] = (None, {})
"""(the last SDK resource seen, its attributes as a plain dict): a provider's spans share one
resource, and its ``BoundedAttributes`` answer ``get`` through Python code (an absent name by a
raised KeyError), ~0.5 us a look-up where a dict takes 0.1; the dict is read, never changed."""


def _resource_attributes(resource: Any) -> Mapping[str, Any]:
    """The resource's attributes as a plain dict, made once per resource (SDK resources are
    immutable: a new one is a new object; the cache holds it, so its id is not reused)."""
    global _last_resource
    if resource is None:
        return {}
    last, attributes = _last_resource  # one read of the pair: safe from any thread
    if last is not resource:
        attributes = dict(resource.attributes)
        _last_resource = (resource, attributes)
    return attributes


def span_mapping(span: ReadableSpan, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain mapping ``llmtrace.dialects.span_to_call`` reads, from an SDK span
    (``attributes``: its attributes already copied by ``plain_attributes``, used as they are)."""
    if type(span) not in _SDK_SPANS:
        context, parent, scope = span.context, span.parent, span.instrumentation_scope
        status, name, resource = span.status, span.name, span.resource
        start, end, events = span.start_time, span.end_time, span.events
    else:  # the same values, read from the SDK span's fields (its properties are Python calls)
        context, parent, scope = span._context, span._parent, span._instrumentation_scope
        status, name, resource = span._status, span._name, span._resource
        start, end, events = span._start_time, span._end_time, span._events
    code = status.status_code
    mapping: dict[str, Any] = {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": name,
        "scope": scope.name if scope is not None else None,
        "start_ns": start,
        "end_ns": end,
        "status_code": code.value,
        "attributes": plain_attributes(span) if attributes is None else attributes,
        "resource": _resource_attributes(resource),
    }
    if code is StatusCode.ERROR and events:
        mapping["events"] = [
            {"name": event.name, "attributes": event.attributes or {}} for event in events
        ]
    return mapping


_COPY_FIELDS = (
    "_name",
    "_context",
    "_kind",
    "_instrumentation_info",
    "_instrumentation_scope",
    "_parent",
    "_start_time",
    "_end_time",
    "_attributes",
    "_events",
    "_links",
    "_resource",
    "_status",
)
"""The fields ``ReadableSpan.__init__`` sets, in its order, as ``with_attributes`` sets them."""
_SDK_SPANS = (
    (ReadableSpan, _sdk_trace.Span, getattr(_sdk_trace, "_Span", ReadableSpan))
    if tuple(vars(ReadableSpan(name=""))) == _COPY_FIELDS
    else ()
)
"""The SDK's span classes, whose properties return their ``_`` fields as they are (events
and links as tuples; every one of them sets all of ``_COPY_FIELDS`` when made):
``span_mapping`` and ``with_attributes`` read those fields directly for them, and only them
(a subclass may override a property: it is read through its properties). Attribute by
attribute, not through ``vars(span)``: the object keeps them inline, and asking for its
``__dict__`` makes one (~1 us and one more container for the collector, per LLM span).
Empty (every span read through its properties) for an SDK whose ``ReadableSpan`` has other
fields than the ones this module copies."""


def with_attributes(
    span: ReadableSpan, extra: Mapping[str, Any], base: dict[str, Any] | None = None
) -> ReadableSpan:
    """A read-only copy of ``span`` with ``extra`` attributes added (what exporters receive).

    ``base``: a private copy of the span's attributes (``plain_attributes``) that the copy may
    take over and extend, instead of copying them again."""
    attributes = plain_attributes(span) if base is None else base
    attributes.update(extra)
    if type(span) in _SDK_SPANS and span._resource is not None:
        # what ``ReadableSpan(...)`` below makes from the span's properties, without the
        # constructor's keywords and a Python call per property (the worker copies every
        # LLM span): the same fields, events and links as tuples, no instrumentation info
        copy = _new_readable(ReadableSpan)
        # set one by one, in the constructor's order: the object keeps them inline, where
        # assigning a ``__dict__`` makes one more container for the collector (per LLM span,
        # alive until the batch processor exports the copy)
        copy._name = span._name
        copy._context = span._context
        copy._kind = span._kind
        copy._instrumentation_info = None
        copy._instrumentation_scope = span._instrumentation_scope
        copy._parent = span._parent
        copy._start_time = span._start_time
        copy._end_time = span._end_time
        copy._attributes = attributes
        copy._events = _as_tuple(span._events)
        copy._links = _as_tuple(span._links)
        copy._resource = span._resource
        copy._status = span._status
        return copy
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


_new_readable = object.__new__
_BoundedList = getattr(_sdk_util, "BoundedList", None)


def _as_tuple(items: Any) -> tuple[Any, ...]:
    """``tuple(items)``, as the span's ``events`` and ``links`` properties give them. An SDK
    span keeps them in a ``BoundedList``, whose ``__iter__`` takes its lock and copies to a
    list in Python (~0.8 us each, two per LLM span, most of them empty); its deque gives the
    same items in one C call. The span has ended: the SDK adds no event or link any more."""
    if type(items) is _BoundedList:
        dq = getattr(items, "_dq", None)
        if type(dq) is deque:
            return tuple(dq) if dq else ()
    return tuple(items)


def cost_attributes(costs: Mapping[str, Any]) -> dict[str, Any]:
    """Span attributes for a priced call's cost fields (floats) or its price status."""
    get = costs.get
    return cost_attributes_of(
        (
            get("input_cost"),
            get("cache_read_cost"),
            get("cache_write_cost"),
            get("output_cost"),
            get("reasoning_cost"),
            get("request_cost"),
            get("total_cost"),
            get("price_source"),
            get("price_status"),
        )
    )


def cost_attributes_of(values: tuple[Any, ...]) -> dict[str, Any]:
    """``cost_attributes`` of a price as ``LazyPriceBook.values`` gives it (a tuple in
    ``pricer.PRICE_FIELDS`` order): the live worker's form, no dict of costs read back."""
    inp, read, write, out_, reasoning, request, total, source, status = values
    if status != PRICE_OK or total is None:
        return {PRICE_STATUS: str(status or "not_priced")}
    # written out (this runs once per call on the worker): the same keys, order and values as
    # a loop over COST_ATTRIBUTES
    inp = float(inp or 0.0)
    read = float(read or 0.0)
    write = float(write or 0.0)
    out_ = float(out_ or 0.0)
    reasoning = float(reasoning or 0.0)
    whole = float(total or 0.0)
    out: dict[str, Any] = {
        TOTAL_COST: float(total),
        "llmtrace.cost.input": inp,
        "llmtrace.cost.cache_read": read,
        "llmtrace.cost.cache_write": write,
        "llmtrace.cost.output": out_,
        "llmtrace.cost.reasoning": reasoning,
        "llmtrace.cost.total": whole,
    }
    if request:
        out[REQUEST_COST] = float(request)
    if math.isfinite(inp + read + write + out_ + reasoning + whole):
        # floats' repr is valid JSON for finite values and ~4x cheaper than json.dumps here
        out[LANGFUSE_COST_DETAILS] = _DETAILS % (inp, read, write, out_, reasoning, whole)
    else:
        out[LANGFUSE_COST_DETAILS] = json.dumps(
            dict(zip(_DETAIL_KEYS, (inp, read, write, out_, reasoning, whole), strict=True)),
            separators=(",", ":"),
        )
    out[PRICE_SOURCE] = str(source or "")
    out[PRICE_STATUS] = PRICE_OK
    return out


def add_reported_cost(extra: dict[str, Any], call: Mapping[str, Any]) -> None:
    """Keep the source's own cost on a span llmtrace priced (``extra``: the attributes added,
    its cost attributes among them): ``REPORTED_COST`` and ``REPORTED_COST_SOURCE`` from the
    call record, mapped before llmtrace wrote anything, when it has one. Why: the cost
    attributes replace the source's ``gen_ai.usage.cost`` / Langfuse cost details, and a
    reader of the exported span (the store exporter, ``llmtrace import otlp``) would take
    llmtrace's price for the source's."""
    reported = call.get("reported_cost")
    if reported is not None and extra.get(PRICE_STATUS) == PRICE_OK:
        extra[REPORTED_COST] = float(reported)
        source = call.get("reported_cost_source")
        extra[REPORTED_COST_SOURCE] = "" if source is None else str(source)
