"""A deterministic demo workload: realistic call records, with the audit's cases planted.

Why it exists: ``llmtrace demo`` must show costs and findings on a fresh machine, the audit rules
need positives and near-misses whose truth is known, and the benchmarks need the same kind of
data at 100M rows. One vectorized generator (numpy ``default_rng`` + Polars, no Python loop per
call) serves all three: ``generate`` for a 14-day store, ``generate_chunks`` for any size.

The workload is a catalogue of ``Workload`` specs (a service's action: arrival pattern, turns,
and the LLM calls each unit of work makes) with the audit's cases planted in it (``PLANTED``):
both live in ``llmtrace.demo_workloads`` (data) and are re-exported here; this module is the
generator.

Conventions the planted cases rely on (at ``scale >= 1``):

* The effort switch of the LT101 cases happens at ``end - 7 days`` (``end - days/2`` when fewer
  than 14 days are generated), so "last 7 days vs the 7 before" compares medium with high.
* Prefix caching mirrors the providers (rules-domain.md §1): OpenAI caches automatically from
  1,024 tokens in 128-token steps while a prefix was used in the last 5 minutes; Anthropic
  caches at ``cache_control`` breakpoints (system prompt with a 1-hour TTL, conversation tail
  with 5 minutes) and only prefixes of at least the model's minimum; Gemini prompts stay below
  the implicit-caching minimum.
* Accuracy labels are exact per (prompt, week): ``round(accuracy * labelled)`` correct, so the
  planted accuracy differences are what the spec says, not sampling noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from llmtrace.demo_workloads import (
    FINDING,
    INCONCLUSIVE,
    NO_FINDING,
    PLANTED,
    UNVERIFIED,
    WORKLOADS,
    LogNormal,
    Planted,
    Step,
    Workload,
)
from llmtrace.record import UTC_TIME, conform

__all__ = [
    "FINDING",
    "INCONCLUSIVE",
    "NO_FINDING",
    "PLANTED",
    "UNVERIFIED",
    "WORKLOADS",
    "Planted",
    "Step",
    "Workload",
    "expected_calls",
    "generate",
    "generate_chunks",
    "switch_time",
]

# -- what the providers do, for plausible calls --------------------------------------------------


# Minimum cacheable prefix (rules-domain.md §1): below it a provider silently does not cache.
_MIN_CACHEABLE = {
    "claude-sonnet-4-5": 1024,
    "claude-haiku-4-5": 4096,
    "gpt-4o": 1024,
    "gpt-4o-mini": 1024,
    "o3": 1024,
    "o4-mini": 1024,
    "gemini-2.5-flash": 2048,
}
# Generation speed in output tokens per second, for plausible durations.
_TOKENS_PER_S = {
    "claude-sonnet-4-5": 60.0,
    "claude-haiku-4-5": 120.0,
    "gpt-4o": 70.0,
    "gpt-4o-mini": 90.0,
    "o3": 50.0,
    "o4-mini": 110.0,
    "gemini-2.5-flash": 160.0,
}
_ERROR_TYPES = {
    "openai": ("rate_limit_exceeded", "timeout", "server_error"),
    "anthropic": ("overloaded_error", "rate_limit_error", "timeout"),
    "google": ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL"),
}

# -- public API -------------------------------------------------------------------------------

_US = 1_000_000
_HOUR_US = 3600 * _US
_DAY_US = 86400 * _US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Keys are chunk (20 bits) | workload (8) | step (4) | unit or call index (32): unique by layout.
_MAX_CHUNKS = 1 << 20
# Rows per chunk of ``generate_chunks``: bounds its memory (see there).
DEFAULT_CHUNK = 250_000


def switch_time(end: datetime, days: int = 14) -> datetime:
    """When the planted LT101 effort changes: 7 days before ``end`` (half the span if shorter)."""
    return _utc(end) - timedelta(days=min(7.0, days / 2))


def generate(*, days: int = 14, end: datetime, seed: int = 7, scale: float = 1.0) -> pl.DataFrame:
    """Call records (``CALL_SCHEMA``, unpriced) for ``days`` days ending at ``end``.

    Deterministic in (days, end, seed, scale): the same arguments give the same frame, ids
    included, so writing it to a store twice adds nothing. ``scale`` multiplies traffic
    (about 108k calls at 1.0); the planted cases hold their stated properties at ``scale >= 1``.
    """
    return _generate(days=days, end=end, seed=seed, scale=scale, chunk=0)


def generate_chunks(
    total_calls: int,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    days: int = 14,
    end: datetime,
    seed: int = 7,
) -> Iterator[pl.DataFrame]:
    """``total_calls`` call records as frames of ``chunk_size`` rows (the last may be smaller).

    Each chunk is an independent shard of the same workload over the same window (think: another
    tenant), deterministic from (seed, chunk index): its own random draws, its own prompt
    prefixes and ids that never collide with another chunk's. Traffic is generated at a scale a
    little above the chunk's size, then a random subset of exactly ``chunk_size`` calls is kept.

    Memory is bounded by the chunk, not the total: peak ~1 GB at the default 250k rows (a 1M
    chunk peaks at ~2-3 GB, as the intermediate frames of every step are alive at once), and
    small chunks are also faster (~400k rows/s on 2 cores against ~250k at 1M), so 100M rows are
    produced by streaming chunks into the store (``bench/gen_store.py``).
    """
    if total_calls < 0 or chunk_size <= 0:
        raise ValueError("total_calls must be >= 0 and chunk_size > 0")
    if math.ceil(total_calls / chunk_size) > _MAX_CHUNKS:
        raise ValueError(f"at most {_MAX_CHUNKS:,} chunks: use a larger chunk_size")
    per_unit_scale = expected_calls(days, 1.0)
    for index in range(math.ceil(total_calls / chunk_size)):
        need = min(chunk_size, total_calls - index * chunk_size)
        scale = 1.08 * need / per_unit_scale
        frame = _generate(days=days, end=end, seed=seed, scale=scale, chunk=index)
        while frame.height < need:  # rare: the random counts fell short of the estimate
            scale *= 1.2 * need / max(frame.height, 1)
            frame = _generate(days=days, end=end, seed=seed, scale=scale, chunk=index)
        rng = np.random.default_rng([seed, index, 0xC0FFEE])
        keep = np.zeros(frame.height, dtype=bool)
        keep[rng.choice(frame.height, size=need, replace=False)] = True
        yield frame.filter(pl.Series(keep))  # a mask filter: ~5x faster than a gather


def expected_calls(days: int = 14, scale: float = 1.0) -> float:
    """About how many calls ``generate(days=days, scale=scale)`` makes (for sizing chunks)."""
    total = 0.0
    for w in WORKLOADS:
        turns = (w.turns[0] + w.turns[1]) / 2
        if w.gap_s is None:
            units = w.per_day * days * scale
        else:
            hours = w.active_hours[1] - w.active_hours[0]
            units = scale * hours * 3600 * days / ((w.gap_s[0] + w.gap_s[1]) / 2)
        total += units * turns * len(w.steps)
    return total


# -- generation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    seed: int
    chunk: int
    scale: float
    start_us: int
    end_us: int
    switch_us: int
    salt: int  # mixed into every id, so another seed or end gives other ids


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _to_us(value: datetime) -> int:
    delta = _utc(value) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * _US + delta.microseconds


def _generate(*, days: int, end: datetime, seed: int, scale: float, chunk: int) -> pl.DataFrame:
    if days <= 0:
        raise ValueError("days must be positive")
    if scale <= 0:
        raise ValueError("scale must be positive")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    end_us = _to_us(end)
    window = _Window(
        seed=seed,
        chunk=chunk,
        scale=scale,
        start_us=end_us - days * _DAY_US,
        end_us=end_us,
        switch_us=_to_us(switch_time(end, days)),
        salt=_stable_hash(f"seed={seed};end={end_us}"),
    )
    parts = [_workload_calls(w, i, window) for i, w in enumerate(WORKLOADS)]
    parts = [p for p in parts if p is not None]
    if not parts:
        return conform(pl.DataFrame()).collect()
    calls = pl.concat(parts, how="diagonal_relaxed")
    # a later step of a unit (or a late turn) may start after the window: it is not in it
    calls = calls.filter(pl.col("start_time") < pl.lit(end_us).cast(UTC_TIME))
    calls = _with_caching(calls)
    calls = _with_accuracy(calls)
    return conform(calls.sort("start_time", "span_id")).collect()


def _workload_calls(w: Workload, index: int, win: _Window) -> pl.DataFrame | None:
    """Every call of one workload: arrivals, turns, then one frame per step."""
    rng = np.random.default_rng([win.seed, win.chunk, index])
    starts, streams = _arrivals(w, rng, win)
    n_units = starts.size
    if n_units == 0:
        return None
    turns = rng.integers(w.turns[0], w.turns[1] + 1, n_units)
    unit = np.repeat(np.arange(n_units), turns)
    first = np.repeat(np.cumsum(turns) - turns, turns)
    turn = np.arange(unit.size) - first + 1
    gaps = rng.uniform(w.turn_gap_s[0], w.turn_gap_s[1], unit.size)
    gaps[turn == 1] = 0.0
    turn_start = starts[unit] + (_group_cumsum(gaps, first) * _US).astype(np.int64)
    keep = turn_start < win.end_us  # a conversation's late turns may run past the window
    unit, turn, turn_start = unit[keep], turn[keep], turn_start[keep]
    turns = np.bincount(unit, minlength=n_units)  # turns actually inside the window

    base = np.uint64((win.chunk << 44) | (index << 36))
    unit_key = base | unit.astype(np.uint64)
    trace_key = unit_key if not w.trace_per_turn else base | np.arange(unit.size, dtype=np.uint64)
    ids: dict[str, pl.Series] = {
        "trace_id": _hex64(_mix(trace_key ^ _salt(win, "trace_a")))
        + _hex64(_mix(trace_key ^ _salt(win, "trace_b"))),
        "parent_span_id": _hex64(_mix(trace_key ^ _salt(win, "root"))),  # the action's root span
        "conversation_id": (
            _prefixed("conv-", _hex64(_mix(unit_key ^ _salt(win, "conv"))))
            if w.turns[1] > 1
            else pl.Series([None] * unit.size, dtype=pl.String)
        ),
    }
    user_ids = (rng.lognormal(0.0, 1.2, n_units) * w.users / 8).astype(np.int64) % w.users
    ids["user_id"] = _prefixed(f"{w.service}-user-", pl.Series(user_ids[unit]).cast(pl.String))

    frames = []
    start = turn_start
    for s, step in enumerate(w.steps):
        shape = _Shape(unit, turn, turns, streams[unit], start, base | np.uint64(s << 32))
        frame, duration_us = _step_calls(w, step, s, index, shape, rng, win)
        frames.append(frame.with_columns(**ids))
        start = start + duration_us + 30_000  # the next step starts after this one ends
    return pl.concat(frames, how="diagonal_relaxed")


@dataclass(frozen=True)
class _Shape:
    """Where each call of one step sits: its unit, turn, the unit's turn count, stream and
    start time; ``key_base`` makes the step's keys unique within the generated data."""

    unit: np.ndarray
    turn: np.ndarray
    turns: np.ndarray
    stream: np.ndarray
    start_us: np.ndarray
    key_base: np.uint64


