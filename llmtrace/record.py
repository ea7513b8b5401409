"""The call record: one row per LLM call, the single table everything after the edge reads.

Every source (live spans, OTLP files, Langfuse) is turned into rows of ``CALL_SCHEMA`` at the
edge; pricing, the store, the rules and the reports read nothing else. Keeping the schema in one
place is what lets a Langfuse import and an OTLP import of the same calls give the same costs.

Conventions (see shared/ARCHITECTURE.md):

* **Tokens are inclusive.** ``input_tokens`` includes ``cache_read_tokens`` and
  ``cache_write_tokens``; ``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written
  with a one-hour lifetime; ``output_tokens`` includes ``reasoning_tokens``. Counts are Int64 so
  sums over millions of calls cannot overflow (Polars wraps Int32 sums silently).
* **Costs are disjoint** USD floats: ``input_cost`` covers only input neither read from nor written
  to a cache, ``output_cost`` only non-reasoning output, and
  ``total_cost = input_cost + cache_read_cost + cache_write_cost + output_cost + reasoning_cost``
  (plus ``request_cost`` for per-request fees, part of ``total_cost``).
  An unpriced call has null costs and ``price_status`` says why; never 0.
* Times are UTC microsecond datetimes; a call is priced at its own ``start_time``.

Fields
------
Identity
    ``trace_id``, ``span_id`` (hex strings; together the idempotency key of the store),
    ``parent_span_id``, ``response_id`` (provider's response id, used to merge two spans of one
    call), ``source`` (``otlp``, ``langfuse``, ``live``, ``demo``, ``claude-code``, ``codex``),
    ``dialect`` (which instrumentation's attribute names the call was read with).
Where and what
    ``service``, ``environment``, ``provider`` (genai-prices provider id where known),
    ``model`` (response model, else request model), ``request_model``, ``operation``
    (``chat``, ``embeddings``...).
Unit of work
    ``prompt_name``, ``prompt_version``, ``prompt`` (the prompt key the rules group by:
    ``name@version``, ``name``, or ``fp:<template fingerprint>``), ``action`` (the unit of work a
    user pays for), ``conversation_id``, ``user_id``, ``reasoning_effort``.
Time
    ``start_time``, ``end_time``, ``duration_ms``, ``day`` (UTC date of ``start_time``; the store's
    partition key).
Outcome
    ``is_error``, ``error_type``.
Usage
    ``input_tokens``, ``cache_read_tokens``, ``cache_write_tokens``, ``cache_write_1h_tokens``,
    ``output_tokens``, ``reasoning_tokens``.
Cost
    ``input_cost``, ``cache_read_cost``, ``cache_write_cost``, ``output_cost``,
    ``reasoning_cost``, ``request_cost``, ``total_cost``, ``price_status``, ``price_source``
    (price data and version, plus the price-file entries that changed this call's price:
    ``genai-prices 0.2.5``, ``genai-prices 0.2.5 + prices.toml@1a2b3c4d#1`` -- file name, the
    first 8 hex digits of its sha256, entry numbers; an unpriced call names the data consulted,
    ``genai-prices 0.2.5 + overrides prices.toml@1a2b3c4d``; ``llmtrace reprice`` rewrites it),
    ``reported_cost`` (a cost the source already carried, kept only for cross-checking) and
    ``reported_cost_source`` (the attribute it came from; never llmtrace's own price: on a
    span its live processor priced, the source's cost travels as ``llmtrace.reported_cost``).
Quality
    ``accuracy`` (mean of the scores that count as accuracy, 0..1), ``scores`` (every score:
    name, value, label, source, id). ``id`` is the source's own score id (Langfuse's), null
    where the source has none (OTLP evaluation events): a score with an id can be edited at its
    source, and the store then replaces the held version instead of adding a copy.
Fingerprints (no content)
    ``prefix_hashes`` (hash of every message-boundary prefix: system instructions and tools
    first, then each message), ``prefix_tokens`` (estimated tokens of each of those prefixes),
    ``template_fingerprint`` (hash of system instructions and tools: the prompt when no name is
    known), ``input_fingerprint`` (hash of the whole input).
Content (only with ``--keep-content``)
    ``input_content``, ``output_content`` (JSON strings).
Pricing context (appended: older store files read these as null)
    ``service_tier``: the provider's service tier that served the call, as the price depends on
    it: ``standard`` (list price; OpenAI ``default``, Anthropic ``standard``), ``flex``,
    ``priority``, ``scale``, ``batch``, ... (``llmtrace.dialects.SERVICE_TIER_VALUES``); null
    when the source does not say, priced as standard. A call on another tier is never priced
    at standard rates: without a price for its tier (genai-prices' variants or a price-file
    entry with ``service_tier``) its costs are null and ``price_status`` is
    ``unpriced_tier:<tier>``.
    ``provider_assumed``: true when no provider was recorded and pricing filled ``provider``
    with the one genai-prices places the model under, preferring the model's first party
    (``text-embedding-3-small`` from Langfuse, which records no provider: ``openai``). Such a
    call's ``price_source`` also says so: ``genai-prices 0.2.5 (provider openai assumed)``,
    as does a call whose recorded provider genai-prices does not know. ``llmtrace reprice``
    assumes the provider again from the current price data.
Agents (appended last, so older store files read with them null)
    ``agent`` (the innermost agent the call ran in: ``gen_ai.agent.name`` of the nearest
    ``invoke_agent`` span above it, or the coding agent and subagent of a transcript, e.g.
    ``claude-code`` / ``claude-code:subagent``), ``tool`` (the tool whose result the call
    consumed: ``gen_ai.tool.name`` of the ``execute_tool`` span of the same agent run that ended
    just before it, or the tool result a transcript's request answered), ``step_fingerprint``
    (hash of what the call newly consumed -- the user's prompt, or the tool call and its result
    -- never the whole input; equal values within one conversation mean an agent repeated a
    step: LT503's stuck-loop signal where every request's whole input differs because history
    grows).
Twins
    ``twin_ids``: when more than one span described this call (the ``anthropic`` SDK's own span
    beside an instrumentation's, a request span beside its streaming log span; see
    ``llmtrace/twins.py``), the ``trace_id/span_id`` of each span merged into this record; the
    record's own key is the span in the trace that carries the app's context. Null for a call
    seen in one span.
"""

