"""Attribute dialects: which span attribute carries which call-record field, per instrumentation.

Every instrumentation names LLM usage differently and some count differently. This module is the
one place that knows; everything after it reads call records. It works on a plain mapping of
attribute values (no file format, no SDK objects), so the OTLP importer and the live span
processor share it.

The knowledge is in data tables (``llmtrace.dialect_tables``), not in branches:

* ``COMMON_FIELDS`` -- attribute names per record field that mean the same thing everywhere
  (model, provider, conversation, user, prompt name/version, reasoning effort, ...), in order of
  preference; the first attribute present wins.
* ``SEMCONV_TOKENS`` -- the OTel GenAI semconv token names (v1.26 ``prompt_tokens`` through v1.41
  and the unreleased ``cache_write`` rename). Every dialect falls back to these after its own.
* ``DIALECTS`` -- one ``Dialect`` per instrumentation: how to recognise it (scope-name prefixes,
  marker attributes), its own token and cost attribute names, and how it counts (the providers
  for which its input excludes cache tokens; a JSON usage attribute with exclusive buckets).
* ``USAGE_JSON_BUCKETS`` -- Langfuse ``usage_details`` keys (exclusive buckets) per record field;
  ``RAW_USAGE_PATHS`` -- counts read from Logfire's raw provider usage object.
* ``OPERATION_SOURCES``, ``COST_ATTRIBUTES``, ``PROVIDER_ALIASES`` -- operation, reported cost and
  genai-prices provider ids; ``SERVICE_TIER_VALUES`` -- service-tier spellings.

Counting rules (the call record is inclusive: input includes cache reads and writes, output
includes reasoning; see ``llmtrace/record.py``):

* A dialect whose input excludes cache tokens (OpenLIT on Anthropic) gets cache reads and writes
  added to input. Independently of the dialect, ``cache_read + cache_write > input`` is impossible
  for an inclusive count, so such input is treated as exclusive too.
* Output that excludes reasoning (Gemini's ``candidates`` next to ``thoughts``) gets reasoning
  added. No instrumentation says so reliably (pydantic-ai changed between releases), so it is
  read from the data: ``reasoning > output`` is impossible for an inclusive count, and a
  reported total equal to ``input + output + reasoning`` shows the output was exclusive.
  Langfuse buckets and Gemini's raw keys are exclusive by definition and summed.
* Zero cache or reasoning counts are often omitted by the emitters (util-genai does): an absent
  count stays null (unknown), it is never invented.

Token values arriving as strings or floats are accepted when they are exact non-negative
integers; anything else raises ``SpanError`` naming the attribute.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from llmtrace import fingerprint
from llmtrace.dialect_tables import (
    _VARIANTS,
    AGENT_ATTRIBUTE,
    AGENT_NAME_ATTRIBUTES,
    AGENT_OPERATIONS,
    AGGREGATE_MARKERS,
    COMMON_FIELDS,
    COST_ATTRIBUTES,
    DIALECTS,
    DIALECTS_BY_NAME,
    INFERENCE_OPERATIONS,
    LANGFUSE,
    LANGFUSE_COST_JSON,
    LANGFUSE_MODEL_PARAMETERS,
    LANGFUSE_USAGE_JSON,
    LOGFIRE,
    LOGFIRE_RAW_USAGE,
    NON_INFERENCE_OPERATIONS,
    OPENINFERENCE,
    OPENLIT,
    OPENLLMETRY,
    OPENLLMETRY_LEGACY,
    OPERATION_SOURCES,
    OTEL_GENAI,
    OTEL_OPENAI_V2,
    PRICE_STATUS,
    PRICED,
    PRICED_OVER,
    PROVIDER_ALIASES,
    RAW_USAGE_PATHS,
    REPORTED_COST,
    REPORTED_COST_SOURCE,
    SEMCONV,
    SEMCONV_1_26,
    SEMCONV_TOKENS,
    SERVICE_TIER_VALUES,
    STATUS_ERROR,
    TOKEN_RECORD_FIELD,
    TOOL_ATTRIBUTE,
    TOOL_NAME_ATTRIBUTES,
    TOOL_SPAN_MARKERS,
    USAGE_ATTRIBUTES,
    USAGE_JSON_BUCKETS,
    Dialect,
    Found,
    SpanError,
    _collect,
    _found,
)
from llmtrace.dialect_values import (
    _first,
    _reported_cost,
    _text,
    _usage_values,
    cost_value,
    read_reported_cost,
    read_usage,
    token_count,
)

# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def is_llm_span(
    attrs: Mapping[str, Any], name: str | None = None, scope: str | None = None
) -> bool:
    """Whether a span describes one model call (and so becomes a call record).

    Agent, tool and workflow spans are not calls even when they carry token totals: those are
    sums of their child calls. ``name`` and ``scope`` are accepted for emitters that can only be
    recognised by them; the attribute rules below decide every instrumentation listed here.
    """
    operation = attrs.get("gen_ai.operation.name")
    if operation in NON_INFERENCE_OPERATIONS:
        return False
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return kind in ("LLM", "EMBEDDING")
    observation_type = attrs.get("langfuse.observation.type")
    if observation_type is not None:
        return str(observation_type).lower() in ("generation", "embedding")
    if operation in INFERENCE_OPERATIONS:
        return True
    if any(marker in attrs for marker in AGGREGATE_MARKERS):
        return False
    if "llm.request.type" in attrs:
        return True
    return not USAGE_ATTRIBUTES.isdisjoint(attrs)


_SCOPE_DIALECTS: dict[str, Dialect | None] = {}
"""scope name -> the first dialect whose scope prefixes it starts with (None: no dialect's);
an import sees a handful of scopes, so the prefix scan runs once per scope, not per span."""


def _scope_dialect(scope: str) -> Dialect | None:
    try:
        return _SCOPE_DIALECTS[scope]
    except KeyError:
        pass
    found = None
    for dialect in DIALECTS:
        if dialect.scope_prefixes and scope.startswith(dialect.scope_prefixes):
            found = dialect
            break
    if len(_SCOPE_DIALECTS) < 10_000:  # bounded: scope names come from the input
        _SCOPE_DIALECTS[scope] = found
    return found


def detect_dialect(attrs: Mapping[str, Any], scope: str | None = None) -> Dialect:
    """The dialect a span was written in: by instrumentation scope, else by marker attributes."""
    if scope:
        dialect = _scope_dialect(scope) if type(scope) is str else _scan_scope(scope)
        if dialect is not None:
            variant = _VARIANTS.get(dialect.name)
            if variant is not None and any(m in attrs for m in variant.markers):
                return variant
            return dialect
    if attrs.get(PRICE_STATUS) == PRICED:
        return _priced_dialect(attrs)
    for dialect in DIALECTS:
        if any(marker in attrs for marker in dialect.markers):
            return dialect
    return SEMCONV


_PRICED_OVER = frozenset(PRICED_OVER)


def _priced_dialect(attrs: Mapping[str, Any]) -> Dialect:
    """``detect_dialect``'s marker step for a span llmtrace's live processor priced.

    The processor wrote ``PRICED_OVER`` (OpenLIT's and Langfuse's markers) on every span it
    priced: as markers they would make a plain semconv span Langfuse's (or OpenLIT's, whose
    Anthropic input excludes cache tokens). Such a marker counts only when the source carried
    it: when the source's reported cost, kept by the processor (``REPORTED_COST_SOURCE``),
    came from it. Not covered: a source marker that gave no cost (an empty ``{}`` of cost
    details, a ``""`` cost) is not seen on such a span."""
    source = attrs.get(REPORTED_COST_SOURCE)
    for dialect in DIALECTS:
        for marker in dialect.markers:
            if marker in attrs and (marker not in _PRICED_OVER or reported_from(source, marker)):
                return dialect
    return SEMCONV


def reported_from(source: Any, attribute: str) -> bool:
    """Whether a reported cost's source (``reported_cost_source``) is ``attribute`` or a key
    of it (``langfuse.observation.cost_details.total``)."""
    return type(source) is str and (source == attribute or source.startswith(attribute + "."))


def _scan_scope(scope: Any) -> Dialect | None:
    """``_scope_dialect`` without the cache (a scope that is not text fails here as before)."""
    for dialect in DIALECTS:
        if dialect.scope_prefixes and scope.startswith(dialect.scope_prefixes):
            return dialect
    return None


def normalize_service_tier(value: Any) -> str | None:
    """The record's ``service_tier`` for an emitted value (see ``SERVICE_TIER_VALUES``)."""
    if type(value) is str:  # the usual value, without the isinstance of a union (0.15 us)
        text = value.strip().lower()
    elif value is None or not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    else:
        text = str(value).strip().lower()
    if not text:
        return None
    return SERVICE_TIER_VALUES.get(text, text)


