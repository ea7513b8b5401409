"""``llmtrace reconcile openai|anthropic``: do the stored costs match what the provider billed?

Thin: parse options, call ``llmtrace.reconcile``, render a table or JSON. Exit codes: 0 every
day and model within ``--max-drift``, 1 some row drifts more, 2 configuration errors (no admin
key, a key the provider refuses, an unreachable provider, a bad option), raised as
``UsageError`` for ``llmtrace.cli`` to report in one line.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click
import polars as pl
from rich import box
from rich.table import Table

from llmtrace.commands.common import (
    console,
    err_console,
    format_option,
    load_price_book,
    open_existing_store,
    store_option,
    window_options,
)
from llmtrace.costs import format_usd
from llmtrace.errors import EXIT_FINDINGS, UsageError

_DETAILS = 10  # rows whose cause is explained below the table
_SHORT = {
    "match": "ok",
    "uninstrumented traffic": "uninstrumented",
    "calls seen twice": "seen twice",
    "unpriced model": "unpriced",
    "tier or discount not in the price data": "tier/discount",
    "not in the provider's report": "not billed",
    "provider line item without a model": "no model",
}

_EPILOG = """\b
Examples:
  OPENAI_ADMIN_KEY=sk-admin-... llmtrace reconcile openai --since 7d
  ANTHROPIC_ADMIN_KEY=sk-ant-admin... llmtrace reconcile anthropic --format json
  llmtrace reconcile openai --max-drift 1% --prices negotiated.toml

\b
The admin keys are read from OPENAI_ADMIN_KEY / ANTHROPIC_ADMIN_KEY only and never printed.
Base URLs: --base-url, else OPENAI_BASE_URL (with /v1) / ANTHROPIC_BASE_URL.
Exit codes: 0 within --max-drift, 1 drift above it, 2 configuration error (missing key...).
"""


def _drift_share(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``2%`` or ``0.02`` as a share."""
    text = value.strip()
    try:
        share = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a share like 2% or 0.02", ctx, param) from None
    if not 0 <= share < 10:
        raise click.BadParameter(f"{value!r} must be between 0% and 1000%", ctx, param)
    return share


@click.command("reconcile", epilog=_EPILOG)
@click.argument("provider", type=click.Choice(["openai", "anthropic"]))
@window_options()
@store_option
@click.option(
    "--max-drift",
    default="2%",
    show_default=True,
    callback=_drift_share,
    help="Exit 1 when a day and model's cost differs from the bill by more than this.",
)
@format_option(["table", "json"])
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Re-price the stored calls with this price file first (a what-if: does a negotiated "
    "rate or tier price close the gap?). Default: the costs as stored.",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="Provider API base (default: $OPENAI_BASE_URL or $ANTHROPIC_BASE_URL, else the "
    "provider's own).",
)
def reconcile(
    provider: str,
    since: datetime | None,
    until: datetime | None,
    store_path: str | None,
    max_drift: float,
    fmt: str,
    prices_file: Path | None,
    base_url: str | None,
) -> None:
    """Compare the store's tokens and dollars with the provider's usage and cost reports.

    Per UTC day and model: tokens and dollars on both sides, the drift, and its likely cause
    (uninstrumented traffic, calls seen twice, unpriced models, a tier or discount missing from
    the price data). The window is whole UTC days (default: the last 7).
    """
    from llmtrace.reconcile import ProviderError
    from llmtrace.reconcile import reconcile as run_reconcile

    store = open_existing_store(store_path)
    book = load_price_book(prices_file) if prices_file is not None else None
    try:
        with err_console.status(f"Reading {provider}'s usage and cost reports...", spinner="dots"):
            result = run_reconcile(
                store,
                provider,
                since=since,
                until=until,
                max_drift=max_drift,
                base_url=base_url,
                book=book,
            )
    except ValueError as exc:  # an empty window
        raise UsageError(str(exc)) from None
    except ProviderError as exc:
        if not exc.auth:
            raise
        hint = f" (is {provider.upper()}_ADMIN_KEY an organization admin key?)"
        raise UsageError(f"{exc}{hint}") from None
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _table(result)
    if not result.ok:
        err_console.print(
            f"{result.over.height} day(s) x model(s) drift more than {max_drift:.1%} "
            "from the provider's bill",
            markup=False,
            highlight=False,
        )
        sys.exit(EXIT_FINDINGS)


def _tokens(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _table(result) -> None:  # noqa: ANN001 - a Reconciliation
    """Rows with a gap first show their cause; matching rows stay terse."""
    title = (
        f"{result.provider}: llmtrace vs the provider's bill ('billed'), "
        f"{result.since.date()} to {result.until.date()} (max drift {result.max_drift:.1%})"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name, justify in (
        ("Day", "left"),
        ("Model", "left"),
        ("Calls", "right"),
        ("billed", "right"),
        ("Tokens", "right"),
        ("billed", "right"),
        ("Cost", "right"),
        ("billed", "right"),
        ("Drift", "right"),
        ("Cause", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)
    for row in result.rows.iter_rows(named=True):
        cause = _SHORT.get(row["cause"], row["cause"])
        table.add_row(
            str(row["day"]),
            row["model_key"] or "(no model)",
            _tokens(row["llmtrace_calls"]),
            _tokens(row["provider_requests"]),
            _tokens(row["llmtrace_tokens"]),
            _tokens(row["provider_tokens"]),
            format_usd(row["llmtrace_cost_usd"]),
            format_usd(row["provider_cost_usd"]),
            _pct(row["drift"]),
            ("[red]" + cause + "[/red]") if row["over_threshold"] else cause,
        )
    console.print(table)
    totals = result.totals()
    console.print(
        f"Total: llmtrace {format_usd(totals['llmtrace_cost_usd'])}, billed "
        f"{format_usd(totals['provider_cost_usd'])} ({_pct(totals['drift'])}); "
        f"{result.over.height} of {result.rows.height} day x model rows over "
        f"{result.max_drift:.1%}."
    )
    gaps = result.rows.filter(pl.col("detail") != "")
    for row in gaps.head(_DETAILS).iter_rows(named=True):
        console.print(
            f"  {row['day']} {row['model_key'] or '(no model)'}: {row['cause']}: {row['detail']}",
            highlight=False,
            markup=False,
        )
    if gaps.height > _DETAILS:
        console.print(f"  ... and {gaps.height - _DETAILS} more rows (--format json lists all)")
    for note in result.notes:
        console.print(f"Note: {note}.", highlight=False)
