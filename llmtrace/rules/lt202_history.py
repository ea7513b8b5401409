"""LT202 conversation-history-not-cached: conversations resend their history without caching it.

Chat apps and agent loops send, on every turn, the whole conversation so far. Each turn's prompt
starts with the previous turn's prompt, so a cache entry written at the end of one turn is read
by the next. LT201 cannot see this (each conversation's history is its own prefix, shared by no
other conversation); LT202 replays each conversation with the provider's real mechanics
(rules/LT202.yaml documents the rule for users):

* **Anthropic / Bedrock** (explicit, up to 4 breakpoints): three layouts of the history's
  breakpoints are replayed (``history_replay``): one on the last message with the 5-minute
  lifetime (refreshed by every read), the same with 1 hour (where offered), and a 1-hour one on
  the previous turn's last message plus a 5-minute one on the last message. A turn reads the
  longest live entry one of its breakpoints can reach (~20 blocks back) that is an exact prefix
  of its prompt (same message-boundary hash) and was long enough to be written at all (the
  model's minimum cacheable length); it writes what is new, at the write premium, when its
  prompt reaches the minimum. The cheapest layout is reported, the others' savings in the
  evidence and message (measured winners: tests/test_lt202.py and ``history_replay``).
* **OpenAI / Azure** (automatic): a turn reads the previous prompt rounded down to 128-token
  steps when it is at least 1,024 tokens and came within ~5 minutes; writes cost what the price
  data says (nothing extra before GPT-5.6). Nothing to switch on but routing
  (``prompt_cache_key``), which is what the fix says.
* **Gemini 2.5+** (implicit): replayed like automatic caching from the model's minimum, priced
  at the price data's cached-input rate. Decided from the docs: implicit caching is on by
  default for 2.5 and newer and has no guaranteed hit, so what it would read is a potential,
  reported with severity info (not counted) and a fix that says implicit caching already
  applies. Explicit context caching is the only way to guarantee hits, but it bills storage per
  token-hour, which genai-prices does not hold, so it is named in the evidence and never priced
  (a figure without storage would overstate it). Gemini 2.0 and older: not modelled.

Only the history after the system prefix (``prefix_tokens[0]``) is replayed and priced: every
layout keeps a breakpoint on the system prompt, and the system prefix shared across
conversations is LT201's, so the two never count one token twice. A turn that already reads at
least as much history as the replay would keeps its real split, so the replay never undoes
caching an app already does. LT301 (trimming) prices its policies on top of the cheapest
layout, so LT202 + LT301 add up.

Costs: per cell (prompt key, day, input-size band) the aggregate sums the history tokens as
billed and as each option would bill them; ``decide`` prices both with the run's own pricer
(``price_rates`` + ``split_cost``: write premium, read discount, tiers and dated prices from the
price data), and scales to a month at the key's run-rate (``runrate``).

Mergeability: the replay needs a conversation's turns together, so partials are exact when
partitions are split by ``conversation_id`` (``partition_key``); ``merge`` re-aggregates cells.
Vectorised: one sort by (conversation, time), then shifted columns and one forward fill:
O(N log N) for N calls, memory of the narrow columns of one partition; no Python per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from llmtrace.rules import runrate
from llmtrace.rules.base import (
    AuditContext,
    Finding,
    RuleParams,
    Severity,
    merge_cells,
    worth_reporting,
)
from llmtrace.rules.caching_findings import (
    COVERAGE_KEY,
    judged_coverage,
    key_finding,
    priced_cells,
    rounded,
    severity_for,
    sum_cells,
    sum_if_all_priced,
)
from llmtrace.rules.caching_model import (
    IMPLICIT,
    PROVIDERS,
    key_facts,
    min_tokens_expr,
    normalised_model_expr,
    regimes_frame,
    split_cost,
)
from llmtrace.rules.history_replay import (
    LAYOUTS,
    LONG_TTL_S,
    SESSION_DERIVED,
    SHORT_TTL_S,
    clean_cache_tokens,
    replay_turns,
    with_derived,
)

__all__ = ["LONG_TTL_S", "RULE", "SHORT_TTL_S", "evaluate", "replay_turns"]  # LT301 reads these

CODE = "LT202"
NAME = "conversation-history-not-cached"

_KEY = ["provider", "model", "service", "prompt"]
_CELL = [*_KEY, "day", "band"]
_OPTIONS = LAYOUTS
_SUMS = [
    "calls",
    "turns_after_first",
    "resent",
    "conversations",
    "history",
    "read",
    "write",
    "write_1h",
    *(f"{name}_{o}" for o in _OPTIONS for name in ("hits", "read", "write", "write_1h")),
    "input",
]
_MAXES = ["last_call", "input_max"]
_MINS = ["first_call"]
_EXPLICIT = [p for p, facts in PROVIDERS.items() if facts.mode == "explicit"]
MODELLED = [*PROVIDERS, *IMPLICIT]
_STEPS = {p: facts.step_tokens for p, facts in (PROVIDERS | IMPLICIT).items()}
# what each layout is called in evidence and messages
OPTION_NAMES = {
    "short": "last message, 5m",
    "long": "last message, 1h",
    "mixed": "1h on the previous turn + 5m on the last message",
}


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT202's parameters (defaults in rules/LT202.yaml, overridable in llmtrace.toml)."""

    min_monthly_savings_usd: float = 5.0
    max_cached_share: float = 0.5
    min_conversations: int = 5
    min_resent_calls: int = 20
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0


