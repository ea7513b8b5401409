"""Replay of conversation turns under cache-breakpoint layouts, and the token columns it reads.

Shared by LT202 (what caching the history would save), LT301 (trimming priced on top of that
caching) and LT203 (cache lineages ordered by time). Why one module: the three rules must agree
on what a turn would read and write, or LT202 and LT301 would count one token twice.

Layouts (Anthropic / Bedrock explicit breakpoints; at most 4 per request, one is left for the
system prompt, which LT201 prices):

* ``short`` - one breakpoint on the last message, 5-minute lifetime (refreshed on every read);
* ``long`` - the same with the 1-hour lifetime;
* ``mixed`` - a 1-hour breakpoint on the previous turn's last message plus a 5-minute one on
  the last message. While turns come within 5 minutes it is ``short``; after a pause of 5-60
  minutes the turn still reads the history up to the last 1-hour entry (a prefix kept warm
  between bursts of turns) instead of writing it all again. It also reaches the previous
  turn's entry when a turn adds more than ~20 blocks (agent loops with many tool results),
  where a lone breakpoint on the last message cannot look back that far.

Which wins, measured on the planted workloads of tests/test_lt202.py against the independent
replay: ``short`` for turns within minutes; ``long`` for turns 5-60 minutes apart, and also for
bursts separated by pauses (``mixed`` beats ``short`` there but pays the 1-hour premium again on
each burst's content at every pause, so one 1-hour write of everything is cheaper); ``mixed``
when turns add more than the lookback (the others never hit). A breakpoint on the system prompt
belongs to every layout (conversations sharing a system prompt read it across conversations):
that region is LT201's, so it is not replayed here.

Mechanics (Anthropic prompt-caching docs; shared/research/rules-domain.md §1.2):

* an entry is written at a breakpoint when the prefix up to it reaches the model's minimum
  cacheable length; a request reads the longest live entry that one of its breakpoints can reach
  (a breakpoint looks back about 20 content blocks; counted here in messages, which are at most
  as many as blocks, so a missed lookback is never invented);
* billing per request: read = A (the longest hit), 1-hour write = B - A (B: the last 1-hour
  breakpoint beyond A), 5-minute write = C - max(A, B) (C: the last breakpoint);
* a read refreshes the entry it reads (assumed: only that one, not shorter entries inside it,
  which can only make the replay read less, never more).

Automatic providers (OpenAI, Azure OpenAI) and Gemini's implicit caching have no breakpoints:
a turn reads the previous prompt (OpenAI in 128-token steps, ``step``) when it came within the
lifetime; only the ``short`` columns are meaningful for them.

Vectorised: one sort by (conversation, time), then shifted columns and one forward fill (the
last 1-hour entry of the conversation): O(N log N) for N turns, no Python per turn. Exact: the
state a turn sees is the previous turn's last entry (alive iff the gap is within its lifetime,
as every turn refreshes or writes it) and the last 1-hour entry (written only by turns that
missed the 5-minute entry, so it does not depend on earlier 1-hour hits).
"""

from __future__ import annotations

import polars as pl

SHORT_TTL_S = 300.0
LONG_TTL_S = 3600.0
LOOKBACK_MESSAGES = 20  # a breakpoint finds entries up to ~20 blocks back (Anthropic docs)
LAYOUTS: tuple[str, ...] = ("short", "long", "mixed")


