"""Prices for call records: genai-prices' bundled data plus the user's own price file.

This module and ``llmtrace.price_book`` (the ``PriceBook``, without Polars, for the live side)
are the only ones that import ``genai_prices``, so an upgrade (0.x releases do break APIs)
touches two files. The book keeps a *private* ``DataSnapshot`` of the bundled data: it never calls
``set_custom_snapshot`` (process-global, would change prices for other libraries in the same
process) and never starts ``UpdatePrices`` (network inside someone else's program).

Two ways in, one set of numbers:

* ``price_calls(frame)`` prices a whole frame. It finds the distinct price keys -- provider,
  model, service tier, UTC day and the time-of-day band the call started in (deepseek-chat has
  an off-peak band, so a (model, day) key is not enough) -- resolves each key once, turns the
  result into a
  small rates table (Float64 prices; tiers as threshold columns plus one price per tier level)
  and joins it to the calls. The arithmetic is Polars expressions; there is no Python loop per
  call.
* ``PriceBook.rates_for`` / ``PriceBook.price_one`` price one call for the live side, from the
  same cached ``Rates`` and the same formula, so both paths give the same cost.

Costs are disjoint (see ``llmtrace.record``): ``input_cost`` is uncached input, ``cache_write_cost``
covers 5-minute writes and ``cache_write_1h_tokens`` at the 1-hour rate, ``reasoning_cost`` is
reasoning at the reasoning rate (the output rate when the model has none) and ``output_cost`` is
the rest of the output. A tier applies to *all* tokens of a unit once the call's total input
tokens exceed its start (genai-prices' "cliff" model). The total equals genai-prices'
``calc_price`` for the same call.

Service tiers: a call's ``service_tier`` (``flex``, ``priority``, ``batch``...; null or
``standard`` is the list price) selects the tier's price: a price-file entry for the tier, else
genai-prices' price variant for it in force at the call's time (``TIER_CONTEXTS``: OpenAI/Google
``service_tier``, batch as ``processing``). A tier nothing prices is never priced at standard
rates: the call is unpriced with ``price_status`` ``unpriced_tier:<tier>``. ``tier_rates`` is
the lookup for other uses (what a call would cost on batch or flex).

Limits, on purpose: a call without ``start_time`` is priced at the current time; a recorded
provider genai-prices knows is trusted (a Bedrock call never falls back to Anthropic's direct
price), an unknown one is ignored and the provider guessed from the model name.

The user's price file (format, fields, how entries combine) is read by ``llmtrace.price_file``;
``Rate`` / ``Rates`` and the cost formula live in ``llmtrace.rates``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import polars as pl

from llmtrace.dialects import PROVIDER_ALIASES
from llmtrace.price_book import (
    GENAI_SOURCE,
    PriceBook,
    default_book,
    normalise_model,
    price_one,
    standard_tier,
    tier_rates,
)
from llmtrace.price_file import PRICES_ENV, Override, load_overrides
from llmtrace.rates import COMPONENTS, PER, PER_INVERSE, Rate, Rates, sum_costs
from llmtrace.record import (
    CALL_SCHEMA,
    COST_COMPONENTS,
    COST_FIELDS,
    PRICE_INVALID_USAGE,
    PRICE_NO_MODEL,
    PRICE_NO_USAGE,
    PRICE_OK,
    PRICE_UNKNOWN_MODEL,
    conform,
)

__all__ = [
    "COMPONENTS",
    "GENAI_SOURCE",
    "PER",
    "PRICED_FIELDS",
    "PRICES_ENV",
    "PROVIDER_ALIASES",
    "PriceBook",
    "Override",
    "Rate",
    "Rates",
    "default_book",
    "load_overrides",
    "normalise_model",
    "price_calls",
    "price_one",
    "standard_tier",
    "tier_rates",
]

# The record fields ``price_calls`` writes; everything else passes through unchanged, which is
# what lets ``llmtrace reprice`` re-run pricing over stored calls.
PRICED_FIELDS: tuple[str, ...] = (
    *COST_FIELDS,
    "price_status",
    "price_source",
    "provider",
    "provider_assumed",
)
_DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- pricing frames ---------------------------------------------------------------------------

_TOKENS = {
    "in": "input_tokens",
    "cr": "cache_read_tokens",
    "cw": "cache_write_tokens",
    "cw1h": "cache_write_1h_tokens",
    "out": "output_tokens",
    "rs": "reasoning_tokens",
}


def price_calls(calls: pl.DataFrame | pl.LazyFrame, book: PriceBook | None = None) -> pl.DataFrame:
    """Call records with every cost field, ``price_status`` and ``price_source`` filled.

    Vectorized: each distinct price key (provider, model, tier, UTC day, time-of-day band) is
    priced once in Python. Per row there is only integer work: one Int64 key, a lookup of the key's
    rate-table index, the tier level, a gather of the seven rates, and the cost expressions.
    """
    book = book or default_book()
    frame = conform(calls).collect()
    keyed, unique, (rids, statuses, thresholds, rates), assumed = _resolve_keys(frame, book)
    rid = pl.col("_key").replace_strict(unique, rids, return_dtype=pl.Int64)
    # rows that are not priced get no rate-table row, so their costs come out null
    ok = pl.col("price_status") == PRICE_OK
    row = pl.when(ok).then(pl.col("_rid") * (len(thresholds) + 1) + _level_expr(thresholds))
    return (
        pl.concat([frame, keyed], how="horizontal")
        .lazy()
        .with_columns(rid.alias("_rid"))
        .with_columns(_status_expr(statuses))
        .with_columns(row.alias("_row"))
        .with_columns(pl.lit(rates[name]).gather(pl.col("_row")) for name in COMPONENTS)
        .with_columns(
            *(expr.alias(name) for name, expr in _cost_exprs()),
            pl.lit(rates[_SOURCE])
            .gather(pl.when(ok).then(pl.col("_rid")))  # null, not a negative (from-end) index
            .fill_null(pl.lit(book.source, dtype=pl.String))
            .alias("price_source"),
            pl.coalesce(_lookup_provider(), pl.lit(assumed).gather(pl.col("_pair"))).alias(
                "provider"
            ),
            (
                _lookup_provider().is_null() & pl.lit(assumed).gather(pl.col("_pair")).is_not_null()
            ).alias("provider_assumed"),
        )
        .with_columns(_total_expr())
        .select(CALL_SCHEMA.names())
        .collect()
    )


def _lookup_provider() -> pl.Expr:
    """The provider a call is priced under: as recorded, or none where pricing assumed it
    before (``provider_assumed``), so a reprice assumes it again from today's data."""
    assumed = pl.col("provider_assumed").fill_null(False)
    return pl.when(~assumed).then(pl.col("provider"))