from __future__ import annotations

import polars as pl

UTC_TIME = pl.Datetime("us", "UTC")

# ``id`` comes last: store files written before it existed hold the first four fields only,
# and scans insert the missing one as null (see ``llmtrace.store.SCAN_CAST``).
SCORE_STRUCT = pl.Struct(
    {
        "name": pl.String,
        "value": pl.Float64,
        "label": pl.String,
        "source": pl.String,
        "id": pl.String,
    }
)

TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)

COST_COMPONENTS: tuple[str, ...] = (
    "input_cost",
    "cache_read_cost",
    "cache_write_cost",
    "output_cost",
    "reasoning_cost",
    "request_cost",
)

COST_FIELDS: tuple[str, ...] = (*COST_COMPONENTS, "total_cost")

CALL_SCHEMA: pl.Schema = pl.Schema(
    {
        # identity
        "trace_id": pl.String,
        "span_id": pl.String,
        "parent_span_id": pl.String,
        "response_id": pl.String,
        "source": pl.String,
        "dialect": pl.String,
        # where and what
        "service": pl.String,
        "environment": pl.String,
        "provider": pl.String,
        "model": pl.String,
        "request_model": pl.String,
        "operation": pl.String,
        # unit of work
        "prompt_name": pl.String,
        "prompt_version": pl.String,
        "prompt": pl.String,
        "action": pl.String,
        "conversation_id": pl.String,
        "user_id": pl.String,
        "reasoning_effort": pl.String,
        # time
        "start_time": UTC_TIME,
        "end_time": UTC_TIME,
        "duration_ms": pl.Float64,
        "day": pl.Date,
        # outcome
        "is_error": pl.Boolean,
        "error_type": pl.String,
        # usage (inclusive)
        **{name: pl.Int64 for name in TOKEN_FIELDS},
        # cost (disjoint, USD)
        **{name: pl.Float64 for name in COST_FIELDS},
        "price_status": pl.String,
        "price_source": pl.String,
        "reported_cost": pl.Float64,
        "reported_cost_source": pl.String,
        # quality
        "accuracy": pl.Float64,
        "scores": pl.List(SCORE_STRUCT),
        # fingerprints
        "prefix_hashes": pl.List(pl.UInt64),
        "prefix_tokens": pl.List(pl.Int64),
        "template_fingerprint": pl.String,
        "input_fingerprint": pl.String,
        # content, only when the user asks for it
        "input_content": pl.String,
        "output_content": pl.String,
        # pricing context (appended)
        "service_tier": pl.String,
        "provider_assumed": pl.Boolean,
        # agents
        "agent": pl.String,
        "tool": pl.String,
        "step_fingerprint": pl.String,
        # twins (appended: older store files read it as null)
        "twin_ids": pl.List(pl.String),
    }
)