def _service_tier(found: Found, attrs: Mapping[str, Any]) -> str | None:
    """The call's tier: the best-ranked attribute, else Langfuse's model parameters."""
    tier = _found(found, "service_tier")
    if tier is None:
        raw = attrs.get(LANGFUSE_MODEL_PARAMETERS)
        if isinstance(raw, str) and "service_tier" in raw:
            try:
                params = json.loads(raw)
            except ValueError:
                params = None
            if isinstance(params, dict):
                tier = params.get("service_tier")
    return normalize_service_tier(tier)


def normalize_provider(value: Any) -> str | None:
    """A genai-prices provider id where the emitter's spelling is known, else the value lowered."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    return PROVIDER_ALIASES.get(text, text)


# --------------------------------------------------------------------------------------------
# Span -> call record
# --------------------------------------------------------------------------------------------


def agent_and_tool(attrs: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(agent, tool) a span declares. The agent only on an agent span: ``invoke_agent`` /
    ``create_agent``, or a span naming an agent without any operation (pydantic-ai's "agent
    run"); other spans' ``gen_ai.agent.name`` is not trusted (openai-agents' instrumentation
    puts a placeholder, "OpenAI Agent", on every chat and tool span). The tool only on a
    tool-execution span (``execute_tool`` or a dialect's tool span kind)."""
    operation = attrs.get("gen_ai.operation.name")
    agent = None
    if operation in AGENT_OPERATIONS or operation is None:
        agent = _text(_first(attrs, AGENT_NAME_ATTRIBUTES))
    is_tool = operation == "execute_tool"
    if not is_tool:
        for name, value in TOOL_SPAN_MARKERS:  # a loop, not any(<generator>): once per span
            if attrs.get(name) == value:
                is_tool = True
                break
    tool = _text(_first(attrs, TOOL_NAME_ATTRIBUTES)) if is_tool else None
    if is_tool and tool is None:
        tool = _text(attrs.get("traceloop.entity.name"))
    return agent, tool


