"""Where the money went: cost summaries, and cost per action against cost per token.

Both are lazy Polars aggregations over call records (``Store.scan(since, until)``), so they read
only the columns they need and never loop over calls in Python.

Unpriced calls (null costs, ``price_status`` saying why) count in ``calls``, ``unpriced_calls``
and the token sums, but never as $0: a group whose calls are all unpriced has null costs, and
per-call or per-instance figures (mean, percentiles) use priced calls only.

Cost per action (the pricing-model comparison of "Cost per Action vs Cost per Token"): an
action instance is one trace of that action. Its per-token cost is the sum of its calls' costs;
a per-action plan would bill ``instances x price`` instead, and the break-even price per action
is the mean per-token cost of an instance.
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from llmtrace.record import CALL_SCHEMA


@dataclass(frozen=True)
class GroupKey:
    """A ``--by`` key: the call-record field it reads, and how it buckets time if it is a time
    key (time keys sort by time, the others by cost)."""

    name: str
    field: str
    truncate: str | None = None  # a Polars duration: the field's time truncated to it
    time: bool = False
    help: str = ""

    def expr(self) -> pl.Expr:
        column = pl.col(self.field)
        if self.truncate is not None:
            column = column.dt.truncate(self.truncate)
        return column.alias(self.name)


# Every --by key, one line each; a key whose field the call record lacks is left out
# (``service_tier`` appears when the record carries it). Order: how --help lists them.
GROUP_KEY_TABLE: dict[str, GroupKey] = {
    key.name: key
    for key in (
        GroupKey("model", "model"),
        GroupKey("provider", "provider"),
        GroupKey("prompt", "prompt"),
        GroupKey("action", "action"),
        GroupKey("service", "service"),
        GroupKey("environment", "environment"),
        GroupKey("user", "user_id"),
        GroupKey("conversation", "conversation_id"),
        GroupKey("service_tier", "service_tier"),
        GroupKey("agent", "agent"),
        GroupKey("tool", "tool"),
        GroupKey("hour", "start_time", truncate="1h", time=True),
        GroupKey("day", "day", time=True),
        GroupKey("week", "day", truncate="1w", time=True),
        GroupKey("month", "day", truncate="1mo", time=True),
    )
    if key.field in CALL_SCHEMA
}
GROUP_KEYS: tuple[str, ...] = tuple(GROUP_KEY_TABLE)
TIME_KEYS: frozenset[str] = frozenset(k.name for k in GROUP_KEY_TABLE.values() if k.time)
# --sort: a figure (largest first) or one of the --by keys (ascending)
SORT_FIGURES: dict[str, tuple[str, ...]] = {
    "cost": ("total_cost",),
    "calls": ("calls",),
    "tokens": ("input_tokens", "output_tokens"),
}

SUMMARY_TOKENS: tuple[str, ...] = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)
SUMMARY_COSTS: tuple[str, ...] = (
    "input_cost",
    "cache_read_cost",
    "cache_write_cost",
    "output_cost",
    "reasoning_cost",
    "total_cost",
)
# Columns of ``summarize`` after the group keys, in order.
SUMMARY_FIELDS: tuple[str, ...] = ("calls", "unpriced_calls", *SUMMARY_TOKENS, *SUMMARY_COSTS)

# Columns of ``per_action``, in order (documented in ``per_action``).
PER_ACTION_FIELDS: tuple[str, ...] = (
    "action",
    "instances",
    "calls",
    "unpriced_instances",
    "token_cost",
    "mean_cost",
    "p50_cost",
    "p95_cost",
    "max_cost",
    "cost_cv",
    "action_price",
    "action_plan_cost",
    "difference",
    "break_even_price",
)

_PER_ACTION_MONEY = frozenset(PER_ACTION_FIELDS[4:])  # every field from token_cost on is a float


def check_keys(by: Sequence[str]) -> list[str]:
    """The group keys in order (``a,b`` splits), duplicates dropped; an unknown key is a
    ``ValueError``."""
    by = [part.strip() for key in by for part in key.split(",") if part.strip()]
    unknown = [key for key in by if key not in GROUP_KEYS]
    if unknown:
        raise ValueError(
            f"cannot group by {', '.join(unknown)}: choose from {', '.join(GROUP_KEYS)}"
        )
    return list(dict.fromkeys(by))


def _sum_or_null(name: str) -> pl.Expr:
    """Sum of a cost column, null (not 0) when no call in the group was priced."""
    column = pl.col(name)
    return pl.when(column.count() > 0).then(column.sum()).cast(pl.Float64).alias(name)


def _summary_aggs() -> list[pl.Expr]:
    return [
        pl.len().cast(pl.Int64).alias("calls"),
        pl.col("total_cost").is_null().sum().cast(pl.Int64).alias("unpriced_calls"),
        *(pl.col(name).cast(pl.Int64).sum().alias(name) for name in SUMMARY_TOKENS),
        *(_sum_or_null(name) for name in SUMMARY_COSTS),
    ]


def summarize(calls: pl.LazyFrame, by: Sequence[str], sort: str | None = None) -> pl.DataFrame:
    """Calls, tokens and costs per group of ``by`` (any of ``GROUP_KEYS``).

    With no keys, one row for everything. Token sums are Int64, cost sums Float64; a group
    without a single priced call has null costs. Order (``sort_order``): time keys by time,
    then the costliest first, ties by the keys, so the order is stable; ``sort`` puts a
    figure (``cost``, ``calls``, ``tokens``: largest first) or one of ``by`` first.
    """
    keys = check_keys(by)
    if not keys:
        return calls.select(_summary_aggs()).collect()
    grouped = calls.group_by([GROUP_KEY_TABLE[k].expr() for k in keys]).agg(_summary_aggs())
    columns, descending = sort_order(keys, sort)
    if "_tokens" in columns:
        grouped = grouped.with_columns(
            (pl.col("input_tokens") + pl.col("output_tokens")).alias("_tokens")
        )
    ordered = grouped.sort(columns, descending=descending, nulls_last=True)
    return ordered.drop("_tokens", strict=False).collect()


def check_sort(keys: Sequence[str], sort: str | None) -> str | None:
    """``sort`` if it names a figure or one of ``keys``; else a ``ValueError`` that lists them."""
    if sort is None or sort in SORT_FIGURES or sort in keys:
        return sort
    choices = [*SORT_FIGURES, *keys]
    raise ValueError(f"cannot sort by {sort!r}: choose from {', '.join(choices)}")


def sort_order(keys: Sequence[str], sort: str | None = None) -> tuple[list[str], list[bool]]:
    """Sort columns and directions: ``sort`` first, then time keys ascending, then the cost
    (largest first), then the other keys ascending."""
    check_sort(keys, sort)
    columns: list[str] = []
    descending: list[bool] = []

    def add(column: str, desc: bool) -> None:
        if column not in columns:
            columns.append(column)
            descending.append(desc)

    if sort in SORT_FIGURES:
        add("total_cost" if sort == "cost" else "calls" if sort == "calls" else "_tokens", True)
    elif sort is not None:
        add(sort, False)
    for key in keys:
        if key in TIME_KEYS:
            add(key, False)
    add("total_cost", True)
    for key in keys:
        add(key, False)
    return columns, descending


def total_row(summary: pl.DataFrame) -> dict[str, int | float | None]:
    """The sums of a ``summarize`` result's figures (its key columns left out)."""
    row: dict[str, int | float | None] = {}
    for name in SUMMARY_FIELDS:
        column = summary[name]
        if name in SUMMARY_COSTS:
            row[name] = float(column.sum()) if column.count() else None
        else:
            row[name] = int(column.sum())
    return row