def _step_calls(
    w: Workload,
    step: Step,
    s: int,
    index: int,
    shape: _Shape,
    rng: np.random.Generator,
    win: _Window,
) -> tuple[pl.DataFrame, np.ndarray]:
    """One step's calls: tokens, errors, fingerprints and timing."""
    n = shape.unit.size
    after = shape.start_us >= win.switch_us
    user = _lognormal(rng, step.user_tokens, n)
    visible = _lognormal(rng, step.output_tokens, n)
    reasoning = np.zeros(n, dtype=np.int64)
    if step.reasoning_tokens is not None:
        reasoning = _lognormal(rng, step.reasoning_tokens, n)
        grown = np.rint(reasoning * step.reasoning_growth).astype(np.int64)
        reasoning = np.where(after, grown, reasoning)
    streams = np.unique(shape.stream)
    system_of_stream = np.zeros(int(streams.max()) + 1, dtype=np.uint64)
    for k in streams:  # one per stream of the workload (a handful), not per call
        system_of_stream[k] = _stable_hash(f"{step.prompt}|{w.service}|{win.chunk}|{k}")
    system_hash = system_of_stream[shape.stream]
    call_key = shape.key_base + np.arange(n, dtype=np.uint64)

    if step.shared_inputs:
        question, user = _shared_questions(step, n, rng)
    context = _context(step, shape, user, visible, call_key, system_hash, rng, win)
    if step.shared_inputs:
        context = _with_shared_inputs(step, context, question, system_hash)
    errors = rng.random(n) < step.error_rate
    error_names = dict(enumerate(_ERROR_TYPES[step.provider]))
    error_type = pl.Series(rng.integers(0, len(error_names), n)).replace_strict(
        error_names, return_dtype=pl.String
    )

    output = visible + reasoning
    noise = rng.lognormal(0.0, 0.25, n)
    speed = _TOKENS_PER_S[step.model]
    duration_ms = (300.0 + 0.02 * context.tokens + 1000.0 * output / speed) * noise
    duration_ms = np.where(errors, rng.uniform(200.0, 2000.0, n), duration_ms)
    duration_us = (duration_ms * 1000).astype(np.int64)

    gap_turn = np.full(n, np.nan)
    later = np.flatnonzero(shape.turn > 1)
    gap_turn[later] = (shape.start_us[later] - shape.start_us[later - 1]) / _US
    failed = np.flatnonzero(errors)

    def usage(values: np.ndarray) -> pl.Series:
        return pl.Series(values, dtype=pl.Int64).scatter(failed, None)

    frame = pl.DataFrame(
        {
            "span_id": _hex64(_mix(call_key ^ _salt(win, "span"))),
            "start_time": _times(shape.start_us),
            "end_time": _times(shape.start_us + duration_us),
            "duration_ms": duration_ms,
            "is_error": errors,
            "error_type": error_type.scatter(np.flatnonzero(~errors), None),
            "input_tokens": usage(context.tokens),
            "output_tokens": usage(output),
            "reasoning_tokens": usage(reasoning),
            "prefix_hashes": context.hashes,
            "prefix_tokens": context.lengths,
            "template_fingerprint": _hex64(system_hash),
            "input_fingerprint": _hex64(context.last_hash),
            "_sys": system_hash,
            "_prev_input": pl.Series(context.prev_input).fill_nan(None).cast(pl.Int64),
            "_gap_turn": pl.Series(gap_turn).fill_nan(None),
            "_after": after,
            "_u": rng.random(n),
            "_v": rng.random(n),
        }
    )
    constants = {
        "source": "demo",
        "dialect": "demo",
        "service": w.service,
        "environment": "production",
        "provider": step.provider,
        "model": step.model,
        "request_model": step.model,
        "operation": "chat",
        "prompt_name": step.prompt_name,
        "prompt_version": step.prompt_version,
        "prompt": step.prompt,
        "action": w.action,
        "_cache": step.cache,
        "_context": step.context,
        "_step": f"{index}:{s}",
    }
    numbers = {
        "_S": step.system_tokens,
        "_min": _MIN_CACHEABLE[step.model],
    }
    floats = {
        "_ttl": step.system_ttl_s,
        "_share": step.labelled,
        "_acc_a": step.accuracy[0],
        "_acc_b": step.accuracy[1],
    }
    before_after = step.effort or (None, None)
    frame = frame.with_columns(
        pl.when("_after")
        .then(pl.lit(before_after[1], dtype=pl.String))
        .otherwise(pl.lit(before_after[0], dtype=pl.String))
        .alias("reasoning_effort"),
        *(pl.lit(v, dtype=pl.String).alias(k) for k, v in constants.items()),
        *(pl.lit(v, dtype=pl.Int64).alias(k) for k, v in numbers.items()),
        *(pl.lit(v, dtype=pl.Float64).alias(k) for k, v in floats.items()),
    )
    return frame, duration_us


