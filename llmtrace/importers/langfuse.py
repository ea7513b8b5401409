"""Import LLM calls from Langfuse's public API into the store: incremental, resumable, priced.

What is read, and why this way
------------------------------
* **Observations**: ``GET /api/public/v2/observations`` through the real ``langfuse`` SDK
  (``LangfuseAPI.observations.get_many``), one pass per observation type that carries usage
  (``GENERATION``, ``EMBEDDING``), cursor pagination at the largest page size (1000). The field
  groups asked for are exactly what a call record needs; ``trace_context`` brings the trace
  name, so no trace endpoint is needed. Servers without v2 observations (self-hosted Langfuse
  v3: HTTP 404) are read through the older page-based ``/api/public/observations`` and
  ``/api/public/traces`` instead (the SDK 5 no longer wraps them, so they are plain GETs).
* **Scores**: ``GET /api/public/v3/scores`` (SDK ``scores.get_many``), else the page-based
  ``/api/public/v2/scores``; numeric, boolean and categorical scores from an hour before the
  window's start on, each kept once by its id (page-based reads can repeat a row). They are
  read *before* the observations so a new call is written once, with its scores. Scores for
  calls stored by an earlier run (LLM-as-judge runs later; trace scores are added after the
  trace) are merged into those stored calls first, by ``Store.attach_scores``: the store's one
  update path, idempotent and crash-safe.
* **Prompts**: ``GET /api/public/v2/prompts?name=`` (SDK ``prompts.list``) and
  ``GET /api/public/v2/prompts/{name}?version=`` (``prompts.get``), only for the prompt
  versions the calls name, each read once and kept in the checkpoint (re-read when the
  prompt's ``lastUpdatedAt`` moves, e.g. a label moved): the version's labels (production,
  latest...), created time and tags there order prompt versions; its template gives
  ``template_fingerprint`` to calls whose own input gave none (io masked or not captured). A
  server without prompts is said once and the import goes on.

Mapping (Langfuse -> call record, Polars expressions; only fingerprinting is per row)
------------------------------------------------------------------------------------
traceId / id / parentObservationId -> trace_id / span_id / parent_span_id (kept as sent, hex
for OTel-ingested data); model -> model and request_model; provider: Langfuse does not record
it, so it is the provider genai-prices matches for the model; usageDetails -> tokens, by the
bucket table ``llmtrace.dialects.USAGE_JSON_BUCKETS`` (the same table the OTLP importer uses for
Langfuse-SDK spans): Langfuse's buckets are exclusive, the record is inclusive, so
``input_tokens = input + cache reads + cache writes`` and ``output_tokens = output +
reasoning``; costDetails ``total`` (else the sum of its keys) -> ``reported_cost``, then our
own prices; promptName@promptVersion -> prompt; traceName -> action; sessionId ->
conversation_id; userId, environment; level ERROR -> is_error; input/output -> fingerprints
(content kept only with ``keep_content``). Empty strings, which Langfuse sends for unset
fields, count as missing.

Scores -> accuracy, as ``llmtrace.accuracy`` defines it: a score counts when its name is one
of ``[accuracy] names`` (config); numeric values in 0..1 as they are, booleans as 1/0,
categories through ``[accuracy.categories]``. Observation scores attach to their observation,
trace scores to every call of the trace; ``accuracy`` is the mean of the counted scores,
``scores`` keeps them all.

Incremental and safe
--------------------
The checkpoint (``Store.write_state("langfuse-<host>")``, one entry per project key) holds a
*watermark* (every observation that started before it has been imported) and, while an import
runs, the window being read and the position after the last page that was fully stored (type
pass and cursor, or page number). A page is appended first, then the checkpoint moves past it,
so whatever stops the process (Ctrl-C, a crash, a dropped connection) the next run re-reads at
most the page it was on, and the store's idempotent append skips what was already written:
every observation is stored exactly once. The next window starts ``OVERLAP`` before the
watermark so observations ingested late (long calls, batching exporters) are still picked up.
Scores are merged into stored calls at the start of every window read, resumed ones included,
and a score a call already holds is not added again, so reruns add nothing. A score edited at
Langfuse (an annotator's correction, ``create_score(id=...)``) keeps its id, and the version read
replaces the one a call holds. Both score endpoints filter by the score's ``timestamp`` only
(no ``updatedAt`` filter), so an incremental run re-reads scores timestamped from an hour before
its window on: an edit of an older score is picked up by a rerun over its window (``--since``)
or by ``--scores-since`` (scores re-read further back than the observations), not by a plain
incremental run. The checkpoint
also keeps ``prompts``: per prompt its versions, labels, tags and ``lastUpdatedAt``, and per
version used its labels, created time, commit message and template fingerprint (no text).

Errors: 401/403 stop at once (wrong keys or host); 429 waits for ``Retry-After`` however long
it is (the SDK would cap it at 60 s, so SDK retries are off and this module retries);
5xx, 408, 409, timeouts and dropped connections retry with exponential backoff and then stop
with a message naming the request and the last problem; the checkpoint keeps what was stored.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import polars as pl
import pydantic
from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from llmtrace import fingerprint
from llmtrace.accuracy import AccuracyConfig
from llmtrace.dialects import SERVICE_TIER_VALUES, USAGE_JSON_BUCKETS
from llmtrace.errors import EXIT_FINDINGS, EXIT_USAGE, LlmtraceError
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.record import CALL_SCHEMA, SCORE_STRUCT, conform
from llmtrace.store import Store

__all__ = [
    "DEFAULT_HOST",
    "OBSERVATION_TYPES",
    "ImportReporter",
    "ImportStats",
    "LangfuseImportError",
    "LangfuseSettings",
    "RetryPolicy",
    "attach_scores",
    "checkpoint_name",
    "import_langfuse",
    "observations_to_calls",
    "prompt_template_fingerprint",
    "retry_wait",
    "scores_frame",
]

DEFAULT_HOST = "https://cloud.langfuse.com"
# Observation types that carry model usage and cost (Langfuse prices only these two).
OBSERVATION_TYPES: tuple[str, ...] = ("GENERATION", "EMBEDDING")
_OPERATIONS = {"GENERATION": "chat", "EMBEDDING": "embeddings"}
# v2 field groups a call record needs (io for fingerprints; metadata is large and not needed).
V2_FIELDS = "core,basic,model,usage,prompt,metrics,trace_context,io"
V2_PAGE_SIZE = 1000  # the v2 maximum
V1_PAGE_SIZE = 100
SCORES_PAGE_SIZE = 100  # the v3 maximum (more is HTTP 400)
PROMPTS_PAGE_SIZE = 100  # the prompts list maximum
SCORE_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL")
# Re-read this much before the watermark: observations can arrive after a later one was read.
OVERLAP = timedelta(minutes=15)
# First import without --since reads this far back.
DEFAULT_LOOKBACK = timedelta(days=30)
# Scores are timestamped after their observation starts; a little slack covers clock skew.
SCORE_SLACK = timedelta(hours=1)
# Old servers: a trace can start before its observations' window.
TRACE_LOOKBACK = timedelta(days=1)
# A rerun whose --since/--until moved less than this (a relative "7d" re-evaluated) resumes.
RESUME_TOLERANCE = timedelta(days=1)

REPORTED_COST_SOURCE = "langfuse.costDetails"
_MAX_PROBLEMS = 10


class LangfuseImportError(LlmtraceError):
    """An import that cannot go on; the message says why and what to do. Exit 1 (the run
    failed) unless raised with ``exit_code=EXIT_USAGE`` (keys, host, timeout: configuration)."""

    exit_code = EXIT_FINDINGS


class _NotFound(Exception):
    """HTTP 404: the endpoint does not exist on this server."""


class _BadRequest(Exception):
    """HTTP 400 (the server rejected a parameter, e.g. a saved cursor)."""


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LangfuseSettings:
    """Where and as whom to read: host and the project's API keys."""

    host: str
    public_key: str
    secret_key: str = field(repr=False)  # never in a log line or traceback repr
    timeout: float = 60.0

    @classmethod
    def from_env(
        cls, host: str | None = None, environ: Mapping[str, str] | None = None
    ) -> LangfuseSettings:
        """Keys from ``LANGFUSE_PUBLIC_KEY`` / ``LANGFUSE_SECRET_KEY``; host from ``host``, else
        ``LANGFUSE_BASE_URL``, else ``LANGFUSE_HOST`` (the SDK's order), else Langfuse Cloud;
        timeout from ``LANGFUSE_TIMEOUT`` (seconds)."""
        env = os.environ if environ is None else environ
        public, secret = env.get("LANGFUSE_PUBLIC_KEY"), env.get("LANGFUSE_SECRET_KEY")
        missing = [
            name
            for name, value in (("LANGFUSE_PUBLIC_KEY", public), ("LANGFUSE_SECRET_KEY", secret))
            if not value
        ]
        if missing:
            raise LangfuseImportError(
                f"{' and '.join(missing)} not set: export the project's API keys "
                "(Langfuse > Project settings > API keys)",
                exit_code=EXIT_USAGE,
            )
        chosen = host or env.get("LANGFUSE_BASE_URL") or env.get("LANGFUSE_HOST") or DEFAULT_HOST
        if not re.match(r"^https?://[^/\s]+", chosen):
            raise LangfuseImportError(
                f"Langfuse host {chosen!r} is not an http(s) URL", exit_code=EXIT_USAGE
            )
        timeout = env.get("LANGFUSE_TIMEOUT")
        try:
            seconds = float(timeout) if timeout else 60.0
        except ValueError:
            raise LangfuseImportError(
                f"LANGFUSE_TIMEOUT={timeout!r} is not a number", exit_code=EXIT_USAGE
            ) from None
        return cls(chosen.rstrip("/"), str(public), str(secret), seconds)


