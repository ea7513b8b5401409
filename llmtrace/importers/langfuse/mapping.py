"""Langfuse observations -> call records, in Polars expressions (only fingerprinting is per
row); rows that cannot be stored are rejected one by one with the field at fault. See the
package docstring for the field-by-field mapping."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import polars as pl

from llmtrace import fingerprint
from llmtrace.dialects import SERVICE_TIER_VALUES, USAGE_JSON_BUCKETS
from llmtrace.record import CALL_SCHEMA

# Observation types that carry model usage and cost (Langfuse prices only these two).
OBSERVATION_TYPES: tuple[str, ...] = ("GENERATION", "EMBEDDING")


_OPERATIONS = {"GENERATION": "chat", "EMBEDDING": "embeddings"}


REPORTED_COST_SOURCE = "langfuse.costDetails"


# Observation keys read from either API version, typed. usageDetails/costDetails are inferred
# (their keys vary; the SDK has already checked the values are numbers); io is kept as Python
# values for fingerprinting.
_RAW_SCHEMA: dict[str, Any] = {
    "id": pl.String,
    "traceId": pl.String,
    "startTime": None,  # datetimes from the SDK, ISO strings from plain JSON
    "endTime": None,
    "parentObservationId": pl.String,
    "type": pl.String,
    "level": pl.String,
    "environment": pl.String,
    "userId": pl.String,
    "sessionId": pl.String,
    "model": pl.String,
    "modelParameters": pl.Struct(
        {
            "reasoning_effort": pl.String,
            "reasoningEffort": pl.String,
            "service_tier": pl.String,  # Langfuse's OpenAI integration puts the tier here
            "serviceTier": pl.String,
        }
    ),
    "usageDetails": None,
    "costDetails": None,
    "promptName": pl.String,
    "promptVersion": pl.Int64,
    "traceName": pl.String,
    "latency": pl.Float64,
    "input": pl.Object,
    "output": pl.Object,
}

_CONTENT_SCHEMA = {
    name: CALL_SCHEMA[name]
    for name in (
        "prefix_hashes",
        "prefix_tokens",
        "template_fingerprint",
        "input_fingerprint",
        "input_content",
        "output_content",
    )
}


def _snake(name: str) -> str:
    """``traceId`` -> ``trace_id``: the SDK's field names for the API's JSON keys."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _typed_frame(
    rows: list[dict[str, Any]], schema: Mapping[str, Any], sdk_names: bool
) -> pl.DataFrame:
    """Rows as a typed frame with the API's (camelCase) column names; values of the wrong type
    become null. ``sdk_names``: the rows are an SDK model dump (snake_case keys)."""
    if not sdk_names:
        return pl.from_dicts(rows, schema=dict(schema), infer_schema_length=None, strict=False)
    snake = {_snake(k): v for k, v in schema.items()}
    frame = pl.from_dicts(rows, schema=snake, infer_schema_length=None, strict=False)
    return frame.rename(dict(zip(snake, schema, strict=True)))


def _nonblank(name: str) -> pl.Expr:
    """The column with empty strings as null (Langfuse sends "" for unset fields)."""
    return pl.when(pl.col(name).str.strip_chars() != "").then(pl.col(name))


def _time(frame: pl.DataFrame, name: str) -> pl.Expr:
    """A time column as UTC microseconds: SDK datetimes as they are, ISO-8601 strings (``Z`` or
    an offset) parsed; anything else null."""
    dtype = frame.schema.get(name)
    if isinstance(dtype, pl.Datetime):
        column = pl.col(name)
        if dtype.time_zone is None:
            column = column.dt.replace_time_zone("UTC")
        return column.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if dtype != pl.String:
        return pl.lit(None, dtype=CALL_SCHEMA["start_time"])
    return (
        pl.col(name)
        .str.replace(r"Z$", "+00:00")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", time_unit="us", time_zone="UTC", strict=False)
    )


def _struct_keys(frame: pl.DataFrame, name: str) -> set[str]:
    dtype = frame.schema.get(name)
    return {f.name for f in dtype.fields} if isinstance(dtype, pl.Struct) else set()


