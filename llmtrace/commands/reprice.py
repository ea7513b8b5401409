"""``llmtrace reprice``: price the stored calls again with today's price data and overrides."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmtrace.commands.common import (
    console,
    err_console,
    load_price_book,
    open_existing_store,
    prices_option,
    store_option,
    window_options,
)

_EPILOG = """\b
Examples:
  llmtrace reprice                              every stored call, prices from llmtrace.toml
  llmtrace reprice --prices negotiated.toml --since 2026-11-01
  llmtrace reprice --dry-run --prices draft.toml    what would change, nothing written
"""


@click.command("reprice", epilog=_EPILOG)
@window_options()
@prices_option
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@store_option
def reprice(
    since: datetime | None,
    until: datetime | None,
    prices_file: Path | None,
    dry_run: bool,
    store_path: str | None,
) -> None:
    """Price stored calls again with the current price data plus your overrides.

    Overrides come from --prices, else $LLMTRACE_PRICES, else `prices` in llmtrace.toml; with
    none, list prices are restored. Each call's price_source names the override that priced
    it. Only calls whose prices change are written, file by file through the store's journal,
    so an interrupted run leaves every call once and running it again finishes the job.
    """
    from llmtrace.reprice import reprice as run_reprice

    book = load_price_book(prices_file)
    store = open_existing_store(store_path)
    if not store.days():
        err_console.print(
            f"llmtrace: the store at {store.path} holds no calls.", markup=False, soft_wrap=True
        )
        raise click.exceptions.Exit(2)
    with Progress(
        TextColumn("Repricing files"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("reprice", total=None)
        result = run_reprice(
            store,
            book,
            since,
            until,
            write=not dry_run,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    verb = "Would reprice" if dry_run else "Repriced"
    console.print(
        f"{verb} {result.calls:,} calls from {_when(since, 'the beginning')} to "
        f"{_when(until, 'now')} in {store.path}",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"  prices: {book.source}", markup=False, soft_wrap=True)
    where = f" in {result.rewritten:,} of {result.files:,} files" if not dry_run else ""
    console.print(f"  changed: {result.changed:,} calls{where}", markup=False, soft_wrap=True)
    delta = result.after_total - result.before_total
    console.print(
        f"  total: ${result.before_total:,.2f} -> ${result.after_total:,.2f} "
        f"({'+' if delta >= 0 else '-'}${abs(delta):,.2f})",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"  unpriced: {result.before_unpriced:,} -> {result.after_unpriced:,} calls", markup=False
    )


def _when(value: datetime | None, default: str) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else default