def checkpoint_name(host: str) -> str:
    """The store-state name for a host: ``langfuse-<host[:port]>``, file-name safe."""
    netloc = re.sub(r"^https?://", "", host.rstrip("/"))
    return "langfuse-" + re.sub(r"[^A-Za-z0-9._-]+", "_", netloc)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``attempts`` counts tries for 5xx/timeouts/network errors; rate limits
    (429) are waited out up to ``rate_limit_attempts`` times, each wait as long as the server
    asks (up to ``max_rate_limit_wait``)."""

    attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    rate_limit_attempts: int = 50
    max_rate_limit_wait: float = 24 * 3600.0


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def retry_wait(
    headers: Mapping[str, str] | None,
    body: Any,
    attempt: int,
    policy: RetryPolicy,
    now: float | None = None,
) -> float:
    """Seconds to wait before retrying a 429: ``Retry-After`` (seconds or an HTTP date),
    ``retry-after-ms``, Langfuse's ``details.retryAfterSeconds``, else exponential backoff.

    Unlike the SDK this does not cap the wait at 60 s: hourly and daily limits ask for more,
    and retrying early only burns attempts.
    """
    wait: float | None = None
    millis = _header(headers, "retry-after-ms")
    seconds = _header(headers, "retry-after")
    if millis is not None and re.fullmatch(r"\s*\d+(\.\d+)?\s*", millis):
        wait = float(millis) / 1000
    elif seconds is not None:
        if re.fullmatch(r"\s*\d+(\.\d+)?\s*", seconds):
            wait = float(seconds)
        else:
            try:
                parsed = email.utils.parsedate_to_datetime(seconds)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                wait = parsed.timestamp() - (time.time() if now is None else now)
    if wait is None and isinstance(body, Mapping):
        details = body.get("details")
        if isinstance(details, Mapping) and isinstance(
            details.get("retryAfterSeconds"), int | float
        ):
            wait = float(details["retryAfterSeconds"])
    if wait is None:
        wait = _backoff(attempt, policy)
    return min(max(wait, 0.0), policy.max_rate_limit_wait)


def _backoff(attempt: int, policy: RetryPolicy) -> float:
    """``backoff * 2**attempt`` with +-10 % jitter, at most ``max_backoff``."""
    base = min(policy.backoff * 2**attempt, policy.max_backoff)
    return base * (0.9 + 0.2 * random.random())


# -- progress and results ---------------------------------------------------------------------


@dataclass
class ImportStats:
    """What an import did; the command prints it, tests check it."""

    host: str
    api: str = "v2"
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    resumed: bool = False
    pages: int = 0
    observations: int = 0
    calls: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    scores: int = 0
    calls_with_scores: int = 0
    calls_with_accuracy: int = 0
    scores_new_calls: int = 0
    scores_stored_calls: int = 0
    scores_present: int = 0
    scores_unmatched: int = 0
    # scores edited at Langfuse since a stored call got them: the new version replaced the old
    scores_replaced: int = 0
    calls_rescored: int = 0
    prompt_versions: int = 0
    price_status: Counter[str] = field(default_factory=Counter)
    usage_mismatch: int = 0
    total_cost: float = 0.0
    reported_cost: float = 0.0
    rate_limit_waits: int = 0
    waited_seconds: float = 0.0
    retries: int = 0
    watermark: datetime | None = None

    def problem(self, message: str) -> None:
        """Keep the first few problems verbatim; the count says how many there were."""
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(message)


class ImportReporter:
    """Hooks the command uses to show progress; every method is optional (no-op here)."""

    def notice(self, message: str) -> None:
        """Something the user should read once (fallback to old endpoints, a skipped row)."""

    def stage(self, description: str) -> None:
        """A new phase started (reading scores, a type pass)."""

    def fetched(self, stats: ImportStats) -> None:
        """A page arrived and is about to be stored."""

    def stored(self, stats: ImportStats) -> None:
        """A page was stored and the checkpoint moved past it."""

    def waiting(self, seconds: float, reason: str) -> None:
        """About to sleep ``seconds`` before a retry."""


# -- mapping ----------------------------------------------------------------------------------

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


# -- scores -----------------------------------------------------------------------------------

_SCORE_COLUMNS = {
    "score_id": pl.String,
    "trace_id": pl.String,
    "observation_id": pl.String,
    "name": pl.String,
    "data_type": pl.String,
    "value_text": pl.String,
    "source": pl.String,
}


def _scores_v3(rows: list[dict[str, Any]], sdk_names: bool) -> pl.DataFrame:
    """v3 scores (``fields=subject``) in the common score shape; session/experiment scores,
    which belong to no call, are dropped."""
    subject = pl.Struct({"kind": pl.String, "id": pl.String, "traceId": pl.String})
    if sdk_names:
        subject = pl.Struct({"kind": pl.String, "id": pl.String, "trace_id": pl.String})
    schema = {
        "id": pl.String,
        "name": pl.String,
        "dataType": pl.String,
        "value": pl.String,
        "source": pl.String,
        "subject": subject,
    }
    raw = _typed_frame(rows, schema, sdk_names)
    trace_key = "trace_id" if sdk_names else "traceId"
    kind = pl.col("subject").struct.field("kind")
    sid, stid = pl.col("subject").struct.field("id"), pl.col("subject").struct.field(trace_key)
    return raw.select(
        pl.col("id").alias("score_id"),
        pl.when(kind == "trace").then(sid).when(kind == "observation").then(stid).alias("trace_id"),
        pl.when(kind == "observation").then(sid).alias("observation_id"),
        pl.col("name"),
        pl.col("dataType").alias("data_type"),
        pl.col("value").alias("value_text"),
        pl.col("source"),
    ).filter(pl.col("trace_id").is_not_null() | pl.col("observation_id").is_not_null())


def _scores_v1(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Scores from the page-based ``/api/public/v2/scores`` in the common shape (booleans and
    categories are in ``stringValue`` there)."""
    raw = pl.from_dicts(
        rows,
        schema={
            "id": pl.String,
            "traceId": pl.String,
            "observationId": pl.String,
            "name": pl.String,
            "dataType": pl.String,
            "value": pl.Float64,
            "stringValue": pl.String,
            "source": pl.String,
        },
        strict=False,
    )
    return raw.select(
        pl.col("id").alias("score_id"),
        pl.col("traceId").alias("trace_id"),
        _nonblank("observationId").alias("observation_id"),
        pl.col("name"),
        pl.col("dataType").alias("data_type"),
        pl.when(pl.col("dataType") == "NUMERIC")
        .then(pl.col("value").cast(pl.String))
        .otherwise(pl.col("stringValue"))
        .alias("value_text"),
        pl.col("source"),
    ).filter(pl.col("trace_id").is_not_null() | pl.col("observation_id").is_not_null())


