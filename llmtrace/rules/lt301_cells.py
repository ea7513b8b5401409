"""LT301's aggregate step: calls to mergeable cells (the rule, its decision and its findings are
in ``lt301_context``).

Conversation turns are sorted by (conversation, time), numbered and fitted (least squares of
input tokens on the turn number), then re-costed under both trimming policies - keep a token
budget, or summarise every K turns - as billed, and as each of LT202's replayed breakpoint
layouts would bill them (``ON_TOP_KINDS``), so a trimming saving never counts what caching alone
would save. Single calls (no conversation) are re-costed under the budget policy and counted in
log-spaced histograms of input and output tokens. Everything is summed per (prompt key, day,
size band) cell, which merges by addition across parts split by conversation.

The heavy steps work on narrow numeric columns: the prompt key (provider, model, service,
prompt) and the conversation id are hashed to UInt64, each key's model facts are looked up once
(``caching_model.key_facts``), and the key's strings are joined back onto the small result.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from llmtrace.config import ConfigError
from llmtrace.rules import stats
from llmtrace.rules.base import (
    AuditContext,
    RuleParams,
)
from llmtrace.rules.caching_model import (
    PROVIDERS,
    key_facts,
    min_tokens_expr,
    normalised_model_expr,
    provider_fact,
)
from llmtrace.rules.history_replay import SESSION_DERIVED, with_derived
from llmtrace.rules.lt202_history import replay_turns

_EXPLICIT = [p for p, facts in PROVIDERS.items() if facts.mode == "explicit"]

CODE = "LT301"
NAME = "growing-conversation-context"

KEY = ["provider", "model", "service", "prompt"]
CELL = ["kind", *KEY, "day", "band", "bin"]
_TOKENS = ("input", "read", "write", "write_1h")
_POLICIES = ("budget", "summary")
SUMS = [
    "calls",
    *_TOKENS,
    *(f"{p}_{t}" for p in _POLICIES for t in _TOKENS),
    "trimmed_budget",
    "trimmed_summary",
    "summary_calls",
    "summary_call_input",
    "summary_call_read",
    "summary_call_output",
    "output",
    "conversations",
    "flagged",
    "slope_sum",
    "r2_sum",
    "turns_sum",
    "output_per_turn_sum",
    "hist_input",
    "hist_output",
]
MAXES = ["input_max", "last_call"]
MINS = ["first_call"]
# the numeric columns the heavy steps work on (``_k``: hashed prompt key, ``_c``: conversation)
_NARROW = [
    "_k",
    "_c",
    "start_time",
    "day",
    "band",
    "input",
    "read",
    "write",
    "write_1h",
    "output",
    "p0",
]
_CELL_KEY = ["_k", "day", "band"]
# what LT202's replay needs besides _NARROW
_REPLAY = ["prefix_hashes", "minimum", "explicit", "long_ok"]
# cells of conversations re-costed as if their history were cached with one of LT202's
# breakpoint layouts: trimming is priced on top of the cheapest (``_cheaper_baseline``)
ON_TOP = "conv_cached"
ON_TOP_KINDS = {"short": ON_TOP, "long": f"{ON_TOP}_1h", "mixed": f"{ON_TOP}_1h_5m"}


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT301's parameters (defaults in rules/LT301.yaml, overridable in llmtrace.toml)."""

    min_monthly_savings_usd: float = 5.0
    min_turns: int = 4
    min_growth_tokens_per_turn: float = 200.0
    min_r2: float = 0.6
    budget_tokens: int = 8000
    summarize_after_turns: int = 10
    summary_tokens: int = 500
    large_input_tokens: int = 16000
    small_output_tokens: int = 50
    min_calls: int = 50
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0

    def __post_init__(self) -> None:
        if self.summarize_after_turns < 1 or self.budget_tokens < 1 or self.min_turns < 2:
            raise ConfigError(
                f"{CODE}: summarize_after_turns and budget_tokens must be >= 1, min_turns >= 2"
            )


COLUMNS: tuple[str, ...] = (
    "provider",
    "model",
    "service",
    "prompt",
    "_c",
    "start_time",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "_p0",
    "_hc",
)
# the system prefix's size, the conversation's hash and its calls' prefix hashes, computed by
# the engine (``history_replay.SESSION_DERIVED``, the same as LT202's)
DERIVED = SESSION_DERIVED


