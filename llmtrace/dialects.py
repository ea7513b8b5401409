"""Attribute dialects: which span attribute carries which call-record field, per instrumentation.

Every instrumentation names LLM usage differently and some count differently. This module is the
one place that knows; everything after it reads call records. It works on a plain mapping of
attribute values (no file format, no SDK objects), so the OTLP importer and the live span
processor share it.

The knowledge is in data tables below, not in branches:

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from llmtrace import fingerprint
from llmtrace.limits import INT64_MAX

# --------------------------------------------------------------------------------------------
# The span mapping span_to_call reads (built by the OTLP importer or the live span processor):
#   trace_id, span_id, parent_span_id   lowercase hex strings (parent None for a root)
#   name, scope                         span name, instrumentation-scope name
#   start_ns, end_ns                    Unix nanoseconds (int)
#   status_code                         0 unset, 1 ok, 2 error
#   attributes, resource                mappings of attribute values (str, int, float, bool, lists)
#   events                              optional list of {"name": str, "attributes": mapping}
# --------------------------------------------------------------------------------------------

STATUS_ERROR = 2


class SpanError(ValueError):
    """A span that cannot become a call record; the message names the attribute at fault."""


# Record token fields, in the order they are read. "total" is only used to check how a dialect
# counted; it is not a record field.
_TOKEN_KEYS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
TOKEN_RECORD_FIELD = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
    "reasoning": "reasoning_tokens",
}

# OTel GenAI semantic conventions, every released name and the genai-repo rename.
SEMCONV_TOKENS: dict[str, tuple[str, ...]] = {
    "input": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),  # v1.27+, v1.26
    "output": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "cache_read": ("gen_ai.usage.cache_read.input_tokens",),  # v1.40
    "cache_write": (
        "gen_ai.usage.cache_write.input_tokens",  # semconv-genai #440, util-genai 1.3b0
        "gen_ai.usage.cache_creation.input_tokens",  # v1.40
    ),
    "reasoning": ("gen_ai.usage.reasoning.output_tokens",),  # v1.41
    "total": ("gen_ai.usage.total_tokens",),
}

# Fields whose attribute names do not depend on the instrumentation. First present wins.
COMMON_FIELDS: dict[str, tuple[str, ...]] = {
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    "response_model": (
        "langfuse.observation.model.name",
        "gen_ai.response.model",
        "llm.response.model",
        "llm.model_name",
    ),
    "request_model": ("gen_ai.request.model", "llm.request.model"),
    "response_id": ("gen_ai.response.id",),
    "conversation_id": (
        "gen_ai.conversation.id",
        "session.id",
        "langfuse.session.id",
        "traceloop.association.properties.session_id",
    ),
    "user_id": (
        "user.id",
        "enduser.id",
        "langfuse.user.id",
        "traceloop.association.properties.user_id",
    ),
    "prompt_name": (
        "gen_ai.prompt.name",
        "langfuse.observation.prompt.name",
        "traceloop.prompt.key",
    ),
    "prompt_version": (
        "gen_ai.prompt.version",
        "langfuse.observation.prompt.version",
        "traceloop.prompt.version",
        "llm.prompt_template.version",
    ),
    "reasoning_effort": (
        "gen_ai.request.reasoning.level",  # util-genai 1.3b0
        "gen_ai.request.reasoning_effort",  # OpenLLMetry
        "gen_ai.openai.request.reasoning_effort",
    ),
    "error_type": ("error.type",),
    "environment": (
        "deployment.environment.name",
        "deployment.environment",
        "langfuse.environment",
    ),
    "service": ("service.name",),
    "action": ("llmtrace.action",),
    # The tier that served the call decides its price; the requested one only stands in when
    # no response tier was recorded. openai.*: official genai-openai 1.3b0 and OpenLLMetry
    # (0.53, 0.62); gen_ai.openai.*: semconv <= 1.36 names (openai-v2); anthropic.*: the
    # anthropic SDK's own spans and OpenLLMetry's anthropic.chat; Langfuse metadata. OpenInference
    # and the official genai-anthropic set none. Values are read through SERVICE_TIER_VALUES.
    "service_tier": (
        "openai.response.service_tier",
        "gen_ai.openai.response.service_tier",
        "anthropic.response.service_tier",
        "langfuse.observation.metadata.service_tier",
        "openai.request.service_tier",
        "gen_ai.openai.request.service_tier",
        "anthropic.request.service_tier",
    ),
}

# Service-tier spellings -> the record's ``service_tier``: "standard" for the list price under
# any name (OpenAI "default", Anthropic "standard"/"standard_only"); None for a request that
# leaves the choice to the provider ("auto": the tier served is not known from it); every other
# value lowered as given ("flex", "priority", "scale", "batch", ...). Langfuse keeps the tier in
# the observation's model parameters (its OpenAI integration), read here from the JSON attribute.
SERVICE_TIER_VALUES: dict[str, str | None] = {
    "default": "standard",
    "standard": "standard",
    "standard_only": "standard",
    "on_demand": "standard",
    "auto": None,
}
LANGFUSE_MODEL_PARAMETERS = "langfuse.observation.model.parameters"

# Where the operation comes from, with the value translations to semconv operation names.
OPERATION_SOURCES: tuple[tuple[str, Mapping[str, str] | None], ...] = (
    ("gen_ai.operation.name", None),
    ("openinference.span.kind", {"LLM": "chat", "EMBEDDING": "embeddings"}),
    ("langfuse.observation.type", {"generation": "chat", "embedding": "embeddings"}),
    ("llm.request.type", {"completion": "text_completion", "embedding": "embeddings"}),
)

# Attributes that carry a cost the source already computed (USD), in order of preference.
# The Langfuse cost_details JSON is read separately (its "total").
COST_ATTRIBUTES: tuple[str, ...] = ("gen_ai.usage.cost", "operation.cost", "llm.cost.total")
LANGFUSE_COST_JSON = "langfuse.observation.cost_details"
LANGFUSE_USAGE_JSON = "langfuse.observation.usage_details"
LOGFIRE_RAW_USAGE = "gen_ai.usage.raw"

# Langfuse usage_details keys per bucket. Langfuse buckets are exclusive (input excludes cached,
# output excludes reasoning). Each bucket lists alternatives: the first group with a key present
# is summed, so a total key and its breakdown (_5m/_1h) are not both counted. Gemini's raw keys
# are inclusive like Gemini itself (promptTokenCount includes cached content).
USAGE_JSON_BUCKETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "input": (("input",), ("input_tokens",)),
    "input_inclusive": (("prompt_token_count",), ("promptTokenCount",)),
    "output": (
        ("output",),
        ("output_tokens",),
        ("candidates_token_count",),
        ("candidatesTokenCount",),
    ),
    "cache_read": (
        ("input_cached_tokens",),
        ("input_cache_read",),
        ("cache_read_input_tokens",),
        ("cached_content_token_count",),
        ("cachedContentTokenCount",),
        ("input_cached_text_tokens", "input_cached_audio_tokens"),
    ),
    "cache_write": (
        ("input_cache_creation",),
        ("input_cache_creation_5m", "input_cache_creation_1h"),
        ("cache_creation_input_tokens",),
        ("input_cache_write",),
        ("cache_write_tokens",),
    ),
    "cache_write_1h": (("input_cache_creation_1h",),),
    "reasoning": (
        ("output_reasoning_tokens",),
        ("output_reasoning",),
        ("reasoning_tokens",),
        ("thoughtsTokenCount",),
        ("thoughts_token_count",),
    ),
}

# Logfire's gen_ai.usage.raw is the provider's own usage object; paths to the counts Logfire does
# not put in attributes. Gemini's candidates exclude thoughts (the output rule above applies).
RAW_USAGE_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "reasoning": (
        ("completion_tokens_details", "reasoning_tokens"),  # OpenAI chat
        ("output_tokens_details", "reasoning_tokens"),  # OpenAI responses
        ("output_tokens_details", "thinking_tokens"),  # Anthropic >= 0.105
        ("thoughts_token_count",),  # Gemini
    ),
    "cache_write_1h": (("cache_creation", "ephemeral_1h_input_tokens"),),  # Anthropic
    "total": (("total_token_count",), ("total_tokens",)),
}

# OTel provider names (and other emitters' spellings) -> genai-prices provider ids: the one
# table. Dialects normalise at the edge with it; pricing maps with it too (a record written by
# hand or by an older version may hold a raw name). Decided here, as data, because genai-prices'
# own matching gets some wrong (``azure.ai.openai`` would match ``openai``, ``x_ai`` nothing).
PROVIDER_ALIASES: dict[str, str] = {
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "gcp.gemini": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gemini": "google",
    "google_genai": "google",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "moonshot": "moonshotai",
    "moonshot_ai": "moonshotai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
}

# Operations that are model inference; and those that are not even when they carry usage
# (agent and workflow spans carry totals of their children, counting them would double-count).
INFERENCE_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"}
)
NON_INFERENCE_OPERATIONS = frozenset(
    {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "plan", "retrieval"}
)
# Aggregating spans that predate gen_ai.operation.name (pydantic-ai "agent run").
AGGREGATE_MARKERS: tuple[str, ...] = ("gen_ai.agent.name", "agent_name")
# Agent trees: the agent a span runs (any span carrying one; the innermost ancestor wins) and
# the tool an execute_tool span runs, by instrumentation (semconv, pydantic-ai, OpenInference).
AGENT_NAME_ATTRIBUTES: tuple[str, ...] = ("gen_ai.agent.name", "agent_name")
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent"})
# What llmtrace's live processor writes on an LLM span: the agent and the consumed tool.
AGENT_ATTRIBUTE = "llmtrace.agent"
TOOL_ATTRIBUTE = "llmtrace.tool"
TOOL_NAME_ATTRIBUTES: tuple[str, ...] = ("gen_ai.tool.name", "tool.name", "tool_name")
# Markers of a tool-execution span besides gen_ai.operation.name = execute_tool.
TOOL_SPAN_MARKERS: tuple[tuple[str, str], ...] = (
    ("openinference.span.kind", "TOOL"),
    ("traceloop.span.kind", "tool"),
)


@dataclass(frozen=True)
class Dialect:
    """One instrumentation's attribute names and counting habits.

    ``tokens`` lists this dialect's own names per token field; ``token_names`` appends the
    semconv names as a fallback (instrumentations add semconv attributes over time).
    """

    name: str
    description: str
    scope_prefixes: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    tokens: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cost: tuple[str, ...] = ()
    exclusive_input_providers: frozenset[str] = frozenset()
    usage_json: str | None = None
    raw_usage: str | None = None
    elapsed: str | None = None
    """An attribute with the call's duration in seconds, on a span written as a point in time
    when the call (or its streamed response) ended: such a span's start is moved back by it,
    so the record says when the call ran (and its twin, the request span, can be found)."""

    @property
    def token_names(self) -> dict[str, tuple[str, ...]]:
        """Own names first, then the semconv names, without repeats."""
        merged: dict[str, tuple[str, ...]] = {}
        for key in (*_TOKEN_KEYS, "total"):
            names = tuple(self.tokens.get(key, ())) + SEMCONV_TOKENS.get(key, ())
            merged[key] = tuple(dict.fromkeys(names))
        return merged

    @property
    def cost_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.cost, *COST_ATTRIBUTES)))


SEMCONV = Dialect(
    "otel-semconv",
    "OTel GenAI semantic conventions v1.27-v1.41 and the semantic-conventions-genai repo",
)
SEMCONV_1_26 = Dialect(
    "otel-semconv-1.26",
    "OTel GenAI semconv v1.26: gen_ai.usage.prompt_tokens / completion_tokens, gen_ai.prompt",
    markers=("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"),
)
OTEL_GENAI = Dialect(
    "otel-genai",
    "opentelemetry-util-genai 1.3b0 instrumentations (genai-openai, genai-anthropic, google-genai):"
    " inclusive input, cache_write rename, Gemini output = candidates + thoughts",
    scope_prefixes=(
        "opentelemetry.instrumentation.genai.",
        "opentelemetry.util.genai",
        "opentelemetry.instrumentation.google_genai",
    ),
)
OTEL_OPENAI_V2 = Dialect(
    "otel-openai-v2",
    "opentelemetry-instrumentation-openai-v2 2.4b0: input/output only, no cache or reasoning",
    scope_prefixes=("opentelemetry.instrumentation.openai_v2",),
)
OPENLLMETRY = Dialect(
    "openllmetry",
    "Traceloop OpenLLMetry >= 0.55 (gen_ai.* names, reasoning as gen_ai.usage.reasoning_tokens)",
    scope_prefixes=("opentelemetry.instrumentation.", "traceloop"),
    markers=("gen_ai.usage.reasoning_tokens", "traceloop.span.kind"),
    tokens={
        "reasoning": ("gen_ai.usage.reasoning_tokens",),
        "cache_read": ("gen_ai.usage.cache_read_input_tokens",),
        "cache_write": ("gen_ai.usage.cache_creation_input_tokens",),
        "total": ("llm.usage.total_tokens",),
    },
)
OPENLLMETRY_LEGACY = Dialect(
    "openllmetry-legacy",
    "Traceloop OpenLLMetry <= 0.53 (gen_ai.system, underscore cache names, llm.usage.*)",
    markers=(
        "gen_ai.usage.cache_read_input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.usage.reasoning_tokens",
        "llm.usage.total_tokens",
    ),
    tokens={
        "cache_read": ("gen_ai.usage.cache_read_input_tokens",),
        "cache_write": ("gen_ai.usage.cache_creation_input_tokens",),
        "reasoning": ("llm.usage.reasoning_tokens", "gen_ai.usage.reasoning_tokens"),
        "total": ("llm.usage.total_tokens",),
    },
)
OPENINFERENCE = Dialect(
    "openinference",
    "Arize OpenInference: llm.token_count.* (prompt inclusive), llm.cost.*",
    scope_prefixes=("openinference.",),
    markers=("llm.token_count.prompt", "llm.token_count.completion", "openinference.span.kind"),
    tokens={
        "input": ("llm.token_count.prompt",),
        "output": ("llm.token_count.completion",),
        "cache_read": ("llm.token_count.prompt_details.cache_read",),
        "cache_write": ("llm.token_count.prompt_details.cache_write",),
        "reasoning": ("llm.token_count.completion_details.reasoning",),
        "total": ("llm.token_count.total",),
    },
    cost=("llm.cost.total",),
)
OPENLIT = Dialect(
    "openlit",
    "OpenLIT: gen_ai.usage.cost; on Anthropic gen_ai.usage.input_tokens excludes cache tokens",
    scope_prefixes=("openlit",),
    markers=("gen_ai.usage.cost",),
    tokens={"reasoning": ("gen_ai.usage.reasoning_tokens",)},
    cost=("gen_ai.usage.cost",),
    exclusive_input_providers=frozenset({"anthropic"}),
)
LOGFIRE = Dialect(
    "logfire",
    "Logfire and pydantic-ai: operation.cost, gen_ai.usage.details.*, gen_ai.usage.raw",
    scope_prefixes=("logfire", "pydantic-ai", "pydantic_ai"),
    markers=("operation.cost", LOGFIRE_RAW_USAGE, "gen_ai.usage.details.reasoning_tokens"),
    tokens={  # gen_ai.usage.details.<key>: the provider's own usage keys, as pydantic-ai copies them
        "cache_read": (
            "gen_ai.usage.details.cache_read_input_tokens",  # Anthropic
            "gen_ai.usage.details.cached_tokens",  # OpenAI
            "gen_ai.usage.details.cached_content_tokens",  # Gemini
        ),
        "cache_write": ("gen_ai.usage.details.cache_creation_input_tokens",),
        "reasoning": (
            "gen_ai.usage.details.reasoning_tokens",  # OpenAI
            "gen_ai.usage.details.thoughts_tokens",  # Gemini
        ),
    },
    cost=("operation.cost",),
    raw_usage=LOGFIRE_RAW_USAGE,
    elapsed="duration",  # the streaming log span: "streaming response from ... took {duration}s"
)
LANGFUSE = Dialect(
    "langfuse",
    "Langfuse SDK spans: langfuse.observation.usage_details / cost_details JSON (exclusive)",
    scope_prefixes=("langfuse",),
    markers=(LANGFUSE_USAGE_JSON, LANGFUSE_COST_JSON, "langfuse.observation.type"),
    usage_json=LANGFUSE_USAGE_JSON,
)

# Detection order: scope prefixes are tried over this list in order (more specific first);
# then markers in the same order; then plain semconv.
DIALECTS: tuple[Dialect, ...] = (
    LANGFUSE,
    OPENLIT,
    OPENINFERENCE,
    LOGFIRE,
    OTEL_GENAI,
    OTEL_OPENAI_V2,
    OPENLLMETRY_LEGACY,
    OPENLLMETRY,
    SEMCONV_1_26,
    SEMCONV,
)
DIALECTS_BY_NAME: dict[str, Dialect] = {d.name: d for d in DIALECTS}

# A dialect found by scope can be an older release of itself; its markers say so.
_VARIANTS: dict[str, Dialect] = {OPENLLMETRY.name: OPENLLMETRY_LEGACY}

# Every attribute whose presence alone says "this span reports model usage".
USAGE_ATTRIBUTES: frozenset[str] = frozenset(
    name for dialect in DIALECTS for key in ("input", "output") for name in dialect.token_names[key]
) | {LANGFUSE_USAGE_JSON}

# One lookup table per dialect: attribute name -> (slot, rank, is_token). A span's attributes are
# walked once and each slot keeps its best-ranked attribute, instead of probing every known name.
_TOKEN_SLOT = {key: f"tokens.{key}" for key in (*_TOKEN_KEYS, "total")}
_COST_SLOT = "cost"


def _build_index(dialect: Dialect) -> dict[str, tuple[str, int, bool]]:
    index: dict[str, tuple[str, int, bool]] = {}
    for key, names in dialect.token_names.items():
        for rank, name in enumerate(names):
            index.setdefault(name, (_TOKEN_SLOT[key], rank, True))
    for rank, name in enumerate(dialect.cost_names):
        index.setdefault(name, (_COST_SLOT, rank, False))
    for field_name, names in COMMON_FIELDS.items():
        for rank, name in enumerate(names):
            index.setdefault(name, (field_name, rank, False))
    return index


_INDEXES: dict[str, dict[str, tuple[str, int, bool]]] = {d.name: _build_index(d) for d in DIALECTS}
Found = dict[str, tuple[int, str, Any]]  # slot -> (rank, attribute name, value)


def _collect(attrs: Mapping[str, Any], dialect: Dialect) -> Found:
    """Each slot's best-ranked attribute present (empty strings count only for token slots,
    where they are an error to report rather than an absence)."""
    index = _INDEXES[dialect.name]
    found: Found = {}
    for key, value in attrs.items():
        hit = index.get(key)
        if hit is None or value is None:
            continue
        slot, rank, is_token = hit
        if value == "" and not is_token:
            continue
        previous = found.get(slot)
        if previous is None or rank < previous[0]:
            found[slot] = (rank, key, value)
    return found


def _found(found: Found, slot: str) -> Any:
    hit = found.get(slot)
    return None if hit is None else hit[2]


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


def detect_dialect(attrs: Mapping[str, Any], scope: str | None = None) -> Dialect:
    """The dialect a span was written in: by instrumentation scope, else by marker attributes."""
    if scope:
        for dialect in DIALECTS:
            if dialect.scope_prefixes and scope.startswith(dialect.scope_prefixes):
                variant = _VARIANTS.get(dialect.name)
                if variant is not None and any(m in attrs for m in variant.markers):
                    return variant
                return dialect
    for dialect in DIALECTS:
        if any(marker in attrs for marker in dialect.markers):
            return dialect
    return SEMCONV


def normalize_service_tier(value: Any) -> str | None:
    """The record's ``service_tier`` for an emitted value (see ``SERVICE_TIER_VALUES``)."""
    if value is None or not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
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
# Value coercion
# --------------------------------------------------------------------------------------------