def scores_frame(common: pl.DataFrame, accuracy: AccuracyConfig) -> pl.DataFrame:
    """Scores with the record's score struct; a categorical score's value is its category's.

    Columns: ``score_id`` (Langfuse's id; ``#<row>`` if a row has none), ``trace_id``,
    ``observation_id`` (null for trace scores), ``score`` (name, value, label, source, id: the
    Langfuse id, so ``Store.attach_scores`` replaces a stored version that was edited since). A
    score read twice (page-based reads shift when scores arrive meanwhile) is kept once, so a
    new call also holds one score per id.
    """
    text = pl.col("value_text").str.strip_chars()
    lowered = text.str.to_lowercase()
    kind = pl.col("data_type").str.to_uppercase()
    value = (
        pl.when(kind == "NUMERIC")
        .then(text.cast(pl.Float64, strict=False))
        .when(kind == "BOOLEAN")
        .then(
            pl.when(lowered.is_in(["true", "1", "1.0"]))
            .then(1.0)
            .when(lowered.is_in(["false", "0", "0.0"]))
            .then(0.0)
        )
        .when(kind == "CATEGORICAL")
        .then(
            lowered.replace_strict(dict(accuracy.categories), default=None, return_dtype=pl.Float64)
        )
    )
    label = (
        pl.when(kind == "CATEGORICAL")
        .then(text)
        .when(kind == "BOOLEAN")
        .then(pl.when(value == 1.0).then(pl.lit("true")).when(value == 0.0).then(pl.lit("false")))
    )
    row_id = pl.format("#{}", pl.int_range(pl.len()))
    return (
        common.filter(kind.is_in(SCORE_TYPES))
        .with_columns(value.alias("_value"), label.alias("_label"))
        .select(
            pl.coalesce(_nonblank("score_id"), row_id).alias("score_id"),
            "trace_id",
            "observation_id",
            pl.struct(
                pl.col("name"),
                pl.col("_value").alias("value"),
                pl.col("_label").alias("label"),
                pl.format("langfuse.{}", pl.col("source").str.to_lowercase()).alias("source"),
                _nonblank("score_id").alias("id"),  # an edit at Langfuse replaces, not adds
            )
            .cast(SCORE_STRUCT)
            .alias("score"),
        )
        .unique("score_id", keep="first", maintain_order=True)
    )


def _score_lists(scores: pl.DataFrame, key: str, level: pl.Expr) -> pl.DataFrame:
    return scores.filter(level).group_by(key).agg(pl.col("score").alias(f"_scores_{key}"))


def attach_scores(
    calls: pl.DataFrame, scores: pl.DataFrame, accuracy: AccuracyConfig
) -> pl.DataFrame:
    """``scores`` and ``accuracy`` on each call: its observation's scores plus its trace's.

    ``accuracy`` is ``AccuracyConfig.from_scores`` over both levels; null when none counts.
    """
    by_obs = _score_lists(scores, "observation_id", pl.col("observation_id").is_not_null())
    by_trace = _score_lists(scores, "trace_id", pl.col("observation_id").is_null())
    joined = calls.join(
        by_obs, left_on="span_id", right_on="observation_id", how="left", maintain_order="left"
    ).join(by_trace, on="trace_id", how="left", maintain_order="left")
    both = pl.concat_list(
        pl.col("_scores_observation_id").fill_null([]), pl.col("_scores_trace_id").fill_null([])
    )
    return (
        joined.with_columns(pl.when(both.list.len() > 0).then(both).alias("scores"))
        .drop("_scores_observation_id", "_scores_trace_id")
        .with_columns(accuracy.from_scores("scores").alias("accuracy"))
    )