def _resolve_keys(
    frame: pl.DataFrame, book: PriceBook
) -> tuple[pl.DataFrame, pl.Series, tuple, pl.Series]:
    """Per row a price key (``_key``), total input (``_in``) and (provider, model) pair index
    (``_pair``); the distinct keys, each resolved once (see ``_price_keys``); and per pair the
    provider assumed from the model where none was recorded."""
    model = pl.coalesce(_nonempty("model"), _nonempty("request_model"))
    start = pl.col("start_time").fill_null(
        pl.lit(datetime.now(UTC), dtype=CALL_SCHEMA["start_time"])
    )
    keyed = frame.select(
        _lookup_provider().alias("_p"),
        model.alias("_m"),
        _pair_code(_lookup_provider(), model).alias("_k"),
        (start.dt.epoch("us") // _DAY_US).alias("_day"),
        (start.dt.epoch("us") % _DAY_US).alias("_tod"),
        pl.col(_TOKENS["in"]).fill_null(0).alias("_in"),
        pl.col("service_tier").alias("_t"),
    )
    pairs = keyed.group_by("_k").agg(pl.first("_p"), pl.first("_m")).rows()
    banded = {(i, b) for i, (_, p, m) in enumerate(pairs) if m for b in book.tod_bounds(p, m)}
    bounds = sorted({b for _, b in banded})
    first_day = keyed["_day"].min() or 0
    pair_index = pl.col("_k").replace_strict(
        [k for k, _, _ in pairs], range(len(pairs)), return_dtype=pl.Int64
    )
    tiers, tier_index = _tier_index(frame)
    # (pair, tier) | day offset | band, packed in one Int64 so dedup and lookup are integer ops
    key = (pair_index * len(tiers) + tier_index) * _PAIR + (pl.col("_day") - first_day) * _BANDS
    key = key + _band_expr(bounds, {i for i, _ in banded}, pair_index)
    keyed = keyed.select(key.alias("_key"), "_in", pair_index.alias("_pair"))
    unique = keyed["_key"].unique()
    assumed = pl.Series(
        "_assumed",
        [book.assumed_provider(p, m) if m and m.strip() else None for _, p, m in pairs],
        dtype=pl.String,
    )
    return keyed, unique, _price_keys(book, unique, pairs, tiers, first_day, bounds), assumed


def _tier_index(frame: pl.DataFrame) -> tuple[list[str | None], pl.Expr]:
    """The distinct service tiers (index 0: standard, under any spelling or none) and each
    row's index into them; normalised once per distinct value, not per row."""
    raw = frame.get_column("service_tier").drop_nulls().unique().to_list()
    normal = {value: standard_tier(value) for value in raw}
    tiers: list[str | None] = [None, *sorted({t for t in normal.values() if t is not None})]
    if len(tiers) == 1:
        return tiers, pl.lit(0, dtype=pl.Int64)
    index = [tiers.index(normal[value]) for value in raw]
    return tiers, pl.col("_t").replace_strict(raw, index, default=0, return_dtype=pl.Int64)


def _pair_code(provider: pl.Expr, model: pl.Expr) -> pl.Expr:
    """An exact Int64 code per distinct (provider, model): categorical codes of both, packed.

    Deduplicating on one integer instead of two strings is what keeps a 10M-row frame fast;
    the codes are only compared within this one call, so they need not be stable.
    """

    def code(expr: pl.Expr) -> pl.Expr:
        return expr.cast(pl.Categorical).to_physical().cast(pl.Int64).fill_null(_NULL_CODE)

    return code(provider) * (_NULL_CODE + 1) + code(model)


_NULL_CODE = 2**31 - 1  # categorical codes are UInt32 counters, far below this in practice
_BANDS = 64  # key slots per day for time-of-day bands (genai-prices uses 7 edges today)
_PAIR = 2**32  # key slots per pair: days x bands
_NO_MODEL = -1  # rid of keys whose model is blank: no_model rather than unknown_model
_SOURCE = "_source"  # the per-rid price_source in _price_keys' price table


def _nonempty(name: str) -> pl.Expr:
    """The column where it is a non-empty string (cheap per row; blanks are caught per key)."""
    return pl.when(pl.col(name).str.len_bytes() > 0).then(pl.col(name))


def _band_expr(bounds: list[int], banded_pairs: set[int], pair_index: pl.Expr) -> pl.Expr:
    """Index of the time-of-day band a call starts in, given every band edge in use.

    Only pairs with time-of-day prices get bands (the rest stay in band 0), so a deepseek
    model in the frame does not multiply every other model's keys by its band count.
    """
    if not bounds:
        return pl.lit(0, dtype=pl.Int64)
    if len(bounds) >= _BANDS:
        raise ValueError(f"{len(bounds)} time-of-day price edges; at most {_BANDS - 1} fit")
    band = pl.sum_horizontal([(pl.col("_tod") >= b).cast(pl.Int64) for b in bounds])
    return pl.when(pair_index.is_in(sorted(banded_pairs))).then(band).otherwise(0)


def _level_expr(thresholds: list[pl.Series]) -> pl.Expr:
    """How many of the key's tier thresholds the call's total input exceeds (cliff tiers)."""
    if not thresholds:
        return pl.lit(0, dtype=pl.Int64)
    rid = pl.when(pl.col("_rid") >= 0).then(pl.col("_rid"))  # null, not -1 (= last element)
    over = [(pl.col("_in") > pl.lit(t).gather(rid)).fill_null(False) for t in thresholds]
    return pl.sum_horizontal(over).cast(pl.Int64)


def _price_keys(
    book: PriceBook,
    keys: pl.Series,
    pairs: list[tuple[int, str | None, str | None]],
    tiers: list[str | None],
    first_day: int,
    bounds: list[int],
) -> tuple[list[int | None], dict[int, str], list[pl.Series], dict[str, pl.Series]]:
    """Resolve each distinct key once.

    Returns per key its rid (None: unknown model; ``_NO_MODEL``: blank model; another negative
    rid: an unpriced status, given by the second result, e.g. ``unpriced_tier:flex``), per tier
    level a Series of thresholds indexed by rid, and per component a Series of quoted prices
    with ``levels + 1`` entries per rid: entry ``rid * (levels + 1) + level`` is the price for
    a call whose input exceeds ``level`` thresholds.
    """
    # The book hands out one cached Rates object per price period, so identity dedups them
    # without hashing every nested tuple.
    found: dict[int, tuple[int, Rates]] = {}
    rids: list[int | None] = []
    statuses: dict[int, str] = {}
    for key in keys:
        combined, rest = divmod(key, _PAIR)
        pair, tier = divmod(combined, len(tiers))
        day, band = divmod(rest, _BANDS)
        _, provider, model = pairs[pair]
        if model is None or not model.strip():
            rids.append(_NO_MODEL)
            continue
        offset = (first_day + day) * _DAY_US + (bounds[band - 1] if band else 0)
        at = _EPOCH + timedelta(microseconds=offset)
        rates = book.rates_for(provider, model, at, tiers[tier])
        if rates is None:
            status = book._unpriced_status(provider, model, at, tiers[tier])
            if status == PRICE_UNKNOWN_MODEL:
                rids.append(None)
            else:
                code = next((c for c, s in statuses.items() if s == status), None)
                if code is None:
                    code = _NO_MODEL - 1 - len(statuses)
                    statuses[code] = status
                rids.append(code)
            continue
        rids.append(found.setdefault(id(rates), (len(found), rates))[0])
    distinct = [rates for _, rates in found.values()]
    starts = [_thresholds(r) for r in distinct]
    levels = max(map(len, starts), default=0)
    thresholds = [
        pl.Series([(s[i] if i < len(s) else None) for s in starts], dtype=pl.Int64)
        for i in range(levels)
    ]
    prices: dict[str, pl.Series] = {}
    for name in COMPONENTS:
        values = []
        for rates, tiers in zip(distinct, starts, strict=True):
            probes = [0, *(s + 1 for s in tiers)]  # one input count inside each level
            probes += [probes[-1]] * (levels + 1 - len(probes))
            values += [rates.component(name).price_at(x) for x in probes]
        prices[name] = pl.Series(f"_{name}", values, dtype=pl.Float64)
    prices[_SOURCE] = pl.Series(_SOURCE, [r.source for r in distinct], dtype=pl.String)
    return rids, statuses, thresholds, prices


def _thresholds(rates: Rates) -> list[int]:
    """Every tier start used by any component, ascending: the input counts where a price jumps."""
    return sorted({start for name in COMPONENTS for start, _ in rates.component(name).tiers})


def _cost_exprs() -> list[tuple[str, pl.Expr]]:
    t = {k: pl.col(v).fill_null(0) for k, v in _TOKENS.items()}

    def part(count: pl.Expr, name: str) -> pl.Expr:
        return count * pl.col(f"_{name}") * PER_INVERSE[name]  # see PER_INVERSE: not / PER

    return [
        ("input_cost", part(t["in"] - t["cr"] - t["cw"], "input")),
        ("cache_read_cost", part(t["cr"], "cache_read")),
        (
            "cache_write_cost",
            part(t["cw"] - t["cw1h"], "cache_write") + part(t["cw1h"], "cache_write_1h"),
        ),
        ("output_cost", part(t["out"] - t["rs"], "output")),
        ("reasoning_cost", part(t["rs"], "reasoning")),
        ("request_cost", part(pl.lit(1, dtype=pl.Int64), "request")),
    ]


def _total_expr() -> pl.Expr:
    c = {name: pl.col(name) for name in COST_COMPONENTS}
    return sum_costs(c).alias("total_cost")


def _status_expr(statuses: Mapping[int, str]) -> pl.Expr:
    """Why a call is or is not priced; the same rules, in the same order, as ``price_one``.
    ``statuses``: the unpriced statuses of special (negative) rids."""
    t = {k: pl.col(v).fill_null(0) for k, v in _TOKENS.items()}
    no_usage = pl.all_horizontal([pl.col(v).is_null() for v in _TOKENS.values()])
    invalid = (
        pl.any_horizontal([x < 0 for x in t.values()])
        | (t["cr"] + t["cw"] > t["in"])
        | (t["cw1h"] > t["cw"])
        | (t["rs"] > t["out"])
    )
    return (
        pl.when(pl.col("_rid") == _NO_MODEL)
        .then(pl.lit(PRICE_NO_MODEL))
        .when(no_usage)
        .then(pl.lit(PRICE_NO_USAGE))
        .when(invalid)
        .then(pl.lit(PRICE_INVALID_USAGE))
        .when(pl.col("_rid").is_null())
        .then(pl.lit(PRICE_UNKNOWN_MODEL))
        .when(pl.col("_rid") < _NO_MODEL)
        .then(pl.col("_rid").replace_strict(statuses, default=None, return_dtype=pl.String))
        .otherwise(pl.lit(PRICE_OK))
        .alias("price_status")
    )
