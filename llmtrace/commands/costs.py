"""``llmtrace costs``: spend per model, prompt, action... and cost per action vs per token."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import polars as pl
from rich.table import Table

from llmtrace.commands.common import (
    console,
    err_console,
    filter_options,
    format_option,
    load_price_book,
    open_existing_store,
    store_option,
    store_range_hint,
    window_options,
)
from llmtrace.costs import (
    GROUP_KEYS,
    check_keys,
    check_sort,
    format_usd,
    load_action_prices,
    parse_action_price,
    per_action,
    summarize,
    tier_price_hints,
    total_row,
    unpriced_reasons,
)
from llmtrace.filters import apply as apply_filters
from llmtrace.filters import describe as describe_filters
from llmtrace.store import Store

_EPILOG = """\b
Examples:
  llmtrace costs                                  spend per model, last 30 days
  llmtrace costs --by prompt,model --since 7d
  llmtrace costs --by day --format csv > spend.csv   rows in date order
  llmtrace costs --by user --service 'chat-*' --sort calls
  llmtrace costs --by environment,model --model 'gpt-4o*'
  llmtrace costs --per-action-price contract-review=0.10
  llmtrace costs --per-action-prices prices.toml --format json
  llmtrace costs --prices negotiated.toml         what-if: priced now, nothing written

\b
JSON/CSV fields (summary): the --by keys, then
  calls, unpriced_calls, input_tokens, cache_read_tokens, cache_write_tokens,
  output_tokens, reasoning_tokens, input_cost, cache_read_cost, cache_write_cost,
  output_cost, reasoning_cost, total_cost   (costs in USD; null when unpriced)

\b
JSON/CSV fields (per action; an instance is one trace of the action):
  action, instances, calls, unpriced_instances, token_cost, mean_cost, p50_cost,
  p95_cost, max_cost, cost_cv, action_price, action_plan_cost (instances x price),
  difference (action_plan_cost - token_cost), break_even_price (= mean_cost)