# Narrow columns the engine computes where it reads the calls (a rule's ``derived_columns``):
# the first element of a prefix list, which is all LT202 and LT301 read of ``prefix_tokens`` and
# LT203 of ``prefix_hashes``. Why: Parquet list columns are decoded whole for every call, even
# under a filter (~0.08 CPU-s per list and 1.67M-call part of the 10M window's spill), and a
# spill writes a derived column as a plain one, so the parts' reads skip the lists.
FIRST_PREFIX_TOKENS: dict[str, pl.Expr] = {"_p0": pl.col("prefix_tokens").list.first()}
FIRST_PREFIX_HASH: dict[str, pl.Expr] = {"_h0": pl.col("prefix_hashes").list.first()}
# The conversation's UInt64 id (null outside a conversation), which is all LT202 and LT301 read
# of ``conversation_id``. Why derived: the near-unique id strings were the widest column the
# session spill wrote only for these two rules, and each decoded and hashed them again in
# every part; hashed where the calls are read, the spill writes 8 bytes per call instead.
CONVERSATION_HASH: dict[str, pl.Expr] = {
    "_c": pl.when(pl.col("conversation_id").is_not_null()).then(pl.col("conversation_id").hash(37))
}
# The prefix hashes of conversation calls only (null outside a conversation: 73% of the 10M
# window's calls), which is all LT202 and LT301 replay. Why derived: a list column is decoded
# whole for every call of a part even under a filter; nulls cost next to nothing, and a spill
# writes the narrow list instead of every call's.
CONVERSATION_PREFIX_HASHES: dict[str, pl.Expr] = {
    "_hc": pl.when(pl.col("conversation_id").is_not_null()).then(pl.col("prefix_hashes"))
}
# All that LT202 and LT301 read through derived columns: ``_p0``, ``_c`` and ``_hc``.
SESSION_DERIVED: dict[str, pl.Expr] = (
    FIRST_PREFIX_TOKENS | CONVERSATION_HASH | CONVERSATION_PREFIX_HASHES
)


def with_derived(calls: pl.LazyFrame, derived: dict[str, pl.Expr]) -> pl.LazyFrame:
    """``calls`` with the ``derived`` columns the engine did not compute already: a rule's
    ``aggregate`` also runs on plain call records (tests, custom callers)."""
    schema = calls.collect_schema()
    missing = [expr.alias(name) for name, expr in derived.items() if name not in schema]
    return calls.with_columns(missing) if missing else calls


def clean_cache_tokens(
    *, input_as: str = "L", one_hour: bool = True, dtype: pl.DataType = pl.Int64
) -> list[pl.Expr]:
    """Call-record cache columns as consistent, disjoint token counts (one ``with_columns``).

    ``input_as`` (input tokens, inclusive), ``read`` (clipped to the input), ``write`` (at most
    what was not read) and, with ``one_hour``, ``write_1h`` (at most ``write``). Why here: every
    caching rule re-splits these, and a record with more reads than input (seen in real exports)
    must be clipped the same way everywhere.
    """
    inp = pl.col("input_tokens").cast(dtype)
    read = pl.col("cache_read_tokens").fill_null(0).cast(dtype).clip(0, inp)
    write = pl.min_horizontal(pl.col("cache_write_tokens").fill_null(0), inp - read).clip(0)
    out = [inp.alias(input_as), read.alias("read"), write.cast(dtype).alias("write")]
    if one_hour:
        write_1h = pl.min_horizontal(pl.col("cache_write_1h_tokens").fill_null(0), write).clip(0)
        out.append(write_1h.cast(dtype).alias("write_1h"))
    return out


# what ``_ordered_turns`` adds, in its order
_ORDERED = {
    "_same": pl.Boolean,
    "_n": pl.UInt32,
    "_prev_n": pl.UInt32,
    "_prev_last": pl.UInt64,
    "_at": pl.UInt64,
}