def unpriced_reasons(calls: pl.LazyFrame, *, examples: int = 3) -> pl.DataFrame:
    """Why calls are unpriced: ``price_status``, how many calls, and a few of their models."""
    return (
        calls.filter(pl.col("total_cost").is_null())
        .group_by(pl.col("price_status").fill_null("unknown"))
        .agg(
            pl.len().cast(pl.Int64).alias("calls"),
            pl.col("model").drop_nulls().unique().sort().head(examples).alias("models"),
        )
        .sort(["calls", "price_status"], descending=[True, False])
        .collect()
    )


def tier_price_hints(calls: pl.LazyFrame, *, limit: int = 3) -> list[str]:
    """For calls unpriced because their service tier has no price: the price-file entry that
    would price them, one per (provider, model, tier), most calls first. A tier is never priced
    at standard rates, so the user has to say what it costs; the value is left for them."""
    from llmtrace.record import PRICE_UNPRICED_TIER

    rows = (
        calls.filter(pl.col("price_status").str.starts_with(PRICE_UNPRICED_TIER + ":"))
        .group_by(
            "provider", "model", pl.col("price_status").str.split(":").list.last().alias("tier")
        )
        .agg(pl.len().alias("n"))
        .sort(["n", "provider", "model", "tier"], descending=[True, False, False, False])
        .head(limit)
        .collect()
    )
    hints = []
    for provider, model, tier, _ in rows.iter_rows():
        lines = ["[[price]]"]
        if provider:
            lines.append(f'provider = "{provider}"')
        lines += [
            f'model = "{model}"',
            f'service_tier = "{tier}"',
            "multiplier = ...  # share of the standard price; or input_mtok and output_mtok",
        ]
        hints.append("\n".join(lines))
    return hints