@dataclass(frozen=True)
class _Context:
    """Input size and fingerprints of each call of a step."""

    tokens: np.ndarray  # input tokens (inclusive of the system prompt)
    prev_input: np.ndarray  # previous turn's input (replayed conversations), else NaN
    hashes: pl.Series  # List(UInt64): hash of every message-boundary prefix
    lengths: pl.Series  # List(Int64): cumulative tokens of those prefixes
    last_hash: np.ndarray  # hash of the whole input


def _context(
    step: Step,
    shape: _Shape,
    user: np.ndarray,
    visible: np.ndarray,
    call_key: np.ndarray,
    system_hash: np.ndarray,
    rng: np.random.Generator,
    win: _Window,
) -> _Context:
    """Input tokens and prefix fingerprints of each call, by the step's context shape.

    ``prefix_hashes[i]`` stands for the hash of the input up to message boundary ``i`` (system
    first) and ``prefix_tokens[i]`` for its cumulative token count, as the importer records
    them: equal prefixes have equal hashes, so a replayed history shares every earlier hash.
    """
    if step.context == "replay":
        return _replay(step, shape, user, visible, system_hash, win)
    S = step.system_tokens
    n = user.size
    salt = _mix(call_key ^ _salt(win, "message"))
    if step.context == "flat":
        if step.state_tokens is None:
            raise ValueError(f"{step.prompt}: a flat context needs state_tokens")
        state = _lognormal(rng, step.state_tokens, int(shape.turns.size))[shape.unit]
        columns = [S + state, S + state + user]
    else:
        columns = [S + user]
    hashes = [system_hash, *(_mix(salt + np.uint64(i + 1)) for i in range(len(columns)))]
    lengths = [np.full(n, S, dtype=np.int64), *columns]
    return _Context(
        tokens=columns[-1],
        prev_input=np.full(n, np.nan),
        hashes=_fixed_lists(hashes, pl.UInt64),
        lengths=_fixed_lists(lengths, pl.Int64),
        last_hash=hashes[-1],
    )


