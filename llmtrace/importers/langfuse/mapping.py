"""Langfuse observations -> call records, in Polars expressions (only fingerprinting is per
row); rows that cannot be stored are rejected one by one with the field at fault. See the
package docstring for the field-by-field mapping."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl

from llmtrace import fingerprint
from llmtrace.dialects import MS_PER_US, SERVICE_TIER_VALUES, USAGE_JSON_BUCKETS
from llmtrace.limits import EARLIEST, LATEST, MAX_JSON_COUNT
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

# The model parameters the mapping reads (reasoning effort, service tier).
_PARAM_KEYS = tuple(_RAW_SCHEMA["modelParameters"].to_schema())
_TYPED_SCHEMA = {k: v for k, v in _RAW_SCHEMA.items() if k not in ("input", "output")}

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
        values = [_count_value(pl.col(column).struct.field(key)) for key in keys]
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
        _count_value(pl.col("usageDetails").struct.field("total"))
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
        values = [
            pl.col("costDetails").struct.field(k).cast(pl.Float64, strict=False)
            for k in sorted(keys)
        ]
        summed = pl.when(pl.any_horizontal([v.is_not_null() for v in values])).then(
            pl.sum_horizontal(values)
        )
        if "total" in keys:
            total = pl.col("costDetails").struct.field("total").cast(pl.Float64, strict=False)
            cost = pl.coalesce(total, summed)
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


def _content_frame(inputs: list[Any], outputs: list[Any], keep_content: bool) -> pl.DataFrame:
    """Fingerprints (and content, if kept) of each row's input/output.

    The one per-row step: hashing messages is Python in ``llmtrace.fingerprint``, which reads
    Langfuse's input shapes (message list, ``{"messages", "tools"}``, text) the same way for
    OTLP spans from the Langfuse SDK, so both imports fingerprint a call identically.
    """
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


def _count_value(value: pl.Expr) -> pl.Expr:
    """A usage value (number or numeric text) as Int64; only rows ``_rejects`` kept get here."""
    return value.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)


def _bad_token_count(frame: pl.DataFrame) -> pl.Expr:
    """The first usageDetails value that is not a plausible token count, as a message: not a
    whole number, negative, NaN or infinite, or beyond 2**53 (no JSON number above it is exact,
    and no call uses that many; below it the record's Int64 sums cannot overflow).

    The SDK checks some of this, but a page read as plain JSON (after the SDK refused it) is
    not checked at all.
    """
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for key in sorted(_struct_keys(frame, "usageDetails"), reverse=True):
        value = pl.col("usageDetails").struct.field(key)
        number = value.cast(pl.Float64, strict=False)
        bad = value.is_not_null() & (
            number.is_null()
            | number.is_nan()
            | number.is_infinite()
            | (number < 0)
            | (number != number.floor())
            | (number > MAX_JSON_COUNT)
        ).fill_null(True)
        text = pl.format(
            "usageDetails.{} = {} is not a token count", pl.lit(key), value.cast(pl.String)
        )
        reason = pl.when(bad).then(text).otherwise(reason)
    return reason


def _bad_cost(frame: pl.DataFrame) -> pl.Expr:
    """The first costDetails value that is not a finite, non-negative USD amount, as a message."""
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for key in sorted(_struct_keys(frame, "costDetails"), reverse=True):
        value = pl.col("costDetails").struct.field(key)
        number = value.cast(pl.Float64, strict=False)
        bad = value.is_not_null() & (
            number.is_null() | number.is_nan() | number.is_infinite() | (number < 0)
        ).fill_null(True)
        text = pl.format(
            "costDetails.{} = {} is not a cost in USD", pl.lit(key), value.cast(pl.String)
        )
        reason = pl.when(bad).then(text).otherwise(reason)
    return reason


def _implausible_time(frame: pl.DataFrame, name: str) -> pl.Expr:
    """True where the time column holds a time outside 2000..2100 (a clock or unit error)."""
    moment = _time(frame, name)
    return (moment < pl.lit(EARLIEST)) | (moment >= pl.lit(LATEST))


def _rejects(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows that cannot be stored: no id, no trace id, no readable start time, or a token count
    that is not one; ``reason`` says which (null for good rows)."""
    usage = _bad_token_count(raw)
    cost = _bad_cost(raw)
    end_text = pl.col("endTime").cast(pl.String).fill_null("missing")
    latency = pl.col("latency")
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
        .when(_implausible_time(raw, "startTime"))
        .then(pl.format("startTime {} is not between 2000 and 2100", pl.col("startTime")))
        .when(pl.col("endTime").is_not_null() & _time(raw, "endTime").is_null())
        .then(pl.format("endTime {} is not a time", end_text))
        .when(_implausible_time(raw, "endTime"))
        .then(pl.format("endTime {} is not between 2000 and 2100", end_text))
        .when(usage.is_not_null())
        .then(usage)
        .when(cost.is_not_null())
        .then(cost)
        .when(latency.is_nan() | latency.is_infinite() | (latency < 0))
        .then(pl.format("latency {} is not a duration", latency))
    )
    return raw.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), "id", reason.alias("reason")
    )