class HistoryRule:
    """The LT202 rule object (module attribute ``RULE``)."""

    code: ClassVar[str] = CODE
    name: ClassVar[str] = NAME
    columns: ClassVar[tuple[str, ...]] = (
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
        "_hc",
        "_p0",
    )
    # the system prefix's size, the conversation's hash and its calls' prefix hashes, computed
    # by the engine
    derived_columns: ClassVar[dict[str, pl.Expr]] = SESSION_DERIVED
    # a conversation's turns must stay together; calls without one are dropped, so they may all
    # land in one part
    partition_key: ClassVar[pl.Expr] = pl.col("conversation_id").hash(37)
    # LT301's key keeps conversations whole too: one spill serves LT202 and LT301
    partition_family: ClassVar[str] = "conversation"
    # as LT301's: the calls outside conversations need no part (this rule drops them)
    part_rows: ClassVar[pl.Expr] = pl.col("conversation_id").is_not_null()

    def aggregate_unparted(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """``aggregate`` of calls outside conversations: of none, as it drops them all."""
        return self.aggregate(calls.clear(), ctx)

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Per cell: history tokens as billed and as each replayed option would bill them."""
        base = _base(calls, ctx)
        names = base.group_by("_k").agg(pl.col(*_KEY).first())
        facts = model_facts()
        narrow = [c for c in NARROW if c not in facts]
        turns = replay_turns(
            base.select(narrow).join(key_facts(names, "_k", facts), on="_k", how="left"),
            step=pl.col("step"),
        )
        return cells_from_replay(turns, names)

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Concatenate partials and re-aggregate by cell (exact when split by conversation)."""
        return merge_cells(partials, _CELL, sums=_SUMS, maxes=_MAXES, mins=_MINS)

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """Findings for prompts whose conversations would save enough by caching history."""
        params = Params.from_mapping(ctx.params)
        flagged = worth_reporting(evaluate(aggregates, ctx), params.min_monthly_savings_usd)
        return [_finding(row, ctx, params) for row in flagged.iter_rows(named=True)]

    def coverage(
        self,
        aggregates: pl.DataFrame,
        ctx: AuditContext,
        census: pl.DataFrame,
        findings: list[Finding],
    ) -> pl.DataFrame:
        """Keys with conversations on a provider whose caching is modelled: judged with enough
        conversations and resent turns; else "too few calls" or "no fingerprints"."""
        params = Params.from_mapping(ctx.params)
        judged = (
            aggregates.group_by(COVERAGE_KEY)
            .agg(pl.col("conversations", "resent", "turns_after_first").sum())
            .filter(
                (pl.col("conversations") >= params.min_conversations)
                & (pl.col("turns_after_first") >= params.min_resent_calls)
            )
            if aggregates.height
            else None
        )
        # only models whose caching is modelled (Gemini before 2.5 has no implicit caching)
        modelled = regimes_frame(census, implicit=True).filter(pl.col("cache_mode").is_not_null())
        census = census.join(
            modelled.select("provider", "model", pl.lit(True).alias("_modelled")),
            on=["provider", "model"],
            how="left",
            nulls_equal=True,
        )
        applies = pl.col("_modelled").fill_null(False) & (pl.col("in_conversations") > 0)
        return judged_coverage(census, judged, applies)


RULE = HistoryRule()


# -- aggregate ---------------------------------------------------------------------------------

# what its replay reads of each call (``history_joint`` too)
NARROW = [
    "_k",
    "_c",
    "start_time",
    "day",
    "band",
    "L",
    "read",
    "write",
    "write_1h",
    "p0",
    "prefix_hashes",
    "minimum",
    "explicit",
    "step",
]


def _base(calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
    """Current-window conversation calls on a modelled provider, with clean token columns."""
    start = pl.col("start_time")
    return (
        with_derived(calls, HistoryRule.derived_columns)
        .select(*HistoryRule.columns)
        .rename({"_hc": "prefix_hashes"})
        .filter(
            (start >= ctx.since)
            & (start < ctx.until)
            & (pl.col("input_tokens") > 0)
            & pl.col("_c").is_not_null()
            & pl.col("model").is_not_null()
            & pl.col("provider").is_in(MODELLED)
        )
        .with_columns(
            *clean_cache_tokens(),
            start.dt.date().alias("day"),
            pl.struct(*_KEY).hash(43).alias("_k"),
        )
        .with_columns(
            pl.col("_p0").fill_null(0).clip(0, pl.col("L")).alias("p0"),
            pl.col("L").cast(pl.Float64).log(2).floor().cast(pl.Int32).alias("band"),
        )
    )


# what the cells read of a replayed turn (``cells_from_replay``)
REPLAYED = [
    "_k",
    "day",
    "band",
    "start_time",
    "L",
    "p0",
    "read",
    "write",
    "write_1h",
    "first",
    "resent",
    *(f"hit_{o}" for o in _OPTIONS),
    *(f"cf_{name}_{o}" for o in _OPTIONS for name in ("read", "write", "write_1h")),
]


def cells_from_replay(turns: pl.LazyFrame, names: pl.LazyFrame) -> pl.LazyFrame:
    """LT202's cells from its turns replayed (``replay_turns``; ``REPLAYED`` is what is read)
    and the prompt key's strings per ``_k`` (``names``)."""
    cells = sum_cells(
        turns,
        _per_turn_sums(turns),
        pl.col("L").sum().alias("input"),
        pl.col("L").max().alias("input_max"),
    )
    return cells.join(names, on="_k", how="left").select(*_CELL, *_SUMS, *_MAXES, *_MINS)


def model_facts() -> dict[str, pl.Expr]:
    """What the replay needs of each call's (provider, model), looked up once per prompt key
    (``caching_model.key_facts``), not per call."""
    return {
        "minimum": min_tokens_expr(normalised_model_expr(), implicit=True),
        "explicit": pl.col("provider").is_in(_EXPLICIT),
        "step": pl.col("provider").replace_strict(_STEPS, default=1, return_dtype=pl.Int64),
    }


def _region(read: pl.Expr, write: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Read and written tokens of the history after the system prefix ``p0`` (cache order:
    reads first, then writes, then uncached input)."""
    p0 = pl.col("p0")
    region_read = (read - p0).clip(lower_bound=0)
    region_write = (read + write - p0).clip(lower_bound=0) - region_read
    return region_read, region_write


def _per_turn_sums(turns: pl.LazyFrame) -> dict[str, pl.Expr]:
    """Name -> per-turn value summed per cell (see ``_SUMS``)."""
    a_read, a_write = _region(pl.col("read"), pl.col("write"))
    _, a_write_1h = _region(pl.col("read"), pl.col("write_1h"))
    sums: dict[str, pl.Expr] = {
        "calls": pl.lit(1, dtype=pl.Int64),
        "turns_after_first": (~pl.col("first")).cast(pl.Int64),
        "resent": pl.col("resent").cast(pl.Int64),
        "conversations": pl.col("first").cast(pl.Int64),
        "history": pl.col("L") - pl.col("p0"),
        "read": a_read,
        "write": a_write,
        "write_1h": pl.min_horizontal(a_write_1h, a_write),
    }
    for option in _OPTIONS:
        c_read, c_write = _region(pl.col(f"cf_read_{option}"), pl.col(f"cf_write_{option}"))
        # an app that caches already and reads at least as much keeps its own split; a call
        # that caches nothing takes the replay's, writes (and their premium) included
        keep = ((a_read + a_write) > 0) & (a_read >= c_read)
        sums[f"hits_{option}"] = pl.col(f"hit_{option}").cast(pl.Int64)
        sums[f"read_{option}"] = pl.when(keep).then(a_read).otherwise(c_read)
        sums[f"write_{option}"] = pl.when(keep).then(a_write).otherwise(c_write)
        # the 1-hour writes of the history region: the layout's, clipped like its writes
        _, c_write_1h = _region(pl.col(f"cf_read_{option}"), pl.col(f"cf_write_1h_{option}"))
        one_hour = pl.min_horizontal(c_write_1h, c_write)
        sums[f"write_1h_{option}"] = pl.when(keep).then(sums["write_1h"]).otherwise(one_hour)
    return {name: expr.cast(pl.Int64) for name, expr in sums.items()}


# -- decide ------------------------------------------------------------------------------------


def evaluate(aggregates: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """One row per prompt key with evidence, each layout's cost and saving, the best layout
    and whether it may be flagged."""
    params = Params.from_mapping(ctx.params)
    if aggregates.height == 0:
        return pl.DataFrame()
    keys = aggregates.group_by(_KEY).agg(
        *(pl.col(c).sum() for c in _SUMS),
        *(pl.col(c).max() for c in _MAXES),
        *(pl.col(c).min() for c in _MINS),
    )
    regimes = regimes_frame(keys, implicit=True)
    keys = keys.join(regimes, on=["provider", "model"], how="left", nulls_equal=True)
    keys = keys.with_columns(
        (pl.col("read") / pl.col("history")).fill_nan(0.0).alias("cached_share"),
        (pl.col("long_ttl_s").is_not_null() & (pl.col("cache_mode") == "explicit")).alias(
            "long_offered"
        ),
    ).with_columns(
        (
            pl.col("cache_mode").is_not_null()
            & (pl.col("conversations") >= params.min_conversations)
            & (pl.col("resent") >= params.min_resent_calls)
            & (pl.col("cached_share") < params.max_cached_share)
        ).alias("eligible")
    )
    costs = _price(aggregates, keys.filter(pl.col("eligible")), ctx)
    table = keys.join(costs, on=_KEY, how="left", nulls_equal=True).with_columns(
        (pl.col("cost_actual") - pl.col(f"cost_{o}")).alias(f"saving_{o}") for o in _OPTIONS
    )
    # the 1-hour layouts only where the model offers 1-hour writes
    table = table.with_columns(
        pl.when(pl.col("long_offered")).then(f"saving_{o}").alias(f"saving_{o}")
        for o in _OPTIONS
        if o != "short"
    )
    best_value = pl.max_horizontal(*(f"saving_{o}" for o in _OPTIONS))
    best = (  # ties: the simplest layout
        pl.when(pl.col("saving_short") == best_value)
        .then(pl.lit("short"))
        .when(pl.col("saving_long") == best_value)
        .then(pl.lit("long"))
        .otherwise(pl.lit("mixed"))
    )
    return (
        table.with_columns(
            best.alias("best"),
            best_value.alias("saving"),
            runrate.basis_days("first_call", "last_call", ctx).alias("basis_days"),
        )
        .with_columns(
            runrate.monthly("saving", "basis_days").alias("monthly_savings_usd"),
            (pl.col("eligible") & pl.col("cost_actual").is_not_null()).alias("eligible"),
        )
        .with_columns(pl.col("eligible") & (pl.col("saving") > 0))
    )


def _price(aggregates: pl.DataFrame, eligible: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
    """History cost of the eligible keys as billed and under each option."""
    options = {
        "actual": ("read", "write", "write_1h"),
        **{o: (f"read_{o}", f"write_{o}", f"write_1h_{o}") for o in _OPTIONS},
    }
    schema = {**{k: pl.String for k in _KEY}, **{f"cost_{o}": pl.Float64 for o in options}}
    if eligible.height == 0:
        return pl.DataFrame(schema=schema)
    cells = aggregates.join(eligible.select(_KEY), on=_KEY, how="semi", nulls_equal=True)
    cells = cells.with_columns(pl.lit(0, dtype=pl.Int64).alias("_zero"))
    priced = priced_cells(cells, ctx.price).with_columns(
        split_cost(calls="_zero", input="history", read=r, write=w, write_1h=w1).alias(f"_{name}")
        for name, (r, w, w1) in options.items()
    )
    return (
        priced.group_by(_KEY)
        .agg(
            *sum_if_all_priced([f"_{n}" for n in options], {f"_{n}": f"cost_{n}" for n in options})
        )
        .select(schema.keys())
        .cast(schema)  # type: ignore[arg-type]
    )


def _severity(row: dict[str, Any], params: Params) -> Severity:
    if row["cache_mode"] == "implicit":
        return "info"  # no guaranteed hit and nothing to switch on: a potential, not counted
    return severity_for(row["monthly_savings_usd"], params)


_TTL_LABEL = {"short": "5m", "long": "1h", "mixed": "1h+5m"}
_EXPLICIT_GEMINI = (
    "not priced: explicit context caching (cachedContents) bills storage per token-hour, which "
    "the price data does not hold"
)


def _offered(row: dict[str, Any]) -> list[str]:
    return list(_OPTIONS) if row["long_offered"] else ["short"]


def _evidence(row: dict[str, Any]) -> dict[str, Any]:
    days = row["basis_days"]
    after_first = row["turns_after_first"] or 0

    def monthly(value: float | None) -> float | None:
        return None if value is None else rounded(runrate.monthly_value(value, days), 2)

    def hit_rate(option: str) -> float | None:
        return rounded(row[f"hits_{option}"] / after_first) if after_first else None

    explicit = row["cache_mode"] == "explicit"
    options = {
        (OPTION_NAMES[o] if explicit else row["cache_mode"]): {
            "monthly_savings_usd": monthly(row[f"saving_{o}"]),
            "window_history_cost_usd": rounded(row[f"cost_{o}"], 6),
            "simulated_hit_rate": hit_rate(o),
        }
        for o in _offered(row)
    }
    evidence = {
        "provider": row["provider"],
        "cache_mode": row["cache_mode"],
        "conversations": row["conversations"],
        "calls": row["calls"],
        "turns_resending_history": row["resent"],
        "history_tokens": row["history"],
        "history_tokens_per_call": round(row["history"] / row["calls"], 1)
        if row["calls"]
        else None,
        "max_input_tokens": row["input_max"],
        "min_cacheable_tokens": row["min_cacheable_tokens"],
        "actual_cached_share_of_history": rounded(row["cached_share"]),
        "simulated_hit_rate": hit_rate(row["best"]),
        "window_history_cost_usd": rounded(row["cost_actual"], 6),
        "window_history_cost_cached_5m_usd": rounded(row["cost_short"], 6),
        "window_history_cost_cached_1h_usd": rounded(row["cost_long"], 6)
        if row["long_offered"]
        else None,
        "monthly_savings_5m_usd": monthly(row["saving_short"]),
        "monthly_savings_1h_usd": monthly(row["saving_long"]),
        "options": options,
        "recommended_option": OPTION_NAMES[row["best"]] if explicit else row["cache_mode"],
        "recommended_ttl": _TTL_LABEL[row["best"]],
        "scope": "history after the system prefix (the system prompt's own caching is LT201's)",
        "system_prompt_tokens_per_call": _system_tokens(row),
        "system_prompt_breakpoint": _system_breakpoint(row),
        "run_rate_basis": runrate.basis_evidence(
            row["first_call"], row["last_call"], days, row["calls"]
        ),
    }
    if row["cache_mode"] == "implicit":
        evidence["explicit_context_caching"] = _EXPLICIT_GEMINI
    return evidence


def _system_tokens(row: dict[str, Any]) -> int | None:
    """Mean tokens of the system prefix per call (input minus history)."""
    return round((row["input"] - row["history"]) / row["calls"]) if row["calls"] else None


def _system_breakpoint(row: dict[str, Any]) -> str:
    """Whether a breakpoint on the system prompt is worth one of the 4: only when the system
    prompt alone reaches the model's minimum, so new conversations can read it."""
    system, minimum = _system_tokens(row) or 0, row["min_cacheable_tokens"] or 0
    if system >= minimum:
        return (
            "add one: the system prompt alone reaches the minimum, so a conversation's first "
            "turn reads it from other conversations (LT201 prices that)"
        )
    return (
        f"not written: the system prompt alone (~{system:,} tokens) is below the model's "
        f"{minimum:,}-token minimum"
    )


def _fix(row: dict[str, Any]) -> str:
    if row["cache_mode"] == "implicit":
        return (
            "Gemini caches prefixes implicitly (2.5 and newer, from "
            f"{row['min_cacheable_tokens']:,} tokens): nothing to switch on, but these turns "
            "read almost none of their history from cache. Resend the history byte-identical "
            "(append only, no re-rendered timestamps or ids), keep a conversation's turns close "
            "together, and check that the usage's cached tokens (`cached_content_token_count`) "
            "reach the trace. Explicit context caching (`cachedContents`) guarantees hits but "
            "bills storage per token-hour, which this estimate does not include."
        )
    if row["cache_mode"] == "automatic":
        return (
            "The provider caches prefixes of 1,024+ tokens automatically, but these turns read "
            "almost none of their history from cache. Pass the conversation id as "
            '`prompt_cache_key` (e.g. `prompt_cache_key=f"conv-{conversation_id}"`) so a '
            "conversation's turns reach the same cache, and never edit earlier messages: append "
            "only."
        )
    system = (
        " Keep a breakpoint on the system prompt too, so new conversations read it (LT201); at "
        "most 4 in all."
        if (_system_tokens(row) or 0) >= (row["min_cacheable_tokens"] or 0)
        else f" A breakpoint on the system prompt alone (~{_system_tokens(row) or 0:,} tokens) "
        f"would not be written: it is below the {row['min_cacheable_tokens']:,}-token minimum."
    )
    tail = " Append messages only; never edit or reorder earlier turns, or the cache is lost." + (
        system
    )
    if row["best"] == "mixed":
        return (
            "Use two breakpoints on the history: "
            '`"cache_control": {"type": "ephemeral", "ttl": "1h"}` on the last content block '
            "of the previous turn's last message (the message before the new one) and "
            '`"cache_control": {"type": "ephemeral"}` on the last message. Each turn then '
            "reaches the previous turn's entry even when it adds more than ~20 content blocks "
            "(a lone breakpoint looks back only that far), and after a pause of 5-60 minutes "
            "still reads the history up to the 1-hour entry instead of writing it all again "
            "(1-hour entries must come before 5-minute ones; Bedrock: `cachePoint` blocks)." + tail
        )
    ttl = ', "ttl": "1h"' if row["best"] == "long" else ""
    return (
        "Put a cache breakpoint on the last message of every request: "
        f'`"cache_control": {{"type": "ephemeral"{ttl}}}` on the last content block of the '
        "last message (Anthropic: or one top-level `cache_control` for automatic caching; "
        "Bedrock: a `cachePoint` block after it). Each turn then reads the previous turn's "
        "prompt from the cache and writes only what is new." + tail
    )


_LAYOUT_PHRASE = {
    "short": "a cache breakpoint on the last message (5m lifetime)",
    "long": "a cache breakpoint on the last message (1h lifetime)",
    "mixed": "a 1h breakpoint on the previous turn and a 5m one on the last message",
}


def _usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def _alternatives(row: dict[str, Any], evidence: dict[str, Any]) -> str:
    """The other layouts' monthly savings, for the message."""
    others = [
        f"{name} {_usd(values['monthly_savings_usd'])}"
        for name, values in evidence["options"].items()
        if name != evidence["recommended_option"] and values["monthly_savings_usd"] is not None
    ]
    return f" (other layouts: {'; '.join(others)}/month)" if others else ""


def _finding(row: dict[str, Any], ctx: AuditContext, params: Params) -> Finding:
    evidence = _evidence(row)
    monthly = row["monthly_savings_usd"]
    hit = evidence["simulated_hit_rate"] or 0.0
    option = {
        "automatic": "automatic prefix caching routed per conversation",
        "implicit": "Gemini's implicit caching hitting as documented",
    }.get(row["cache_mode"], _LAYOUT_PHRASE[row["best"]])
    head = (
        f"{row['conversations']:,} conversations resend their history "
        f"(~{evidence['history_tokens_per_call'] or 0:,.0f} tokens per call after the system "
        f"prompt, {row['calls']:,} calls) with {row['cached_share']:.0%} of it read from cache; "
    )
    if row["cache_mode"] == "implicit":
        message = head + (
            f"implicit caching already applies to this model, and with {option} {hit:.0%} of "
            f"the later turns would read the previous prompt, worth ${monthly:,.2f}/month (not "
            "counted: implicit hits are not guaranteed)."
        )
    else:
        message = head + (
            f"with {option} {hit:.0%} of the later turns would read the previous prompt, saving "
            f"${monthly:,.2f}/month without dropping anything{_alternatives(row, evidence)}."
        )
    return key_finding(
        (CODE, NAME),
        row,
        ctx,
        severity=_severity(row, params),
        message=message,
        fix=_fix(row),
        evidence=evidence,
    )