def _bucket(column: str, groups: tuple[tuple[str, ...], ...], present: set[str]) -> pl.Expr:
    """Sum of the first group of keys with a value (groups are alternatives, e.g. a cache-write
    total or its 5m/1h breakdown, never both); null when no group has one."""
    expr: pl.Expr = pl.lit(None, dtype=pl.Int64)
    for group in reversed(groups):
        keys = [key for key in group if key in present]
        if not keys:
            continue
        values = [pl.col(column).struct.field(key).cast(pl.Int64) for key in keys]
        found = pl.any_horizontal([v.is_not_null() for v in values])
        expr = pl.when(found).then(pl.sum_horizontal(values)).otherwise(expr)
    return expr


def _usage_exprs(frame: pl.DataFrame) -> list[pl.Expr]:
    """Inclusive token fields from Langfuse's exclusive usageDetails buckets.

    The same rules as ``llmtrace.dialects`` applies to ``langfuse.observation.usage_details``:
    Gemini's raw prompt count is already inclusive; otherwise input = input + cache reads +
    cache writes, output = output + reasoning; absent counts stay null.
    """
    present = _struct_keys(frame, "usageDetails")
    got = {
        key: _bucket("usageDetails", groups, present) for key, groups in USAGE_JSON_BUCKETS.items()
    }
    cache = got["cache_read"].fill_null(0) + got["cache_write"].fill_null(0)
    reasoning = got["reasoning"].fill_null(0)
    input_tokens = (
        pl.when(got["input_inclusive"].is_not_null())
        .then(got["input_inclusive"])
        .when(got["input"].is_not_null() | (cache > 0))
        .then(got["input"].fill_null(0) + cache)
    )
    # An "inclusive" count smaller than its cached part was exclusive after all (dialects rule).
    input_tokens = pl.when(input_tokens < cache).then(input_tokens + cache).otherwise(input_tokens)
    output_tokens = pl.when(got["output"].is_not_null() | (reasoning > 0)).then(
        got["output"].fill_null(0) + reasoning
    )
    total = (
        pl.col("usageDetails").struct.field("total").cast(pl.Int64)
        if "total" in present
        else pl.lit(None, dtype=pl.Int64)
    )
    mismatch = (
        total.is_not_null()
        & got["input_inclusive"].is_null()
        & (total != input_tokens.fill_null(0) + output_tokens.fill_null(0))
    )
    return [
        input_tokens.alias("input_tokens"),
        got["cache_read"].alias("cache_read_tokens"),
        got["cache_write"].alias("cache_write_tokens"),
        got["cache_write_1h"].alias("cache_write_1h_tokens"),
        output_tokens.alias("output_tokens"),
        got["reasoning"].alias("reasoning_tokens"),
        mismatch.fill_null(False).alias("_usage_mismatch"),
    ]


def _reported_cost_expr(frame: pl.DataFrame) -> list[pl.Expr]:
    """costDetails ``total``, else the sum of its (exclusive) keys; null when there is none."""
    keys = _struct_keys(frame, "costDetails")
    if not keys:
        cost = pl.lit(None, dtype=pl.Float64)
    else:
        values = [pl.col("costDetails").struct.field(k).cast(pl.Float64) for k in sorted(keys)]
        summed = pl.when(pl.any_horizontal([v.is_not_null() for v in values])).then(
            pl.sum_horizontal(values)
        )
        if "total" in keys:
            cost = pl.coalesce(pl.col("costDetails").struct.field("total").cast(pl.Float64), summed)
        else:
            cost = summed
    return [
        cost.alias("reported_cost"),
        pl.when(cost.is_not_null())
        .then(pl.lit(REPORTED_COST_SOURCE))
        .alias("reported_cost_source"),
    ]