def _empty_scores() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "score_id": pl.String,
            "trace_id": pl.String,
            "observation_id": pl.String,
            "score": SCORE_STRUCT,
        }
    )


def _service_tier(raw: pl.Expr) -> pl.Expr:
    """The record's ``service_tier`` from the tier Langfuse recorded (``SERVICE_TIER_VALUES``)."""
    text = raw.str.strip_chars().str.to_lowercase()
    known = list(SERVICE_TIER_VALUES)
    mapped = text.replace_strict(known, list(SERVICE_TIER_VALUES.values()), default=text)
    return pl.when(text.str.len_bytes() > 0).then(mapped).alias("service_tier")


# -- prompts ----------------------------------------------------------------------------------


def prompt_template_fingerprint(kind: str | None, template: Any, config: Any = None) -> str | None:
    """A Langfuse prompt version's template fingerprint, computed by ``llmtrace.fingerprint``
    exactly as for a call's input: leading system messages plus tools.

    A chat prompt's messages are read as a call's input messages are (a placeholder, like any
    non-system message, ends the system part); a text prompt is read as the system message
    (where ``compile()`` output usually goes); tools come from ``config.tools`` when the prompt
    keeps them there. ``{{variables}}`` stay as written, so a call whose system message had
    them filled in fingerprints differently: that is why a call's own input wins.
    """
    tools = config.get("tools") if isinstance(config, Mapping) else None
    if kind == "text" or isinstance(template, str):
        messages = [{"role": "system", "content": str(template)}]
    elif isinstance(template, list):
        messages = [_template_message(m) for m in template]
    else:
        return None
    value = {"messages": messages, "tools": tools if isinstance(tools, list) else []}
    prompt = fingerprint.read_prompt({"langfuse.observation.input": value})
    return fingerprint.fingerprint(prompt)["template_fingerprint"] if prompt else None


def _template_message(message: Any) -> dict[str, Any]:
    """A chat prompt message as an input message; a placeholder (``{name, type}``) becomes a
    message of its own role, which ends the system part as the messages it stands for do."""
    if not isinstance(message, Mapping):
        return {"role": "user", "content": message}
    if message.get("type") == "placeholder" or "role" not in message:
        return {"role": "placeholder", "content": str(message.get("name") or "")}
    return {"role": message.get("role"), "content": message.get("content")}


def _apply_prompts(ctx: _Context, calls: pl.DataFrame) -> pl.DataFrame:
    """Fill ``template_fingerprint`` of calls whose input gave none from their prompt version's
    template; each version is read from the server once and then kept in the checkpoint."""
    pairs = (
        calls.filter(pl.col("prompt_name").is_not_null() & pl.col("prompt_version").is_not_null())
        .select("prompt_name", "prompt_version")
        .unique()
        .sort("prompt_name", "prompt_version")
    )
    if pairs.is_empty():
        return calls
    known = ctx.entry.setdefault("prompts", {})
    found = []
    for name, version in pairs.iter_rows():  # distinct prompt versions: a handful per page
        _ensure_prompt_version(ctx, name, version)
        cached = known.get(name, {}).get("by_version", {}).get(version) or {}
        found.append((name, version, cached.get("template_fingerprint")))
    table = pl.DataFrame(
        found,
        schema={"prompt_name": pl.String, "prompt_version": pl.String, "_prompt_fp": pl.String},
        orient="row",
    )
    return (
        calls.join(table, on=["prompt_name", "prompt_version"], how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("template_fingerprint", "_prompt_fp").alias("template_fingerprint")
        )
        .drop("_prompt_fp")
    )


def _ensure_prompt_version(ctx: _Context, name: str, version: str) -> None:
    """Read a prompt version into the checkpoint unless it is there and still current."""
    if ctx.prompts_off or (name, version) in ctx.prompt_missing:
        return
    meta = _list_prompt(ctx, name)
    if meta is None:
        return
    cached = ctx.entry["prompts"][name]["by_version"].get(version)
    if cached is not None and cached.get("seen_update") == meta.get("last_updated_at"):
        return
    if not version.isdigit() or int(version) not in (meta.get("versions") or []):
        ctx.prompt_missing.add((name, version))
        ctx.notice_once(
            f"prompt:{name}@{version}",
            f"prompt {name!r} has no version {version} on the server (deleted?): its calls keep "
            "the fingerprint of their own input",
        )
        return
    _get_prompt_version(ctx, name, version, meta)


def _list_prompt(ctx: _Context, name: str) -> dict[str, Any] | None:
    """The prompt's metadata from the list endpoint, once per run, recorded in the checkpoint;
    versions already recorded are re-read if the prompt changed since (a label moved)."""
    if name in ctx.prompt_listed:
        return ctx.prompt_listed[name]
    ctx.prompt_listed[name] = None
    try:
        meta = _find_prompt_meta(ctx, name)
    except (_NotFound, _BadRequest, LangfuseImportError, pydantic.ValidationError) as exc:
        _prompts_unavailable(ctx, exc)
        return None
    if meta is None:
        ctx.notice_once(
            f"prompt:{name}",
            f"prompt {name!r} is not among the project's prompts (deleted?): its calls keep "
            "the fingerprint of their own input",
        )
        return None
    entry = ctx.entry.setdefault("prompts", {}).setdefault(name, {"by_version": {}})
    entry.update(
        {
            "type": meta.get("type"),
            "versions": sorted(meta.get("versions") or []),
            "labels": sorted(meta.get("labels") or []),
            "tags": sorted(meta.get("tags") or []),
            "last_updated_at": meta.get("last_updated_at"),
        }
    )
    ctx.prompt_listed[name] = meta
    for version, cached in list(entry["by_version"].items()):
        if cached.get("seen_update") != meta.get("last_updated_at") and not ctx.prompts_off:
            _get_prompt_version(ctx, name, version, meta)
    return meta


def _find_prompt_meta(ctx: _Context, name: str) -> dict[str, Any] | None:
    """``GET /api/public/v2/prompts?name=``, page by page, until the entry named ``name``."""
    page = 1
    while True:
        response = ctx.client.call(
            "GET /api/public/v2/prompts",
            lambda page=page: ctx.client.api.prompts.list(
                name=name, page=page, limit=PROMPTS_PAGE_SIZE, request_options=ctx.client.options
            ),
        )
        body = _sdk_dump(response)
        for item in body.get("data") or []:
            if isinstance(item, dict) and item.get("name") == name:
                return {_snake(k): v for k, v in item.items()}
        if page >= int(_sdk_dump(body.get("meta")).get("total_pages") or 0):
            return None
        page += 1