def token_count(value: Any, attribute: str) -> int:
    """A non-negative integer count; strings and floats only when they are exact integers."""
    kind = type(value)
    if kind is int:
        number = value
    elif kind is float:
        if not value.is_integer():
            raise SpanError(f"{attribute}: token count {value!r} is not a whole number")
        number = int(value)
    elif kind is str:
        number = _int_from_text(value, attribute)
    else:  # bool, None, lists, maps
        raise SpanError(f"{attribute}: token count {value!r} is not a number")
    if number < 0:
        raise SpanError(f"{attribute}: token count {value!r} is negative")
    if number > INT64_MAX:
        raise SpanError(f"{attribute}: token count {value!r} is beyond a 64-bit integer")
    return number


def _int_from_text(value: str, attribute: str) -> int:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        as_float = float(value)
    except ValueError:
        raise SpanError(f"{attribute}: token count {value!r} is not a number") from None
    if not as_float.is_integer():
        raise SpanError(f"{attribute}: token count {value!r} is not a whole number")
    return int(as_float)


def cost_value(value: Any, attribute: str) -> float:
    """A finite, non-negative USD amount (numbers or numeric strings)."""
    if type(value) is bool:
        raise SpanError(f"{attribute}: cost {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpanError(f"{attribute}: cost {value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SpanError(f"{attribute}: cost {value!r} is not finite")
    if number < 0:
        raise SpanError(f"{attribute}: cost {value!r} is negative")
    return number


def _json_object(value: Any, attribute: str) -> dict[str, Any]:
    """A JSON object attribute (Langfuse details, Logfire raw usage), parsed if it is a string."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise SpanError(f"{attribute}: not valid JSON") from None
        if isinstance(parsed, dict):
            return parsed
    raise SpanError(f"{attribute}: expected a JSON object, got {type(value).__name__}")


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    return str(value)


def _first(attrs: Mapping[str, Any], names: Sequence[str]) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


# --------------------------------------------------------------------------------------------
# Usage
# --------------------------------------------------------------------------------------------


def _bucket_sum(details: Mapping[str, Any], groups: tuple[tuple[str, ...], ...], attribute: str):
    for group in groups:
        present = [key for key in group if details.get(key) is not None]
        if present:
            return sum(token_count(details[key], f"{attribute}.{key}") for key in present)
    return None


def _usage_from_json(attrs: Mapping[str, Any], attribute: str) -> dict[str, int | None] | None:
    """Tokens from Langfuse usage_details (exclusive buckets) as inclusive counts."""
    raw = attrs.get(attribute)
    if raw is None:
        return None
    details = _json_object(raw, attribute)
    got = {
        key: _bucket_sum(details, groups, attribute) for key, groups in USAGE_JSON_BUCKETS.items()
    }
    cache = (got["cache_read"] or 0) + (got["cache_write"] or 0)
    if got["input_inclusive"] is not None:
        got["input"] = got["input_inclusive"]
    elif got["input"] is not None or cache:
        got["input"] = (got["input"] or 0) + cache
    if got["output"] is not None or got["reasoning"]:
        got["output"] = (got["output"] or 0) + (got["reasoning"] or 0)
    return {key: got[key] for key in _TOKEN_KEYS}


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for step in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(step)
    return data


def _fill_from_raw(tokens: dict[str, int | None], attrs: Mapping[str, Any], attribute: str) -> None:
    """Logfire's raw provider usage fills reasoning, 1-hour cache writes and the total."""
    raw = attrs.get(attribute)
    if raw is None:
        return
    usage = _json_object(raw, attribute)
    for key, paths in RAW_USAGE_PATHS.items():
        if tokens.get(key) is not None:
            continue
        for path in paths:
            value = _dig(usage, path)
            if value is not None:
                tokens[key] = token_count(value, f"{attribute}.{'.'.join(path)}")
                break


def read_usage(attrs: Mapping[str, Any], dialect: Dialect, provider: str | None) -> dict[str, Any]:
    """Inclusive token counts (record field names) for one span in ``dialect``."""
    return _usage(_collect(attrs, dialect), attrs, dialect, provider)


def _usage(found: Found, attrs: Mapping[str, Any], dialect: Dialect, provider: str | None):
    tokens: dict[str, int | None] = {}
    for key, slot in _TOKEN_SLOT.items():
        hit = found.get(slot)
        tokens[key] = None if hit is None else token_count(hit[2], hit[1])
    if dialect.usage_json is not None:
        from_json = _usage_from_json(attrs, dialect.usage_json)
        if from_json is not None:
            tokens.update({k: v for k, v in from_json.items() if v is not None})
    if dialect.raw_usage is not None:
        _fill_from_raw(tokens, attrs, dialect.raw_usage)
    _make_inclusive(tokens, dialect, provider)
    for key, value in tokens.items():  # sums of valid counts can still overflow
        if value is not None and value > INT64_MAX:
            raise SpanError(f"{key} tokens add up to {value}, beyond a 64-bit integer")
    return {TOKEN_RECORD_FIELD[key]: tokens.get(key) for key in _TOKEN_KEYS}


def _make_inclusive(tokens: dict[str, int | None], dialect: Dialect, provider: str | None) -> None:
    """Apply the counting rules in the module docstring, in place."""
    inp, out = tokens.get("input"), tokens.get("output")
    cache = (tokens.get("cache_read") or 0) + (tokens.get("cache_write") or 0)
    if inp is not None and cache and (provider in dialect.exclusive_input_providers or cache > inp):
        tokens["input"] = inp + cache
    reasoning = tokens.get("reasoning")
    if out is not None and reasoning:
        total = tokens.get("total")
        exclusive = reasoning > out or (
            total is not None and inp is not None and total == inp + out + reasoning
        )
        if exclusive:
            tokens["output"] = out + reasoning


def read_reported_cost(
    attrs: Mapping[str, Any], dialect: Dialect
) -> tuple[float | None, str | None]:
    """A cost the source carried (USD) and the attribute it came from."""
    return _reported_cost(_collect(attrs, dialect), attrs)


def _reported_cost(found: Found, attrs: Mapping[str, Any]) -> tuple[float | None, str | None]:
    raw = attrs.get(LANGFUSE_COST_JSON)
    if raw is not None:
        details = _json_object(raw, LANGFUSE_COST_JSON)
        if details.get("total") is not None:
            source = f"{LANGFUSE_COST_JSON}.total"
            return cost_value(details["total"], source), source
        if details:
            total = sum(cost_value(v, f"{LANGFUSE_COST_JSON}.{k}") for k, v in details.items())
            return total, LANGFUSE_COST_JSON
    hit = found.get(_COST_SLOT)
    if hit is None:
        return None, None
    return cost_value(hit[2], hit[1]), hit[1]


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
    is_tool = operation == "execute_tool" or any(
        attrs.get(name) == value for name, value in TOOL_SPAN_MARKERS
    )
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


def map_span(span: Mapping[str, Any], *, keep_content: bool = False) -> dict[str, Any]:
    """Call-record fields for one LLM span, times as Unix nanoseconds (``start_ns``/``end_ns``).

    The bulk importer uses this form (integers convert to a frame column in one step);
    ``span_to_call`` returns datetimes. Raises ``SpanError`` naming the attribute at fault.
    """
    attrs: Mapping[str, Any] = span.get("attributes") or {}
    resource: Mapping[str, Any] = span.get("resource") or {}
    dialect = detect_dialect(attrs, span.get("scope"))
    found = _collect(attrs, dialect)
    provider = normalize_provider(_found(found, "provider"))
    usage = _usage(found, attrs, dialect, provider)
    reported_cost, reported_source = _reported_cost(found, attrs)
    request_model = _text(_found(found, "request_model"))
    model = _text(_found(found, "response_model")) or request_model
    is_error, error_type = _error(span, attrs)
    prompt_name = _text(_found(found, "prompt_name"))
    prompt_version = _text(_found(found, "prompt_version"))
    try:
        prints = fingerprint.content_fields(attrs, keep_content=keep_content)
    except fingerprint.ContentError as exc:
        raise SpanError(str(exc)) from None
    return {
        "trace_id": span.get("trace_id"),
        "span_id": span.get("span_id"),
        "parent_span_id": span.get("parent_span_id") or None,
        "response_id": _text(_found(found, "response_id")),
        "dialect": dialect.name,
        "service": _text(_first(resource, COMMON_FIELDS["service"]) or _found(found, "service")),
        "environment": _text(
            _first(resource, COMMON_FIELDS["environment"]) or _found(found, "environment")
        ),
        "provider": provider,
        "model": model,
        "request_model": request_model or model,
        "operation": _operation(attrs),
        "prompt_name": prompt_name,
        "prompt_version": prompt_version,
        "prompt": _prompt_key(prompt_name, prompt_version, prints.get("template_fingerprint")),
        "action": _text(_found(found, "action")),
        "conversation_id": _text(_found(found, "conversation_id")),
        "user_id": _text(_found(found, "user_id")),
        "reasoning_effort": _text(_found(found, "reasoning_effort")),
        "service_tier": _service_tier(found, attrs),
        # set by llmtrace's live processor from the span's ancestry (else the importer's tree)
        "agent": _text(attrs.get(AGENT_ATTRIBUTE)),
        "tool": _text(attrs.get(TOOL_ATTRIBUTE)),
        "start_ns": _start_ns(span, attrs, dialect),
        "end_ns": span.get("end_ns"),
        "is_error": is_error,
        "error_type": error_type,
        **usage,
        "reported_cost": reported_cost,
        "reported_cost_source": reported_source,
        **prints,
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns_to_datetime(value: int | None) -> datetime | None:
    if value is None:
        return None
    return _EPOCH + timedelta(microseconds=value // 1000)


def span_to_call(span: Mapping[str, Any], *, keep_content: bool = False) -> dict[str, Any]:
    """Call-record fields (names as in ``llmtrace.record.CALL_SCHEMA``) for one LLM span.

    Tokens are inclusive, ``reported_cost`` keeps a cost the source computed, content is reduced
    to fingerprints unless ``keep_content``. Not set here: ``action`` beyond the span's own
    ``llmtrace.action`` (ancestors are the importer's job), scores and prices.
    """
    record = map_span(span, keep_content=keep_content)
    start_ns, end_ns = record.pop("start_ns"), record.pop("end_ns")
    record["start_time"] = _ns_to_datetime(start_ns)
    record["end_time"] = _ns_to_datetime(end_ns)
    record["duration_ms"] = (
        (end_ns - start_ns) / 1e6 if start_ns is not None and end_ns is not None else None
    )
    return record