def aggregate_cells(calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
    """Cells of conversation turns and single calls, plus single-call histograms.

    The heavy steps work on narrow numeric columns: the prompt key (provider, model,
    service, prompt) and the conversation id are hashed to UInt64, and the key's strings
    are joined back onto the small result. That, and sorting conversations once instead of
    ordered windows, is several times faster on millions of calls.
    """
    params = Params.from_mapping(ctx.params)
    # cached: it feeds three branches (keys, single calls, conversations), and Polars' streaming
    # engine runs a shared input once per branch unless told (LT301 on 5M calls: 11.6 -> 6.9 s)
    base = base_calls(calls, ctx).cache()
    keys = base.group_by("_k").agg(pl.col(*KEY).first())
    # one sort by (conversation, time) - the replay's - and one fit, shared by the billed cells
    # and the three cached layouts (they differ only in read/write columns)
    replayed = replay_turns(conversation_turns(base, keys).rename({"input": "L"}))
    return cells_from_replay(base, keys, replayed, params)


def single_calls_cells(calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
    """What ``aggregate_cells`` gives for the single calls (outside conversations) of
    ``calls``, in one streaming pass: their cells and histograms, with its columns and types
    (a conversation cell's own columns null, as they are on its single-call rows).

    Why: single calls merge under any split, so the engine need not spill them with the
    conversations (``partition.Unparted``); and ``aggregate_cells``'s conversation branch
    would hold them all (its join waits for the keys' group-by of the same input)."""
    params = Params.from_mapping(ctx.params)
    base = base_calls(calls, ctx).filter(pl.col("_c").is_null()).cache()
    keys = base.group_by("_k").agg(pl.col(*KEY).first())
    single = base.select(*_NARROW)
    cells = pl.concat(
        [_single_cells(single, params), _histograms(single)], how="diagonal_relaxed"
    ).join(keys, on="_k", how="left")
    schema = aggregate_cells(calls.clear(), ctx).collect_schema()
    held = set(cells.collect_schema().names())
    absent = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in held]
    return cells.with_columns(absent).select(*schema).cast(dict(schema))


def conversation_turns(
    base: pl.LazyFrame, keys: pl.LazyFrame, extra: dict[str, pl.Expr] | None = None
) -> pl.LazyFrame:
    """The conversation calls of ``base`` (``_base``) with what LT202's replay needs of each
    call's model, looked up once per prompt key of ``keys``; ``extra``: more such facts, kept
    as columns (``history_joint``'s)."""
    facts = {
        "minimum": min_tokens_expr(normalised_model_expr()),
        "explicit": pl.col("provider").is_in(_EXPLICIT),
        # 1-hour layouts only where the provider offers 1-hour writes (provider level:
        # Bedrock's few 1-hour models stay on the 5-minute baseline, a conservative choice)
        "long_ok": provider_fact("long_ttl_s").is_not_null(),
        **(extra or {}),
    }
    return (
        base.filter(pl.col("_c").is_not_null())
        .select(*_NARROW, "prefix_hashes")
        .join(key_facts(keys, "_k", facts), on="_k", how="left")
        .select(*_NARROW, *_REPLAY, *(extra or {}))
    )


def cells_from_replay(
    base: pl.LazyFrame, keys: pl.LazyFrame, replayed: pl.LazyFrame, params: Params
) -> pl.LazyFrame:
    """LT301's cells from ``base`` (``_base``, for the single calls), its prompt ``keys`` and
    its conversation turns replayed (``replay_turns`` of ``conversation_turns``, input as
    ``L``)."""
    single = base.select(*_NARROW).filter(pl.col("_c").is_null())
    turns = _fit(replayed.rename({"L": "input"}), params)
    parts = [
        *_conversation_cells(turns, params),
        _single_cells(single, params),
        _histograms(single),
    ]
    return (
        pl.concat(parts, how="diagonal_relaxed")
        .join(keys, on="_k", how="left")
        .select(*CELL, *SUMS, *MAXES, *MINS)
    )


# -- aggregate ---------------------------------------------------------------------------------


def base_calls(calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
    """Current-window calls: clean token columns, system-prefix size ``p0`` and hashed keys."""
    start = pl.col("start_time")
    inp = pl.col("input_tokens")
    read = pl.col("cache_read_tokens").fill_null(0).clip(0, inp)
    write = pl.min_horizontal(pl.col("cache_write_tokens").fill_null(0), inp - read).clip(0)
    return (
        with_derived(calls, DERIVED)
        .select(*COLUMNS)
        .rename({"_hc": "prefix_hashes"})
        .filter(
            (start >= ctx.since) & (start < ctx.until) & (inp > 0) & pl.col("model").is_not_null()
        )
        .with_columns(
            inp.alias("input"),
            read.alias("read"),
            write.alias("write"),
            pl.col("output_tokens").fill_null(0).alias("output"),
            pl.col("_p0").fill_null(0).clip(0, inp).alias("p0"),
            start.dt.date().alias("day"),
            inp.cast(pl.Float64).log(2).floor().cast(pl.Int32).alias("band"),
            _key_hash().alias("_k"),
        )
        .with_columns(
            pl.min_horizontal(pl.col("cache_write_1h_tokens").fill_null(0), "write")
            .clip(0)
            .alias("write_1h"),
        )
    )


def _key_hash() -> pl.Expr:
    """The prompt key's UInt64 id: an xor of its columns' seeded hashes (cheaper than hashing
    a struct of the four strings; internal only, the key's strings are joined back)."""
    return (
        pl.col("provider").hash(31)
        ^ pl.col("model").hash(32)
        ^ pl.col("service").hash(33)
        ^ pl.col("prompt").hash(34)
    )


# what the fit and the policies read of each turn, besides a variant's read/write columns
_TURN = [c for c in _NARROW if c not in ("read", "write", "write_1h")]
_FIT = ["turn", "slope", "r2", "qualifies", "output_per_turn", "turns"]


# the variants: as billed ("conv") and LT202's layouts (``ON_TOP_KINDS``), each named by the
# suffix of its columns in the one frame ``_variants`` builds
_VARIANTS: dict[str, tuple[str, str | None]] = {
    "": ("conv", None),
    **{f"_{layout}": (kind, layout) for layout, kind in ON_TOP_KINDS.items()},
}
_SPLIT = ("read", "write", "write_1h")
# the columns of a cell that differ between variants (the rest is the same for all of them)
_PER_VARIANT = [
    *_SPLIT,
    *(f"{p}_{t}" for p in _POLICIES for t in _SPLIT),
    "summary_call_read",
]


def _variants(turns: pl.LazyFrame) -> pl.LazyFrame:
    """The fitted turns (``_fit``) with the read/write split of every variant side by side
    (columns suffixed as in ``_VARIANTS``), and ``cached<suffix>``.

    As billed (no suffix): the turns' own split. A layout: replayed turns
    (``lt202_history.replay_turns``) of conversations that cache nothing, re-split as LT202's
    breakpoint ``layout`` would bill them; conversations that already cache, providers whose
    caching is not modelled, and 1-hour layouts where 1-hour writes are not offered keep their
    real split. ``evaluate`` prices trimming on top of the cheapest of these and the billed
    cells, so a trimming saving never includes what caching alone would save (LT202's).
    ``cached<suffix>``: the conversation reads or writes the cache in that variant. Side by
    side, the columns every variant shares (the fit, the kept input of both policies, the
    summary calls' prompts) are computed and summed once, not once per variant.
    """
    split: list[pl.Expr] = [pl.col("_billed_cached").alias("cached")]
    for suffix, (_, layout) in _VARIANTS.items():
        if layout is None:
            continue
        replace = ~pl.col("_billed_cached") & pl.col("minimum").is_not_null()
        if layout != "short":
            replace = replace & pl.col("long_ok")
        split += [
            pl.when(replace)
            .then(pl.col(f"cf_{name}_{layout}"))
            .otherwise(pl.col(name))
            .alias(f"{name}{suffix}")
            for name in _SPLIT
        ]
    # a conversation reads or writes in a layout's split iff it does as billed (then nothing
    # is re-split) or one of its re-split turns does (``_conversation_sums``)
    split += [
        (pl.col("_billed_cached") | pl.col(f"_cf_cached_{layout}")).alias(f"cached{suffix}")
        for suffix, (_, layout) in _VARIANTS.items()
        if layout is not None
    ]
    return turns.select(*_TURN, *_FIT, *_SPLIT, *split)


def _fit(turns: pl.LazyFrame, params: Params) -> pl.LazyFrame:
    """Turns (sorted by conversation and time) numbered, with their conversation's fit.

    Per conversation, the least-squares line of input tokens on the turn number comes from the
    sums n, Σx, Σy, Σxy, Σx², Σy² (slope = tokens added per turn, r² = steadiness). Also
    ``_billed_cached``: the conversation reads or writes the cache as billed, and
    ``_cf_cached_<layout>``: a turn LT202's layout would re-split reads or writes in it
    (``_variants``). The per-conversation values come from ``_conversation_sums``.
    """
    schema = turns.collect_schema()
    added = {
        "turn": pl.Int64,
        "_n": pl.Float64,
        **{c: pl.Float64 for c in ("_sx", "_sy", "_sxy", "_sxx", "_syy", "_sout")},
        "_billed_cached": pl.Boolean,
        **{f"_cf_cached_{layout}": pl.Boolean for layout in ON_TOP_KINDS},
    }
    turns = turns.map_batches(
        _conversation_sums, schema=pl.Schema({**schema, **added}), streamable=False
    )
    n, sx, sy = pl.col("_n"), pl.col("_sx"), pl.col("_sy")
    cov = n * pl.col("_sxy") - sx * sy
    var_x = n * pl.col("_sxx") - sx * sx
    var_y = n * pl.col("_syy") - sy * sy
    slope = pl.when(var_x > 0).then(cov / var_x).otherwise(0.0)
    r2 = pl.when((var_x > 0) & (var_y > 0)).then(cov * cov / (var_x * var_y)).otherwise(0.0)
    return (
        turns.with_columns(slope.alias("slope"), r2.alias("r2"))
        .with_columns(
            (
                (n >= params.min_turns)
                & (pl.col("slope") >= params.min_growth_tokens_per_turn)
                & (pl.col("r2") >= params.min_r2)
            ).alias("qualifies"),
            (pl.col("_sout") / n).alias("output_per_turn"),
            n.alias("turns"),
        )
        .drop("_n", "_sx", "_sy", "_sxy", "_sxx", "_syy", "_sout")
    )


def _conversation_sums(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (sorted by conversation, ``_c``) with each turn's number and its conversation's
    sums and flags (see ``_fit``).

    Why eager, and why prefix sums: the rows of a conversation are adjacent, so its sums are
    differences of running sums at its first and past-its-last row, and the sums of the turn
    numbers (0..n-1) and their squares are closed forms of n; each conversation's values are
    gathered back to its turns. No hash group-by at all: 0.069-0.081 against 0.093-0.109 CPU-s
    for the two group-bys on the run number before (a part's 445k turns; those replaced eight
    ``over`` windows, 0.15). The sums are of integers, in Int64 (exact whatever the order of
    addition; the same as the Float64 sums they replace whenever those were exact, i.e. below
    2^53). Running sums over a whole part may pass 2^63: Polars' integer sums and differences
    wrap around, so a conversation's difference is still exact wherever its own sum fits.
    """
    conversation = rows.get_column("_c")
    first = (conversation != conversation.shift(1)).fill_null(True)
    index = pl.int_range(rows.height, dtype=pl.Int64, eager=True)
    run = first.cast(pl.UInt32).cum_sum() - 1  # the conversation's number, 0, 1, ...
    start = index.filter(first)
    n = start.shift(-1, fill_value=rows.height) - start
    turn = index - start.gather(run)
    y = rows.get_column("input").cast(pl.Int64)

    def total(values: pl.Series) -> pl.Series:
        """Each conversation's sum of ``values`` (Int64): running sums' differences."""
        running = pl.concat([pl.Series([0], dtype=pl.Int64), values.cast(pl.Int64).cum_sum()])
        return running.gather(start + n) - running.gather(start)

    flags = {"_billed_cached": (pl.col("read") + pl.col("write")) > 0}
    for layout in ON_TOP_KINDS:
        # a turn re-split by the layout (``_variants``'s ``replace``) reads or writes
        replaced = pl.col("minimum").is_not_null()
        if layout != "short":
            replaced = replaced & pl.col("long_ok")
        touched = (pl.col(f"cf_read_{layout}") + pl.col(f"cf_write_{layout}")) > 0
        flags[f"_cf_cached_{layout}"] = (replaced & touched).fill_null(False)
    flagged = rows.select(**flags)
    sums = {
        "_n": n,
        "_sx": n * (n - 1) // 2,
        "_sy": total(y),
        "_sxy": total(turn * y),
        "_sxx": (n - 1) * n * (2 * n - 1) // 6,
        "_syy": total(y * y),
        "_sout": total(rows.get_column("output")),
    }
    return rows.with_columns(
        turn.alias("turn"),
        *(values.cast(pl.Float64).gather(run).alias(name) for name, values in sums.items()),
        *((total(flagged.get_column(name)) > 0).gather(run).alias(name) for name in flags),
    )


def _conversation_cells(turns: pl.LazyFrame, params: Params) -> list[pl.LazyFrame]:
    """Fitted turns of every variant (``_variants``) re-costed under both policies, summed per
    cell in one group-by; qualifying conversations only. One frame per variant's kind.

    Only the turns of qualifying conversations are re-split and re-costed (the sums of the
    others are zero): a cell's ``conversations`` (every conversation ending in it, qualifying
    or not) comes from a count over all turns, joined to the qualifying turns' sums; cells with
    none of those keep zero sums, as when every turn was summed times its ``qualifies``.
    """
    replayed = [f"cf_{name}_{layout}" for layout in ON_TOP_KINDS for name in _SPLIT]
    cf_cached = [f"_cf_cached_{layout}" for layout in ON_TOP_KINDS]
    turns = turns.select(
        *_TURN, *_FIT, *_SPLIT, "_billed_cached", *cf_cached, "minimum", "long_ok", *replayed
    ).cache()  # read twice: the count of every conversation, the qualifying turns' sums
    last = (pl.col("turn") == pl.col("turns") - 1).cast(pl.Int64)
    counted = turns.group_by(*_CELL_KEY).agg(last.sum().alias("conversations"))
    conv = _variants(turns.filter(pl.col("qualifies")))
    for suffix in _VARIANTS:
        conv = _budget_policy(conv, params, conversation=True, suffix=suffix)
    conv = _summary_policy(conv, params, suffixes=list(_VARIANTS))
    last_f = last.cast(pl.Float64)
    # per-turn values first, plain sums in the aggregation: Polars' fast path for group sums
    shared = {
        "calls": pl.lit(1, dtype=pl.Int64),
        "input": pl.col("input"),
        **{f"{p}_input": pl.col(f"{p}_input") for p in _POLICIES},
        "trimmed_budget": pl.col("input") - pl.col("budget_input"),
        "trimmed_summary": pl.col("input") - pl.col("summary_input"),
        "summary_calls": pl.col("summary_call"),
        "summary_call_input": pl.col("summary_call_input"),
        "summary_call_output": pl.col("summary_call") * params.summary_tokens,
        "output": pl.col("output"),
        "flagged": last,
        "slope_sum": pl.col("slope") * last_f,
        "r2_sum": pl.col("r2") * last_f,
        "turns_sum": pl.col("turns") * last_f,
        "output_per_turn_sum": pl.col("output_per_turn") * last_f,
    }
    each = {
        f"{name}{suffix}": pl.col(f"{name}{suffix}")
        for suffix in _VARIANTS
        for name in _PER_VARIANT
    }
    sums = [*shared, *each]
    cells = (
        conv.select(
            *_CELL_KEY,
            *(expr.alias(name) for name, expr in {**shared, **each}.items()),
            pl.col("input").alias("input_max"),
            "start_time",
        )
        .group_by(*_CELL_KEY)
        .agg(
            pl.col(*sums).sum(),
            pl.col("input_max").max(),
            pl.col("start_time").min().alias("first_call"),
            pl.col("start_time").max().alias("last_call"),
        )
    )
    cells = (
        counted.join(cells, on=_CELL_KEY, how="left")
        .with_columns(pl.col(*sums, "input_max").fill_null(0))
        .cache()  # small; read once per variant below
    )
    return [
        cells.select(
            *_CELL_KEY,
            "conversations",
            *shared,
            *(pl.col(f"{name}{suffix}").alias(name) for name in _PER_VARIANT),
            "input_max",
            "first_call",
            "last_call",
            pl.lit(kind).alias("kind"),
            pl.lit(None, dtype=pl.Int32).alias("bin"),
        )
        for suffix, (kind, _) in _VARIANTS.items()
    ]


def _budget_policy(
    lf: pl.LazyFrame, params: Params, *, conversation: bool, suffix: str = ""
) -> pl.LazyFrame:
    """Tokens of each call trimmed to ``budget_tokens`` (never below the system prefix).

    In a conversation the trimmed window slides each turn, so a conversation that uses caching
    keeps only its system-prefix reads and writes the rest again. A single call is trimmed at
    its tail: uncached tokens go first, then writes, then reads.
    """
    inp, read, write = pl.col("input"), pl.col(f"read{suffix}"), pl.col(f"write{suffix}")
    if "budget_input" not in lf.collect_schema():  # the same for every variant
        keep = pl.max_horizontal(
            pl.min_horizontal(inp, params.budget_tokens), pl.min_horizontal(inp, "p0")
        )
        lf = lf.with_columns(keep.alias("budget_input"))
    keep, trimmed = pl.col("budget_input"), inp - pl.col("budget_input")
    budget_read = pl.col(f"budget_read{suffix}")
    if conversation:
        new_read = pl.when(trimmed > 0).then(pl.min_horizontal(read, "p0", keep)).otherwise(read)
        lf = lf.with_columns(new_read.alias(f"budget_read{suffix}"))
        rewrite = (trimmed > 0) & pl.col(f"cached{suffix}")
        new_write = pl.when(rewrite).then(keep - budget_read).otherwise(write)
    else:
        uncached = inp - read - write
        cut_write = (trimmed - uncached).clip(0, write)
        cut_read = (trimmed - uncached - cut_write).clip(0, read)
        lf = lf.with_columns((read - cut_read).alias(f"budget_read{suffix}"))
        new_write = write - cut_write
    new_write = pl.min_horizontal(new_write, keep - budget_read).clip(0)
    return lf.with_columns(new_write.alias(f"budget_write{suffix}")).with_columns(
        _one_hour_share(f"budget_write{suffix}", suffix).alias(f"budget_write_1h{suffix}")
    )


def _one_hour_share(new_write: str, suffix: str = "") -> pl.Expr:
    """New writes keep the call's share of 1-hour writes (an app uses one TTL per breakpoint)."""
    write, write_1h = pl.col(f"write{suffix}"), pl.col(f"write_1h{suffix}")
    share = pl.when(write > 0).then(write_1h / write).otherwise(0.0)
    return (pl.col(new_write) * share).round(0).cast(pl.Int64)


def _summary_policy(lf: pl.LazyFrame, params: Params, suffixes: list[str]) -> pl.LazyFrame:
    """Tokens of each turn if the history were summarised every K turns, for the read/write
    split of each variant in ``suffixes`` (``_variants``).

    At turn t >= K the history up to the last compaction turn c = K*floor(t/K) (the input of
    turn c-1) is replaced by ``summary_tokens``. The compaction turn itself re-reads only the
    system prefix (the rest of its prompt is new and is written if the conversation caches);
    later turns read the compacted prefix, so what they lose are cache reads first. Each
    compaction costs one summarisation call over the previous turn's (compacted) history plus its
    answer, with ``summary_tokens`` of output (reading that history from the cache when the
    conversation caches). What is kept, and the summary calls, are the same for every variant.
    """
    k, s = params.summarize_after_turns, params.summary_tokens
    turn, inp = pl.col("turn"), pl.col("input")
    # rows are sorted by conversation and time (the replay's sort): for turns >= K the
    # latest "turn K*j - 1" row before a row, and the row before a compaction turn, are always
    # in the same conversation, so plain shifts are exact there (other turns do not use them)
    anchor = pl.when(turn % k == k - 1).then(inp).shift(1).forward_fill()
    floor = pl.min_horizontal(inp, pl.col("p0") + s)
    trimmed = (
        pl.when(turn >= k)
        .then(pl.min_horizontal(anchor - pl.col("p0") - s, inp - floor))
        .otherwise(0)
        .fill_null(0)
        .clip(lower_bound=0)
    )
    lf = lf.with_columns(trimmed.alias("_trim")).with_columns(
        (inp - pl.col("_trim")).alias("summary_input"),
        ((turn >= k) & (turn % k == 0) & (pl.col("_trim") > 0)).alias("_compact"),
    )
    keep, trim, compact = pl.col("summary_input"), pl.col("_trim"), pl.col("_compact")
    previous_prompt = pl.col("summary_input").shift(1)
    summary_call_input = pl.when(compact).then(previous_prompt + pl.col("output").shift(1))
    lf = lf.with_columns(
        compact.cast(pl.Int64).alias("summary_call"),
        summary_call_input.fill_null(0).alias("summary_call_input"),
    )
    reads, writes, others = [], [], []
    for suffix in suffixes:
        read, write = pl.col(f"read{suffix}"), pl.col(f"write{suffix}")
        cached, summary_read = pl.col(f"cached{suffix}"), pl.col(f"summary_read{suffix}")
        from_reads = pl.min_horizontal(trim, (read - pl.col("p0")).clip(lower_bound=0))
        new_read = (
            pl.when(compact)
            .then(pl.min_horizontal(read, "p0", keep))
            .otherwise(pl.min_horizontal(read - from_reads, keep))
        )
        reads.append(new_read.alias(f"summary_read{suffix}"))
        new_write = (
            pl.when(compact & cached)
            .then(keep - summary_read)
            .when(compact)
            .then(write)
            .otherwise(write - pl.min_horizontal(trim - from_reads, write))
        )
        new_write = pl.min_horizontal(new_write, keep - summary_read).clip(0)
        writes.append(new_write.alias(f"summary_write{suffix}"))
        # a caching conversation's summary call reads the previous turn's (cached) prompt
        summary_call_read = pl.when(compact & cached).then(previous_prompt)
        others += [
            _one_hour_share(f"summary_write{suffix}", suffix).alias(f"summary_write_1h{suffix}"),
            summary_call_read.fill_null(0).alias(f"summary_call_read{suffix}"),
        ]
    return lf.with_columns(reads).with_columns(writes).with_columns(others)


def _single_cells(single: pl.LazyFrame, params: Params) -> pl.LazyFrame:
    """Single calls as they are and trimmed to the budget, summed per cell."""
    single = _budget_policy(single, params, conversation=False)
    zero = pl.lit(0, dtype=pl.Int64)
    return (
        single.group_by(*_CELL_KEY)
        .agg(
            pl.len().cast(pl.Int64).alias("calls"),
            *(pl.col(c).sum() for c in _TOKENS),
            *(pl.col(f"budget_{t}").sum() for t in _TOKENS),
            *(pl.col(c).sum().alias(f"summary_{c}") for c in _TOKENS),  # no summary policy
            (pl.col("input") - pl.col("budget_input")).sum().alias("trimmed_budget"),
            zero.alias("trimmed_summary"),
            zero.alias("summary_calls"),
            zero.alias("summary_call_input"),
            zero.alias("summary_call_read"),
            zero.alias("summary_call_output"),
            pl.col("output").sum(),
            pl.col("input").max().alias("input_max"),
            pl.col("start_time").min().alias("first_call"),
            pl.col("start_time").max().alias("last_call"),
        )
        .with_columns(pl.lit("single").alias("kind"), pl.lit(None, dtype=pl.Int32).alias("bin"))
    )


def _histograms(single: pl.LazyFrame) -> pl.LazyFrame:
    """Log-spaced input and output histograms of single calls per prompt (merge by addition)."""
    common = {"day": pl.lit(None, dtype=pl.Date), "band": pl.lit(None, dtype=pl.Int32)}
    frames = [
        single.group_by("_k", stats.reasoning_bin(pl.col(column)).alias("bin"))
        .agg(pl.len().cast(pl.Int64).alias(f"hist_{column}"))
        .with_columns(pl.lit(f"hist_{column}").alias("kind"), **common)
        for column in ("input", "output")
    ]
    return pl.concat(frames, how="diagonal_relaxed")