\b
A prices file is TOML (contract-review = 0.10) or CSV (action,price).
"""


def _check_by(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    try:
        return check_keys(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command("costs", epilog=_EPILOG)
@window_options(default_since="30d")
@click.option(
    "--by",
    "by",
    multiple=True,
    callback=_check_by,
    metavar="KEY[,KEY...]",
    help=f"Group by these keys, comma-separated or repeated (default: model). Keys: "
    f"{', '.join(GROUP_KEYS)}.",
)
@click.option(
    "--sort",
    "sort",
    default=None,
    metavar="KEY",
    help="Order rows by cost, calls or tokens (largest first) or by one of the --by keys. "
    "Default: time keys (hour, day, week, month) by time, then by cost.",
)
@filter_options
@format_option(["table", "json", "csv"])
@click.option(
    "--per-action-price",
    "action_prices",
    multiple=True,
    metavar="ACTION=USD",
    help="Compare per-token cost with a per-action price (repeatable).",
)
@click.option(
    "--per-action-prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Per-action prices from a TOML (ACTION = USD) or CSV (action,price) file.",
)
@click.option(
    "--prices",
    "what_if_prices",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="What-if: price the calls now with this price file instead of the stored costs "
    "(nothing is written; `llmtrace reprice` stores them).",
)
@store_option
def costs(
    since: datetime | None,
    until: datetime | None,
    by: list[str],
    sort: str | None,
    filters: dict[str, tuple[str, ...]],
    fmt: str,
    action_prices: tuple[str, ...],
    prices_file: str | None,
    what_if_prices: Path | None,
    store_path: str | None,
) -> None:
    """What the calls in the store cost, grouped as you ask.

    Tokens count every call; costs count priced calls only (an unpriced call is flagged,
    never counted as $0). With --per-action-price(s), compare what each action costs per token
    with what a per-action plan would bill.
    """
    prices = _action_prices(action_prices, prices_file)
    keys = by or ["model"]
    try:
        check_sort(keys, sort)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sort") from None
    book = load_price_book(what_if_prices) if what_if_prices is not None else None
    store = open_existing_store(store_path)
    calls = apply_filters(store.scan(since, until), filters)
    window = _window_text(since, until)
    if filters:
        window += f" ({describe_filters(filters)})"
    if calls.select(pl.len()).collect().item() == 0:
        _explain_empty(store, since, until, fmt, filters)
        return
    if book is not None:
        from llmtrace.reprice import what_if

        calls = what_if(calls, book)
        if fmt == "table":
            console.print(
                f"What-if prices: {book.source} (nothing written)", markup=False, soft_wrap=True
            )
    if prices is not None:
        if by:
            err_console.print("--by is ignored with per-action prices (rows are actions).")
        _show_per_action(calls, prices, fmt, window)
    else:
        _show_summary(calls, keys, sort, fmt, window)


def _action_prices(flags: Sequence[str], path: str | None) -> dict[str, float] | None:
    """Prices from the file, then the flags (a flag overrides the file); None: no per-action."""
    if not flags and path is None:
        return None
    prices: dict[str, float] = {}
    try:
        if path is not None:
            prices.update(load_action_prices(path))
        for flag in flags:
            action, price = parse_action_price(flag)
            prices[action] = price
    except ValueError as exc:
        option = "--per-action-prices" if path and not flags else "--per-action-price(s)"
        raise click.BadParameter(str(exc), param_hint=option) from None
    if not prices:
        raise click.BadParameter(f"{path}: no prices found", param_hint="--per-action-prices")
    return prices


def _window_text(since: datetime | None, until: datetime | None) -> str:
    def show(value: datetime | None, default: str) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else default

    return f"{show(since, 'the beginning')} to {show(until, 'now')}"


def _explain_empty(
    store: Store,
    since: datetime | None,
    until: datetime | None,
    fmt: str,
    filters: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """No calls: say why and what to run (the dates the store holds, so the hint is a window
    that has calls), and still print a valid empty JSON/CSV."""
    held = store_range_hint(store)
    if held:
        matching = f" matching {describe_filters(filters)}" if filters else ""
        message = f"No calls{matching} from {_window_text(since, until)} in {store.path}, {held}"
        if filters:
            message += " Or loosen the filters."
    else:
        message = (
            f"The store at {store.path} holds no calls yet. Run `llmtrace demo` for a realistic "
            "demo workload, or `llmtrace import otlp FILE` to load your own traces."
        )
    err_console.print(message, markup=False, highlight=False)
    if fmt == "json":
        click.echo("[]")


# -- summary ------------------------------------------------------------------------------------


def _show_summary(
    calls: pl.LazyFrame, keys: list[str], sort: str | None, fmt: str, window: str
) -> None:
    summary = summarize(calls, keys, sort)
    if fmt == "json":
        click.echo(_json(summary))
        return
    if fmt == "csv":
        click.echo(summary.write_csv(), nl=False)
        return
    reasons = unpriced_reasons(calls)
    _print_table(_summary_table(summary, keys, window))
    _print_unpriced(reasons)
    _print_tier_hints(calls)


@dataclass
class _Column:
    """A table column: header, cells (rows, then the total row if any), and a priority.

    Narrow terminals (and pipes, 80 columns) cannot show every figure; columns are kept in
    priority order (0 first) while they fit, then shown in their natural order.
    """

    header: str
    cells: list[str]
    priority: int
    justify: str = "right"

    @property
    def width(self) -> int:
        texts = [*self.header.split("\n"), *(_plain(c) for c in self.cells)]
        return max(len(t) for t in texts) + 3  # padding and a border


def _plain(cell: str) -> str:
    return cell.replace("[bold]", "").replace("[/bold]", "")


def _fit_table(
    title: str, columns: list[_Column], width: int, total_row: bool
) -> tuple[Table, list[str]]:
    """The table of the columns that fit ``width``, and the headers of those left out."""
    budget = width - 1
    keep: set[int] = set()
    for i in sorted(range(len(columns)), key=lambda i: columns[i].priority):
        if columns[i].priority > 0 and columns[i].width > budget:
            break  # strictly by priority: a narrow minor column never displaces a major one
        keep.add(i)
        budget -= columns[i].width
    shown = [c for i, c in enumerate(columns) if i in keep]
    table = Table(title=title, title_justify="left")
    for column in shown:
        table.add_column(column.header, justify=column.justify)  # type: ignore[arg-type]
    rows = len(shown[0].cells) if shown else 0
    for r in range(rows):
        if total_row and r == rows - 1:
            table.add_section()
        table.add_row(*(c.cells[r] for c in shown))
    hidden = [c.header.replace("\n", " ") for i, c in enumerate(columns) if i not in keep]
    return table, hidden


def _print_table(fitted: tuple[Table, list[str]]) -> None:
    table, hidden = fitted
    console.print(table)
    if hidden:
        console.print(f"Not shown (terminal too narrow): {', '.join(hidden)}. See --format json.")


def _summary_table(summary: pl.DataFrame, keys: list[str], window: str) -> tuple[Table, list[str]]:
    """Keys, calls, token counts and costs (cache reads and writes share a money column), a
    total row, and an asterisk on calls of groups with unpriced calls."""
    total = total_row(summary)
    grand = total["total_cost"]
    rows = [*summary.iter_rows(named=True), total]

    def cells(render: Any) -> list[str]:
        texts = [render(row) for row in rows]
        texts[-1] = f"[bold]{texts[-1]}[/bold]" if texts[-1] else ""
        return texts

    def share(row: dict[str, Any]) -> str:
        if not grand or row["total_cost"] is None:
            return ""
        return f"{100 * row['total_cost'] / grand:.1f}%"

    columns = [
        _Column(
            key.capitalize(),
            [_key_text(row[key]) for row in rows[:-1]] + ["[bold]Total[/bold]" if i == 0 else ""],
            0,
            "left",
        )
        for i, key in enumerate(keys)
    ]
    columns += [
        _Column(
            "Calls", cells(lambda r: f"{r['calls']:,}" + ("*" if r["unpriced_calls"] else "")), 0
        ),
        _Column("Input\ntokens", cells(lambda r: _tokens(r["input_tokens"])), 5),
        _Column("Cache read\ntokens", cells(lambda r: _tokens(r["cache_read_tokens"])), 7),
        _Column("Output\ntokens", cells(lambda r: _tokens(r["output_tokens"])), 6),
        _Column("Reasoning\ntokens", cells(lambda r: _tokens(r["reasoning_tokens"])), 8),
        _Column("Input $", cells(lambda r: format_usd(r["input_cost"])), 2),
        _Column(
            "Cache $",
            cells(lambda r: format_usd(_add(r["cache_read_cost"], r["cache_write_cost"]))),
            4,
        ),
        _Column("Output $", cells(lambda r: format_usd(r["output_cost"])), 2),
        _Column("Reasoning $", cells(lambda r: format_usd(r["reasoning_cost"])), 3),
        _Column("Total $", cells(lambda r: format_usd(r["total_cost"])), 0),
        _Column("Share", cells(share), 1),
    ]
    return _fit_table(f"LLM spend, {window}", columns, console.width, total_row=True)


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


def _tokens(value: int | None) -> str:
    """Token counts compactly: 9,999 / 12.3k / 357.1M / 1.2B."""
    if value is None:
        return "—"
    for limit, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (10_000, "k")):
        if abs(value) >= limit:
            scaled = value / (limit if suffix != "k" else 1_000)
            return f"{scaled:,.1f}{suffix}"
    return f"{value:,}"


def _key_text(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _print_unpriced(reasons: pl.DataFrame) -> None:
    """Flag unpriced calls under the table with their reasons: they are not in the $ figures."""
    if reasons.is_empty():
        return
    count = int(reasons["calls"].sum())
    console.print(f"* {count:,} call(s) unpriced, left out of the $ figures (tokens counted):")
    for status, calls, models in reasons.iter_rows():
        examples = f" (e.g. {', '.join(models)})" if models else ""
        console.print(f"    {status}: {calls:,}{examples}")
    console.print("  Run `llmtrace prices` to see or override the prices in use.")


def _print_tier_hints(calls: pl.LazyFrame) -> None:
    """Calls on a service tier without a price: the price-file entries that would price them."""
    hints = tier_price_hints(calls)
    if not hints:
        return
    console.print(
        "  Calls on a service tier without a price are never priced at standard rates. "
        "Give the tier its price in your price file, then run `llmtrace reprice`:",
        markup=False,
        soft_wrap=True,
    )
    for hint in hints:
        console.print("", markup=False)
        for line in hint.splitlines():
            console.print(f"    {line}", markup=False, soft_wrap=True)


# -- per action ---------------------------------------------------------------------------------


def _show_per_action(calls: pl.LazyFrame, prices: dict[str, float], fmt: str, window: str) -> None:
    """Only the actions given a price: those are the ones the user asked to compare."""
    result = per_action(calls, prices).filter(pl.col("action_price").is_not_null())
    missing = sorted(set(prices) - set(result["action"].to_list()))
    if missing:
        err_console.print(f"No instances in the window for: {', '.join(missing)}")
    if fmt == "json":
        click.echo(_json(result))
        return
    if fmt == "csv":
        click.echo(result.write_csv(), nl=False)
        return
    if result.is_empty():
        return
    _print_table(_per_action_table(result, window))
    estimated = result.filter(pl.col("unpriced_instances") > 0)
    if estimated.height:
        console.print(
            "* Per-token total includes instances with unpriced calls, estimated at the mean "
            "priced instance ("
            + "; ".join(
                f"{r['action']}: {r['unpriced_instances']:,} estimated, priced instances "
                f"{format_usd(r['token_cost'])}"
                for r in estimated.iter_rows(named=True)
            )
            + "), so Per-action total - Per-token total = Difference.",
            markup=False,
            highlight=False,
        )
    for row in result.iter_rows(named=True):
        console.print(_verdict(row))


def _per_action_table(result: pl.DataFrame, window: str) -> tuple[Table, list[str]]:
    """Per action: instances, per-token figures, and the per-action plan beside them."""
    rows = list(result.iter_rows(named=True))

    def money(name: str) -> list[str]:
        return [format_usd(r[name]) for r in rows]

    columns = [
        _Column("Action", [r["action"] for r in rows], 0, "left"),
        _Column(
            "Instances",
            [f"{r['instances']:,}" + ("*" if r["unpriced_instances"] else "") for r in rows],
            0,
        ),
        _Column("Per-token\ntotal", [_per_token_cell(r) for r in rows], 0),
        _Column("Mean", money("mean_cost"), 3),
        _Column("p50", money("p50_cost"), 6),
        _Column("p95", money("p95_cost"), 4),
        _Column("Max", money("max_cost"), 7),
        _Column("CV", ["—" if r["cost_cv"] is None else f"{r['cost_cv']:.2f}" for r in rows], 5),
        _Column("Price per\naction", money("action_price"), 2),
        _Column("Per-action\ntotal", money("action_plan_cost"), 0),
        _Column("Difference", money("difference"), 1),
        _Column("Break-even\nper action", money("break_even_price"), 0),
    ]
    title = f"Cost per action vs per token, {window}"
    return _fit_table(title, columns, console.width, total_row=False)


def _per_token_total(row: dict[str, Any]) -> float | None:
    """The per-token side the difference compares with: the priced instances' cost, plus the
    mean for instances with unpriced calls (``per_action``'s ``difference``)."""
    if row["difference"] is None or row["action_plan_cost"] is None:
        return row["token_cost"]
    return row["action_plan_cost"] - row["difference"]


def _per_token_cell(row: dict[str, Any]) -> str:
    return format_usd(_per_token_total(row)) + ("*" if row["unpriced_instances"] else "")


def _verdict(row: dict[str, Any]) -> str:
    """One sentence per priced action: which plan is cheaper, by how much, and the break-even."""
    difference = row["difference"]
    if difference is None:
        return f"{row['action']}: per-token cost unknown (every instance has unpriced calls)."
    per_token = _per_token_total(row)
    estimated = ""
    if row["unpriced_instances"]:
        estimated = (
            f" (est.: {row['unpriced_instances']:,} instances with unpriced calls at the mean)"
        )
    head = (
        f"{row['action']}: {row['instances']:,} instances cost {format_usd(per_token)} per "
        f"token{estimated} vs {format_usd(row['action_plan_cost'])} at "
        f"{format_usd(row['action_price'])} per action"
    )
    if difference > 0:
        side = f"per-token is cheaper by {format_usd(difference)}"
    elif difference < 0:
        side = f"per-action is cheaper by {format_usd(-difference)}"
    else:
        side = "both cost the same"
    return f"{head}: {side}; break-even {format_usd(row['break_even_price'])} per action."


def _json(frame: pl.DataFrame) -> str:
    """A list of row objects; dates as ISO strings."""
    return json.dumps(frame.to_dicts(), indent=2, default=str)