def _operation(attrs: Mapping[str, Any]) -> str | None:
    for name, translate in OPERATION_SOURCES:
        value = attrs.get(name)
        if value is not None and value != "":
            text = str(value)
            return translate.get(text, text.lower()) if translate else text
    return None


def _error(span: Mapping[str, Any], attrs: Mapping[str, Any]) -> tuple[bool, str | None]:
    error_type = _text(attrs.get("error.type"))
    level = attrs.get("langfuse.observation.level")
    is_error = span.get("status_code") == STATUS_ERROR or error_type is not None or level == "ERROR"
    if is_error and error_type is None:
        for event in span.get("events") or ():
            if event.get("name") == "exception":
                error_type = _text((event.get("attributes") or {}).get("exception.type"))
                break
    return is_error, error_type


def _prompt_key(name: str | None, version: str | None, template: str | None) -> str | None:
    if name:
        return f"{name}@{version}" if version else name
    return f"fp:{template}" if template else None


def _start_ns(span: Mapping[str, Any], attrs: Mapping[str, Any], dialect: Dialect) -> Any:
    """The span's start, or for a point-in-time span with an ``elapsed`` duration, when the
    call it reports began (see ``Dialect.elapsed``)."""
    start, end = span.get("start_ns"), span.get("end_ns")
    if dialect.elapsed is None or start is None or start != end:
        return start
    seconds = attrs.get(dialect.elapsed)
    if type(seconds) not in (int, float) or not 0 < seconds < 86_400:
        return start
    return end - round(seconds * 1e9)


_SERVICE_NAMES = COMMON_FIELDS["service"]
_ENVIRONMENT_NAMES = COMMON_FIELDS["environment"]