_REJECT_SCHEMA = {"row": pl.Int64, "id": pl.String, "reason": pl.String}
_DETAILS = ("usageDetails", "costDetails")


# Fields whose value must be text; a number, list or object there cannot share a column.
_TEXT_FIELDS = (
    "id",
    "traceId",
    "parentObservationId",
    "type",
    "level",
    "environment",
    "userId",
    "sessionId",
    "model",
    "promptName",
    "traceName",
)


def _row_problem(row: Any, sdk_names: bool, check_io: bool) -> str | None:
    """Why one observation cannot share a typed frame with the others (a value of the wrong
    type, invalid Unicode), naming the field; None when its shape is fine.

    Every row is checked before its page is typed (cheap: a dict lookup per field), and
    ``check_io`` also encodes input and output (only for rows that failed to map).
    """
    if not isinstance(row, Mapping):
        return f"not an object ({type(row).__name__})"

    def get(key: str) -> Any:
        return row.get(_snake(key) if sdk_names else key)

    for key in _TEXT_FIELDS:
        value = get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} is {type(value).__name__}, not text"
        if value is not None and not _encodable(value):
            return f"{key} holds invalid Unicode (a lone surrogate)"
    for key in ("startTime", "endTime"):
        value = get(key)
        if value is not None and not isinstance(value, str | datetime):
            return f"{key} is {type(value).__name__}, not a time"
    version = get("promptVersion")
    if version is not None and (type(version) is not int or abs(version) > MAX_JSON_COUNT):
        return f"promptVersion {_show(version)} is not a version number"
    latency = get("latency")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        return f"latency {_show(latency)} is not a number"
    params = get("modelParameters")
    if params is not None and not isinstance(params, Mapping):
        return f"modelParameters is {type(params).__name__}, not an object"
    for key in _PARAM_KEYS:
        value = (params or {}).get(key)
        if value is not None and not (isinstance(value, str) and _encodable(value)):
            return f"modelParameters.{key} is not text"
    for key in _DETAILS:
        if not _numbers_object(get(key)):
            return f"{key} is not an object of numbers"
    for key in ("input", "output") if check_io else ():
        value = get(key)
        if value is not None and (why := _unwritable(value)):
            return f"{key} {why}"
    return None


def _show(value: Any) -> str:
    """A value for a problem line: scalars as written, containers by their type only."""
    if isinstance(value, str | int | float | bool) or value is None:
        return repr(value)[:60]
    return f"({type(value).__name__})"