# -- planted request shapes ---------------------------------------------------------------------


def _shared_questions(
    step: Step, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the step's ``shared_inputs`` fixed requests each call sends (popular ones more
    often, 1/rank), and that request's user tokens (the same for every call sending it)."""
    k = step.shared_inputs
    weights = 1.0 / np.arange(1, k + 1)
    question = rng.choice(k, size=n, p=weights / weights.sum())
    pool_rng = np.random.default_rng(_stable_hash(f"questions:{step.prompt}"))
    return question, _lognormal(pool_rng, step.user_tokens, k)[question]


def _with_shared_inputs(
    step: Step, context: _Context, question: np.ndarray, system_hash: np.ndarray
) -> _Context:
    """A single call's fingerprints when its user message is a fixed request: the same request
    gives the same message hash and ``input_fingerprint`` for every user who sends it."""
    asked = _mix(question.astype(np.uint64) ^ np.uint64(_stable_hash(f"ask:{step.prompt}")))
    message = _mix(system_hash ^ asked)
    return dataclasses.replace(
        context, hashes=_fixed_lists([system_hash, message], pl.UInt64), last_hash=message
    )


def _replay(
    step: Step,
    shape: _Shape,
    user: np.ndarray,
    visible: np.ndarray,
    system_hash: np.ndarray,
    win: _Window,
) -> _Context:
    """Conversations that resend their whole history: turn t's input is the system prompt,
    every user message up to t and every answer before t.

    Each unit's messages are laid out flat (system, u1, a1, u2, a2, ..., uT); cumulative sums
    give every prefix length, and turn t's fingerprint lists are the first 2t of its unit's.
    """
    n_units = shape.turns.size
    sizes = 2 * shape.turns
    offset = np.cumsum(sizes) - sizes
    owner_first = np.repeat(offset, sizes)
    flat = np.zeros(int(sizes.sum()), dtype=np.int64)
    flat[offset] = step.system_tokens
    user_at = offset[shape.unit] + 2 * shape.turn - 1
    flat[user_at] = user
    not_last = shape.turn < shape.turns[shape.unit]
    flat[user_at[not_last] + 1] = visible[not_last]
    cumulative = _group_cumsum(flat, owner_first)
    tokens = cumulative[user_at]
    prev_input = np.full(tokens.size, np.nan)
    later = np.flatnonzero(shape.turn > 1)
    prev_input[later] = tokens[later - 1]

    owner = np.repeat(np.arange(n_units), sizes)
    position = (np.arange(flat.size) - owner_first).astype(np.uint64)
    unit_salt = _mix((shape.key_base + np.arange(n_units, dtype=np.uint64)) ^ _salt(win, "hist"))
    element_hash = _mix(unit_salt[owner] + position)
    first_call = np.cumsum(shape.turns) - shape.turns
    element_hash[offset] = system_hash[first_call]
    lists = (
        pl.DataFrame({"_unit": owner, "h": element_hash, "t": cumulative})
        .group_by("_unit", maintain_order=True)
        .agg("h", "t")
    )
    calls = pl.DataFrame({"_unit": shape.unit, "_n": 2 * shape.turn}).join(
        lists, on="_unit", how="left", maintain_order="left"
    )
    calls = calls.select(pl.col("h", "t").list.head(pl.col("_n")))
    return _Context(
        tokens=tokens,
        prev_input=prev_input,
        hashes=calls["h"],
        lengths=calls["t"],
        last_hash=element_hash[user_at],
    )