CALL_FIELDS: tuple[str, ...] = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "response_id",
    "dialect",
    "service",
    "environment",
    "provider",
    "model",
    "request_model",
    "operation",
    "prompt_name",
    "prompt_version",
    "prompt",
    "action",
    "conversation_id",
    "user_id",
    "reasoning_effort",
    "service_tier",
    "agent",
    "tool",
    "start_ns",
    "end_ns",
    "is_error",
    "error_type",
    *TOKEN_RECORD_FIELD.values(),
    "reported_cost",
    "reported_cost_source",
    *fingerprint.EMPTY_FIELDS,
)
"""The fields ``map_span_row`` returns, in its order (``map_span``'s keys)."""


def map_span(span: Mapping[str, Any], *, keep_content: bool = False) -> dict[str, Any]:
    """Call-record fields for one LLM span, times as Unix nanoseconds (``start_ns``/``end_ns``).

    ``span_to_call`` returns datetimes. Raises ``SpanError`` naming the attribute at fault.
    """
    return dict(zip(CALL_FIELDS, map_span_row(span, keep_content=keep_content), strict=True))


def map_span_row(span: Mapping[str, Any], *, keep_content: bool = False) -> tuple[Any, ...]:
    """``map_span``'s values as one tuple in ``CALL_FIELDS`` order.

    Why a tuple: the bulk importer turns its calls into frame columns with one transpose of
    these rows; a dict per call, then a lookup per field to read it back, cost ~15% of an
    import (issue 15).
    """
    attrs: Mapping[str, Any] = span.get("attributes") or {}
    resource: Mapping[str, Any] = span.get("resource") or {}
    get = span.get
    dialect = detect_dialect(attrs, get("scope"))
    found = _collect(attrs, dialect)
    # _found without a call each; a found value is never None nor "" outside the token slots,
    # so ``_text`` is only needed for one that is not already text
    value = {slot: hit[2] for slot, hit in found.items()}.get
    provider = normalize_provider(value("provider"))
    usage = _usage_values(found, attrs, dialect, provider)
    reported_cost, reported_source = _reported_cost(found, attrs)
    request_model = value("request_model")
    if type(request_model) is not str:
        request_model = _text(request_model)
    model = value("response_model")
    if type(model) is not str:
        model = _text(model)
    model = model or request_model
    is_error, error_type = _error(span, attrs)
    prompt_name = value("prompt_name")
    if type(prompt_name) is not str:
        prompt_name = _text(prompt_name)
    prompt_version = value("prompt_version")
    if type(prompt_version) is not str:
        prompt_version = _text(prompt_version)
    try:
        prints = fingerprint.content_fields(attrs, keep_content=keep_content)
    except fingerprint.ContentError as exc:
        raise SpanError(str(exc)) from None
    service = _first(resource, _SERVICE_NAMES) or value("service")
    environment = _first(resource, _ENVIRONMENT_NAMES) or value("environment")
    return (
        get("trace_id"),
        get("span_id"),
        get("parent_span_id") or None,
        _text(value("response_id")),
        dialect.name,
        service if type(service) is str else _text(service),
        environment if type(environment) is str else _text(environment),
        provider,
        model,
        request_model or model,
        _operation(attrs),
        prompt_name,
        prompt_version,
        _prompt_key(prompt_name, prompt_version, prints["template_fingerprint"]),
        _text(value("action")),
        _text(value("conversation_id")),
        _text(value("user_id")),
        _text(value("reasoning_effort")),
        _service_tier(found, attrs),
        # set by llmtrace's live processor from the span's ancestry (else the importer's tree)
        _text(attrs.get(AGENT_ATTRIBUTE)),
        _text(attrs.get(TOOL_ATTRIBUTE)),
        _start_ns(span, attrs, dialect),
        get("end_ns"),
        is_error,
        error_type,
        *usage,
        reported_cost,
        reported_source,
        *_print_values(prints),
    )