def _sdk_dump(model: Any) -> dict[str, Any]:
    """An SDK model (or its dump) as JSON values with snake_case top-level keys: the SDK's
    models dump under the API's camelCase names, their attributes are snake_case."""
    if isinstance(model, pydantic.BaseModel):
        model = pydantic.BaseModel.model_dump(model, mode="json")
    return {_snake(k): v for k, v in model.items()} if isinstance(model, dict) else {}


def _get_prompt_version(ctx: _Context, name: str, version: str, meta: dict[str, Any]) -> None:
    """Read one prompt version; record its labels, times and template fingerprint (never its
    text) in the checkpoint."""
    what = f"GET /api/public/v2/prompts/{name}?version={version}"
    try:
        prompt = ctx.client.call(
            what,
            lambda: ctx.client.api.prompts.get(
                quote(name, safe=""),  # folder prompts: "a/b" is one path segment
                version=int(version),
                request_options=ctx.client.options,
            ),
        )
    except (_NotFound, pydantic.ValidationError) as exc:
        ctx.prompt_missing.add((name, version))
        problem = "not found" if isinstance(exc, _NotFound) else "not readable"
        ctx.notice_once(f"prompt:{name}@{version}", f"{what}: {problem}; skipped")
        return
    except (_BadRequest, LangfuseImportError) as exc:
        _prompts_unavailable(ctx, exc)
        return
    data = _sdk_dump(prompt)
    ctx.entry["prompts"][name]["by_version"][version] = {
        "labels": sorted(data.get("labels") or []),
        "created_at": data.get("created_at"),  # not in the spec; the server sends it
        "updated_at": data.get("updated_at"),
        "commit_message": data.get("commit_message"),
        "template_fingerprint": prompt_template_fingerprint(
            data.get("type"), data.get("prompt"), data.get("config")
        ),
        "seen_update": meta.get("last_updated_at"),
    }
    ctx.stats.prompt_versions += 1


def _prompts_unavailable(ctx: _Context, exc: Exception) -> None:
    """No prompts from this server in this run; said once, and the import goes on."""
    ctx.prompts_off = True
    reason = "no prompts endpoint (HTTP 404)" if isinstance(exc, _NotFound) else str(exc)
    ctx.notice_once(
        "prompts",
        f"prompts are not available from {ctx.client.settings.host} ({reason}): calls keep the "
        "prompt name and version their observations carry, without the version's labels or "
        "template fingerprint",
    )


# -- HTTP -------------------------------------------------------------------------------------