def per_action(calls: pl.LazyFrame, prices: Mapping[str, float]) -> pl.DataFrame:
    """Cost per action: what each action costs per token, and what a per-action plan would bill.

    One row per action seen in ``calls`` (calls without an action are left out), costliest
    first. Fields:

    ``instances``
        traces of the action (an instance of work a per-action plan would bill once);
    ``calls``
        LLM calls in those traces;
    ``unpriced_instances``
        instances with at least one unpriced call: their cost is unknown, so they are left
        out of the cost figures below;
    ``token_cost``
        sum of the priced instances' per-token cost (USD);
    ``mean_cost``, ``p50_cost``, ``p95_cost``, ``max_cost``, ``cost_cv``
        per-instance cost: mean, median and 95th percentile (linear interpolation), maximum, and
        coefficient of variation (sample standard deviation / mean): how unpredictable a
        per-token bill is per unit of work;
    ``action_price``
        the per-action price given in ``prices`` (null when none was given);
    ``action_plan_cost``
        ``instances x action_price``: what the per-action plan would bill;
    ``difference``
        ``action_plan_cost - token_cost`` (positive: per-token is cheaper). With unpriced
        instances the per-token side is estimated as ``mean_cost x instances``;
    ``break_even_price``
        the per-action price at which both plans cost the same: ``mean_cost``.
    """
    for action, price in prices.items():
        if not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
            raise ValueError(f"per-action price of {action!r} must be a number >= 0: {price!r}")
    cost = pl.col("total_cost")
    instances = (
        calls.filter(pl.col("action").is_not_null())
        .group_by("action", "trace_id")
        .agg(
            pl.len().cast(pl.Int64).alias("_calls"),
            pl.when(cost.null_count() == 0).then(cost.sum()).alias("_cost"),
        )
    )
    each = pl.col("_cost")
    mean = each.mean()
    per_token = instances.group_by("action").agg(
        pl.len().cast(pl.Int64).alias("instances"),
        pl.col("_calls").sum().cast(pl.Int64).alias("calls"),
        each.null_count().cast(pl.Int64).alias("unpriced_instances"),
        pl.when(each.count() > 0).then(each.sum()).alias("token_cost"),
        mean.alias("mean_cost"),
        each.quantile(0.5, "linear").alias("p50_cost"),
        each.quantile(0.95, "linear").alias("p95_cost"),
        each.max().alias("max_cost"),
        pl.when(mean > 0).then(each.std(ddof=1) / mean).alias("cost_cv"),
    )
    price_table = pl.LazyFrame(
        {"action": list(prices), "action_price": [float(p) for p in prices.values()]},
        schema={"action": pl.String, "action_price": pl.Float64},
    )
    plan = pl.col("instances").cast(pl.Float64) * pl.col("action_price")
    estimated = (
        pl.when(pl.col("unpriced_instances") == 0)
        .then(pl.col("token_cost"))
        .otherwise(pl.col("mean_cost") * pl.col("instances").cast(pl.Float64))
    )
    return (
        per_token.join(price_table, on="action", how="left")
        .with_columns(plan.alias("action_plan_cost"))
        .with_columns(
            (pl.col("action_plan_cost") - estimated).alias("difference"),
            pl.col("mean_cost").alias("break_even_price"),
        )
        .select(
            pl.col(name).cast(pl.Float64) if name in _PER_ACTION_MONEY else pl.col(name)
            for name in PER_ACTION_FIELDS
        )
        .sort(["token_cost", "action"], descending=[True, False], nulls_last=True)
        .collect()
    )