_PRINT_FIELDS = tuple(fingerprint.EMPTY_FIELDS)
_print_values = itemgetter(*_PRINT_FIELDS)  # one C call, not a generator per call


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)  # times an int: the same datetime, half the cost
MS_PER_NS = 1 / 1_000_000
"""A duration in ns times this is in ms: a multiply, not ``/ 1e6``, because Polars divides a
column of more than one row by a scalar through its reciprocal (see ``rates.PER_INVERSE``), so
this is the one way every path (live records, each importer, any batch size) gets the same bits."""
MS_PER_US = 1 / 1_000  # the same for microseconds (Langfuse, transcripts)


def span_to_call(span: Mapping[str, Any], *, keep_content: bool = False) -> dict[str, Any]:
    """Call-record fields (names as in ``llmtrace.record.CALL_SCHEMA``) for one LLM span.

    Tokens are inclusive, ``reported_cost`` keeps a cost the source computed, content is reduced
    to fingerprints unless ``keep_content``. Not set here: ``action`` beyond the span's own
    ``llmtrace.action`` (ancestors are the importer's job), scores and prices.
    """
    # the row straight into the record (not map_span's dict, then two pops): this runs once per
    # call on the live worker, where a dict built and rebuilt cost a few us a call (issue 15)
    row = map_span_row(span, keep_content=keep_content)
    record = dict(zip(_RECORD_FIELDS, _record_values(row), strict=True))
    start_ns, end_ns = row[_START_INDEX], row[_END_INDEX]
    record["start_time"] = None if start_ns is None else _EPOCH + _MICROSECOND * (start_ns // 1000)
    record["end_time"] = None if end_ns is None else _EPOCH + _MICROSECOND * (end_ns // 1000)
    record["duration_ms"] = (
        (end_ns - start_ns) * MS_PER_NS if start_ns is not None and end_ns is not None else None
    )
    return record


_START_INDEX = CALL_FIELDS.index("start_ns")
_END_INDEX = CALL_FIELDS.index("end_ns")
_RECORD_INDEXES = tuple(i for i in range(len(CALL_FIELDS)) if i not in (_START_INDEX, _END_INDEX))
_RECORD_FIELDS = tuple(CALL_FIELDS[i] for i in _RECORD_INDEXES)
"""span_to_call's fields before the times, in map_span's order (the times go last, as before)."""
_record_values = itemgetter(*_RECORD_INDEXES)


__all__ = [
    "AGENT_ATTRIBUTE",
    "AGENT_NAME_ATTRIBUTES",
    "AGENT_OPERATIONS",
    "AGGREGATE_MARKERS",
    "COMMON_FIELDS",
    "COST_ATTRIBUTES",
    "DIALECTS",
    "DIALECTS_BY_NAME",
    "Dialect",
    "Found",
    "INFERENCE_OPERATIONS",
    "LANGFUSE",
    "LANGFUSE_COST_JSON",
    "LANGFUSE_MODEL_PARAMETERS",
    "LANGFUSE_USAGE_JSON",
    "LOGFIRE",
    "LOGFIRE_RAW_USAGE",
    "NON_INFERENCE_OPERATIONS",
    "OPENINFERENCE",
    "OPENLIT",
    "OPENLLMETRY",
    "OPENLLMETRY_LEGACY",
    "OPERATION_SOURCES",
    "OTEL_GENAI",
    "OTEL_OPENAI_V2",
    "PRICED",
    "PRICED_OVER",
    "PRICE_STATUS",
    "PROVIDER_ALIASES",
    "RAW_USAGE_PATHS",
    "REPORTED_COST",
    "REPORTED_COST_SOURCE",
    "SEMCONV",
    "SEMCONV_1_26",
    "SEMCONV_TOKENS",
    "SERVICE_TIER_VALUES",
    "STATUS_ERROR",
    "SpanError",
    "TOKEN_RECORD_FIELD",
    "TOOL_ATTRIBUTE",
    "TOOL_NAME_ATTRIBUTES",
    "TOOL_SPAN_MARKERS",
    "USAGE_ATTRIBUTES",
    "USAGE_JSON_BUCKETS",
    "agent_and_tool",
    "cost_value",
    "detect_dialect",
    "is_llm_span",
    "map_span",
    "map_span_row",
    "CALL_FIELDS",
    "normalize_provider",
    "normalize_service_tier",
    "read_reported_cost",
    "read_usage",
    "reported_from",
    "span_to_call",
    "token_count",
]