KEY_FIELDS: tuple[str, str] = ("trace_id", "span_id")
TWIN_IDS = "twin_ids"

# price_status values. "ok" is the only one with costs; the others say why costs are null.
PRICE_OK = "ok"
PRICE_UNKNOWN_MODEL = "unknown_model"
PRICE_NO_MODEL = "no_model"
PRICE_NO_USAGE = "no_usage"
PRICE_INVALID_USAGE = "invalid_usage"
PRICE_NOT_PRICED = "not_priced"  # not yet run through pricing
# A call on a non-standard service tier that has no price for that tier; the status is this
# prefix and the tier: "unpriced_tier:flex".
PRICE_UNPRICED_TIER = "unpriced_tier"


def empty_calls() -> pl.DataFrame:
    """An empty call-record frame with the full schema."""
    return pl.DataFrame(schema=CALL_SCHEMA)


def holds_struct(dtype: pl.DataType) -> bool:
    """Whether ``dtype`` is a struct or a (nested) list or array of structs."""
    while isinstance(dtype, (pl.List, pl.Array)):
        dtype = dtype.inner
    return isinstance(dtype, pl.Struct)


def cast_by_name(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """``expr`` cast to ``dtype``; a struct (or a list of structs) matches its fields by name.

    Why: the store's score struct grew a field (``id``), and files or frames of the older
    four-field shape must still conform. Polars 2.2 refuses a strict cast between structs of
    other fields (2.1 matched them by name); ``strict=False`` matches them by name in both,
    missing fields becoming null. Every other type keeps the strict cast, so a bad value is
    an error, never a silent null."""
    return expr.cast(dtype, strict=not holds_struct(dtype))


def conform(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Return ``frame`` with exactly the call-record columns, in order and with their types.

    Missing columns become nulls (``price_status`` becomes ``not_priced``), extra columns are
    dropped and ``day`` is derived from ``start_time``. Every producer of call records goes
    through here, so the store never holds two shapes of the same table.
    """
    lazy = frame.lazy()
    present = set(lazy.collect_schema().names())
    columns = []
    for name, dtype in CALL_SCHEMA.items():
        if name == "day" and "start_time" in present:
            columns.append(pl.col("start_time").cast(UTC_TIME).dt.date().alias("day"))
        elif name in present:
            columns.append(cast_by_name(pl.col(name), dtype).alias(name))
        elif name == "price_status":
            columns.append(pl.lit(PRICE_NOT_PRICED, dtype=pl.String).alias(name))
        else:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    return lazy.select(columns)


def validate(frame: pl.DataFrame) -> None:
    """Raise ``ValueError`` if ``frame`` does not have the call-record schema exactly."""
    if frame.schema != CALL_SCHEMA:
        expected = dict(CALL_SCHEMA)
        got = dict(frame.schema)
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise ValueError(
            f"not a call-record frame: missing {missing}, extra {extra}, wrong types {wrong}"
        )