def _io_value(value: Any) -> Any:
    """v2 sends io as raw strings; a JSON-encoded string is unwrapped to its text."""
    if isinstance(value, str) and value[:1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _content_frame(raw: pl.DataFrame, keep_content: bool) -> pl.DataFrame:
    """Fingerprints (and content, if kept) of each row's input/output.

    The one per-row step: hashing messages is Python in ``llmtrace.fingerprint``, which reads
    Langfuse's input shapes (message list, ``{"messages", "tools"}``, text) the same way for
    OTLP spans from the Langfuse SDK, so both imports fingerprint a call identically.
    """
    inputs = raw.get_column("input").to_list() if "input" in raw.columns else [None] * raw.height
    outputs = raw.get_column("output").to_list() if "output" in raw.columns else [None] * raw.height
    rows = []
    for inp, out in zip(inputs, outputs, strict=True):
        attrs = {}
        if inp is not None:
            attrs["langfuse.observation.input"] = _io_value(inp)
        if out is not None:
            attrs["langfuse.observation.output"] = _io_value(out)
        rows.append(fingerprint.content_fields(attrs, keep_content=keep_content))
    return (
        pl.from_dicts(rows, schema=_CONTENT_SCHEMA)
        if rows
        else pl.DataFrame(schema=_CONTENT_SCHEMA)
    )


def _bad_token_count(frame: pl.DataFrame) -> pl.Expr:
    """The first usageDetails value that is not a whole, non-negative number, as a message.

    The SDK checks this, but a page read as plain JSON (after the SDK refused it) is not.
    """
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for key in sorted(_struct_keys(frame, "usageDetails"), reverse=True):
        value = pl.col("usageDetails").struct.field(key)
        number = value.cast(pl.Float64, strict=False)
        bad = value.is_not_null() & (
            number.is_null() | (number < 0) | (number != number.floor())
        ).fill_null(True)
        text = pl.format(
            "usageDetails.{} = {} is not a token count", pl.lit(key), value.cast(pl.String)
        )
        reason = pl.when(bad).then(text).otherwise(reason)
    return reason


def _rejects(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows that cannot be stored: no id, no trace id, no readable start time, or a token count
    that is not one; ``reason`` says which (null for good rows)."""
    usage = _bad_token_count(raw)
    reason = (
        pl.when(pl.col("id").is_null() | (pl.col("id") == ""))
        .then(pl.lit("id missing"))
        .when(pl.col("traceId").is_null() | (pl.col("traceId") == ""))
        .then(pl.lit("traceId missing"))
        .when(_time(raw, "startTime").is_null())
        .then(
            pl.format(
                "startTime {} is not a time",
                pl.col("startTime").cast(pl.String).fill_null("missing"),
            )
        )
        .when(usage.is_not_null())
        .then(usage)
    )
    return raw.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), "id", reason.alias("reason")
    )


_REJECT_SCHEMA = {"row": pl.Int64, "id": pl.String, "reason": pl.String}
_DETAILS = ("usageDetails", "costDetails")


def _drop_unreadable(
    rows: list[dict[str, Any]], sdk_names: bool, error: Exception
) -> tuple[list[int], pl.DataFrame]:
    """When a page (read as plain JSON) mixes shapes Polars cannot put in one column, find the
    rows whose usage/cost details are not objects of numbers: returns the positions of the
    other rows, and the rejected ones with their reason.

    Only pages that failed to load get here, so this one loop per row is off the normal path.
    """
    keys = [_snake(k) if sdk_names else k for k in _DETAILS]
    kept: list[int] = []
    rejected: list[tuple[int, Any, str]] = []
    for index, row in enumerate(rows):
        problem = next(
            (
                f"{name} is not an object of numbers"
                for name, key in zip(_DETAILS, keys, strict=True)
                if not _numbers_object(row.get(key))
            ),
            None,
        )
        if problem is None:
            kept.append(index)
        else:
            rejected.append((index, row.get("id"), problem))
    if not rejected:
        raise error
    frame = pl.DataFrame(rejected, schema=_REJECT_SCHEMA, orient="row", strict=False)
    return kept, frame


def _numbers_object(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
    )


def _service_tier(raw: pl.Expr) -> pl.Expr:
    """The record's ``service_tier`` from the tier Langfuse recorded (``SERVICE_TIER_VALUES``)."""
    text = raw.str.strip_chars().str.to_lowercase()
    known = list(SERVICE_TIER_VALUES)
    mapped = text.replace_strict(known, list(SERVICE_TIER_VALUES.values()), default=text)
    return pl.when(text.str.len_bytes() > 0).then(mapped).alias("service_tier")


def observations_to_calls(
    rows: list[dict[str, Any]], *, keep_content: bool = False, sdk_names: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Call records (not yet priced, no scores) from observation rows of either API version.

    ``rows`` are the API's JSON objects, or with ``sdk_names`` a dump of the SDK's
    ``ObservationV2`` models (snake_case keys, datetimes). Returns ``(calls, rejected)``:
    ``rejected`` has ``row`` (0-based), ``id`` and ``reason`` for rows that cannot be stored;
    types other than generation/embedding are left out silently. ``calls`` carries one helper
    column, ``_usage_mismatch`` (usage ``total`` differs from the buckets read: unknown keys, or
    inclusive counts sent as exclusive).
    """
    unreadable = pl.DataFrame(schema=_REJECT_SCHEMA)
    try:
        raw = _typed_frame(rows, _RAW_SCHEMA, sdk_names)
        checks = _rejects(raw)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError) as exc:
        positions, unreadable = _drop_unreadable(rows, sdk_names, exc)
        raw = _typed_frame([rows[i] for i in positions], _RAW_SCHEMA, sdk_names)
        checks = _rejects(raw).with_columns(
            pl.col("row").replace_strict(dict(enumerate(positions)), return_dtype=pl.Int64)
        )
    bad = pl.concat([unreadable, checks.filter(pl.col("reason").is_not_null())]).sort("row")
    keep = checks.get_column("reason").is_null() & raw.get_column("type").is_in(OBSERVATION_TYPES)
    raw = raw.filter(keep)
    start, end = _time(raw, "startTime"), _time(raw, "endTime")
    effort = pl.col("modelParameters").struct
    calls = raw.select(
        pl.col("traceId").alias("trace_id"),
        pl.col("id").alias("span_id"),
        _nonblank("parentObservationId").alias("parent_span_id"),
        pl.lit("langfuse").alias("source"),
        pl.lit("langfuse").alias("dialect"),
        _nonblank("environment").alias("environment"),
        _nonblank("model").alias("model"),
        _nonblank("model").alias("request_model"),
        pl.col("type").replace_strict(_OPERATIONS, default=None).alias("operation"),
        _nonblank("promptName").alias("prompt_name"),
        pl.when(_nonblank("promptName").is_not_null())
        .then(pl.col("promptVersion").cast(pl.String))
        .alias("prompt_version"),
        _nonblank("traceName").alias("action"),
        _nonblank("sessionId").alias("conversation_id"),
        _nonblank("userId").alias("user_id"),
        pl.coalesce(effort.field("reasoning_effort"), effort.field("reasoningEffort")).alias(
            "reasoning_effort"
        ),
        _service_tier(pl.coalesce(effort.field("service_tier"), effort.field("serviceTier"))),
        start.alias("start_time"),
        end.alias("end_time"),
        pl.coalesce(
            (end - start).dt.total_microseconds() / 1000.0, pl.col("latency") * 1000.0
        ).alias("duration_ms"),
        (pl.col("level") == "ERROR").fill_null(False).alias("is_error"),
        *_usage_exprs(raw),
        *_reported_cost_expr(raw),
    )
    calls = pl.concat([calls, _content_frame(raw, keep_content)], how="horizontal")
    calls = calls.with_columns(
        pl.when(pl.col("prompt_name").is_not_null())
        .then(
            pl.when(pl.col("prompt_version").is_not_null())
            .then(pl.format("{}@{}", "prompt_name", "prompt_version"))
            .otherwise(pl.col("prompt_name"))
        )
        .when(pl.col("template_fingerprint").is_not_null())
        .then(pl.format("fp:{}", "template_fingerprint"))
        .alias("prompt")
    )
    return calls, bad