def _with_caching(calls: pl.DataFrame) -> pl.DataFrame:
    """Cache reads and writes as each provider would produce them (see the module docstring).

    The system prefix is warm when a call with the same prefix started within its TTL (every
    use refreshes it); a replayed conversation's whole previous input is warm when the previous
    turn started within 5 minutes. OpenAI reads round down to 128-token steps. Anthropic writes
    the system block (its own TTL) when nothing was warm, and a replayed conversation also
    writes everything after the warm part at its tail breakpoint (5 minutes).
    """
    S, minimum, prev = pl.col("_S"), pl.col("_min"), pl.col("_prev_input")
    tokens, mode = pl.col("input_tokens"), pl.col("_cache")
    gap_sys = pl.col("start_time").diff().over("_sys").dt.total_microseconds() / _US
    warm_sys = ((gap_sys <= pl.col("_ttl")) & (minimum <= S)).fill_null(False)
    warm_turn = ((pl.col("_gap_turn") <= 300.0) & (prev >= minimum)).fill_null(False)
    hit = pl.max_horizontal(
        pl.when(warm_turn).then(prev).otherwise(0), pl.when(warm_sys).then(S).otherwise(0)
    )
    read = (
        pl.when(mode == "openai")
        .then((hit // 128) * 128)
        .when(mode.is_in(["anthropic", "google"]))
        .then(hit)
        .otherwise(0)
    )
    anthropic = mode == "anthropic"
    system_write = pl.when(anthropic & (minimum <= S) & (hit == 0)).then(S).otherwise(0)
    tail_write = (
        pl.when(anthropic & (pl.col("_context") == "replay") & (tokens >= minimum))
        .then(tokens - pl.max_horizontal(hit, system_write))
        .otherwise(0)
    )
    long_ttl = pl.col("_ttl") > 300.0
    valid = tokens.is_not_null()
    return calls.sort("start_time").with_columns(
        pl.when(valid).then(read).alias("cache_read_tokens"),
        pl.when(valid).then(system_write + tail_write).alias("cache_write_tokens"),
        pl.when(valid)
        .then(pl.when(long_ttl).then(system_write).otherwise(0))
        .alias("cache_write_1h_tokens"),
    )


def _with_accuracy(calls: pl.DataFrame) -> pl.DataFrame:
    """Accuracy labels on exactly ``round(share * calls)`` successful calls per prompt and week,
    exactly ``round(accuracy * labelled)`` of them correct.

    Exact counts (random which calls) keep the planted label counts and accuracy differences
    what PLANTED says instead of adding sampling noise on top of the audit's own statistics.
    """

    def exactly(share: pl.Expr, by: list[str], draw: str) -> pl.Expr:
        return pl.col(draw).rank("ordinal").over(by) <= (share * pl.len().over(by)).round()

    week = ["_step", "_after"]
    target = pl.when(pl.col("_after")).then(pl.col("_acc_b")).otherwise(pl.col("_acc_a"))
    label = pl.when(pl.col("_correct")).then(pl.lit("correct")).otherwise(pl.lit("incorrect"))
    score = pl.struct(
        name=pl.lit("accuracy"),
        value=pl.col("accuracy"),
        label=label,
        source=pl.lit("demo"),
        id=pl.lit(None, dtype=pl.String),  # demo scores have no source id
    )
    return (
        calls.with_columns(
            (~pl.col("is_error") & exactly(pl.col("_share"), [*week, "is_error"], "_v")).alias(
                "_lab"
            )
        )
        .with_columns(exactly(target, [*week, "_lab"], "_u").alias("_correct"))
        .with_columns(
            pl.when(pl.col("_lab")).then(pl.col("_correct").cast(pl.Float64)).alias("accuracy")
        )
        .with_columns(pl.when(pl.col("_lab")).then(pl.concat_list(score)).alias("scores"))
    )


# -- arrivals ---------------------------------------------------------------------------------


def _arrivals(w: Workload, rng: np.random.Generator, win: _Window) -> tuple[np.ndarray, np.ndarray]:
    """Unit start times (µs, sorted) and the stream each belongs to."""
    if w.gap_s is None:
        count = int(round(w.per_day * (win.end_us - win.start_us) / _DAY_US * win.scale))
        starts = _diurnal(count, w.peak_utc, rng, win)
        return starts, np.zeros(starts.size, dtype=np.int64)
    return _steady(w, rng, win)


def _diurnal(count: int, peak_utc: float, rng: np.random.Generator, win: _Window) -> np.ndarray:
    """``count`` times spread by a daily curve (peak at ``peak_utc``, weekends at half)."""
    n_bins = max(1, (win.end_us - win.start_us) // _HOUR_US)
    bin_start = win.start_us + np.arange(n_bins, dtype=np.int64) * _HOUR_US
    hour = (bin_start // _HOUR_US) % 24 + 0.5
    distance = np.abs((hour - peak_utc + 12) % 24 - 12)
    weight = 0.12 + np.exp(-0.5 * (distance / 4.0) ** 2)
    weekday = (bin_start // _DAY_US + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    weight = np.where(weekday >= 5, 0.5 * weight, weight)
    chosen = rng.choice(n_bins, size=count, p=weight / weight.sum())
    starts = bin_start[chosen] + rng.integers(0, _HOUR_US, count)
    starts = starts[starts < win.end_us]
    return np.sort(starts)


def _steady(w: Workload, rng: np.random.Generator, win: _Window) -> tuple[np.ndarray, np.ndarray]:
    """A steady stream every ``gap_s`` during ``active_hours``; scale adds streams (own prefix).

    Stream k runs for ``min(1, scale - k)`` of the active hours, so a fractional scale thins
    traffic without changing the gap between calls (which is what the caching rules read).
    """
    assert w.gap_s is not None
    lo, hi = w.gap_s
    first_hour, last_hour = w.active_hours
    day0 = (win.start_us // _DAY_US) * _DAY_US
    n_days = -(-(win.end_us - day0) // _DAY_US)
    starts, streams = [], []
    for k in range(math.ceil(win.scale)):
        active_s = min(1.0, win.scale - k) * (last_hour - first_hour) * 3600.0
        total_s = active_s * n_days
        m = int(total_s / ((lo + hi) / 2) * 1.25) + 16
        offsets = rng.uniform(0.0, lo) + np.cumsum(rng.uniform(lo, hi, m))
        offsets = offsets[offsets < total_s]
        day = np.floor(offsets / active_s).astype(np.int64)
        within = offsets - day * active_s
        wall = day0 + day * _DAY_US + first_hour * _HOUR_US + (within * _US).astype(np.int64)
        wall = wall[(wall >= win.start_us) & (wall < win.end_us)]
        starts.append(wall)
        streams.append(np.full(wall.size, k, dtype=np.int64))
    return np.concatenate(starts), np.concatenate(streams)


# -- small vectorized helpers -------------------------------------------------------------------


def _lognormal(rng: np.random.Generator, shape: LogNormal, n: int) -> np.ndarray:
    """Token counts: lognormal around the median, at least 1."""
    median, sigma = shape
    return np.maximum(1, np.rint(rng.lognormal(math.log(median), sigma, n))).astype(np.int64)


def _group_cumsum(values: np.ndarray, group_first: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each group (``group_first[i]``: index of i's first row)."""
    total = np.cumsum(values)
    before = total - values  # sum of everything before row i
    return total - before[group_first]


def _mix(x: np.ndarray | int) -> np.ndarray:
    """splitmix64's finalizer: a bijection on uint64, so distinct keys give distinct ids."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _salt(win: _Window, purpose: str) -> np.uint64:
    return np.uint64(_stable_hash(f"{purpose}:{win.salt}"))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


def _hex64(values: np.ndarray) -> pl.Series:
    """16-digit lower-case hex of each uint64, vectorized (ids and fingerprints)."""
    values = np.asarray(values, dtype=np.uint64)
    digits = ((values[:, None] >> _SHIFTS) & np.uint64(15)).astype(np.uint8)
    text = _HEX[digits].view("S16").ravel()
    return pl.Series(text).cast(pl.String)


def _prefixed(prefix: str, values: pl.Series) -> pl.Series:
    """``prefix`` + each string, as a Series."""
    return pl.select(pl.lit(prefix) + pl.lit(values)).to_series()


def _times(microseconds: np.ndarray) -> pl.Series:
    """UTC datetimes from microseconds since the epoch."""
    return pl.Series(microseconds, dtype=pl.Int64).cast(UTC_TIME)


def _fixed_lists(columns: list[np.ndarray], dtype: pl.DataType) -> pl.Series:
    """A list column whose every row has one element per array in ``columns``."""
    matrix = np.column_stack(columns)
    return pl.Series(matrix, dtype=pl.Array(dtype, len(columns))).cast(pl.List(dtype))
