"""The dialect tables: which span attribute carries which call-record field, per
instrumentation, and the per-dialect index that finds a span's attributes in one pass.

Data, not logic: ``llmtrace.dialects`` explains the tables and maps spans with them
(``map_span``); ``llmtrace.dialect_values`` reads counts and costs by their counting rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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

# What llmtrace's live processor writes on a span it priced (``llmtrace.otel.spans``): its price
# status ("ok" with its costs), and over the source's own attributes the two that dialects read
# (``PRICED_OVER``: a marker and a reported cost each). On such a span those two are llmtrace's,
# not the source's: the source's reported cost travels as ``REPORTED_COST`` / ``_SOURCE`` (the
# worker's record's ``reported_cost`` / ``reported_cost_source``, only when it had one), and a
# marker among them counts for detection only when that source names it (it was the source's).
PRICE_STATUS = "llmtrace.price.status"
PRICED = "ok"
PRICED_OVER: tuple[str, ...] = ("gen_ai.usage.cost", LANGFUSE_COST_JSON)
REPORTED_COST = "llmtrace.reported_cost"
REPORTED_COST_SOURCE = "llmtrace.reported_cost_source"
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