# -- per-action prices from the command line or a file ---------------------------------------


def parse_action_price(text: str) -> tuple[str, float]:
    """``ACTION=USD`` (e.g. ``contract-review=0.10``, ``$`` allowed) as (action, price)."""
    action, sep, value = text.partition("=")
    action = action.strip()
    if not sep or not action:
        raise ValueError(f"expected ACTION=USD (e.g. contract-review=0.10), got {text!r}")
    return action, _price(value, f"price of {action!r}")


def load_action_prices(path: str | Path) -> dict[str, float]:
    """Per-action prices from a TOML file (``"contract-review" = 0.10``) or a CSV file with
    columns ``action,price`` (header optional). Errors name the file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix.lower() == ".csv":
        return _prices_from_csv(path, text)
    return _prices_from_toml(path, text)


def _prices_from_toml(path: Path, text: str) -> dict[str, float]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    prices: dict[str, float] = {}
    for action, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path}: {action!r} must be a price in USD (a number), not {value!r}")
        prices[action] = _price(str(value), f"{path}: {action!r}")
    return prices


def _prices_from_csv(path: Path, text: str) -> dict[str, float]:
    prices: dict[str, float] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{number}: expected 2 fields (action,price), got {len(row)}")
        action, value = row[0].strip(), row[1].strip()
        if number == 1 and action.lower() == "action" and value.lower() in ("price", "usd"):
            continue  # header
        if not action:
            raise ValueError(f"{path}:{number}: field 'action' is empty")
        prices[action] = _price(value, f"{path}:{number}: field 'price'")
    return prices


def _price(value: str, where: str) -> float:
    cleaned = value.strip().removeprefix("$").replace(",", "")
    try:
        price = float(cleaned)
    except ValueError:
        raise ValueError(f"{where}: {value.strip()!r} is not a price in USD") from None
    if not math.isfinite(price) or price < 0:
        raise ValueError(f"{where}: price must be a number >= 0, got {value.strip()!r}")
    return price


# -- money for people ---------------------------------------------------------------------------


def format_usd(value: float | None) -> str:
    """$1,234.56 for amounts of a dollar or more; 4 significant digits below ($0.0375,
    $0.0001235), at least cents; an em dash for unknown (unpriced)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    sign = "-" if value < 0 else ""
    amount = abs(value)
    if amount >= 1 or amount == 0:
        return f"{sign}${amount:,.2f}"
    decimals = max(2, 3 - math.floor(math.log10(amount)))
    text = f"{amount:.{decimals}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"