def _unwritable(value: Any) -> str | None:
    """Why JSON-like ``value`` cannot be written as UTF-8 text, or None."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except RecursionError:
        return "is nested too deeply"
    except (UnicodeEncodeError, ValueError, TypeError):
        return "holds invalid Unicode (a lone surrogate)"
    return None


def _encodable(value: Any) -> bool:
    """Whether ``value`` (text, or JSON-like data) can be written as UTF-8."""
    try:
        if isinstance(value, str):
            value.encode("utf-8")
        else:
            json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError, RecursionError):
        return False
    return True


def _numbers_object(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, dict) and all(
        isinstance(v, int | float | str)
        and not isinstance(v, bool)
        and (not isinstance(v, int) or abs(v) <= 2**63 - 1)
        for v in value.values()
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
    # Values of the wrong shape never reach Polars: a nested list where text belongs costs
    # Polars seconds per row to reject (minutes at depth 1000), and fails the whole page.
    problems = {i: p for i, row in enumerate(rows) if (p := _row_problem(row, sdk_names, False))}
    kept = [i for i in range(len(rows)) if i not in problems]
    slim = {i: _slim(rows[i], sdk_names) for i in kept}
    try:
        calls, bad = _calls_and_rejects([slim[i] for i in kept], keep_content, sdk_names)
    except _FRAME_ERRORS:
        # something else sank the page (invalid Unicode in io, a value out of range): map the
        # rows one by one to find it, then the rest together. Off the normal path.
        frames = []
        for i in kept:
            try:
                frames.append((i, *_calls_and_rejects([slim[i]], keep_content, sdk_names)))
            except _FRAME_ERRORS as exc:
                found = _row_problem(rows[i], sdk_names, True)
                problems[i] = found or f"unreadable ({type(exc).__name__}: {_first_line(exc)})"
        kept = [i for i, _, _ in frames]
        try:
            calls, bad = _calls_and_rejects([slim[i] for i in kept], keep_content, sdk_names)
        except _FRAME_ERRORS:  # each row maps alone but not together: keep them alone
            calls = pl.concat([c for _, c, _ in frames], how="vertical_relaxed")
            bad = pl.concat(
                [
                    b.with_columns(pl.lit(n, dtype=pl.Int64).alias("row"))
                    for n, (_, _, b) in enumerate(frames)
                ]
            )
    bad = bad.with_columns(
        pl.col("row").replace_strict(dict(enumerate(kept)), return_dtype=pl.Int64)
    )
    unreadable = pl.DataFrame(
        [(i, _row_id(rows[i], sdk_names), problem) for i, problem in problems.items()],
        schema=_REJECT_SCHEMA,
        orient="row",
    )
    return calls, pl.concat([unreadable, bad]).sort("row")


def _slim(row: dict[str, Any], sdk_names: bool) -> dict[str, Any]:
    """The keys of ``row`` the mapping reads (``modelParameters`` only those in ``_PARAM_KEYS``):
    nothing else of a row, however large or nested, is handed to Polars."""
    keys = [_snake(k) if sdk_names else k for k in _RAW_SCHEMA]
    slim = {key: row[key] for key in keys if key in row}
    params = slim.get("modelParameters" if not sdk_names else "model_parameters")
    if params:
        slim["model_parameters" if sdk_names else "modelParameters"] = {
            key: params[key] for key in _PARAM_KEYS if key in params
        }
    return slim


# What a page with an odd value can raise while it is mapped (a Polars type or range error, a
# lone surrogate meeting UTF-8, a number too large for Python's float).
_FRAME_ERRORS = (
    pl.exceptions.PolarsError,
    UnicodeError,
    OverflowError,
    TypeError,
    ValueError,
    RecursionError,
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _row_id(row: Any, sdk_names: bool) -> str | None:
    value = row.get("id") if isinstance(row, Mapping) else None
    return value if isinstance(value, str) and _encodable(value) else None


def _calls_and_rejects(
    rows: list[dict[str, Any]], keep_content: bool, sdk_names: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``observations_to_calls`` for a page whose values Polars can type (else it raises)."""
    # io stays Python values (fingerprinted per row): as a frame column, one odd value there
    # (a huge number beside message lists) would sink the page
    raw = _typed_frame(rows, _TYPED_SCHEMA, sdk_names)
    checks = _rejects(raw)
    bad = checks.filter(pl.col("reason").is_not_null())
    keep = checks.get_column("reason").is_null() & raw.get_column("type").is_in(OBSERVATION_TYPES)
    keep = keep.fill_null(False)
    kept_rows = [row for row, kept in zip(rows, keep.to_list(), strict=True) if kept]
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
            (end - start).dt.total_microseconds() * MS_PER_US, pl.col("latency") * 1000.0
        ).alias("duration_ms"),
        (pl.col("level") == "ERROR").fill_null(False).alias("is_error"),
        *_usage_exprs(raw),
        *_reported_cost_expr(raw),
    )
    content = _content_frame(
        [row.get("input") for row in kept_rows],
        [row.get("output") for row in kept_rows],
        keep_content,
    )
    calls = pl.concat([calls, content], how="horizontal")
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