class _Client:
    """The SDK's API client plus plain GETs for endpoints SDK 5 dropped, with our retries.

    SDK retries are switched off (``max_retries=0``): its 429 wait is capped at 60 s and its
    retries would hide attempts from the progress display.
    """

    def __init__(
        self,
        settings: LangfuseSettings,
        policy: RetryPolicy,
        reporter: ImportReporter,
        stats: ImportStats,
        sleep: Callable[[float], None],
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.reporter = reporter
        self.stats = stats
        self.sleep = sleep
        self.http = httpx.Client(timeout=settings.timeout, follow_redirects=True)
        self.api = LangfuseAPI(
            base_url=settings.host,
            username=settings.public_key,
            password=settings.secret_key,
            x_langfuse_sdk_name="llmtrace",
            x_langfuse_public_key=settings.public_key,
            httpx_client=self.http,
            timeout=settings.timeout,
        )
        self.options: dict[str, Any] = {"max_retries": 0, "timeout_in_seconds": settings.timeout}

    def close(self) -> None:
        self.http.close()

    def call(self, what: str, request: Callable[[], Any]) -> Any:
        """Run ``request`` with our retry rules; ``what`` names it in error messages."""
        failures = 0
        waits = 0
        while True:
            try:
                return request()
            except ApiError as exc:
                status = exc.status_code or 0
                if status in (401, 403):
                    raise LangfuseImportError(
                        self._auth_message(status), exit_code=EXIT_USAGE
                    ) from None
                if status == 404:
                    raise _NotFound(f"{what}: HTTP 404: {_message(exc.body)}") from None
                if status == 400:
                    raise _BadRequest(f"{what}: HTTP 400: {_message(exc.body)}") from None
                if status == 429:
                    waits += 1
                    if waits > self.policy.rate_limit_attempts:
                        raise LangfuseImportError(
                            f"{what}: still rate limited (HTTP 429) after {waits - 1} waits"
                        ) from None
                    wait = retry_wait(exc.headers, exc.body, waits - 1, self.policy)
                    self.stats.rate_limit_waits += 1
                    self.stats.waited_seconds += wait
                    self._pause(wait, f"rate limited by Langfuse (HTTP 429), waiting {wait:.0f} s")
                    continue
                if status >= 500 or status in (408, 409):
                    problem = f"HTTP {status}: {_message(exc.body)}"
                else:
                    raise LangfuseImportError(
                        f"{what}: HTTP {status}: {_message(exc.body)}"
                    ) from None
            except httpx.TimeoutException:
                problem = f"no answer within {self.settings.timeout:g} s"
            except httpx.TransportError as exc:
                problem = f"network error: {exc or type(exc).__name__}"
            failures += 1
            if failures >= self.policy.attempts:
                raise LangfuseImportError(
                    f"{what} failed {failures} times, last: {problem}"
                ) from None
            wait = _backoff(failures - 1, self.policy)
            self.stats.retries += 1
            self._pause(wait, f"{problem}; retrying in {wait:.1f} s")

    def _pause(self, seconds: float, reason: str) -> None:
        self.reporter.waiting(seconds, reason)
        self.sleep(seconds)

    def _auth_message(self, status: int) -> str:
        verb = "rejected" if status == 401 else "refused access for"
        return (
            f"Langfuse at {self.settings.host} {verb} the API keys (HTTP {status}): check "
            "LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY and that the host is the project's region "
            "(--host, LANGFUSE_BASE_URL or LANGFUSE_HOST)"
        )

    def get_json(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """A plain GET for the page-based endpoints; errors become ``ApiError`` like the SDK's."""
        response = self.http.get(
            f"{self.settings.host}/{path}",
            params={k: v for k, v in params.items() if v is not None},
            auth=(self.settings.public_key, self.settings.secret_key),
        )
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if not 200 <= response.status_code < 300:
            raise ApiError(
                status_code=response.status_code, headers=dict(response.headers), body=body
            )
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise LangfuseImportError(f"GET /{path}: the answer is not a page of data")
        return body


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("message", "error"):
            if body.get(key):
                return str(body[key])
    text = str(body or "").strip()
    return text[:200] or "no message"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


# -- the import -------------------------------------------------------------------------------


@dataclass
class _Context:
    """Everything one import run shares."""

    store: Store
    client: _Client
    stats: ImportStats
    reporter: ImportReporter
    book: PriceBook
    accuracy: AccuracyConfig
    keep_content: bool
    page_size: int
    state_name: str
    project: str
    state: dict[str, Any]
    scores: pl.DataFrame = field(default_factory=_empty_scores)
    traces: pl.DataFrame | None = None
    noticed: set[str] = field(default_factory=set)
    # ids of the window's scores that matched no stored call, and those of them that then
    # reached a call read in this run
    unstored_scores: set[str] = field(default_factory=set)
    new_call_scores: set[str] = field(default_factory=set)
    # prompts: names listed in this run (None: not on the server), versions the server lacks
    prompt_listed: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    prompt_missing: set[tuple[str, str]] = field(default_factory=set)
    prompts_off: bool = False
    # re-read scores from here even when the window starts later (edits of older scores)
    scores_since: datetime | None = None

    def notice_once(self, key: str, message: str) -> None:
        if key not in self.noticed:
            self.noticed.add(key)
            self.reporter.notice(message)

    @property
    def entry(self) -> dict[str, Any]:
        return self.state.setdefault(self.project, {})

    def save(self) -> None:
        self.store.write_state(self.state_name, self.state)


def import_langfuse(
    store: Store,
    settings: LangfuseSettings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    keep_content: bool = False,
    book: PriceBook | None = None,
    accuracy: AccuracyConfig | None = None,
    page_size: int = V2_PAGE_SIZE,
    retry: RetryPolicy | None = None,
    reporter: ImportReporter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    scores_since: datetime | None = None,
) -> ImportStats:
    """Import Langfuse generations and embeddings into ``store``; returns what was done.

    ``since``/``until`` bound the observations' start times; without ``since`` the import goes
    on from the checkpoint (or reads the last 30 days the first time), without ``until`` up to
    now. An unfinished earlier import is finished first. ``scores_since`` re-reads scores
    timestamped from then on even when the window starts later: Langfuse filters scores by
    their timestamp only, so this is how an edit of an older score (an annotator's correction)
    reaches the stored call. Raises ``LangfuseImportError`` with a
    message for the user; everything stored up to then stays stored and checkpointed.
    """
    reporter = reporter or ImportReporter()
    stats = ImportStats(host=settings.host)
    name = checkpoint_name(settings.host)
    project = "project-" + hashlib.sha256(settings.public_key.encode()).hexdigest()[:12]
    client = _Client(settings, retry or RetryPolicy(), reporter, stats, sleep)
    ctx = _Context(
        store=store,
        client=client,
        stats=stats,
        reporter=reporter,
        book=book or PriceBook.load(),
        accuracy=accuracy or AccuracyConfig(),
        keep_content=keep_content,
        page_size=max(1, min(page_size, V2_PAGE_SIZE)),
        state_name=name,
        project=project,
        state=store.read_state(name),
        scores_since=scores_since,
    )
    try:
        for window in _windows(ctx, since, until):
            _run_window(ctx, window)
    except (_NotFound, _BadRequest) as exc:  # where no fallback applies
        raise LangfuseImportError(str(exc)) from None
    finally:
        client.close()
    watermark = ctx.entry.get("watermark")
    stats.watermark = _parse(watermark)
    return stats


def _windows(ctx: _Context, since: datetime | None, until: datetime | None):
    """The windows to read: an unfinished run first (if this call continues it), then new."""
    now = datetime.now(UTC)
    run = ctx.entry.get("run")
    run_from, run_to = _checkpoint_window(run)
    if run and (run_from is None or run_to is None):
        ctx.reporter.notice("the checkpoint's unfinished import is unreadable; starting afresh")
        ctx.entry.pop("run", None)
    elif run and run_from is not None and run_to is not None:
        close = (since is None or abs(since - run_from) <= RESUME_TOLERANCE) and (
            until is None or abs(until - run_to) <= RESUME_TOLERANCE
        )
        if close:
            ctx.stats.resumed = True
            ctx.reporter.notice(
                f"continuing the unfinished import of {_iso(run_from)} .. {_iso(run_to)} "
                f"after {run.get('pages', 0)} stored pages"
            )
            yield run
            since = None  # the rest follows on from the watermark
        else:
            ctx.reporter.notice(
                f"an unfinished import of {_iso(run_from)} .. {_iso(run_to)} is replaced by the "
                "requested window (calls it stored stay stored)"
            )
            ctx.entry.pop("run", None)
    watermark = _parse(ctx.entry.get("watermark"))
    start = since or (watermark - OVERLAP if watermark else now - DEFAULT_LOOKBACK)
    end = until or now
    if ctx.stats.resumed and until is not None:
        return  # the resumed run was the window asked for
    if start >= end:
        if not ctx.stats.resumed:
            ctx.reporter.notice(f"nothing to read: {_iso(start)} is not before {_iso(end)}")
        return
    run = {"from": _iso(start), "to": _iso(end), "api": None, "type_index": 0, "pages": 0}
    ctx.entry["run"] = run
    yield run


def _checkpoint_window(run: Any) -> tuple[datetime | None, datetime | None]:
    """The (from, to) of a checkpointed run, or Nones if it is missing or damaged."""
    try:
        return _parse(run["from"]), _parse(run["to"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, None


def _run_window(ctx: _Context, run: dict[str, Any]) -> None:
    """Read one window completely, page by page, checkpointing after each stored page."""
    start, end = _parse(run["from"]), _parse(run["to"])
    assert start is not None and end is not None
    ctx.stats.windows.append((start, end))
    if run.get("api") is None:
        run["api"] = _probe(ctx, start, end)
    ctx.stats.api = run["api"]
    if run["api"] == "v1":
        ctx.notice_once(
            "v1",
            f"{ctx.client.settings.host} has no v2 observations endpoint (older self-hosted "
            "Langfuse): reading the page-based /api/public/observations and /api/public/traces "
            "instead",
        )
    ctx.save()
    ctx.scores = _read_scores(ctx, start, run["api"])
    _attach_to_stored(ctx)
    ctx.traces = None
    if run["api"] == "v1":
        ctx.traces = _read_traces(ctx, start - TRACE_LOOKBACK, end)
        _pages_v1(ctx, run, start, end)
    else:
        _pages_v2(ctx, run, start, end)
    ctx.stats.scores_new_calls += len(ctx.new_call_scores)
    ctx.stats.scores_unmatched += len(ctx.unstored_scores - ctx.new_call_scores)
    _finish(ctx, start, end)


def _attach_to_stored(ctx: _Context) -> None:
    """Merge the window's scores into calls stored by earlier runs (late LLM-as-judge verdicts,
    trace scores added after the trace) before any page is read.

    Done first, and again whenever the window is re-read, so a crash anywhere leaves nothing
    behind; scores already held are not added again, and a score edited at Langfuse since
    replaces the version a call holds (same id). Scores matching no stored call are
    remembered: the pages decide whether they belong to a call read now or to none.
    """
    if ctx.scores.is_empty():
        ctx.unstored_scores, ctx.new_call_scores = set(), set()
        return
    ctx.reporter.stage("attaching scores to stored calls")
    frame = ctx.scores.select(
        "score_id", "trace_id", pl.col("observation_id").alias("span_id"), "score"
    )
    result = ctx.store.attach_scores(frame, ctx.accuracy)
    ctx.stats.scores_stored_calls += result.attached
    ctx.stats.scores_present += result.present
    ctx.stats.scores_replaced += result.replaced
    ctx.stats.calls_rescored += result.calls
    ctx.unstored_scores, ctx.new_call_scores = set(result.unmatched_ids), set()


def _note_new_call_scores(ctx: _Context, calls: pl.DataFrame) -> None:
    """Which of the scores no stored call held reach the calls of this page: those calls were
    not stored before this run, so the scores count as attached to new calls."""
    if not ctx.unstored_scores:
        return
    scores = ctx.scores
    hit = scores.filter(
        pl.col("observation_id").is_in(calls.get_column("span_id").implode())
        | (
            pl.col("observation_id").is_null()
            & pl.col("trace_id").is_in(calls.get_column("trace_id").implode())
        )
    ).get_column("score_id")
    ctx.new_call_scores.update(set(hit) & ctx.unstored_scores)


def _finish(ctx: _Context, start: datetime, end: datetime) -> None:
    """The window is complete: move the watermark (if the window joins on to it) and clear the
    run, in one checkpoint write."""
    entry = ctx.entry
    old = _parse(entry.get("watermark"))
    if old is None or start <= old:
        entry["watermark"] = _iso(max(old, end) if old else end)
    entry.pop("run", None)
    entry["last_import"] = {
        "finished": _iso(datetime.now(UTC)),
        "from": _iso(start),
        "to": _iso(end),
    }
    ctx.save()


def _probe(ctx: _Context, start: datetime, end: datetime) -> str:
    """Which observations API the server has: one small v2 request (it also checks the keys
    before anything else is read)."""
    try:
        ctx.client.call(
            "GET /api/public/v2/observations",
            lambda: ctx.client.api.observations.get_many(
                fields="core",
                limit=1,
                from_start_time=start,
                to_start_time=end,
                request_options=ctx.client.options,
            ),
        )
    except _NotFound:
        return "v1"
    except pydantic.ValidationError:
        pass  # the endpoint exists; page parsing problems are dealt with page by page
    return "v2"


def _read_scores(ctx: _Context, start: datetime, api: str) -> pl.DataFrame:
    """Every numeric, boolean and categorical score from ``start - SCORE_SLACK`` on (or from
    ``ctx.scores_since`` when that is earlier)."""
    ctx.reporter.stage("reading scores")
    since = start - SCORE_SLACK
    if ctx.scores_since is not None and ctx.scores_since < since:
        since = ctx.scores_since
    frames: list[pl.DataFrame] = []
    if api == "v2":
        try:
            frames = _scores_pages_v3(ctx, since)
        except _NotFound:
            api = "v1"
            ctx.notice_once(
                "scores-v1", "this server has no v3 scores endpoint: reading /api/public/v2/scores"
            )
    if api == "v1":
        frames = _scores_pages_v1(ctx, since)
    common = pl.concat(frames) if frames else pl.DataFrame(schema=_SCORE_COLUMNS)
    scores = scores_frame(common, ctx.accuracy)
    ctx.stats.scores += scores.height
    return scores


def _scores_pages_v3(ctx: _Context, since: datetime) -> list[pl.DataFrame]:
    frames: list[pl.DataFrame] = []
    cursor: str | None = None
    while True:
        rows, cursor, sdk_names = _cursor_page(
            ctx,
            "GET /api/public/v3/scores",
            lambda cursor=cursor: ctx.client.api.scores.get_many(
                limit=SCORES_PAGE_SIZE,
                cursor=cursor,
                fields="subject",
                data_type=",".join(SCORE_TYPES),
                from_timestamp=since,
                request_options=ctx.client.options,
            ),
            "api/public/v3/scores",
            {
                "limit": SCORES_PAGE_SIZE,
                "cursor": cursor,
                "fields": "subject",
                "dataType": ",".join(SCORE_TYPES),
                "fromTimestamp": _iso(since),
            },
        )
        if rows:
            frames.append(_scores_v3(rows, sdk_names))
        if not cursor or not rows:
            return frames


def _cursor_page(
    ctx: _Context,
    what: str,
    sdk_request: Callable[[], Any],
    path: str,
    params: dict[str, Any],
) -> tuple[list[dict[str, Any]], str | None, bool]:
    """One cursor page through the SDK: its rows, the next cursor, and whether the rows carry
    the SDK's field names (True) or are the server's JSON (False).

    The SDK rejects a whole page for one odd row (an unknown enum value, a float token count);
    that page is then read as plain JSON so the good rows are kept and the bad ones are
    rejected one by one, by id.
    """
    try:
        page = ctx.client.call(what, sdk_request)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        ctx.reporter.notice(
            f"{what}: the SDK could not parse the page ({where}: {first.get('msg', 'invalid')}); "
            "reading it as plain JSON"
        )
        body = ctx.client.call(what, lambda: ctx.client.get_json(path, params))
        return body["data"], (body.get("meta") or {}).get("cursor") or None, False
    # pydantic's own dump: the SDK's .json()/.dict() walk every value in Python (5x slower)
    data = pydantic.BaseModel.model_dump(page, exclude_unset=True)
    return data.get("data", []), page.meta.cursor, True


def _scores_pages_v1(ctx: _Context, since: datetime) -> list[pl.DataFrame]:
    frames, page = [], 1
    while True:
        body = ctx.client.call(
            "GET /api/public/v2/scores",
            lambda page=page: ctx.client.get_json(
                "api/public/v2/scores",
                {"page": page, "limit": SCORES_PAGE_SIZE, "fromTimestamp": _iso(since)},
            ),
        )
        rows = body["data"]
        if rows:
            frames.append(_scores_v1(rows))
        if not rows or page >= int(body.get("meta", {}).get("totalPages") or 0):
            return frames
        page += 1


def _read_traces(ctx: _Context, start: datetime, end: datetime) -> pl.DataFrame:
    """Trace name, session, user and environment per trace (older servers only: there the
    observations do not carry them)."""
    ctx.reporter.stage("reading traces")
    frames, page = [], 1
    schema = {"id": pl.String, "name": pl.String, "sessionId": pl.String, "userId": pl.String}
    while True:
        body = ctx.client.call(
            "GET /api/public/traces",
            lambda page=page: ctx.client.get_json(
                "api/public/traces",
                {
                    "page": page,
                    "limit": V1_PAGE_SIZE,
                    "fromTimestamp": _iso(start),
                    "toTimestamp": _iso(end),
                    "fields": "core",
                },
            ),
        )
        rows = body["data"]
        if rows:
            frames.append(pl.from_dicts(rows, schema=schema, strict=False))
        if not rows or page >= int(body.get("meta", {}).get("totalPages") or 0):
            break
        page += 1
    traces = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return traces.unique("id", keep="first").select(
        pl.col("id").alias("trace_id"),
        _nonblank("name").alias("_t_action"),
        _nonblank("sessionId").alias("_t_conversation"),
        _nonblank("userId").alias("_t_user"),
    )


def _pages_v2(ctx: _Context, run: dict[str, Any], start: datetime, end: datetime) -> None:
    """Cursor pages of each observation type, from the checkpointed position on."""
    api = ctx.client.api
    for index in range(run.get("type_index", 0), len(OBSERVATION_TYPES)):
        kind = OBSERVATION_TYPES[index]
        ctx.reporter.stage(f"reading {kind.lower()} observations")
        cursor = run.get("cursor") if run.get("type_index", 0) == index else None
        while True:
            what = f"GET /api/public/v2/observations ({kind.lower()}, page {run['pages'] + 1})"
            params = {
                "fields": V2_FIELDS,
                "limit": ctx.page_size,
                "cursor": cursor,
                "type": kind,
                "fromStartTime": _iso(start),
                "toStartTime": _iso(end),
            }
            try:
                rows, next_cursor, sdk_names = _cursor_page(
                    ctx,
                    what,
                    lambda cursor=cursor, kind=kind: api.observations.get_many(
                        fields=V2_FIELDS,
                        limit=ctx.page_size,
                        cursor=cursor,
                        type=kind,
                        from_start_time=start,
                        to_start_time=end,
                        request_options=ctx.client.options,
                    ),
                    "api/public/v2/observations",
                    params,
                )
            except _BadRequest as exc:
                if cursor is None:
                    raise LangfuseImportError(str(exc)) from None
                ctx.reporter.notice(
                    "the server did not accept the saved cursor; reading this pass from its "
                    "start again (calls already stored are skipped)"
                )
                cursor = None
                continue
            _store_page(ctx, rows, f"v2 {kind.lower()} page {run['pages'] + 1}", sdk_names)
            run["pages"] = run.get("pages", 0) + 1
            if next_cursor:
                run["type_index"], run["cursor"] = index, next_cursor
            else:
                run["type_index"], run["cursor"] = index + 1, None
            ctx.save()
            ctx.reporter.stored(ctx.stats)
            if not next_cursor:
                break
            cursor = next_cursor


def _pages_v1(ctx: _Context, run: dict[str, Any], start: datetime, end: datetime) -> None:
    """Page-numbered observations of each type (older servers), from the checkpoint on."""
    for index in range(run.get("type_index", 0), len(OBSERVATION_TYPES)):
        kind = OBSERVATION_TYPES[index]
        ctx.reporter.stage(f"reading {kind.lower()} observations (page-based API)")
        number = run.get("page", 1) if run.get("type_index", 0) == index else 1
        while True:
            body = ctx.client.call(
                f"GET /api/public/observations ({kind}, page {number})",
                lambda number=number, kind=kind: ctx.client.get_json(
                    "api/public/observations",
                    {
                        "page": number,
                        "limit": V1_PAGE_SIZE,
                        "type": kind,
                        "fromStartTime": _iso(start),
                        "toStartTime": _iso(end),
                    },
                ),
            )
            rows = body["data"]
            _store_page(ctx, rows, f"v1 {kind.lower()} page {number}")
            last = not rows or number >= int((body.get("meta") or {}).get("totalPages") or 0)
            run["pages"] = run.get("pages", 0) + 1
            run["type_index"], run["page"] = (index + 1, 1) if last else (index, number + 1)
            ctx.save()
            ctx.reporter.stored(ctx.stats)
            if last:
                break
            number += 1


def _store_page(
    ctx: _Context, rows: list[dict[str, Any]], label: str, sdk_names: bool = False
) -> None:
    """Map, score, price and append one page of observations."""
    stats = ctx.stats
    stats.pages += 1
    stats.observations += len(rows)
    ctx.reporter.fetched(stats)
    if not rows:
        return
    calls, rejected = observations_to_calls(
        rows, keep_content=ctx.keep_content, sdk_names=sdk_names
    )
    for row, obs_id, reason in rejected.iter_rows():
        stats.problem(f"{label}, row {row + 1} (observation {obs_id or '?'}): {reason}; skipped")
    stats.rejected += rejected.height
    if calls.is_empty():
        return
    stats.usage_mismatch += int(calls.get_column("_usage_mismatch").sum())
    if ctx.traces is not None:
        calls = _join_traces(calls, ctx.traces)
    calls = _apply_prompts(ctx, calls)
    calls = attach_scores(calls, ctx.scores, ctx.accuracy)
    _note_new_call_scores(ctx, calls)
    priced = price_calls(conform(calls), ctx.book)  # which also assumes each model's provider
    result = ctx.store.append(priced)
    _count(stats, priced, result.added, result.duplicates)


def _join_traces(calls: pl.DataFrame, traces: pl.DataFrame) -> pl.DataFrame:
    """Fill action, conversation and user from the trace (older servers)."""
    return (
        calls.join(traces, on="trace_id", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("action", "_t_action").alias("action"),
            pl.coalesce("conversation_id", "_t_conversation").alias("conversation_id"),
            pl.coalesce("user_id", "_t_user").alias("user_id"),
        )
        .drop("_t_action", "_t_conversation", "_t_user")
    )


def _count(stats: ImportStats, priced: pl.DataFrame, added: int, duplicates: int) -> None:
    summary = priced.select(
        pl.len().alias("calls"),
        pl.col("scores").is_not_null().sum().alias("scored"),
        pl.col("accuracy").is_not_null().sum().alias("accurate"),
        pl.col("total_cost").sum().alias("cost"),
        pl.col("reported_cost").sum().alias("reported"),
    ).row(0, named=True)
    stats.calls += summary["calls"]
    stats.calls_with_scores += summary["scored"]
    stats.calls_with_accuracy += summary["accurate"]
    stats.total_cost += summary["cost"] or 0.0
    stats.reported_cost += summary["reported"] or 0.0
    stats.added += added
    stats.duplicates += duplicates
    for status, count in priced.group_by("price_status").len().iter_rows():
        stats.price_status[status] += count