def _ordered_turns(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` sorted by conversation (``_c``) and time, without ``prefix_hashes`` but with
    what the replay reads of it: ``_n`` (its length), ``_prev_n`` and ``_prev_last`` (the
    previous turn's length and last hash, null on a conversation's first turn) and ``_at``
    (this turn's hash at the previous turn's last position); ``_same``: the previous row is of the
    same conversation.

    Why eager and without the list: sorting carries every column, and a list column costs
    about as much to move as all the others (a part's 445k turns: 0.12 against 0.07 CPU-s);
    the one list element the replay compares is looked up in the input order, where the list
    is, with the previous turn's length scattered back to it. The sort is the same (the same
    keys; other columns do not change the order), in memory: Polars' streaming sort cost about
    twice the in-memory one on a part's turns (2.1.0: 0.12 against 0.06 CPU-s).
    """
    hashes = rows.get_column("prefix_hashes")
    narrow = rows.drop("prefix_hashes").with_columns(
        hashes.list.len().alias("_n"),
        hashes.list.last().alias("_prev_last"),
        pl.int_range(rows.height, dtype=pl.UInt32, eager=True).alias("_i"),
    )
    # stable: turns of one conversation at the same instant keep their input order, so a
    # conversation replays the same among any other turns (``history_joint`` relies on it)
    ordered = narrow.sort("_c", "start_time", maintain_order=True)
    same = pl.col("_same")
    ordered = ordered.with_columns(
        (pl.col("_c") == pl.col("_c").shift(1)).fill_null(False).alias("_same")
    ).with_columns(
        pl.when(same).then(pl.col("_n").shift(1)).alias("_prev_n"),
        pl.when(same).then(pl.col("_prev_last").shift(1)).alias("_prev_last"),
    )
    order, prev_n = ordered.get_column("_i"), ordered.get_column("_prev_n")
    # the previous turn's length at this turn's position in the input, to index its list there
    at_input = pl.Series(values=[None] * rows.height, dtype=pl.UInt32).scatter(order, prev_n)
    index = (at_input.cast(pl.Int64) - 1).clip(lower_bound=0)
    at = hashes.list.get(index, null_on_oob=True).gather(order)
    kept = [name for name in rows.columns if name != "prefix_hashes"]
    return ordered.with_columns(at.alias("_at")).select(*kept, *_ORDERED)


def default_step(explicit: pl.Expr | None = None) -> pl.Expr:
    """The hit granularity ``replay_turns`` uses unless told: 1 token for explicit breakpoints
    (``explicit``, default the ``explicit`` column), 128 for automatic caching."""
    return pl.when(explicit if explicit is not None else pl.col("explicit")).then(1).otherwise(128)


def replay_turns(turns: pl.LazyFrame, step: pl.Expr | None = None) -> pl.LazyFrame:
    """Turns sorted by conversation and time, with what each layout would read and write.

    Needs ``_c`` (conversation key), ``start_time``, ``L`` (input tokens), ``prefix_hashes``,
    ``minimum`` (cacheable length; null: caching not modelled) and ``explicit`` (breakpoints vs
    automatic). ``step``: hit granularity (default 1 for explicit providers, 128 otherwise).
    Adds ``first``, ``resent`` (the previous prompt is an exact prefix of this one),
    ``prev_L``, ``gap_s`` and per layout ``hit_<o>``, ``cf_read_<o>``, ``cf_write_<o>``,
    ``cf_write_1h_<o>`` (see the module docstring). Automatic providers get the same values
    under every layout (no breakpoints, no 1-hour writes).
    """
    step = step if step is not None else default_step()
    schema = turns.collect_schema()
    schema = pl.Schema(
        {
            **{name: dtype for name, dtype in schema.items() if name != "prefix_hashes"},
            **_ORDERED,
        }
    )
    turns = turns.map_batches(_ordered_turns, schema=schema, streamable=False)
    same = pl.col("_same")
    # the gap in the plan, not in ``_ordered_turns``: the engines' divisions differ in the
    # last bit on a few rows (2 of 445k), and the gap is compared with the lifetimes
    seconds = pl.col("start_time").diff().dt.total_microseconds() / 1e6
    turns = turns.with_columns(
        pl.when(same).then(seconds).alias("gap_s"),
        (~same).alias("first"),
        pl.when(same).then(pl.col("L").shift(1)).alias("prev_L"),
    )
    resent = (
        (pl.col("_prev_n") > 0)
        & (pl.col("_at") == pl.col("_prev_last"))
        & (pl.col("prev_L") <= pl.col("L"))
    ).fill_null(False)
    turns = turns.with_columns(resent.alias("resent")).drop("_prev_last", "_at")

    length, prev, minimum, gap = pl.col("L"), pl.col("prev_L"), pl.col("minimum"), pl.col("gap_s")
    explicit = pl.col("explicit").fill_null(False)
    writes = (length >= minimum).fill_null(False)
    # the last-message breakpoint reaches the previous turn's entry (automatic: always)
    reach = ~explicit | ((pl.col("_n") - pl.col("_prev_n")) <= LOOKBACK_MESSAGES)
    entry = pl.col("resent") & (prev >= minimum) & reach
    stepped = prev // step * step
    hit_short = (entry & (gap <= SHORT_TTL_S)).fill_null(False)
    hit_long = (entry & (gap <= LONG_TTL_S) & explicit).fill_null(False)

    # mixed: the 1-hour breakpoint sits on the previous turn's end, so the 5-minute entry there
    # is always within reach; a turn that misses it writes a 1-hour entry at that point (the
    # anchor), and later misses read the conversation's last anchor while it lives
    hit_5m_mixed = (pl.col("resent") & (prev >= minimum) & (gap <= SHORT_TTL_S)).fill_null(False)
    anchor = ~hit_5m_mixed & pl.col("resent") & explicit & (prev >= minimum).fill_null(False)
    turns = turns.with_columns(
        hit_short.alias("hit_short"),
        hit_5m_mixed.alias("_hit_5m_mixed"),
        hit_long.alias("hit_long"),
        anchor.alias("_anchor"),
        (~pl.col("resent")).cum_sum().alias("_seg"),  # a changed history starts a new lineage
    )
    last = {
        "_a_at": pl.col("start_time"),
        "_a_pos": pl.col("prev_L"),
        "_a_n": pl.col("_prev_n"),
        "_a_seg": pl.col("_seg"),
    }
    turns = turns.with_columns(
        pl.when(pl.col("_anchor")).then(expr).shift(1).forward_fill().alias(name)
        for name, expr in last.items()
    )
    mixed_hit = (
        ~pl.col("_hit_5m_mixed")
        & explicit
        & (pl.col("_a_seg") == pl.col("_seg"))  # same conversation, history unchanged since
        & ((pl.col("start_time") - pl.col("_a_at")).dt.total_microseconds() <= LONG_TTL_S * 1e6)
        & ((pl.col("_prev_n") - pl.col("_a_n")) <= LOOKBACK_MESSAGES)
    ).fill_null(False)
    read_mixed = (
        pl.when(pl.col("_hit_5m_mixed"))
        .then(prev)
        .when(mixed_hit)
        .then(pl.col("_a_pos"))
        .otherwise(0)
    )
    one_hour_mixed = (
        pl.when(pl.col("_anchor")).then((prev - read_mixed).clip(lower_bound=0)).otherwise(0)
    )

    out: list[pl.Expr] = []
    reads = {
        "short": pl.when(hit_short).then(stepped).otherwise(0),
        "long": pl.when(hit_long).then(prev).otherwise(0),
        "mixed": read_mixed,
    }
    for layout, read in reads.items():
        if layout != "short":  # automatic providers: the short replay under every name
            read = pl.when(explicit).then(read).otherwise(reads["short"])
        read = read.fill_null(0)
        write = pl.when(writes).then(length - read).otherwise(0)
        if layout == "long":
            write_1h = pl.when(explicit).then(write).otherwise(0)
        elif layout == "mixed":
            write_1h = pl.when(writes).then(pl.min_horizontal(one_hour_mixed, write)).otherwise(0)
        else:
            write_1h = pl.lit(0)
        out += [
            read.alias(f"cf_read_{layout}"),
            write.alias(f"cf_write_{layout}"),
            write_1h.fill_null(0).alias(f"cf_write_1h_{layout}"),
        ]
    hit_mixed = (pl.col("_hit_5m_mixed") | mixed_hit).alias("hit_mixed")
    return turns.with_columns(*out, hit_mixed).drop(
        "_same", "_n", "_prev_n", "_anchor", "_seg", "_hit_5m_mixed", *last
    )
